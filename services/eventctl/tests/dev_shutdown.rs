//! `eventctl dev` loses nothing on Ctrl-C: 20,000 events answered 202 and followed at once by
//! SIGINT are all in the lake and in the timeline's SQLite once the process exited with 0
//! (the partitions' max age is 5 minutes, so every row was written by the shutdown drain).
//! Started again on the same lake, its features API serves the windows of those events
//! (rebuilt from the lake before it answers).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use event_lake::{Lake, WriteOptions};

const EVENTS: usize = 20_000;
const PER_REQUEST: usize = 5_000;

/// The dev process, killed if the test fails.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn body(from: usize, now_ms: i64) -> String {
    (from..from + PER_REQUEST)
        .map(|i| {
            let t = ["product_viewed", "product_liked", "conversation_started"][i % 3];
            serde_json::json!({"data": {"id": format!("dev-{i}"), "type": t, "attributes": {"user_id": format!("u{}", i % 97), "product_id": format!("p{}", i % 50), "n": i}},
                               "meta": {"created_at": now_ms - (i as i64 % 3600) * 1000}})
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn ctrl_c_right_after_the_last_202_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let timeline_db = dir.path().join("dev-data/timeline.db");
    let (mut dev, mut lines) = start_dev(dir.path(), &lake_dir, &timeline_db);
    let gateway = address(&mut lines, "gateway");
    // The rest of stdout (the summary) is read on a thread, so the process never blocks on it.
    let printed = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let now_ms = chrono::Utc::now().timestamp_millis();
    rt.block_on(async {
        let client = reqwest::Client::new();
        for from in (0..EVENTS).step_by(PER_REQUEST) {
            let resp = client
                .post(&gateway)
                .header("Authorization", "Bearer k")
                .header("Content-Type", "application/x-ndjson")
                .body(body(from, now_ms))
                .send()
                .await
                .expect("post");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            assert_eq!(status, 202, "{text}");
            assert!(text.contains(&format!("\"accepted\":{PER_REQUEST}")), "{text}");
        }
    });
    // Ctrl-C right after the last 202.
    let status = interrupt(&mut dev);
    let printed = printed.join().expect("stdout thread");
    assert!(status.success(), "eventctl dev exited with {status}: {printed:?}");
    assert!(printed.iter().any(|l| l.contains(&format!("{EVENTS} rows"))), "{printed:?}");

    rt.block_on(async {
        let lake = Lake::open(lake_dir.to_str().expect("utf8"), WriteOptions::default()).expect("lake");
        let mut ids = BTreeSet::new();
        let mut rows = 0;
        for f in lake.list_data_files(None).await.expect("list") {
            let events = lake.read_events(&f).await.expect("read");
            rows += events.len();
            ids.extend(events.iter().filter_map(|e| e["data"]["id"].as_str().map(str::to_owned)));
        }
        assert_eq!(ids.len(), EVENTS, "distinct ids in the lake");
        assert_eq!(rows, EVENTS, "rows in the lake");

        let url = format!("sqlite://{}?mode=ro", timeline_db.display());
        let pool = sqlx::SqlitePool::connect(&url).await.expect("timeline db");
        let items: i64 = sqlx::query_scalar::<sqlx::Sqlite, i64>("SELECT count(*) FROM timeline_items").fetch_one(&pool).await.expect("count");
        assert_eq!(items, EVENTS as i64, "items in the timeline");
    });

    // Started again on the same lake: the features API serves the windows of the events
    // posted before (the in-memory windows are rebuilt from the lake before it answers).
    let (mut dev, mut lines) = start_dev(dir.path(), &lake_dir, &timeline_db);
    let features = address(&mut lines, "features");
    let _rest = std::thread::spawn(move || lines.map_while(Result::ok).count());
    rt.block_on(async {
        let ids: Vec<String> = (0..50).map(|p| format!("p{p}")).collect();
        let r: serde_json::Value = reqwest::Client::new()
            .post(&features)
            .bearer_auth("k")
            .json(&serde_json::json!({ "product_ids": ids }))
            .send()
            .await
            .expect("features")
            .json()
            .await
            .expect("json");
        let total = |col: usize| r["products"].as_array().expect("products").iter().map(|p| p["values"][col].as_i64().expect("value")).sum::<i64>();
        // impressions_7d (product_viewed), likes_7d (product_liked), conversations_7d.
        let n = |k: usize| (0..EVENTS).filter(|i| i % 3 == k).count() as i64;
        assert_eq!((total(2), total(5), total(8)), (n(0), n(1), n(2)), "{r}");
    });
    assert!(interrupt(&mut dev).success());
}

/// Starts `eventctl dev` on `lake` with every server on a free port; its stdout lines.
fn start_dev(dir: &std::path::Path, lake_dir: &std::path::Path, timeline_db: &std::path::Path) -> (Dev, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventctl"))
        .arg("dev")
        .arg("--lake")
        .arg(lake_dir)
        .args(["--listen", "127.0.0.1:0", "--api-key", "k", "--max-age-secs", "300"])
        .args(["--timeline-listen", "127.0.0.1:0", "--stats-listen", "127.0.0.1:0"])
        .args(["--features-listen", "127.0.0.1:0", "--features-grpc-listen", "127.0.0.1:0"])
        .arg("--timeline-db")
        .arg(timeline_db)
        .arg("--stats-db")
        .arg(dir.join("dev-data/stats.db"))
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("EVENTCTL_LAKE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start eventctl dev");
    let stdout = child.stdout.take().expect("stdout");
    (Dev(child), BufReader::new(stdout).lines())
}

/// The first URL on the line of `eventctl dev`'s banner that starts with `name`.
fn address(lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>, name: &str) -> String {
    loop {
        let line = lines.next().expect("eventctl dev printed its addresses").expect("line");
        if let Some(rest) = line.trim_start().strip_prefix(name) {
            return rest.split_whitespace().next().expect("url").to_owned();
        }
    }
}

/// Ctrl-C, and the exit status (within 3 minutes).
fn interrupt(dev: &mut Dev) -> std::process::ExitStatus {
    let pid = dev.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = dev.0.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "eventctl dev did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    }
}
