//! `eventctl timeline backfill`: the lake's per-user history table, read back by an
//! independent reader (Python `deltalake`):
//! - every event is in the history of each user it names (a sale in the buyer's and the
//!   seller's), once; events without a user are in none; user keys with quotes, slashes,
//!   spaces and non-ASCII bytes round-trip; each row's event equals what `eventctl cat`
//!   prints;
//! - rows sit in the partition (month, bucket) of their event time and user, sorted by
//!   (user, created_at, id) within each file;
//! - the build is incremental (new ingests, late events for old hours, after a compaction
//!   whose rewritten files are not taken again), and two builds running at once write every
//!   row once.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{eventctl, ok};
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;

fn users() -> Vec<&'static str> {
    vec!["u1", "u2", "quote\"d", "a/b/c", "émile ☃", "with space", "u-3"]
}

/// Events over three months: views by one user, sales by a buyer and a seller, and events
/// with no user.
fn events(from: usize, n: usize, end: i64) -> Vec<Value> {
    let us = users();
    (from..from + n)
        .map(|i| {
            let t = end - (i as i64 * 7_919_000) % (90 * DAY);
            let (ty, attributes) = match i % 4 {
                0 | 1 => ("product_viewed", json!({"user_id": us[i % us.len()], "product_id": format!("p{}", i % 5)})),
                2 => ("product_sold", json!({"user_id": us[i % us.len()], "owner_id": us[(i + 3) % us.len()], "price": 12.5})),
                _ => ("system_tick", json!({"n": i})),
            };
            json!({"data": {"id": format!("h{i}"), "type": ty, "attributes": attributes}, "meta": {"created_at": t}})
        })
        .collect()
}

fn ingest(lake: &str, dir: &std::path::Path, name: &str, evs: &[Value]) {
    let file = dir.join(name);
    std::fs::write(&file, evs.iter().map(|e| format!("{e}\n")).collect::<String>()).unwrap();
    ok(eventctl().args(["ingest", "--lake", lake, file.to_str().unwrap()]).output().expect("ingest"));
}

