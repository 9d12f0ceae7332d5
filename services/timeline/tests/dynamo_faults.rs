//! DynamoDB failure paths on the real SDK call path: a small HTTP proxy in front of the
//! DynamoDB stand-in (moto never throttles nor leaves items unprocessed) forwards requests,
//! and for BatchWriteItem it can (a) forward only half of the items and answer the other half
//! as `UnprocessedItems` — so an item is stored only if the client sends it again — or
//! (b) answer `ProvisionedThroughputExceededException` without forwarding. Also: the 25-item
//! limit, the retry bound, the consumer's nak and redelivery, and `init` idempotency.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use common::{dynamo_endpoint, dynamo_store, event, item_options, t0, unique_table};
use event_bus::{InProcessBus, OutMessage, Publisher};
use serde_json::{Value, json};
use timeline::item::{Item, sort_key};
use event_bus::consumer::{Consumer, ConsumerConfig};
use timeline::{DynamoConfig, DynamoStore, Order, PageQuery, Store, StoreError};

#[derive(Default)]
struct Faults {
    /// BatchWriteItem calls still to answer with half of their items unprocessed.
    unprocessed: AtomicUsize,
    /// BatchWriteItem calls still to answer with a throttling error.
    throttle: AtomicUsize,
    /// Items of each BatchWriteItem call received.
    batch_sizes: Mutex<Vec<usize>>,
}

struct Proxy {
    upstream: String,
    client: reqwest::Client,
    faults: Faults,
}

