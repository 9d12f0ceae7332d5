//! `eventctl ingest` commits through the tables' Delta logs: a re-run on the same content is a
//! no-op, `--force` loads it again, and an independent Delta reader (PyPI `deltalake`) reads
//! every table with the counts per type and hour that the ingest summary reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;

use common::{eventctl, ok};

fn generate(path: &Path, args: &[&str]) {
    ok(eventctl().args(["gen", "--out", path.to_str().expect("utf8")]).args(args).output().expect("run gen"));
}

fn ingest(lake: &str, inputs: &[&str], extra: &[&str]) -> (Value, i32) {
    let out = eventctl().args(["ingest", "--json", "--lake", lake]).args(extra).args(inputs).output().expect("run ingest");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("ingest --json printed no JSON ({e}):\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (summary, out.status.code().unwrap_or(-1))
}

/// Every table under `events/` and the quarantine, read through their logs by delta-rs
/// (Python `deltalake`), counted by partition values; full rows are read so the data files
/// must decode with the table schema. `{"events": {type: {hour: n}}, "quarantined": n}`.
fn delta_reader_counts(lake: &str) -> Value {
    let python = std::env::var("EVENTPLAT_PYTHON")
        .unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh (it installs deltalake)"));
    let script = r#"
import json, os, sys, collections
from deltalake import DeltaTable
root = os.path.join(sys.argv[1], "events")
out = {}
for d in sorted(os.listdir(root)):
    t = d.split("=", 1)[1]
    table = DeltaTable(os.path.join(root, d)).to_pyarrow_table()
    counts = collections.Counter()
    for date, hour in zip(table.column("date").to_pylist(), table.column("hour").to_pylist()):
        counts["%sT%02d" % (date.isoformat(), hour)] += 1
    assert table.num_rows == len(set(table.column("id").to_pylist())), t
    out[t] = dict(counts)
quarantine = DeltaTable(os.path.join(sys.argv[1], "quarantine")).to_pyarrow_table()
print(json.dumps({"events": out, "quarantined": quarantine.num_rows}))
# Exit without running native destructors: deltalake's runtime threads can make the C++
# runtime abort at interpreter exit ("terminate called without an active exception").
sys.stdout.flush()
os._exit(0)
"#;
    let out = Command::new(python).args(["-c", script, lake]).output().expect("run python");
    assert!(out.status.success(), "deltalake reader failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("counts as JSON")
}

/// Every Parquet file below a local lake (data, quarantine and checkpoints).
fn parquet_files(dir: &Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.insert(p);
        }
    }
    out
}

fn cat_count(lake: &str) -> usize {
    let out = ok(eventctl().args(["cat", "--lake", lake]).output().expect("run cat"));
    out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count()
}

/// Counts per type and `YYYY-MM-DDTHH` as `summary.rows_by_type_hour` has them.
fn summary_counts(s: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    serde_json::from_value(s["rows_by_type_hour"].clone()).expect("rows_by_type_hour")
}

#[test]
fn re_ingesting_the_same_content_is_a_no_op_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.ndjson");
    generate(&input, &["--events", "3000", "--types", "8", "--hours", "3", "--seed", "11", "--bad-ratio", "0.02"]);
    let other = dir.path().join("other.ndjson");
    generate(&other, &["--events", "1000", "--types", "8", "--hours", "3", "--seed", "12"]);
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let input = input.to_str().expect("utf8");

    let (first, code) = ingest(lake, &[input], &[]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["already_loaded"], false);
    assert!(first["load_id"].as_str().is_some_and(|h| h.len() == 64), "{first}");
    assert_eq!(first["tables_committed"].as_u64(), Some(summary_counts(&first).len() as u64));
    assert!(first["tables_committed"].as_u64() > Some(1), "{first}");
    let valid = first["valid"].as_u64().expect("valid") as usize;
    assert!(first["quarantined"].as_u64() > Some(0), "{first}");
    assert_eq!(cat_count(lake), valid);
    // One commit per table: the load's, which also created the table with its schema.
    for t in summary_counts(&first).keys() {
        let log = Path::new(lake).join(format!("events/type={t}/_delta_log"));
        let commits: Vec<String> = std::fs::read_dir(&log)
            .expect("log")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        assert_eq!(commits, ["00000000000000000000.json"], "{t}");
    }
    let files = parquet_files(Path::new(lake));

    // The same content again: nothing committed, exit 0, and the summary says so; what it
    // wrote before the load history answered is deleted (no data file and no quarantine file
    // more than after the first run).
    let (second, code) = ingest(lake, &[input], &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["already_loaded"], true, "{second}");
    assert_eq!(second["load_id"], first["load_id"]);
    assert_eq!(second["rows_written"], 0);
    assert_eq!(cat_count(lake), valid, "no event loaded twice");
    assert_eq!(parquet_files(Path::new(lake)), files, "no file left by the stopped re-run");
    let counts = delta_reader_counts(lake);
    assert_eq!(counts["quarantined"], first["quarantined"], "no line quarantined twice");
    let human = ok(eventctl().args(["ingest", "--lake", lake, input]).output().expect("run ingest"));
    assert!(String::from_utf8_lossy(&human.stdout).contains("already loaded"), "{}", String::from_utf8_lossy(&human.stdout));

    // Other content appends as usual.
    let (third, code) = ingest(lake, &[other.to_str().expect("utf8")], &[]);
    assert_eq!((code, third["already_loaded"].as_bool()), (0, Some(false)), "{third}");
    let other_valid = third["valid"].as_u64().expect("valid") as usize;
    assert_eq!(cat_count(lake), valid + other_valid);

    // --force loads it again.
    let (forced, code) = ingest(lake, &[input], &["--force"]);
    assert_eq!((code, forced["already_loaded"].as_bool()), (0, Some(false)), "{forced}");
    assert_eq!(cat_count(lake), 2 * valid + other_valid);
}

