//! The gateway over HTTP as producers use it: auth, content types and encodings, limits,
//! per-event rejections, backpressure, the OpenAPI document; on the in-process bus and on a
//! real NATS JetStream (including one that goes away).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use event_bus::testing::NatsServer;
use event_bus::{InProcessBus, JetStreamBus, JetStreamConfig, Publisher, Subscriber};
use event_contract::wire::QuarantineMessage;
use event_contract::{Limits, Reason};
use gateway::auth::{ApiKeys, hash_key};
use gateway::api::Protection;
use gateway::{AppState, router};
use serde_json::{Value, json};

const KEY: &str = "test-key";
const REVOKED: &str = "old-key";

async fn serve(publisher: Arc<dyn Publisher>, max_body: usize, in_flight: usize) -> String {
    serve_with(publisher, max_body, in_flight, Protection::default()).await
}

async fn serve_with(publisher: Arc<dyn Publisher>, max_body: usize, in_flight: usize, protection: Protection) -> String {
    let state = Arc::new(AppState {
        publisher,
        limits: Limits::default(),
        keys: ApiKeys::new(&[hash_key(KEY)], &[hash_key(REVOKED)]),
        max_body_bytes: max_body,
        retry_after_secs: 2,
        in_flight: Arc::new(tokio::sync::Semaphore::new(in_flight)),
        protection,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    format!("http://{addr}")
}

fn event(id: &str) -> Value {
    json!({"data": {"id": id, "type": "product_viewed", "attributes": {"user_id": "u1"}}, "meta": {"created_at": 1_795_392_000_000i64}})
}

fn ndjson(ids: &[String]) -> String {
    ids.iter().map(|id| event(id).to_string() + "\n").collect()
}

async fn post(base: &str, key: Option<&str>, ctype: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new().post(format!("{base}/v1/events")).header("Content-Type", ctype).body(body);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    if let Some(e) = encoding {
        req = req.header("Content-Encoding", e);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, retry)
}

async fn drain(sub: &mut impl Subscriber) -> Vec<event_bus::Delivery> {
    let mut all = Vec::new();
    loop {
        let batch = sub.fetch(1000, Duration::from_millis(300)).await.expect("fetch");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

#[tokio::test]
async fn auth_is_required_and_revoked_keys_are_refused() {
    let bus = InProcessBus::new(1000, 1 << 20);
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    let body = ndjson(&["a".into()]).into_bytes();
    assert_eq!(post(&base, None, "application/x-ndjson", None, body.clone()).await.0, 401);
    assert_eq!(post(&base, Some("wrong"), "application/x-ndjson", None, body.clone()).await.0, 401);
    assert_eq!(post(&base, Some(REVOKED), "application/x-ndjson", None, body.clone()).await.0, 403);
    assert_eq!(post(&base, Some(KEY), "application/x-ndjson", None, body).await.0, 202);
    // Health and metrics are open.
    let health = reqwest::get(format!("{base}/healthz")).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let ready = reqwest::get(format!("{base}/readyz")).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn one_bad_event_never_fails_the_others_and_is_quarantined() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let mut events = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let mut quarantine = bus.subscriber("q", "quarantine.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 1 << 20, 16).await;

    // A JSON array of 1000 events, one of them broken.
    let mut arr: Vec<Value> = (0..1000).map(|i| event(&format!("e{i}"))).collect();
    arr[500]["meta"]["created_at"] = json!(1.5);
    let (status, body, _) = post(&base, Some(KEY), "application/json", None, serde_json::to_vec(&arr).expect("json")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 999);
    assert_eq!(body["rejected"], json!([{"index": 500, "reason": "invalid_created_at", "detail": body["rejected"][0]["detail"]}]));
    let delivered = drain(&mut events).await;
    assert_eq!(delivered.len(), 999);
    assert!(delivered.iter().all(|d| d.subject == "raw-event.product_viewed"));
    let q = drain(&mut quarantine).await;
    assert_eq!(q.len(), 1);
    let qm = QuarantineMessage::decode(&q[0].payload).expect("quarantine message");
    assert_eq!((qm.reason, qm.index, qm.source.as_ref()), (Reason::InvalidCreatedAt, 500, "gateway"));
    let original: Value = serde_json::from_slice(&qm.raw).expect("the rejected event as sent");
    assert_eq!(original["data"]["id"], "e500");
    assert_eq!(q[0].subject, "quarantine.gateway");

    // A single object; NDJSON with a malformed line; all invalid -> 422.
    assert_eq!(post(&base, Some(KEY), "application/json", None, event("single").to_string().into_bytes()).await.0, 202);
    let body = format!("{}not json\n{}", ndjson(&["n1".into()]), ndjson(&["n2".into()])).into_bytes();
    let (status, b, _) = post(&base, Some(KEY), "application/x-ndjson; charset=utf-8", None, body).await;
    assert_eq!((status, b["accepted"].as_u64(), b["rejected"][0]["index"].as_u64()), (202, Some(2), Some(1)));
    let (status, b, _) = post(&base, Some(KEY), "application/x-ndjson", None, b"{}\n[1]\n".to_vec()).await;
    assert_eq!(status, 422);
    assert_eq!(b["rejected"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn bad_bodies_types_encodings_and_sizes() {
    let bus = InProcessBus::new(100_000, 256 << 20);
    let _sub = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 256 << 10, 16).await;
    let ok = ndjson(&["a".into()]).into_bytes();
    assert_eq!(post(&base, Some(KEY), "text/plain", None, ok.clone()).await.0, 415);
    assert_eq!(post(&base, Some(KEY), "application/x-ndjson", Some("br"), ok.clone()).await.0, 415);
    let (s, b, _) = post(&base, Some(KEY), "application/x-ndjson", Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("unreadable_body")));
    assert!(b["error"]["message"].is_string(), "{b}");
    assert_eq!(post(&base, Some(KEY), "application/json", None, b"[{\"a\":1},".to_vec()).await.0, 400);
    assert_eq!(post(&base, Some(KEY), "application/json", None, b"   ".to_vec()).await.0, 400);
    // Too large as sent.
    let (s, b, _) = post(&base, Some(KEY), "application/x-ndjson", None, vec![b' '; 300 << 10]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (413, Some("too_large")));
    // A decompression bomb: 64 KiB of gzip inflating to 64 MiB; refused, not inflated.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![b'\n'; 64 << 20]).expect("gzip");
    let bomb = enc.finish().expect("gzip");
    assert!(bomb.len() < 256 << 10);
    assert_eq!(post(&base, Some(KEY), "application/x-ndjson", Some("gzip"), bomb).await.0, 413);
    // gzip and zstd bodies within the limit are read.
    let ids: Vec<String> = (0..100).map(|i| format!("z{i}")).collect();
    let plain = ndjson(&ids).into_bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).expect("gzip");
    let (s, b, _) = post(&base, Some(KEY), "application/x-ndjson", Some("gzip"), gz.finish().expect("gzip")).await;
    assert_eq!((s, b["accepted"].as_u64()), (202, Some(100)));
    let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
    let (s, b, _) = post(&base, Some(KEY), "application/x-ndjson", Some("zstd"), zst).await;
    assert_eq!((s, b["accepted"].as_u64()), (202, Some(100)));
}

#[tokio::test]
async fn a_full_bus_answers_429_with_retry_after_and_accepts_nothing_unacked() {
    let bus = InProcessBus::new(50, 64 << 20);
    let mut sub = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    let ids: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    assert_eq!(post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&ids).into_bytes()).await.0, 202);
    let more: Vec<String> = (0..40).map(|i| format!("b{i}")).collect();
    let (status, body, retry) = post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&more).into_bytes()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("bus_full")), "{body}");
    assert_eq!(retry.as_deref(), Some("2"));
    // Once the consumer catches up, the retry succeeds.
    let got = drain(&mut sub).await;
    event_bus::ack_all(got).await;
    let (status, _, _) = post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&more).into_bytes()).await;
    assert_eq!(status, 202);
}

