//! `eventctl replay` on NATS JetStream: a consumer's dead letter is re-published to that
//! consumer only (`replay.<consumer>.<type>`), with the event's bytes as they were, and is
//! gone from the dead letters, so a second run replays nothing.

use std::borrow::Cow;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use event_bus::testing::NatsServer;
use event_bus::{JetStreamBus, JetStreamConfig, OutMessage, Publisher, Subscriber};
use event_contract::Reason;
use event_contract::wire::QuarantineMessage;
use serde_json::Value;

fn replay(url: &str, consumer: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_eventctl"))
        .args(["replay", "--consumer", consumer, "--since", "1h", "--nats-url", url])
        .output()
        .expect("eventctl replay runs");
    assert!(out.status.success(), "eventctl replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_to_its_consumer_once() {
    let nats = NatsServer::start();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("connect");
    let event = Bytes::from_static(br#"{"data":{"id":"e1","type":"product_viewed","attributes":{"owner_id":"u\u0000"}},"meta":{"created_at":1796601600000}}"#);
    // What the consumer runtime publishes when `stats-aggregator` gives up on a message.
    let letter = QuarantineMessage {
        reason: Reason::ConsumerFailed,
        detail: Cow::Borrowed("postgres refused the batch: invalid byte sequence (NUL)"),
        source: Cow::Borrowed("stats-aggregator"),
        index: 7,
        received_at: chrono_now_ms(),
        subject: Some(Cow::Borrowed("raw-event.product_viewed")),
        raw_len: event.len() as u64,
        raw: Cow::Borrowed(&event),
    };
    let msg = OutMessage { subject: "dead-letter.stats-aggregator".into(), id: "dl-stats-aggregator-7".into(), payload: Bytes::from(letter.encode(bus.max_payload())) };
    assert!(bus.publish_batch(vec![msg]).await.iter().all(Result::is_ok));
    let mut to_consumer = bus.subscriber("check", "replay.stats-aggregator.>", Duration::from_secs(30), 100).await.expect("subscriber");
    let mut to_another = bus.subscriber("other", "replay.timeline.>", Duration::from_secs(30), 100).await.expect("subscriber");

    let report = replay(&nats.url(), "stats-aggregator");
    assert_eq!((report["found"].as_u64(), report["replayed"].as_u64()), (Some(1), Some(1)), "{report}");
    let got = to_consumer.fetch(10, Duration::from_secs(2)).await.expect("fetch");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].subject, "replay.stats-aggregator.product_viewed");
    assert_eq!(got[0].payload, event, "the event's bytes as they were");
    assert!(to_another.fetch(10, Duration::from_millis(300)).await.expect("fetch").is_empty(), "only that consumer gets it");

    let again = replay(&nats.url(), "stats-aggregator");
    assert_eq!(again["found"].as_u64(), Some(0), "a replayed dead letter is gone: {again}");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