#[test]
fn an_independent_delta_reader_counts_what_the_ingest_summary_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.ndjson");
    generate(&input, &["--events", "8000", "--types", "12", "--hours", "5", "--seed", "5", "--bad-ratio", "0.02"]);
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let (s, code) = ingest(lake, &[input.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{s}");
    let want = summary_counts(&s);
    assert_eq!(want.values().flat_map(|h| h.values()).sum::<u64>(), s["rows_written"].as_u64().expect("rows"));

    let got = delta_reader_counts(lake);
    let events: BTreeMap<String, BTreeMap<String, u64>> = serde_json::from_value(got["events"].clone()).expect("counts");
    assert_eq!(events, want);
    // The quarantine is a Delta table too, holding every rejected line.
    assert_eq!(got["quarantined"], s["quarantined"]);
    assert!(s["quarantined"].as_u64() > Some(0), "{s}");
}

fn query_count(lake: &str, sql: &str, extra: &[&str]) -> Result<u64, String> {
    let out = eventctl().args(["query", "--lake", lake, "--format", "json"]).args(extra).arg(sql).output().expect("run query");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let row: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default()).expect("a JSON row");
    Ok(row["n"].as_u64().expect("n"))
}

#[test]
fn query_as_of_a_version_or_a_time_reads_that_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.ndjson");
    generate(&first, &["--events", "2000", "--types", "1", "--hours", "2", "--seed", "21"]);
    let second = dir.path().join("second.ndjson");
    generate(&second, &["--events", "1500", "--types", "1", "--hours", "2", "--seed", "22"]);
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let (a, code) = ingest(lake, &[first.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{a}");
    let types: Vec<String> = summary_counts(&a).into_keys().collect();
    let sql = format!("SELECT count(*) AS n FROM \"{}\"", types[0]);
    let log = Path::new(lake).join(format!("events/type={}/_delta_log", types[0]));
    let newest_version = || std::fs::read_dir(&log).expect("log").filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))).count() - 1;
    let first_version = newest_version();
    let rows_of = |s: &Value| summary_counts(s).get(&types[0]).map_or(0, |h| h.values().sum::<u64>());
    let after_first = query_count(lake, &sql, &[]).expect("count");
    assert_eq!(after_first, rows_of(&a));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (b, code) = ingest(lake, &[second.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{b}");
    let now = query_count(lake, &sql, &[]).expect("count");
    assert_eq!(now, after_first + rows_of(&b));
    assert!(rows_of(&b) > 0, "{b}");

    assert!(newest_version() > first_version);
    // The first load's one commit created the table with its schema and files: version 0.
    assert_eq!(first_version, 0);
    assert_eq!(query_count(lake, &sql, &["--as-of", "0"]), Ok(after_first));
    assert_eq!(query_count(lake, &sql, &["--as-of", &first_version.to_string()]), Ok(after_first));
    assert_eq!(query_count(lake, &sql, &["--as-of", &between]), Ok(after_first));
    assert_eq!(query_count(lake, &sql, &["--as-of", "2001-01-01"]), Ok(0), "before the table existed");
    let err = query_count(lake, &sql, &["--as-of", "999"]).expect_err("no such version");
    assert!(err.contains("no version 999"), "{err}");
    let err = query_count(lake, &sql, &["--as-of", "yesterday"]).expect_err("not a version or time");
    assert!(err.contains("neither a table version"), "{err}");
}

/// Turns a lake written by this code into the folder layout of before the Delta tables: the
/// same data files, the newest schema of each type as `_schemas/<type>/v<N>.json`, no logs.
fn to_folder_layout(lake: &Path) {
    let events = lake.join("events");
    for entry in std::fs::read_dir(&events).expect("events") {
        let table = entry.expect("entry").path();
        let event_type = table.file_name().expect("name").to_string_lossy().trim_start_matches("type=").to_owned();
        let log = table.join("_delta_log");
        let mut commits: Vec<_> = std::fs::read_dir(&log)
            .expect("log")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        commits.sort();
        let mut schema = None;
        for c in commits {
            for line in std::fs::read_to_string(c).expect("commit").lines() {
                let action: Value = serde_json::from_str(line).expect("action");
                if let Some(s) = action["metaData"]["configuration"]["eventplat.typeSchema"].as_str() {
                    schema = Some(s.to_owned());
                }
            }
        }
        let schema: Value = serde_json::from_str(&schema.expect("a schema in the log")).expect("schema json");
        let version = schema["version"].as_u64().expect("version");
        let dir = lake.join("_schemas").join(&event_type);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("v{version:010}.json")), serde_json::to_vec_pretty(&schema).expect("json")).expect("write schema");
        std::fs::remove_dir_all(log).expect("rm log");
    }
    std::fs::remove_dir_all(lake.join("quarantine/_delta_log")).expect("rm quarantine log");
    let _ = std::fs::remove_dir_all(lake.join("_loads"));
}