async fn proxy(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut body = axum::body::to_bytes(body, 64 << 20).await.expect("body").to_vec();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut held_back: Option<(String, Vec<Value>)> = None;
    if target.ends_with(".BatchWriteItem") {
        let mut doc: Value = serde_json::from_slice(&body).expect("json");
        let (table, requests) = doc["RequestItems"].as_object().and_then(|m| m.iter().next()).map(|(t, r)| (t.clone(), r.clone())).expect("items");
        let requests = requests.as_array().cloned().unwrap_or_default();
        p.faults.batch_sizes.lock().unwrap().push(requests.len());
        if take(&p.faults.throttle) {
            let body = json!({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", "message": "injected throttling"});
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header("content-type", "application/x-amz-json-1.0")
                .body(Body::from(body.to_string()))
                .unwrap();
        }
        if requests.len() > 1 && take(&p.faults.unprocessed) {
            let half = requests.len() / 2;
            doc["RequestItems"][&table] = Value::Array(requests[..half].to_vec());
            held_back = Some((table, requests[half..].to_vec()));
            body = doc.to_string().into_bytes();
        }
    }
    let mut fwd = p.client.request(parts.method.clone(), format!("{}{}", p.upstream, parts.uri.path_and_query().map(|x| x.as_str()).unwrap_or("/")));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            fwd = fwd.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = fwd.body(body).send().await.expect("upstream");
    let status = resp.status().as_u16();
    let headers: HeaderMap = resp.headers().clone();
    let mut bytes = resp.bytes().await.expect("upstream body").to_vec();
    if let Some((table, rest)) = held_back {
        let mut doc: Value = serde_json::from_slice(&bytes).expect("json");
        doc["UnprocessedItems"] = json!({ table: rest });
        bytes = doc.to_string().into_bytes();
    }
    let mut out = Response::builder().status(status);
    for (k, v) in &headers {
        if !matches!(k.as_str(), "content-length" | "x-amz-crc32" | "transfer-encoding" | "connection") {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(bytes)).unwrap()
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

async fn start_proxy() -> (String, Arc<Proxy>) {
    let p = Arc::new(Proxy { upstream: dynamo_endpoint(), client: reqwest::Client::new(), faults: Faults::default() });
    let app = axum::Router::new().fallback(proxy).with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, p)
}

fn items(user: &str, n: usize) -> Vec<Item> {
    let t = t0();
    (0..n)
        .map(|i| Item {
            user: user.into(),
            sk: sort_key(t + i as i64, &format!("e{i:03}")),
            event_type: "product_viewed".into(),
            attrs: Some(timeline::item::Attrs::Json(format!(r#"{{"i":{i}}}"#))),
            lake: "events/type=product_viewed/date=2025-01-01/hour=00".into(),
            expires_at: chrono::Utc::now().timestamp() + 3600,
        })
        .collect()
}

async fn all_ids(store: &DynamoStore, user: &str) -> Vec<String> {
    let q = PageQuery {
        user: user.into(),
        from: 0,
        to: timeline::item::MAX_TIME_MS,
        types: vec![],
        limit: 1000,
        after: None,
        order: Order::Asc,
        now_secs: chrono::Utc::now().timestamp(),
    };
    store.query(&q).await.expect("query").items.iter().map(|i| i.id().to_owned()).collect()
}

/// The table through the proxy, and the same table directly on the stand-in.
async fn stores(name: &str, tweak: impl FnOnce(&mut DynamoConfig)) -> (DynamoStore, DynamoStore, Arc<Proxy>) {
    let (direct, mut cfg) = dynamo_store(name, None).await;
    let (url, proxy) = start_proxy().await;
    cfg.endpoint_url = Some(url);
    tweak(&mut cfg);
    (DynamoStore::connect(&cfg).await, direct, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_and_throttled_items_are_retried_until_written() {
    let (store, direct, proxy) = stores("unprocessed", |_| {}).await;
    proxy.faults.unprocessed.store(3, Ordering::SeqCst);
    let written = items("u1", 60);
    store.put_batch(&written).await.expect("written despite unprocessed items");
    let expected: Vec<String> = written.iter().map(|i| i.id().to_owned()).collect();
    assert_eq!(all_ids(&direct, "u1").await, expected, "the held-back items were sent again");
    let sizes = proxy.faults.batch_sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&s| s <= 25), "BatchWriteItem of at most 25 items: {sizes:?}");
    assert!(sizes.len() >= 6 && sizes.iter().sum::<usize>() > 60, "retries of the unprocessed halves: {sizes:?}");

    proxy.faults.batch_sizes.lock().unwrap().clear();
    // More throttled answers than the SDK's own 3 attempts: the store's loop retries too.
    proxy.faults.throttle.store(5, Ordering::SeqCst);
    let more = items("u2", 10);
    store.put_batch(&more).await.expect("written after throttling");
    assert_eq!(all_ids(&direct, "u2").await.len(), 10);
    assert_eq!(proxy.faults.batch_sizes.lock().unwrap().len(), 6, "five throttled attempts, then the write");
    let _ = direct.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_throttling_fails_after_the_bound_and_the_consumer_redelivers() {
    let (store, direct, proxy) = stores("throttled", |c| c.max_write_attempts = 3).await;
    proxy.faults.throttle.store(usize::MAX, Ordering::SeqCst);
    let started = Instant::now();
    let err = store.put_batch(&items("u1", 5)).await.expect_err("still throttled");
    assert!(matches!(err, StoreError::Throttled { attempts: 3, left: 5 }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(all_ids(&direct, "u1").await.is_empty());

    // Through the consumer: the failed batch is retried (a store that fails is not a
    // poison: nothing is dead-lettered), written once the throttling stops.
    let bus = InProcessBus::new(1000, 1 << 20);
    let _dead_letters = bus.subscriber("dl", "dead-letter.>", Duration::from_secs(30));
    let spec = ConsumerConfig { batch_messages: 100, max_deliver: 2, ..ConsumerConfig::named("timeline") }.spec(vec!["raw-event.>".into()]);
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec).await.expect("consumer");
    let (handlers, counters) = timeline::handlers(Arc::new(store), Arc::new(item_options(&[])), 1);
    let counters = (consumer.counters(), counters);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(consumer.run(handlers, stop_rx));
    let t = t0();
    let msgs = (0..5)
        .map(|i| OutMessage {
            subject: "raw-event.product_viewed".into(),
            id: String::new(),
            payload: bytes::Bytes::from(event(&format!("r{i}"), "product_viewed", Some("u9"), t + i).to_string()),
        })
        .collect();
    for r in bus.publish_batch(msgs).await {
        r.expect("publish");
    }
    let runtime = counters.0.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while runtime.report().retries < 3 {
        assert!(Instant::now() < deadline, "no failed write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.faults.throttle.store(0, Ordering::SeqCst);
    common::wait_for(&counters, 20, "retried and acked", |s| s.acked >= 5).await;
    assert_eq!(all_ids(&direct, "u9").await, vec!["r0", "r1", "r2", "r3", "r4"]);
    let _ = stop.send(true);
    let report = task.await.expect("consumer");
    assert!(report.retries >= 3 && report.acked == 5 && report.dead_lettered == 0, "{report:?}");
    let _ = direct.drop_table().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_table_and_ttl_once() {
    let cfg = DynamoConfig { table: unique_table("init"), endpoint_url: Some(dynamo_endpoint()), ..DynamoConfig::default() };
    let store = DynamoStore::connect(&cfg).await;
    let first = store.init().await.expect("init");
    assert!(first.created && first.ttl_enabled, "{first:?}");
    let again = store.init().await.expect("init again");
    assert!(!again.created && !again.ttl_enabled, "{again:?}");
    store.put_batch(&items("u1", 30)).await.expect("usable");
    assert_eq!(all_ids(&store, "u1").await.len(), 30);
    store.drop_table().await.expect("drop");
}
