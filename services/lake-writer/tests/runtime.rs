//! The lake writer's consumers on the shared runtime, on the in-process bus: what the lake can
//! never store does not stall the events behind it (invalid bytes on an event subject go to
//! the quarantine with their reason, the good events are in the lake within seconds), other
//! consumers' dead letters land in the quarantine with reason `consumer_failed`, the consumer
//! and its error, and a lake that does not take writes is waited for, never dead-lettered.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::{Bus, InProcessBus, OutMessage, Publisher};
use event_contract::Reason;
use event_contract::wire::QuarantineMessage;
use event_lake::{Lake, WriteOptions};
use lake_writer::{LakeWriterConfig, LakeWriterService, Running};
use service_kit::shutdown::Shutdown;

mod common;

use common::quarantine_rows;

const T0: i64 = 1_763_856_000_000;

fn event(i: usize) -> String {
    serde_json::json!({"data": {"id": format!("e{i}"), "type": "product_viewed", "attributes": {"user_id": format!("u{}", i % 7), "n": i}},
                       "meta": {"created_at": T0 + i as i64 * 1000}})
    .to_string()
}

fn msg(subject: &str, id: &str, payload: impl Into<bytes::Bytes>) -> OutMessage {
    OutMessage { subject: subject.into(), id: id.into(), payload: payload.into() }
}

async fn publish(bus: &InProcessBus, msgs: Vec<OutMessage>) {
    for r in bus.publish_batch(msgs).await {
        r.expect("published");
    }
}

fn config(lake: &str) -> LakeWriterConfig {
    let mut c = LakeWriterConfig { lake: lake.to_owned(), max_age_secs: 1, quarantine_max_age_secs: 1, memory_bytes: 64 << 20, ..LakeWriterConfig::default() };
    c.events.ack_wait_secs = 30;
    c.quarantine.ack_wait_secs = 30;
    c.events.retry_max_ms = 500;
    c
}

async fn start(bus: &InProcessBus, lake: &str) -> (Running, tokio::sync::watch::Sender<bool>) {
    let service = LakeWriterService::build(&config(lake), Arc::new(bus.clone())).await.expect("build");
    let (tx, rx) = tokio::sync::watch::channel(false);
    (service.start(None, Shutdown::on(rx)), tx)
}