fn migrate(lake: &str) -> Value {
    let out = ok(eventctl().args(["lake", "migrate", "--json", "--files-per-commit", "2", "--lake", lake]).output().expect("run migrate"));
    serde_json::from_slice(&out.stdout).expect("report")
}

fn files_added(report: &Value) -> u64 {
    report["tables"].as_object().expect("tables").values().map(|t| t["files_added"].as_u64().expect("n")).sum()
}

#[test]
fn a_lake_in_the_folder_layout_migrates_in_place_idempotently_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.ndjson");
    generate(&input, &["--events", "6000", "--types", "4", "--hours", "3", "--seed", "31", "--bad-ratio", "0.02"]);
    let input2 = dir.path().join("more.ndjson");
    generate(&input2, &["--events", "3000", "--types", "4", "--hours", "3", "--seed", "32"]);
    let lake_path = dir.path().join("lake");
    let lake = lake_path.to_str().expect("utf8");
    // Two loads, so that partitions hold several files.
    let (s, code) = ingest(lake, &[input.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{s}");
    let (s2, code) = ingest(lake, &[input2.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{s2}");
    let before = delta_reader_counts(lake);
    let rows = cat_count(lake);
    to_folder_layout(&lake_path);
    assert!(!lake_path.join("events").read_dir().expect("events").any(|e| e.expect("e").path().join("_delta_log").exists()));

    let report = migrate(lake);
    let added = files_added(&report);
    assert!(added > 8, "{report}");
    assert_eq!(report["tables"]["quarantine"]["files_added"].as_u64().map(|n| n > 0), Some(true), "{report}");
    // The independent reader sees exactly what the tables held before.
    let after = delta_reader_counts(lake);
    assert_eq!(after["events"], before["events"]);
    assert_eq!(after["quarantined"], before["quarantined"]);
    assert_eq!(cat_count(lake), rows);

    // Again: nothing to do.
    let again = migrate(lake);
    assert_eq!(files_added(&again), 0, "{again}");

    // A crash before a table's last commit: the next run commits what that commit held.
    let table = lake_path.join("events").read_dir().expect("events").next().expect("a table").expect("entry").path();
    let log = table.join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log).expect("log").map(|e| e.expect("e").path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    commits.sort();
    let last = commits.last().expect("a commit").clone();
    let lost = std::fs::read_to_string(&last).expect("commit").lines().filter(|l| l.starts_with("{\"add\"")).count() as u64;
    assert!(lost > 0);
    std::fs::remove_file(&last).expect("rm commit");
    let resumed = migrate(lake);
    assert_eq!(files_added(&resumed), lost, "{resumed}");
    let after = delta_reader_counts(lake);
    assert_eq!(after["events"], before["events"]);
    assert_eq!(cat_count(lake), rows);
}
