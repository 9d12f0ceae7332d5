//! End to end on a real NATS JetStream (a private server): events published to the bus, the
//! timeline consumer, the API's pages; the same events published again (a redelivery) leave
//! one item each; the checked-in OpenAPI document is current.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;


use common::{KEY, event, get_with_key, ids, item_options, stats, t0, wait_for};
use event_bus::testing::NatsServer;
use event_bus::{JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use serde_json::Value;
use service_kit::auth::{ApiKeys, hash_key};
use event_bus::consumer::{Consumer, ConsumerConfig};
use timeline::{AppState, PageLimits, SqliteStore, Store, router};

async fn publish(bus: &JetStreamBus, events: &[Value], suffix: &str) {
    let msgs = events
        .iter()
        .map(|e| OutMessage {
            subject: format!("raw-event.{}", e["data"]["type"].as_str().expect("type")),
            id: format!("{}{suffix}", e["data"]["id"].as_str().expect("id")),
            payload: bytes::Bytes::from(e.to_string()),
        })
        .collect();
    for r in bus.publish_batch(msgs).await {
        r.expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_jetstream_reach_the_api_once_each_even_when_published_again() {
    let nats = NatsServer::start();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db").to_str().expect("utf-8")).await.expect("sqlite"));
    let spec = ConsumerConfig { batch_messages: 200, ..ConsumerConfig::named("timeline") }.spec(vec!["raw-event.>".into()]);
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec).await.expect("consumer");
    let (handlers, counters) = timeline::handlers(store.clone(), Arc::new(item_options(&[])), 1);
    let counters = (consumer.counters(), counters);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(consumer.run(handlers, stop_rx));

    let t = t0();
    let kinds = ["product_viewed", "product_liked", "conversation_started"];
    let events: Vec<Value> = (0..600).map(|i| event(&format!("e{i:04}"), kinds[i % 3], Some(&format!("u{}", i % 3)), t + i as i64)).collect();
    publish(&bus, &events, "").await;
    // Published again under other message ids: the bus stores and delivers them again.
    publish(&bus, &events[..300], "-again").await;
    wait_for(&counters, 30, "900 acked", |s| s.acked >= 900).await;

    let state = Arc::new(AppState {
        store,
        lake: None,
        keys: ApiKeys::new(&[hash_key(KEY)], &[]),
        limits: PageLimits::default(),
        retry_after_secs: 1,
        in_flight: Arc::new(tokio::sync::Semaphore::new(8)),
        cold: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    let mut got = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = get_with_key(&base, Some(KEY), "u1", &format!("limit=64&cursor={cursor}")).await;
        assert_eq!(status, 200, "{body}");
        got.extend(body["events"].as_array().expect("events").clone());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..600).filter(|i| i % 3 == 1).map(|i| format!("e{i:04}")).collect();
    assert_eq!(ids(&got), expected);
    assert!(got.iter().all(|e| e["type"] == "product_liked"));
    let (status, body) = get_with_key(&base, Some(KEY), "u1", "include=payload").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_parameter")), "no lake configured here");

    let _ = stop.send(true);
    task.await.expect("consumer");
    let s = stats(&counters);
    assert_eq!((s.received, s.acked, s.items_written), (900, 900, 900));
}

#[test]
fn the_checked_in_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/timeline.json");
    let current = timeline::openapi::pretty_json();
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, &current).expect("write openapi/timeline.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "openapi/timeline.json is stale: run `UPDATE_OPENAPI=1 cargo test -p timeline --test pipeline` and commit it"
    );
    let doc: Value = serde_json::from_str(&current).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let op = &doc["paths"]["/v1/users/{user_id}/events"]["get"];
    assert!(op["responses"]["200"].is_object());
    let params: Vec<&str> = op["parameters"].as_array().expect("params").iter().filter_map(|p| p["name"].as_str()).collect();
    for p in ["user_id", "from", "to", "types", "limit", "cursor", "order", "include"] {
        assert!(params.contains(&p), "{p} missing from {params:?}");
    }
}