async fn ids_in_lake(lake: &Lake) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Ok(files) = lake.list_data_files(None).await else { return ids };
    for f in files {
        if let Ok(events) = lake.read_events(&f).await {
            ids.extend(events.iter().filter_map(|e| e["data"]["id"].as_str().map(str::to_owned)));
        }
    }
    ids
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_lake_cannot_store_is_quarantined_and_the_events_behind_it_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf8").to_owned();
    let bus = InProcessBus::new(10_000, 64 << 20);
    let (running, stop) = start(&bus, &root).await;
    let lake = Lake::open(&root, WriteOptions::default()).expect("lake");

    // Bytes that are not an event, and an event without id, on an event subject, ahead of
    // good events; a dead letter of another consumer.
    let mut msgs = vec![msg("raw-event.product_viewed", "bad-1", "this is not json"), msg("raw-event.product_viewed", "bad-2", r#"{"data":{"type":"product_viewed"},"meta":{"created_at":1}}"#)];
    msgs.extend((0..300).map(|i| msg("raw-event.product_viewed", &format!("e{i}"), event(i))));
    let letter = QuarantineMessage {
        reason: Reason::ConsumerFailed,
        detail: Cow::Borrowed("the store refused the item: too large"),
        source: Cow::Borrowed("timeline"),
        index: 42,
        received_at: T0,
        subject: Some(Cow::Borrowed("raw-event.product_viewed")),
        raw_len: 7,
        raw: Cow::Borrowed(b"{\"x\":1}"),
    };
    msgs.push(msg("dead-letter.timeline", "dl-timeline-42", letter.encode(1 << 20)));
    publish(&bus, msgs).await;

    let want: BTreeSet<String> = (0..300).map(|i| format!("e{i}")).collect();
    let started = Instant::now();
    wait_for("the good events in the lake", Duration::from_secs(10), async || ids_in_lake(&lake).await == want).await;
    let took = started.elapsed();
    wait_for("three quarantine records", Duration::from_secs(10), async || quarantine_rows(dir.path()).len() >= 3).await;
    let rows = quarantine_rows(dir.path());
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == "invalid_json" && r.3 == b"this is not json" && r.2 == "bus:raw-event.product_viewed"), "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == "missing_id"), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.0 == "consumer_failed" && r.2 == "timeline" && r.1.contains("too large") && r.3 == b"{\"x\":1}"),
        "the dead letter keeps its reason, consumer, error and bytes: {rows:?}"
    );
    // Everything is settled: nothing is left on the bus, nothing was dead-lettered by the writer.
    wait_for("every message acked", Duration::from_secs(5), async || bus.pending("lake-writer") == Some(0) && bus.pending("lake-writer-quarantine") == Some(0)).await;
    assert!(bus.dead_letters("lake-writer", 0, 10).await.expect("letters").is_empty());

    stop.send(true).expect("stop");
    let report = running.join().await.expect("join");
    assert_eq!(report.writer.invalid, 2);
    assert_eq!(report.writer.rows_written, 300);
    assert_eq!(report.dead_letters, 1);
    eprintln!("good events in the lake {took:?} after the poison was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_that_does_not_take_writes_is_waited_for_never_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf8").to_owned();
    // A file where the events folder goes: every data file write fails.
    let blocker = dir.path().join("events");
    std::fs::write(&blocker, b"not a folder").expect("blocker");
    let bus = InProcessBus::new(10_000, 64 << 20);
    let (running, stop) = start(&bus, &root).await;
    let lake = Lake::open(&root, WriteOptions::default()).expect("lake");
    publish(&bus, (0..200).map(|i| msg("raw-event.product_viewed", &format!("e{i}"), event(i))).collect()).await;

    let counters = running.counters.writer.clone();
    wait_for("write failures", Duration::from_secs(10), async || counters.stats().write_failures >= 2).await;
    assert_eq!(counters.stats().rows_written, 0);
    assert_eq!(bus.pending("lake-writer"), Some(200), "nothing acked while the lake fails");
    assert!(bus.dead_letters("lake-writer", 0, 10).await.expect("letters").is_empty(), "an outage is not poison");

    std::fs::remove_file(&blocker).expect("unblock");
    let want: BTreeSet<String> = (0..200).map(|i| format!("e{i}")).collect();
    wait_for("the events once the lake takes writes", Duration::from_secs(40), async || ids_in_lake(&lake).await == want).await;
    wait_for("every message acked", Duration::from_secs(5), async || bus.pending("lake-writer") == Some(0)).await;
    assert!(bus.dead_letters("lake-writer", 0, 10).await.expect("letters").is_empty());
    stop.send(true).expect("stop");
    let report = running.join().await.expect("join");
    assert_eq!(report.events.dead_lettered, 0);
    assert_eq!(report.writer.rows_written, 200);
}

/// The writer checks events against the limits it is configured with, which are the
/// gateway's (issue 25: it used the contract's defaults, so an event a gateway with larger
/// limits accepted was quarantined by the writer, and one a gateway with tighter bounds
/// refused could still be stored when published by another producer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_checks_events_against_the_gateways_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf8").to_owned();
    let bus = InProcessBus::new(10_000, 64 << 20);
    // A gateway configured for events of up to 2 MiB, created before T0 + 1 h.
    let mut c = config(&root);
    c.max_event_bytes = 2 << 20;
    c.max_created_at = T0 + 3_600_000;
    let service = LakeWriterService::build(&c, Arc::new(bus.clone())).await.expect("build");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let running = service.start(None, Shutdown::on(rx));
    let lake = Lake::open(&root, WriteOptions::default()).expect("lake");

    let big = serde_json::json!({"data": {"id": "big", "type": "product_viewed", "attributes": {"text": "x".repeat(3 << 19)}}, "meta": {"created_at": T0}}).to_string();
    assert!(big.len() > 1 << 20 && big.len() < 2 << 20);
    let late = serde_json::json!({"data": {"id": "late", "type": "product_viewed", "attributes": {}}, "meta": {"created_at": T0 + 7_200_000}}).to_string();
    publish(&bus, vec![msg("raw-event.product_viewed", "big", big), msg("raw-event.product_viewed", "late", late), msg("raw-event.product_viewed", "e1", event(1))]).await;

    let want: BTreeSet<String> = ["big", "e1"].into_iter().map(str::to_owned).collect();
    wait_for("the 1.5 MiB event in the lake", Duration::from_secs(10), async || ids_in_lake(&lake).await == want).await;
    wait_for("one quarantine record", Duration::from_secs(10), async || !quarantine_rows(dir.path()).is_empty()).await;
    let rows = quarantine_rows(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].3.windows(6).any(|w| w == b"\"late\""), "the late event is the one refused: {rows:?}");
    stop.send(true).expect("stop");
    running.join().await.expect("join");
}
