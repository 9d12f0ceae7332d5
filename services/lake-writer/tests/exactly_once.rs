//! Exactly once, as readers of the lake see it, on a real NATS JetStream: a writer that
//! committed events and crashed before acking them gets them again (redelivered), finds
//! their positions in the table's commits and acks them without writing them twice. The
//! snapshot holds every event once, with no compaction.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::testing::NatsServer;
use event_bus::{Bus, JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use event_lake::{Lake, PartitionKey, Provenance, WriteOptions};
use lake_writer::{LakeWriterConfig, LakeWriterService};
use service_kit::shutdown::Shutdown;

const T0: i64 = 1_763_856_000_000;
const TOTAL: usize = 1000;
const COMMITTED_BEFORE_CRASH: usize = 400;

fn event(i: usize) -> String {
    serde_json::json!({"data": {"id": format!("e{i}"), "type": "product_viewed", "attributes": {"user_id": format!("u{}", i % 7), "n": i}},
                       "meta": {"created_at": T0 + (i as i64 % 7200) * 1000}})
    .to_string()
}

async fn rows_in_lake(lake: &Lake) -> (BTreeSet<String>, usize) {
    let mut ids = BTreeSet::new();
    let mut rows = 0;
    for f in lake.list_data_files(None).await.expect("list") {
        let events = lake.read_events(&f).await.expect("read");
        rows += events.len();
        ids.extend(events.iter().filter_map(|e| e["data"]["id"].as_str().map(str::to_owned)));
    }
    (ids, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_before_a_crash_are_not_written_again_when_redelivered() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_url = dir.path().to_str().expect("utf8").to_owned();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");
    let mut config = LakeWriterConfig { lake: lake_url.clone(), max_age_secs: 1, memory_bytes: 64 << 20, ..LakeWriterConfig::default() };
    config.events.ack_wait_secs = 30;
    config.events.retry_max_ms = 500;

    // The consumer exists before the events are published (the service creates it the same way).
    let mut first = bus.subscribe(&config.events_spec()).await.expect("subscribe");
    let msgs: Vec<OutMessage> = (0..TOTAL)
        .map(|i| OutMessage::event("product_viewed", &format!("e{i}"), event(i).into_bytes().into()))
        .collect();
    for r in bus.publish_batch(msgs).await {
        r.expect("published");
    }

    // A first writer takes 400 events, commits them (with their positions, as the service
    // does) and dies before acking: the bus redelivers them.
    let mut taken = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while taken.len() < COMMITTED_BEFORE_CRASH {
        let want = COMMITTED_BEFORE_CRASH - taken.len();
        taken.extend(first.fetch(want, Duration::from_millis(500)).await.expect("fetch"));
        assert!(Instant::now() < deadline, "fetched only {}", taken.len());
    }
    let lake = Lake::open(&lake_url, WriteOptions::default()).expect("lake");
    let mut partitions: BTreeMap<PartitionKey, (Vec<bytes::Bytes>, Vec<u64>)> = BTreeMap::new();
    for d in &taken {
        let v: serde_json::Value = serde_json::from_slice(&d.payload).expect("json");
        let key = PartitionKey::of(Arc::from("product_viewed"), v["meta"]["created_at"].as_i64().expect("ts"));
        let entry = partitions.entry(key).or_default();
        entry.0.push(d.payload.clone());
        entry.1.push(d.seq);
    }
    for (key, (lines, positions)) in &partitions {
        let provenance = Provenance { source: &config.events.durable, positions };
        lake.write_events_from(key, lines.iter().map(|b| &b[..]), Some(provenance)).await.expect("commit");
    }
    for d in taken {
        d.nak().await.expect("nak");
    }
    drop(first);
    assert_eq!(rows_in_lake(&lake).await.1, COMMITTED_BEFORE_CRASH);

    // The restarted writer gets everything; the redelivered 400 are found in the table.
    let service = LakeWriterService::build(&config, Arc::new(bus.clone())).await.expect("build");
    let counters = service.counters();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let running = service.start(None, Shutdown::on(rx));
    let want: BTreeSet<String> = (0..TOTAL).map(|i| format!("e{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = counters.stats();
        if stats.committed as usize >= TOTAL {
            break;
        }
        assert!(Instant::now() < deadline, "only {stats:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = tx.send(true);
    let _ = running.events.await;
    let (ids, rows) = rows_in_lake(&lake).await;
    assert_eq!(ids, want);
    assert_eq!(rows, TOTAL, "the snapshot holds repeats of the redelivered events");
    assert_eq!(counters.stats().repeats_skipped, COMMITTED_BEFORE_CRASH as u64);
}