/// The history table through delta-rs: per user, the (id, created_at, type, event) rows; and
/// whether every file is sorted and in its partition.
fn read_history(lake: &str) -> Value {
    let python = std::env::var("EVENTPLAT_PYTHON").unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh"));
    let script = r#"
import json, os, sys
import pyarrow.parquet as pq
from deltalake import DeltaTable
root = os.path.join(sys.argv[1], "history")
dt = DeltaTable(root)
users = {}
problems = []
def fnv(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001b3) % (1 << 64)
    return h % 64
for f in dt.file_uris():
    t = pq.read_table(f)
    rows = list(zip(t.column("user").to_pylist(), t.column("created_at").to_pylist(), t.column("id").to_pylist()))
    if rows != sorted(rows):
        problems.append("unsorted " + f)
    part = dict(p.split("=", 1) for p in f.split("/") if "=" in p)
    for u, c, i in rows:
        if fnv(u) != int(part["bucket"]):
            problems.append("bucket of %r in %s" % (u, f))
    md = pq.ParquetFile(f).metadata
    if md.row_group(0).column(0).statistics is None:
        problems.append("no statistics " + f)
table = dt.to_pyarrow_table()
for u, c, i, ty, ev, m in zip(*(table.column(k).to_pylist() for k in ["user", "created_at", "id", "type", "event", "month"])):
    import datetime
    if datetime.datetime.utcfromtimestamp(c / 1000).strftime("%Y-%m") != m:
        problems.append("month of %s" % i)
    users.setdefault(u, []).append([i, c, ty, ev])
print(json.dumps({"users": users, "problems": problems}))
sys.stdout.flush()
os._exit(0)
"#;
    let out = Command::new(python).args(["-c", script, lake]).output().expect("run python");
    assert!(out.status.success(), "deltalake reader failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("history as JSON")
}

/// Per user, the sorted ids of the events naming them.
fn expected(evs: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in evs {
        let a = &e["data"]["attributes"];
        let mut named: Vec<&str> = Vec::new();
        for k in ["user_id", "owner_id"] {
            if let Some(u) = a[k].as_str()
                && !named.contains(&u)
            {
                named.push(u);
            }
        }
        for u in named {
            out.entry(u.to_owned()).or_default().push(e["data"]["id"].as_str().unwrap().to_owned());
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn got(history: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (u, rows) in history["users"].as_object().unwrap() {
        let mut ids: Vec<String> = rows.as_array().unwrap().iter().map(|r| r[0].as_str().unwrap().to_owned()).collect();
        ids.sort();
        out.insert(u.clone(), ids);
    }
    out
}

/// The timeline's configuration: a sale names its buyer and its seller.
fn config(dir: &std::path::Path) -> String {
    let path = dir.join("timeline.toml");
    std::fs::write(&path, "[user_paths]\nproduct_sold = \"data.attributes.user_id, data.attributes.owner_id\"\n").unwrap();
    path.to_str().unwrap().to_owned()
}

fn backfill(lake: &str, config: &str) -> Value {
    let out = ok(eventctl().args(["timeline", "backfill", "--json", "--lake", lake, "--config", config]).output().expect("backfill"));
    serde_json::from_slice(&out.stdout).expect("report")
}

#[test]
fn the_history_holds_every_event_once_per_user_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().unwrap();
    let end = chrono::Utc::now().timestamp_millis();
    let first = events(0, 600, end);
    ingest(lake, dir.path(), "a.ndjson", &first);
    let config = config(dir.path());
    let report = backfill(lake, &config);
    assert_eq!(report["events"], 600);
    assert_eq!(report["without_user"], 150);
    assert_eq!(report["rows"], 450 + 150, "a sale is in two histories");

    let history = read_history(lake);
    assert_eq!(history["problems"], json!([]), "{}", history["problems"]);
    assert_eq!(got(&history), expected(&first));
    assert!(users().iter().all(|u| history["users"].get(*u).is_some()), "every user key round-trips");
    // Each row's event is what `eventctl cat` prints.
    let cat = ok(eventctl().args(["cat", "--lake", lake]).output().expect("cat"));
    let printed: BTreeMap<String, String> = String::from_utf8(cat.stdout)
        .unwrap()
        .lines()
        .map(|l| (serde_json::from_str::<Value>(l).unwrap()["data"]["id"].as_str().unwrap().to_owned(), l.to_owned()))
        .collect();
    for rows in history["users"].as_object().unwrap().values() {
        for r in rows.as_array().unwrap() {
            assert_eq!(r[3].as_str().unwrap(), printed[r[0].as_str().unwrap()], "payload of {}", r[0]);
        }
    }

    // Nothing new: nothing written.
    assert_eq!(backfill(lake, &config)["commits"], 0);
    // Compaction alone, by shard (an indexed Job); a shard that cannot be is refused.
    let bad = eventctl().args(["timeline", "compact", "--lake", lake, "--shard", "8/8"]).output().expect("compact");
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("need 0 <= I < N <= 64"));
    for index in ["0", "1"] {
        // (As in the indexed Job of k8s/timeline.yaml.)
        let out = ok(eventctl().args(["timeline", "compact", "--json", "--lake", lake, "--shards", "2"]).env("JOB_COMPLETION_INDEX", index).output().expect("compact"));
        let shard = index;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["partitions_seen"].as_u64().unwrap() > 0, "{shard}: {report}");
    }
    assert_eq!(got(&read_history(lake)), expected(&first), "compaction changes no history");

    // More events, some for old hours; a compaction rewrites files (its rows are held
    // already); two builds at once.
    let second = events(600, 300, end - 3 * DAY);
    ingest(lake, dir.path(), "b.ndjson", &second);
    ok(eventctl().args(["compact", "--lake", lake]).output().expect("compact"));
    let third = events(900, 200, end);
    ingest(lake, dir.path(), "c.ndjson", &third);
    let a = eventctl().args(["timeline", "backfill", "--lake", lake, "--config", &config]).spawn().unwrap();
    let b = eventctl().args(["timeline", "backfill", "--lake", lake, "--config", &config]).spawn().unwrap();
    for mut c in [a, b] {
        assert!(c.wait().unwrap().success());
    }
    let all: Vec<Value> = first.iter().chain(&second).chain(&third).cloned().collect();
    let history = read_history(lake);
    assert_eq!(history["problems"], json!([]), "{}", history["problems"]);
    assert_eq!(got(&history), expected(&all), "every event once per user after incremental builds");
}

/// `eventctl dev` builds the history table of its lake on a schedule: events older than the
/// seam (an hour back) are served from it, newer ones from the hot tier, each once. Events
/// ingested with `eventctl ingest` into that lake (and built with `eventctl timeline backfill`)
/// are in the same history.
#[test]
fn dev_moves_old_events_to_the_history_table() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let now = chrono::Utc::now().timestamp_millis();
    let old: Vec<Value> = (0..10)
        .map(|i| json!({"data": {"id": format!("old{i}"), "type": "product_viewed", "attributes": {"user_id": "uz"}}, "meta": {"created_at": now - 40 * DAY - i}}))
        .collect();
    ingest(lake.to_str().unwrap(), dir.path(), "old.ndjson", &old);
    let report = backfill(lake.to_str().unwrap(), &config(dir.path()));
    assert_eq!(report["rows"], 10);
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventctl"))
        .args(["dev", "--lake", dir.path().join("lake").to_str().unwrap(), "--api-key", "k", "--max-age-secs", "1", "--history-every-secs", "1"])
        .args(["--listen", "127.0.0.1:0", "--timeline-listen", "127.0.0.1:0", "--stats-listen", "127.0.0.1:0"])
        .args(["--features-listen", "127.0.0.1:0", "--features-grpc-listen", "127.0.0.1:0"])
        .arg("--timeline-db")
        .arg(dir.path().join("timeline.db"))
        .arg("--stats-db")
        .arg(dir.path().join("stats.db"))
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("eventctl dev");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _dev = Kill(child);
    let mut addr = |name: &str| loop {
        let line = lines.next().expect("banner").expect("line");
        if let Some(rest) = line.trim_start().strip_prefix(name) {
            return rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let gateway = addr("gateway");
    let timeline = addr("timeline").replace("{user_id}", "uz");
    let _drain = std::thread::spawn(move || lines.map_while(Result::ok).count());
    let body: String = (0..40)
        .map(|i| {
            let t = if i % 2 == 0 { now - 2 * 3_600_000 - i } else { now - 60_000 - i };
            json!({"data": {"id": format!("d{i:02}"), "type": "product_viewed", "attributes": {"user_id": "uz"}}, "meta": {"created_at": t}}).to_string() + "\n"
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client.post(&gateway).bearer_auth("k").header("Content-Type", "application/x-ndjson").body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let page: Value = client.get(&timeline).bearer_auth("k").query(&[("limit", "1000")]).send().await.unwrap().json().await.unwrap();
            let events = page["events"].as_array().unwrap();
            let cold = events.iter().filter(|e| e["expires_at"] == 0).count();
            let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
            ids.dedup();
            if events.len() == 50 && ids.len() == 50 && cold == 30 {
                assert!(ids.iter().filter(|i| i.starts_with("old")).count() == 10, "the ingested events too");
                assert!(events.iter().filter(|e| e["expires_at"] == 0).all(|e| e["created_at"].as_i64().unwrap() < now - 3_600_000));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the old events did not move to the history table: {page}");
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    });
}
