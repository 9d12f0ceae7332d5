//! `eventctl ingest` commits through the tables' Delta logs: a re-run on the same content is a
//! no-op, `--force` loads it again, and an independent Delta reader (PyPI `deltalake`) reads
//! every table with the counts per type and hour that the ingest summary reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn eventctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventctl"));
    c.env("RUST_LOG", "warn");
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "eventctl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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
    generate(&input, &["--events", "3000", "--types", "8", "--hours", "3", "--seed", "11"]);
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
    assert_eq!(cat_count(lake), valid);

    // The same content again: nothing read or committed, exit 0, and the summary says so.
    let (second, code) = ingest(lake, &[input], &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(second["already_loaded"], true, "{second}");
    assert_eq!(second["load_id"], first["load_id"]);
    assert_eq!(second["rows_written"], 0);
    assert_eq!(cat_count(lake), valid, "no event loaded twice");
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

    let python = std::env::var("EVENTPLAT_PYTHON")
        .unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh (it installs deltalake)"));
    // Every table under events/, read through its log by delta-rs (Python), counted by
    // partition values; full rows are read so the data files must decode with the table schema.
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
"#;
    let out = Command::new(python).args(["-c", script, lake]).output().expect("run python");
    assert!(out.status.success(), "deltalake reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("counts as JSON");
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
    assert_eq!(types.len(), 1, "{a}");
    let sql = format!("SELECT count(*) AS n FROM \"{}\"", types[0]);
    let log = Path::new(lake).join(format!("events/type={}/_delta_log", types[0]));
    let newest_version = || std::fs::read_dir(&log).expect("log").filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))).count() - 1;
    let first_version = newest_version();
    let after_first = query_count(lake, &sql, &[]).expect("count");
    assert_eq!(after_first, a["rows_written"].as_u64().expect("rows"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (b, code) = ingest(lake, &[second.to_str().expect("utf8")], &[]);
    assert_eq!(code, 0, "{b}");
    let now = query_count(lake, &sql, &[]).expect("count");
    assert_eq!(now, after_first + b["rows_written"].as_u64().expect("rows"));

    assert!(newest_version() > first_version);
    // Version 0 is the table's creation (its schema): empty.
    assert_eq!(query_count(lake, &sql, &["--as-of", "0"]), Ok(0));
    assert_eq!(query_count(lake, &sql, &["--as-of", &first_version.to_string()]), Ok(after_first));
    assert_eq!(query_count(lake, &sql, &["--as-of", &between]), Ok(after_first));
    assert_eq!(query_count(lake, &sql, &["--as-of", "2001-01-01"]), Ok(0), "before the table existed");
    let err = query_count(lake, &sql, &["--as-of", "999"]).expect_err("no such version");
    assert!(err.contains("no version 999"), "{err}");
    let err = query_count(lake, &sql, &["--as-of", "yesterday"]).expect_err("not a version or time");
    assert!(err.contains("neither a table version"), "{err}");
}