/// An event within the contract's limit but larger than what the bus carries is the same
/// condition as a body over the limit: refused for good (`too_large`), not 503 (which the
/// client would retry forever); the other events of the request go through.
#[tokio::test]
async fn an_event_larger_than_the_bus_carries_is_rejected_not_retried() {
    let bus = InProcessBus::new(1000, 64 << 10);
    let mut sub = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    let mut big = event("big");
    big["data"]["attributes"]["description"] = json!("x".repeat(100 << 10));
    let body = format!("{}\n{}\n", big, event("small")).into_bytes();
    let (status, b, retry) = post(&base, Some(KEY), "application/x-ndjson", None, body).await;
    assert_eq!((status, b["accepted"].as_u64(), retry), (202, Some(1), None), "{b}");
    assert_eq!((b["rejected"][0]["index"].as_u64(), b["rejected"][0]["reason"].as_str()), (Some(0), Some("rejected_by_bus")), "{b}");
    let delivered = drain(&mut sub).await;
    assert_eq!(delivered.len(), 1);
}

/// A W3C `traceparent` of the request travels with its events on the bus (what the
/// consumers name in their spans); an invalid one is ignored, the events still accepted.
#[tokio::test]
async fn the_request_trace_context_travels_with_its_events() {
    let bus = InProcessBus::new(1000, 64 << 20);
    let mut sub = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (header, id) in [(tp, "traced"), ("00-not-a-trace-01", "untraced")] {
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/events"))
            .header("Authorization", format!("Bearer {KEY}"))
            .header("Content-Type", "application/json")
            .header("traceparent", header)
            .body(event(id).to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 202);
    }
    let got = drain(&mut sub).await;
    let traces: Vec<_> = got.iter().map(|d| d.trace.map(|t| t.to_string())).collect();
    assert_eq!(traces, vec![Some(tp.to_owned()), None]);
}

