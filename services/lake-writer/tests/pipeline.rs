//! The pipeline on a real NATS JetStream: events POSTed to the gateway end up in the lake
//! through the lake writer binary, across a `kill -9` of the writer mid-stream and a restart
//! (every acked event is in the table's snapshot exactly once, before any compaction), and a
//! SIGTERM flushes and acks before exit; another consumer's dead letter is kept in the lake's
//! quarantine.

mod common;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::testing::NatsServer;
use common::quarantine_rows;
use event_bus::{JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use event_contract::wire::QuarantineMessage;
use event_contract::{Limits, Reason};
use event_lake::compact::CompactOptions;
use event_lake::{Lake, WriteOptions};
use gateway::auth::{ApiKeys, hash_key};
use gateway::{AppState, router};
use serde_json::json;

const T0: i64 = 1_763_856_000_000;

/// The lake writer process, killed if the test fails.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn writer(nats: &NatsServer, lake: &str) -> Writer {
    let child = Command::new(env!("CARGO_BIN_EXE_lake-writer"))
        .env("LAKE_WRITER_LAKE", lake)
        .env("LAKE_WRITER_LISTEN", "127.0.0.1:0")
        .env("LAKE_WRITER_BUS__URL", nats.url())
        .env("LAKE_WRITER_MAX_AGE_SECS", "1")
        .env("LAKE_WRITER_EVENTS__ACK_WAIT_SECS", "5")
        .env("LAKE_WRITER_EVENTS__BATCH_MESSAGES", "200")
        .env("LAKE_WRITER_COMPACT_EVERY_SECS", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lake-writer");
    Writer(child)
}

async fn ids_in_lake(lake: &Lake) -> (BTreeSet<String>, usize) {
    let mut ids = BTreeSet::new();
    let mut rows = 0;
    let Ok(files) = lake.list_data_files(None).await else { return (ids, 0) };
    for f in files {
        if let Ok(events) = lake.read_events(&f).await {
            rows += events.len();
            ids.extend(events.iter().filter_map(|e| e["data"]["id"].as_str().map(str::to_owned)));
        }
    }
    (ids, rows)
}

async fn post_batch(base: &str, from: usize, n: usize) {
    let body: String = (from..from + n)
        .map(|i| {
            let t = ["product_viewed", "product_liked", "conversation_started"][i % 3];
            json!({"data": {"id": format!("e{i}"), "type": t, "attributes": {"user_id": format!("u{}", i % 97), "n": i}},
                   "meta": {"created_at": T0 + (i as i64 % 7200) * 1000}})
            .to_string()
                + "\n"
        })
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .header("Authorization", "Bearer k")
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_reach_the_lake_across_a_kill_9_of_the_writer() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_url = dir.path().to_str().expect("utf8").to_owned();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");
    let state = Arc::new(AppState {
        publisher: Arc::new(bus.clone()),
        limits: Limits::default(),
        keys: ApiKeys::new(&[hash_key("k")], &[]),
        max_body_bytes: 10 << 20,
        retry_after_secs: 1,
        in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
        protection: gateway::api::Protection::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    let lake = Lake::open(&lake_url, WriteOptions::default()).expect("lake");

    let mut child = writer(&nats, &lake_url);
    let total = 12_000;
    let batch = 1000;
    let mut sent = 0;
    // Stream events in; kill -9 the writer once some of them are in the lake.
    let started = Instant::now();
    loop {
        post_batch(&base, sent, batch).await;
        sent += batch;
        let (_, rows) = ids_in_lake(&lake).await;
        if rows > 0 || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.0.kill().expect("kill -9");
    let _ = child.0.wait();
    while sent < total {
        post_batch(&base, sent, batch).await;
        sent += batch;
    }

    let mut child = writer(&nats, &lake_url);
    let deadline = Instant::now() + Duration::from_secs(180);
    let want: BTreeSet<String> = (0..total).map(|i| format!("e{i}")).collect();
    loop {
        let (ids, _) = ids_in_lake(&lake).await;
        if ids == want {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {total} ids in the lake", ids.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Another consumer's dead letter: kept in the lake's quarantine (written at the latest on
    // SIGTERM) with its reason, consumer and error.
    let letter = QuarantineMessage {
        reason: Reason::ConsumerFailed,
        detail: Cow::Borrowed("the store refused the item"),
        source: Cow::Borrowed("timeline"),
        index: 7,
        received_at: T0,
        subject: Some(Cow::Borrowed("raw-event.product_viewed")),
        raw_len: 2,
        raw: Cow::Borrowed(b"{}"),
    };
    let published = bus
        .publish_batch(vec![OutMessage { subject: "dead-letter.timeline".into(), id: "dl-timeline-7".into(), payload: letter.encode(1 << 20).into() }])
        .await;
    assert!(published.iter().all(Result::is_ok), "{published:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGTERM: flushes, acks and exits cleanly.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "lake-writer exited with {status}");
    let rows = quarantine_rows(dir.path());
    assert!(rows.iter().any(|r| r.0 == "consumer_failed" && r.2 == "timeline" && r.1.contains("refused") && r.3 == b"{}"), "{rows:?}");

    // Exactly once in the snapshot: files written but not committed at the kill are not in
    // the log, and redelivered events already committed were not written again.
    let (ids, rows) = ids_in_lake(&lake).await;
    assert_eq!(ids, want);
    assert_eq!(rows, total, "repeats in the snapshot after the crash");
    // Compaction of the (closed) partitions keeps them.
    let report = lake.compact(&CompactOptions::default(), T0 + 10 * 3_600_000).await.expect("compact");
    let (ids, rows) = ids_in_lake(&lake).await;
    assert_eq!(ids, want);
    assert_eq!(rows, total, "{report:?}");
}
