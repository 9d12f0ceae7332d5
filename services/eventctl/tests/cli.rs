//! `eventctl` as users run it: gen, ingest (files, folders, globs, stdin, .gz, .zst, local
//! and S3 lakes), cat, compact; summaries that balance; DuckDB reading the lake.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::{eventctl, ok};

/// `eventctl gen` into a file; returns the generator's summary.
fn generate(path: &Path, args: &[&str]) -> Value {
    let out = ok(eventctl().args(["gen", "--out", path.to_str().expect("utf8")]).args(args).output().expect("run gen"));
    serde_json::from_slice(&out.stderr).expect("gen prints its summary as JSON on stderr")
}

fn ingest(lake: &str, inputs: &[&str], extra: &[&str]) -> (Value, i32) {
    let out = eventctl().args(["ingest", "--json", "--lake", lake]).args(extra).args(inputs).output().expect("run ingest");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("ingest --json printed no JSON ({e}):\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (summary, out.status.code().unwrap_or(-1))
}

fn cat(lake: &str) -> Vec<Value> {
    let out = ok(eventctl().args(["cat", "--lake", lake]).output().expect("run cat"));
    out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).expect("cat prints JSON")).collect()
}


/// The valid events of an NDJSON file, by id (lines that parse and carry data.id + type).
fn valid_events(path: &Path) -> HashMap<String, Value> {
    let text = std::fs::read_to_string(path).expect("read input");
    let mut out = HashMap::new();
    for line in text.lines() {
        if event_contract::validate(line.as_bytes(), &event_contract::Limits::default()).is_ok() {
            let v: Value = serde_json::from_str(line).expect("valid line parses");
            out.insert(v["data"]["id"].as_str().expect("id").to_owned(), v);
        }
    }
    out
}