#[test]
fn the_checked_in_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/gateway.json");
    let current = gateway::openapi::pretty_json();
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, &current).expect("write openapi/gateway.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "openapi/gateway.json is stale: run `UPDATE_OPENAPI=1 cargo test -p gateway --test api` and commit it"
    );
    let doc: Value = serde_json::from_str(&current).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/events"]["post"]["responses"]["202"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_down_the_gateway_answers_503_and_loses_nothing_it_acked() {
    let mut nats = NatsServer::start();
    let cfg = JetStreamConfig { url: nats.url(), publish_timeout_ms: 1000, ..JetStreamConfig::default() };
    let bus = JetStreamBus::connect(&cfg).await.expect("connect");
    let base = serve(Arc::new(bus.clone()), 1 << 20, 64).await;

    let first: Vec<String> = (0..500).map(|i| format!("before-{i}")).collect();
    let (status, body, _) = post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&first).into_bytes()).await;
    assert_eq!(status, 202, "{body}");

    nats.kill();
    let during: Vec<String> = (0..10).map(|i| format!("during-{i}")).collect();
    let (status, body, retry) = post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&during).into_bytes()).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some());
    let ready = reqwest::get(format!("{base}/readyz")).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);

    // The server comes back with its store: everything acked before is there.
    nats.restart();
    let bus = JetStreamBus::connect(&cfg).await.expect("reconnect");
    let mut sub = bus.subscriber("check", "raw-event.>", Duration::from_secs(30), 10_000).await.expect("subscriber");
    let mut ids = std::collections::BTreeSet::new();
    for d in drain(&mut sub).await {
        let v: Value = serde_json::from_slice(&d.payload).expect("event");
        ids.insert(v["data"]["id"].as_str().expect("id").to_owned());
    }
    for id in &first {
        assert!(ids.contains(id), "acked event {id} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_that_are_not_subjects_and_ids_that_are_not_headers_are_refused_never_retried() {
    let nats = NatsServer::start();
    let cfg = JetStreamConfig { url: nats.url(), publish_timeout_ms: 2000, ..JetStreamConfig::default() };
    let bus = JetStreamBus::connect(&cfg).await.expect("connect");
    let mut quarantine = bus.subscriber("q", "quarantine.>", Duration::from_secs(30), 10_000).await.expect("subscriber");
    let base = serve(Arc::new(bus.clone()), 1 << 20, 16).await;

    let mut bad_type = event("t1");
    bad_type["data"]["type"] = json!("a.");
    let mut empty_token = event("t2");
    empty_token["data"]["type"] = json!("a..b");
    let header_injection = event("id\r\nX-Evil: 1");
    let long_id = event(&"i".repeat(257));
    let good = event("fine");
    let body: String = [bad_type, empty_token, header_injection, long_id, good].iter().map(|e| e.to_string() + "\n").collect();
    let (status, body, retry) = post(&base, Some(KEY), "application/x-ndjson", None, body.into_bytes()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(retry, None);
    assert_eq!(body["accepted"], 1);
    let reasons: Vec<&str> = body["rejected"].as_array().expect("rejected").iter().filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(reasons, ["invalid_type", "invalid_type", "invalid_id", "invalid_id"]);
    let q = drain(&mut quarantine).await;
    assert_eq!(q.len(), 4, "each refused event is quarantined with its reason");
}

/// Two events with one id and two types, then a retry of the first: both events are stored
/// once each (the dedup key is type and id).
async fn same_id_other_type_is_stored(base: &str, sub: &mut impl Subscriber) {
    let mut viewed = event("shared-id");
    viewed["data"]["type"] = json!("product_viewed");
    let mut sold = event("shared-id");
    sold["data"]["type"] = json!("product_sold");
    for e in [&viewed, &sold, &viewed] {
        let (status, body, _) = post(base, Some(KEY), "application/json", None, e.to_string().into_bytes()).await;
        assert_eq!((status, body["accepted"].as_u64()), (202, Some(1)), "{body}");
    }
    let mut got: Vec<String> = drain(sub).await.iter().map(|d| d.subject.clone()).collect();
    got.sort();
    assert_eq!(got, ["raw-event.product_sold", "raw-event.product_viewed"]);
}

#[tokio::test]
async fn dedup_covers_the_type_on_the_in_process_bus() {
    let bus = InProcessBus::new(1000, 1 << 20);
    let mut sub = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    same_id_other_type_is_stored(&base, &mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_covers_the_type_on_jetstream() {
    let nats = NatsServer::start();
    let cfg = JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() };
    let bus = JetStreamBus::connect(&cfg).await.expect("connect");
    let mut sub = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30), 10_000).await.expect("subscriber");
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    same_id_other_type_is_stored(&base, &mut sub).await;
}

/// A valid event of exactly `len` bytes.
fn event_of_len(id: &str, len: usize) -> String {
    let mut e = event(id);
    e["data"]["attributes"]["pad"] = json!("");
    let base = e.to_string().len();
    e["data"]["attributes"]["pad"] = json!("x".repeat(len - base));
    let line = e.to_string();
    assert_eq!(line.len(), len);
    line
}

#[tokio::test]
async fn an_event_the_bus_refuses_for_good_is_rejected_not_retried_on_the_in_process_bus() {
    // The bus holds 8 KiB: a valid 10 KiB event can never be stored.
    let bus = InProcessBus::new(1000, 8 << 10);
    let mut quarantine = bus.subscriber("q", "quarantine.>", Duration::from_secs(30));
    let mut events = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 1 << 20, 16).await;
    let body = format!("{}\n{}\n", event_of_len("big", 10 << 10), event("small"));
    let (status, body, retry) = post(&base, Some(KEY), "application/x-ndjson", None, body.into_bytes()).await;
    assert_eq!((status, retry), (202, None), "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!((body["rejected"][0]["index"].as_u64(), body["rejected"][0]["reason"].as_str()), (Some(0), Some("rejected_by_bus")));
    assert_eq!(drain(&mut events).await.len(), 1);
    let q = drain(&mut quarantine).await;
    assert_eq!(q.len(), 1);
    let qm = QuarantineMessage::decode(&q[0].payload).expect("quarantine message");
    assert_eq!((qm.reason, qm.raw_len), (Reason::RejectedByBus, 10 << 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_a_message_too_large_for_the_bus_is_a_rejection_and_quarantines_fit() {
    let nats = NatsServer::start();
    let cfg = JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() };
    let bus = JetStreamBus::connect(&cfg).await.expect("connect");
    let mut quarantine = bus.subscriber("q", "quarantine.>", Duration::from_secs(30), 10_000).await.expect("subscriber");
    let base = serve(Arc::new(bus.clone()), 4 << 20, 16).await;
    // An event of exactly the largest event size (1 MiB) is valid, but with its headers it
    // is larger than the server's max_payload (1 MiB); an invalid line just under 1 MiB
    // makes a quarantine message that must still fit with its headers.
    let max = Limits::default().max_event_bytes;
    let invalid = format!("{{\"x\":\"{}\"", "y".repeat(max - 1000));
    let body = format!("{}\n{invalid}\n{}\n", event_of_len("huge", max), event("small"));
    let (status, body, retry) = post(&base, Some(KEY), "application/x-ndjson", None, body.into_bytes()).await;
    assert_eq!((status, retry), (202, None), "{body}");
    assert_eq!(body["accepted"], 1);
    let reasons: Vec<&str> = body["rejected"].as_array().expect("rejected").iter().filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(reasons, ["rejected_by_bus", "invalid_json"]);
    let q = drain(&mut quarantine).await;
    assert_eq!(q.len(), 2, "both refused lines are in the quarantine");
    for d in &q {
        let qm = QuarantineMessage::decode(&d.payload).expect("quarantine message");
        assert!(qm.raw_len as usize > max - 1000 && qm.raw.len() < qm.raw_len as usize, "first bytes and the length kept");
    }
}

/// Opens a connection and sends the headers of a keyed NDJSON request whose body never
/// finishes (a slow client): the request holds its in-flight permit until it times out.
async fn slow_request(base: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{{\"data\""
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_with_408_and_requests_without_a_key_never_take_a_permit() {
    use tokio::io::AsyncReadExt;
    let bus = InProcessBus::new(1000, 1 << 20);
    let protection = Protection { body_timeout: Duration::from_secs(2), request_timeout: Duration::from_secs(4), ..Protection::default() };
    let base = serve_with(Arc::new(bus), 1 << 20, 1, protection).await;
    let body = ndjson(&["a".into()]).into_bytes();

    // One slow client holds the only permit.
    let mut slow = slow_request(&base).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Without a key: 401 at once, not 503 (authentication comes before the permit).
    assert_eq!(post(&base, None, "application/x-ndjson", None, body.clone()).await.0, 401);
    assert_eq!(post(&base, Some(REVOKED), "application/x-ndjson", None, body.clone()).await.0, 403);
    // With a key: the gateway is busy.
    let (status, _, retry) = post(&base, Some(KEY), "application/x-ndjson", None, body.clone()).await;
    assert_eq!((status, retry.is_some()), (503, true));

    // The slow body is cut at its deadline with 408, and the permit comes back.
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer)).await.expect("answered in time").expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(post(&base, Some(KEY), "application/x-ndjson", None, body).await.0, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_of_invalid_lines_is_summarised_and_bounded() {
    let bus = InProcessBus::new(100_000, 256 << 20);
    let mut quarantine = bus.subscriber("q", "quarantine.>", Duration::from_secs(30));
    let base = serve(Arc::new(bus), 10 << 20, 16).await;
    let gzip = |text: &str| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(text.as_bytes()).expect("gzip");
        enc.finish().expect("gzip")
    };

    // 50,000 invalid lines from a few hundred compressed bytes.
    let lines = 50_000;
    let bomb = gzip(&"x\n".repeat(lines));
    assert!(bomb.len() < 1000, "{}", bomb.len());
    let (status, body, _) = post(&base, Some(KEY), "application/x-ndjson", Some("gzip"), bomb).await;
    assert_eq!(status, 422);
    let defaults = Protection::default();
    assert_eq!(body["rejected"].as_array().map(Vec::len), Some(defaults.max_rejection_details), "the first ones in full");
    assert_eq!(body["rejected_total"], lines);
    assert_eq!(body["rejected_by_reason"], json!({"invalid_json": lines}));
    let q = drain(&mut quarantine).await;
    assert_eq!(q.len(), defaults.max_quarantined_per_request + 1, "the first ones one by one, then one summary");
    let summary = QuarantineMessage::decode(&q[q.len() - 1].payload).expect("summary");
    assert_eq!((summary.reason, summary.index as usize), (Reason::TooManyRejections, defaults.max_quarantined_per_request));
    assert!(summary.detail.contains(&format!("{} more", lines - defaults.max_quarantined_per_request)), "{}", summary.detail);
    assert!(summary.detail.contains("invalid_json"), "{}", summary.detail);

    // 5 million lines inflated from ~10 KiB: refused before any is looked at.
    let bomb = gzip(&"x\n".repeat(5_000_000));
    let (status, body, _) = post(&base, Some(KEY), "application/x-ndjson", Some("gzip"), bomb).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_many_events")));
}

/// A key over its rate limit is answered 429 `rate_limited` with `Retry-After`, and nothing
/// of that request is published; within the limit, requests go through (issue 25).
#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let mut events = bus.subscriber("lw", "raw-event.>", Duration::from_secs(30));
    let protection = Protection { rate: service_kit::rate::RateLimitConfig::new(1, 2).limiter().map(Arc::new), ..Protection::default() };
    let base = serve_with(Arc::new(bus.clone()), 1 << 20, 8, protection).await;
    let mut answers = Vec::new();
    for i in 0..3 {
        answers.push(post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&[format!("r{i}")]).into_bytes()).await);
    }
    assert_eq!(answers.iter().map(|a| a.0).collect::<Vec<_>>(), vec![202, 202, 429], "{answers:?}");
    let (_, body, retry_after) = &answers[2];
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let secs: u64 = retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=2).contains(&secs), "{secs}");
    // A bad key is still 401, not 429: the limit counts only known keys.
    assert_eq!(post(&base, Some("nope"), "application/x-ndjson", None, ndjson(&["x".into()]).into_bytes()).await.0, 401);
    // Only the two accepted events are on the bus.
    assert_eq!(drain(&mut events).await.len(), 2);
    // After Retry-After, the key sends again.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    assert_eq!(post(&base, Some(KEY), "application/x-ndjson", None, ndjson(&["r9".into()]).into_bytes()).await.0, 202);
}