fn counts_of(map: &Value) -> BTreeMap<String, u64> {
    map.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

#[test]
fn ingest_is_lossless_balanced_and_readable_by_duckdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.ndjson");
    let g = generate(&input, &["--events", "20000", "--bad-ratio", "0.03", "--seed", "7", "--types", "60", "--hours", "6"]);
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");

    let (s, code) = ingest(lake, &[input.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["lines_read"], 20000);
    assert_eq!(s["valid"], g["valid"]);
    assert_eq!(s["quarantined"], g["invalid"]);
    assert_eq!(s["balanced"], true);
    assert_eq!(counts_of(&s["quarantined_by_reason"]), counts_of(&g["invalid_by_kind"]));
    assert_eq!(s["rows_written"], s["valid"], "no repeated ids in generated data");
    assert_eq!(s["files_written"], s["partitions_written"], "one file per partition");

    // Lossless: every valid input event reads back equal.
    let want = valid_events(&input);
    let back = cat(lake);
    assert_eq!(back.len(), want.len());
    for ev in &back {
        let id = ev["data"]["id"].as_str().expect("id");
        let w = want.get(id).unwrap_or_else(|| panic!("unknown id {id}"));
        assert!(event_lake::shred::json_equal(w, ev), "event {id} changed:\nin:  {w}\nout: {ev}");
    }

    // DuckDB discovers the hive partitions and counts the same per type and hour.
    let mut expected: BTreeMap<(String, String, i64), u64> = BTreeMap::new();
    for ev in want.values() {
        let ms = ev["meta"]["created_at"].as_i64().expect("ms");
        let dt = chrono::DateTime::from_timestamp_millis(ms).expect("time");
        let key = (ev["data"]["type"].as_str().expect("type").to_owned(), dt.format("%Y-%m-%d").to_string(), i64::from(chrono::Timelike::hour(&dt)));
        *expected.entry(key).or_default() += 1;
    }
    let sql = format!(
        "SELECT type, CAST(date AS VARCHAR), CAST(hour AS BIGINT), count(*) FROM read_parquet('{lake}/events/*/*/*/*.parquet', hive_partitioning=true, union_by_name=true) GROUP BY ALL ORDER BY ALL"
    );
    let rows = duckdb(&sql);
    let got: BTreeMap<(String, String, i64), u64> = rows
        .iter()
        .map(|r| ((r[0].as_str().expect("type").to_owned(), r[1].as_str().expect("date").to_owned(), r[2].as_i64().expect("hour")), r[3].as_u64().expect("count")))
        .collect();
    assert_eq!(got, expected);

    // The quarantine keeps each bad line with its reason and where it came from.
    let q = duckdb(&format!(
        "SELECT reason, count(*), min(line) > 0, bool_and(source LIKE '%events.ndjson') FROM read_parquet('{lake}/quarantine/*/*/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY ALL"
    ));
    let by_reason: BTreeMap<String, u64> = q.iter().map(|r| (r[0].as_str().expect("reason").to_owned(), r[1].as_u64().expect("n"))).collect();
    assert_eq!(by_reason, counts_of(&g["invalid_by_kind"]));
    assert!(q.iter().all(|r| r[2] == true && r[3] == true));
}

/// Runs SQL in DuckDB (the tools venv of scripts/services.sh); rows as JSON arrays.
fn duckdb(sql: &str) -> Vec<Vec<Value>> {
    let python = std::env::var("EVENTPLAT_PYTHON")
        .unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh (it installs DuckDB)"));
    let script = "import duckdb, json, sys, datetime\nrows = duckdb.sql(sys.argv[1]).fetchall()\nprint(json.dumps([list(r) for r in rows], default=str))";
    let out = Command::new(python).args(["-c", script, sql]).output().expect("run python");
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("duckdb rows as JSON")
}

#[test]
fn reads_folders_globs_stdin_gz_and_zst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(inputs.join("nested")).expect("mkdir");
    let a = generate(&inputs.join("a.ndjson.gz"), &["--events", "3000", "--seed", "1"]);
    let b = generate(&inputs.join("nested/b.ndjson.zst"), &["--events", "2000", "--seed", "2"]);
    let plain = dir.path().join("c.ndjson");
    let c = generate(&plain, &["--events", "1000", "--seed", "3", "--bad-ratio", "0.1"]);
    let total = |v: &[&Value]| v.iter().map(|g| g["lines"].as_u64().expect("lines")).sum::<u64>();

    let lake1 = dir.path().join("lake1");
    let (s, code) = ingest(lake1.to_str().expect("utf8"), &[inputs.to_str().expect("utf8"), plain.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0);
    assert_eq!(s["lines_read"].as_u64(), Some(total(&[&a, &b, &c])));
    assert_eq!(s["balanced"], true);
    assert_eq!(s["quarantined"], c["invalid"]);

    let lake2 = dir.path().join("lake2");
    let glob = format!("{}/**/*.ndjson.*", inputs.display());
    let (s, _) = ingest(lake2.to_str().expect("utf8"), &[&glob], &[]);
    assert_eq!(s["lines_read"].as_u64(), Some(total(&[&a, &b])));

    let lake3 = dir.path().join("lake3");
    let mut child = eventctl()
        .args(["ingest", "--json", "--lake", lake3.to_str().expect("utf8"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let data = std::fs::read(&plain).expect("read");
    child.stdin.take().expect("stdin").write_all(&data).expect("write stdin");
    let out = ok(child.wait_with_output().expect("wait"));
    let s: Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(s["lines_read"], c["lines"]);
    assert_eq!(s["valid"], c["valid"]);
}

#[test]
fn input_errors_exit_non_zero_and_keep_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    // A missing input is refused before anything is read.
    let out = eventctl().args(["ingest", "--lake", lake, "/nonexistent/file.ndjson"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));

    // A corrupt .gz after a good file: the good file is ingested, the exit code says error.
    let good = dir.path().join("good.ndjson");
    let g = generate(&good, &["--events", "500"]);
    let bad = dir.path().join("bad.ndjson.gz");
    std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage that is not deflate").expect("write");
    let (s, code) = ingest(lake, &[good.to_str().expect("utf8"), bad.to_str().expect("utf8")], &[]);
    assert_eq!(code, 2);
    assert_eq!(s["valid"], g["valid"]);
    assert_eq!(s["io_errors"].as_array().map(Vec::len), Some(1));
    // Only invalid events: exit code zero.
    let junk = dir.path().join("junk.ndjson");
    std::fs::write(&junk, b"{}\nnot json\n\n").expect("write");
    let (s, code) = ingest(lake, &[junk.to_str().expect("utf8")], &[]);
    assert_eq!((code, s["quarantined"].as_u64()), (0, Some(3)));
}

/// Numbers that no i64 or f64 holds exactly come back from `eventctl cat` with the digits
/// they were sent with (issue 25: they were stored as f64, and cat gave other digits back).
#[test]
fn numbers_keep_every_digit_through_ingest_and_cat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("numbers.ndjson");
    let lines = [
        // Fixes `amount` as a float column, `big` as an integer column.
        r#"{"data":{"id":"n1","type":"payment","attributes":{"amount":12.5,"big":1,"ratio":0.1}},"meta":{"created_at":1764547200000}}"#,
        // The same fields with values their columns cannot hold exactly, and a list and a struct holding some.
        r#"{"data":{"id":"n2","type":"payment","attributes":{"amount":3.14159265358979323846264338327950288,"big":123456789012345678901234567890,"ratio":0.1,"ledger":[1,18446744073709551615,1e-400],"nested":{"x":99999999999999999999999.000001,"y":2}}},"meta":{"created_at":1764547200001,"seq":-98765432109876543210}}"#,
        // A field whose first value is such a number.
        r#"{"data":{"id":"n3","type":"payment","attributes":{"fresh":1.00000000000000000000001}},"meta":{"created_at":1764547200002}}"#,
    ];
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let (s, code) = ingest(lake, &[input.to_str().expect("utf8")], &[]);
    assert_eq!((code, s["valid"].as_u64()), (0, Some(3)), "{s}");
    let out = ok(eventctl().args(["cat", "--lake", lake]).output().expect("run cat"));
    let text = String::from_utf8(out.stdout).expect("utf8");
    let line = |id: &str| text.lines().find(|l| l.contains(&format!(r#""id":"{id}""#))).unwrap_or_else(|| panic!("{id} in {text}")).to_owned();
    let n2 = line("n2");
    for exact in [
        r#""amount":3.14159265358979323846264338327950288"#,
        r#""big":123456789012345678901234567890"#,
        r#""ledger":[1,18446744073709551615,1e-400]"#,
        r#""x":99999999999999999999999.000001"#,
        r#""seq":-98765432109876543210"#,
    ] {
        assert!(n2.contains(exact), "{exact} in {n2}");
    }
    assert!(line("n3").contains(r#""fresh":1.00000000000000000000001"#), "{}", line("n3"));
    // The exact values were typed where they could be.
    let n1 = line("n1");
    assert!(n1.contains(r#""amount":12.5"#) && n1.contains(r#""big":1,"#), "{n1}");
}

#[test]
fn oversized_lines_are_quarantined_without_holding_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("big.ndjson");
    let mut f = std::fs::File::create(&input).expect("create");
    writeln!(f, r#"{{"data":{{"id":"ok1","type":"t","attributes":{{}}}},"meta":{{"created_at":1}}}}"#).expect("write");
    let huge = format!(r#"{{"data":{{"id":"big","type":"t","attributes":{{"x":"{}"}}}},"meta":{{"created_at":1}}}}"#, "y".repeat(5 << 20));
    writeln!(f, "{huge}").expect("write");
    writeln!(f, r#"{{"data":{{"id":"ok2","type":"t","attributes":{{}}}},"meta":{{"created_at":1}}}}"#).expect("write");
    drop(f);
    let lake = dir.path().join("lake");
    let (s, code) = ingest(lake.to_str().expect("utf8"), &[input.to_str().expect("utf8")], &["--max-event-size", "1MiB"]);
    assert_eq!(code, 0);
    assert_eq!((s["lines_read"].as_u64(), s["valid"].as_u64(), s["quarantined"].as_u64()), (Some(3), Some(2), Some(1)));
    assert_eq!(s["quarantined_by_reason"]["too_large"], 1);
    let q = duckdb(&format!(
        "SELECT line, raw_len, octet_length(raw) FROM read_parquet('{}/quarantine/*/*/*.parquet')",
        lake.display()
    ));
    assert_eq!(q[0][0], 2);
    assert_eq!(q[0][1].as_u64(), Some(huge.len() as u64));
    assert_eq!(q[0][2].as_u64(), Some(1 << 20), "the head of the line is kept, up to the limit");
}

#[test]
fn a_small_memory_budget_still_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.ndjson");
    // One day of partitions (40 types x 24 hours), as the budget below is sized for.
    generate(&input, &["--events", "30000", "--types", "40", "--size", "2KiB", "--start", "2026-11-23T00:00:00Z", "--hours", "24"]);
    let input = input.to_str().expect("utf8");
    let spill = dir.path().join("spill");
    let spill_arg = spill.to_str().expect("utf8");
    let mut runs = Vec::new();
    for (name, extra) in [("spill", vec!["--memory", "64MiB", "--spill-dir", spill_arg]), ("no-spill", vec!["--memory", "64MiB", "--no-spill"])] {
        let lake = dir.path().join(format!("lake-{name}"));
        let lake = lake.to_str().expect("utf8");
        let (s, code) = ingest(lake, &[input], &extra);
        assert_eq!(code, 0, "{name}: {s}");
        assert_eq!(s["rows_written"], s["valid"], "{name}");
        assert_eq!(s["balanced"], true, "{name}");
        assert_eq!(s["sources"], 1, "{name}");
        let events: HashMap<String, Value> =
            cat(lake).into_iter().map(|e| (e["data"]["id"].as_str().expect("id").to_owned(), e)).collect();
        assert_eq!(events.len() as u64, s["valid"].as_u64().expect("valid"), "{name}");
        runs.push((s, events));
    }
    let (spilled, unspilled) = (&runs[0], &runs[1]);
    // 60 MB of events against 16 MiB of buffer pressure: most of it waited on disk, in files
    // that were unlinked at once, and every partition still became one file.
    assert!(spilled.0["bytes_spilled"].as_u64().expect("bytes_spilled") > 20_000_000, "{}", spilled.0);
    assert_eq!(spilled.0["files_written"], spilled.0["partitions_written"]);
    assert_eq!(std::fs::read_dir(&spill).expect("spill folder").count(), 0, "spill files are unlinked");
    // Without a spill folder the buffers compress instead; the lake holds the same events.
    assert_eq!(unspilled.0["bytes_spilled"], 0);
    // (Numbers compare by value: which file of a type comes first decides whether a field
    // is an integer or a float column.)
    for (id, ev) in &spilled.1 {
        let other = unspilled.1.get(id).unwrap_or_else(|| panic!("{id} only in the spilled run"));
        assert!(event_lake::shred::json_equal(ev, other), "{id} differs:\n{ev}\n{other}");
    }
}

#[test]
fn ingest_and_compact_on_s3() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh"));
    let bucket = format!("cli-{}", std::process::id());
    assert!(Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]).status().expect("curl").success());
    let lake = format!("s3://{bucket}/prod");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("e.ndjson");
    generate(&input, &["--events", "3000", "--types", "10", "--hours", "2", "--start", "2025-01-01T00:00:00Z"]);
    // The same file again is a no-op (the load history knows its content); with --force it
    // is loaded again and repeats every event in new files.
    let (s1, _) = ingest(&lake, &[input.to_str().expect("utf8")], &[]);
    let (again, code) = ingest(&lake, &[input.to_str().expect("utf8")], &[]);
    assert_eq!((again["already_loaded"].as_bool(), code), (Some(true), 0), "{again}");
    assert_eq!(cat(&lake).len() as u64, s1["valid"].as_u64().expect("n"));
    let (s2, _) = ingest(&lake, &[input.to_str().expect("utf8")], &["--force"]);
    assert_eq!(s1["valid"], s2["valid"]);
    let out = ok(eventctl().args(["compact", "--json", "--lake", &lake]).output().expect("compact"));
    let r: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(r["duplicates_dropped"], s1["valid"]);
    let back = cat(&lake);
    assert_eq!(back.len() as u64, s1["valid"].as_u64().expect("n"));
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `eventctl dev`: POST to its gateway, the events and the quarantined lines are in the lake
/// within a few seconds; Ctrl-C flushes and exits 0.
#[test]
fn dev_serves_the_gateway_and_lands_events_in_the_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let child = eventctl()
        .args(["dev", "--lake", lake.to_str().expect("utf8"), "--listen", &format!("127.0.0.1:{port}"), "--api-key", "k", "--max-age-secs", "1"])
        // The other services on free ports: nothing else on the machine is in the way.
        .args(["--timeline-listen", "127.0.0.1:0", "--stats-listen", "127.0.0.1:0"])
        .args(["--features-listen", "127.0.0.1:0", "--features-grpc-listen", "127.0.0.1:0"])
        // Its SQLite files (./dev-data by default) go to the temporary folder, not the source tree.
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start eventctl dev");
    // Killed if the test fails, so that it never outlives the test.
    let mut child = KillOnDrop(child);
    let mut up = false;
    // Up to 30 s: the test suite runs binaries in parallel on two cores.
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "eventctl dev did not listen");
    let input = dir.path().join("e.ndjson");
    let g = generate(&input, &["--events", "2000", "--bad-ratio", "0.05"]);
    let out = Command::new("curl")
        .args(["-sf", "-H", "Authorization: Bearer k", "-H", "Content-Type: application/x-ndjson", "--data-binary"])
        .arg(format!("@{}", input.display()))
        .arg(format!("http://127.0.0.1:{port}/v1/events"))
        .output()
        .expect("curl");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("202 body");
    assert_eq!(answer["accepted"], g["valid"]);
    // Every rejection counted; the first 100 listed in full.
    assert_eq!(answer["rejected_total"], g["invalid"]);
    assert_eq!(answer["rejected"].as_array().map(|a| a.len() as u64), g["invalid"].as_u64().map(|n| n.min(100)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let want = g["valid"].as_u64().expect("valid") as usize;
    while cat(lake.to_str().expect("utf8")).len() < want {
        assert!(std::time::Instant::now() < deadline, "events did not reach the lake");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // Ctrl-C: flush (the quarantine too) and exit cleanly.
    assert!(Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().expect("kill").success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "{status}");
    let q = duckdb(&format!("SELECT count(*), min(source) FROM read_parquet('{}/quarantine/*/*/*.parquet')", lake.display()));
    assert_eq!(q[0][0], g["invalid"]);
    assert_eq!(q[0][1], "gateway");
}

/// Without `--start`, `eventctl gen` writes events of the last `--hours` (6) hours, so what a
/// newcomer sends to `eventctl dev` shows in the statistics (last days) and the feature
/// windows (last hour, day, week) instead of zeros.
#[test]
fn gen_defaults_to_the_last_hours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("recent.ndjson");
    let before = chrono_now_ms();
    generate(&path, &["--events", "500", "--types", "8"]);
    let after = chrono_now_ms();
    let text = std::fs::read_to_string(&path).expect("read");
    let times: Vec<i64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["meta"]["created_at"].as_i64().expect("created_at"))
        .collect();
    assert_eq!(times.len(), 500);
    assert!(times.iter().all(|&t| t >= before - 6 * 3_600_000 && t < after), "{:?}", (times.iter().min(), times.iter().max()));
    assert!(times.iter().any(|&t| t >= after - 3_600_000), "some events within the last hour");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `eventctl --help`, and `--help` of the subcommand that serves (`dev`), answer at once:
/// nothing is bound (the gateway's address is held here, so serving would fail) and nothing
/// is started.
#[test]
fn help_answers_without_serving() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = held.local_addr().expect("addr").to_string();
    let exe = env!("CARGO_BIN_EXE_eventctl");
    let quick = std::time::Duration::from_secs(10);
    let env = [("EVENTCTL_LISTEN", listen.as_str())];
    let help = service_kit::cli::answer_of(exe, &["--help"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    for sub in ["dev", "ingest", "gen", "query", "replay"] {
        assert!(help.contains(sub), "--help lists {sub}:\n{help}");
    }
    let dev = service_kit::cli::answer_of(exe, &["dev", "--help"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    assert!(dev.contains("--drain-timeout-secs"), "{dev}");
    let version = service_kit::cli::answer_of(exe, &["--version"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    assert!(version.starts_with("eventctl "), "{version}");
}
