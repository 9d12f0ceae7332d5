//! Integration tests of the JetStream bus against the real NATS server at `NATS_URL`
//! (default `nats://127.0.0.1:4222`, started by `scripts/services.sh`). Each test uses its own
//! stream (`test-<uuid>`, subjects `t<uuid>.raw-event.>` and `t<uuid>.quarantine.>`) and
//! deletes it at the end, even when it fails.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_bus::{
    BusError, JetStreamBus, JetStreamConfig, JetStreamSubscriber, OutMessage, Publisher,
    Subscriber, ack_all,
};
use futures::FutureExt;

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

struct Ctx {
    bus: JetStreamBus,
    cfg: JetStreamConfig,
    /// Subject prefix of this test, e.g. `t0123abcd...`.
    prefix: String,
}

impl Ctx {
    fn raw(&self, rest: &str) -> String {
        format!("{}.raw-event.{rest}", self.prefix)
    }
    fn quarantine(&self, rest: &str) -> String {
        format!("{}.quarantine.{rest}", self.prefix)
    }
    async fn sub(&self, durable: &str, filter: &str, ack_wait: Duration) -> JetStreamSubscriber {
        self.bus
            .subscriber(durable, filter, ack_wait, 10_000)
            .await
            .expect("subscriber")
    }
}

fn test_config() -> (JetStreamConfig, String) {
    let u = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("t{u}");
    let cfg = JetStreamConfig {
        url: nats_url(),
        stream: format!("test-{u}"),
        subjects: vec![
            format!("{prefix}.raw-event.>"),
            format!("{prefix}.quarantine.>"),
        ],
        ..Default::default()
    };
    (cfg, prefix)
}

async fn js_context(cfg: &JetStreamConfig) -> async_nats::jetstream::Context {
    let client = async_nats::connect(cfg.url.as_str())
        .await
        .expect("raw NATS connection");
    async_nats::jetstream::new(client)
}

async fn stream_info(cfg: &JetStreamConfig) -> async_nats::jetstream::stream::Info {
    js_context(cfg)
        .await
        .get_stream(&cfg.stream)
        .await
        .expect("stream info")
        .cached_info()
        .clone()
}

/// Runs `body` on a fresh stream, then deletes the stream whatever happened.
async fn with_stream<F, Fut>(adjust: impl FnOnce(&mut JetStreamConfig), body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let (mut cfg, prefix) = test_config();
    adjust(&mut cfg);
    let bus = JetStreamBus::connect(&cfg).await.expect("connect to NATS");
    let ctx = Ctx {
        bus,
        cfg: cfg.clone(),
        prefix,
    };
    let outcome = AssertUnwindSafe(body(ctx)).catch_unwind().await;
    if let Err(e) = js_context(&cfg).await.delete_stream(&cfg.stream).await {
        eprintln!("could not delete stream {}: {e}", cfg.stream);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn message(subject: String, id: impl Into<String>, payload: impl Into<Bytes>) -> OutMessage {
    OutMessage {
        subject,
        id: id.into(),
        payload: payload.into(),
    }
}

/// `n` pseudo-random bytes: what compression cannot shrink (a size limit test).
fn incompressible(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Fetches until `n` deliveries came or `within` passed.
async fn fetch_n(
    sub: &mut impl Subscriber,
    n: usize,
    within: Duration,
) -> Vec<event_bus::Delivery> {
    let end = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        let got = sub
            .fetch(n - out.len(), Duration::from_millis(500))
            .await
            .expect("fetch");
        out.extend(got);
    }
    out
}

fn assert_all_ok(results: &[Result<(), BusError>]) {
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "message {i}: {r:?}");
    }
}

#[tokio::test]
async fn publish_1000_fetch_all_ack_then_nothing_comes_back() {
    with_stream(
        |_| {},
        |ctx| async move {
            assert!(ctx.bus.is_ready().await);
            let msgs: Vec<OutMessage> = (0..1000)
                .map(|i| {
                    message(
                        ctx.raw("page_view"),
                        format!("id-{i}"),
                        format!("payload-{i}"),
                    )
                })
                .collect();
            let results = ctx.bus.publish_batch(msgs).await;
            assert_eq!(results.len(), 1000);
            assert_all_ok(&results);
            assert_eq!(stream_info(&ctx.cfg).await.state.messages, 1000);

            let mut sub = ctx
                .sub(
                    "lake",
                    &format!("{}.raw-event.>", ctx.prefix),
                    Duration::from_secs(30),
                )
                .await;
            let got = fetch_n(&mut sub, 1000, Duration::from_secs(15)).await;
            assert_eq!(got.len(), 1000);
            let payloads: HashSet<Bytes> = got.iter().map(|d| d.payload.clone()).collect();
            assert_eq!(payloads.len(), 1000);
            assert!(got.iter().all(|d| !d.redelivered));
            assert!(got.iter().all(|d| d.subject == ctx.raw("page_view")));
            assert_all_ok(&ack_all(got).await);

            let after = sub
                .fetch(100, Duration::from_millis(300))
                .await
                .expect("fetch");
            assert!(
                after.is_empty(),
                "got {} after acking everything",
                after.len()
            );
        },
    )
    .await;
}

/// The `traceparent` a batch is published with is a message header on JetStream and comes
/// back on each delivery; a batch published without one has none.
#[tokio::test]
async fn the_trace_context_is_a_message_header() {
    with_stream(
        |_| {},
        |ctx| async move {
            let subject = ctx.raw("traced");
            let tp = event_bus::TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            assert!(tp.is_some());
            assert_all_ok(&ctx.bus.publish_batch_traced(vec![message(subject.clone(), "t-1", "a")], tp).await);
            assert_all_ok(&ctx.bus.publish_batch(vec![message(subject.clone(), "t-2", "b")]).await);
            let mut sub = ctx.sub("t", &subject, Duration::from_secs(30)).await;
            let got = fetch_n(&mut sub, 2, Duration::from_secs(5)).await;
            let traces: Vec<_> = got.iter().map(|d| d.trace).collect();
            assert_eq!(traces, vec![tp, None]);
        },
    )
    .await;
}

#[tokio::test]
async fn same_id_is_stored_once() {
    with_stream(
        |_| {},
        |ctx| async move {
            let subject = ctx.raw("x");
            let r = ctx
                .bus
                .publish_batch(vec![
                    message(subject.clone(), "dup-1", "first"),
                    message(subject.clone(), "dup-1", "second"),
                ])
                .await;
            assert_all_ok(&r);
            let r = ctx
                .bus
                .publish_batch(vec![message(subject.clone(), "dup-1", "third")])
                .await;
            assert_all_ok(&r);
            assert_eq!(stream_info(&ctx.cfg).await.state.messages, 1);
            let r = ctx
                .bus
                .publish_batch(vec![message(subject.clone(), "dup-2", "other")])
                .await;
            assert_all_ok(&r);
            assert_eq!(stream_info(&ctx.cfg).await.state.messages, 2);

            let mut sub = ctx.sub("d", &subject, Duration::from_secs(30)).await;
            let got = fetch_n(&mut sub, 2, Duration::from_secs(5)).await;
            let payloads: Vec<&[u8]> = got.iter().map(|d| d.payload.as_ref()).collect();
            assert_eq!(payloads, vec![b"first".as_ref(), b"other".as_ref()]);
        },
    )
    .await;
}

#[tokio::test]
async fn unacked_dropped_or_nakked_messages_come_back() {
    with_stream(
        |_| {},
        |ctx| async move {
            let filter = format!("{}.raw-event.>", ctx.prefix);
            let r = ctx
                .bus
                .publish_batch(vec![message(ctx.raw("a"), "m1", "one")])
                .await;
            assert_all_ok(&r);
            let ack_wait = Duration::from_secs(1);
            let mut sub = ctx.sub("redeliver", &filter, ack_wait).await;

            // Dropped without ack: back after ack_wait.
            let first = fetch_n(&mut sub, 1, Duration::from_secs(5)).await;
            assert_eq!(first.len(), 1);
            assert!(!first[0].redelivered);
            drop(first);
            let t = Instant::now();
            let again = sub.fetch(10, Duration::from_secs(3)).await.expect("fetch");
            assert_eq!(again.len(), 1, "not redelivered after ack_wait");
            assert!(again[0].redelivered);
            assert_eq!(again[0].payload.as_ref(), b"one");
            assert!(t.elapsed() < Duration::from_secs(3));

            // Nak: back right away.
            let d = again.into_iter().next().expect("one delivery");
            d.nak().await.expect("nak");
            let t = Instant::now();
            let after_nak = sub.fetch(10, Duration::from_secs(3)).await.expect("fetch");
            assert_eq!(after_nak.len(), 1);
            assert!(after_nak[0].redelivered);
            assert!(
                t.elapsed() < Duration::from_millis(900),
                "nak redelivery took {:?}",
                t.elapsed()
            );

            // In progress: extends the deadline past ack_wait, no redelivery meanwhile.
            let d = after_nak.into_iter().next().expect("one delivery");
            let mut other_replica = ctx.sub("redeliver", &filter, ack_wait).await;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                d.in_progress().await.expect("in progress");
            }
            let none = other_replica
                .fetch(10, Duration::from_millis(300))
                .await
                .expect("fetch");
            assert!(none.is_empty(), "redelivered despite in_progress");

            // Acked: never again.
            d.ack().await.expect("ack");
            let none = sub
                .fetch(10, Duration::from_millis(1500))
                .await
                .expect("fetch");
            assert!(none.is_empty(), "redelivered after ack");
        },
    )
    .await;
}

#[tokio::test]
async fn subscribers_with_one_durable_share_the_work() {
    with_stream(
        |_| {},
        |ctx| async move {
            let filter = format!("{}.raw-event.>", ctx.prefix);
            let msgs: Vec<OutMessage> = (0..200)
                .map(|i| message(ctx.raw("e"), format!("w-{i}"), format!("{i}")))
                .collect();
            assert_all_ok(&ctx.bus.publish_batch(msgs).await);

            let mut a = ctx.sub("workers", &filter, Duration::from_secs(30)).await;
            let mut b = ctx.sub("workers", &filter, Duration::from_secs(30)).await;
            let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
            let end = Instant::now() + Duration::from_secs(15);
            while got_a.len() + got_b.len() < 200 && Instant::now() < end {
                for (sub, got) in [(&mut a, &mut got_a), (&mut b, &mut got_b)] {
                    let batch = sub
                        .fetch(10, Duration::from_millis(300))
                        .await
                        .expect("fetch");
                    got.extend(batch.iter().map(|d| d.payload.clone()));
                    assert_all_ok(&ack_all(batch).await);
                }
            }
            assert!(
                !got_a.is_empty() && !got_b.is_empty(),
                "{} / {}",
                got_a.len(),
                got_b.len()
            );
            let set_a: HashSet<Bytes> = got_a.iter().cloned().collect();
            let set_b: HashSet<Bytes> = got_b.iter().cloned().collect();
            assert!(set_a.is_disjoint(&set_b), "a message went to both replicas");
            assert_eq!(set_a.len() + set_b.len(), 200);
            assert_eq!(
                got_a.len() + got_b.len(),
                200,
                "duplicates within a replica"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn filter_subject_selects_messages() {
    with_stream(
        |_| {},
        |ctx| async move {
            let mut msgs = Vec::new();
            for i in 0..3 {
                msgs.push(message(ctx.raw("a"), format!("r{i}"), "raw"));
            }
            for i in 0..2 {
                msgs.push(message(ctx.quarantine("x"), format!("q{i}"), "bad"));
            }
            assert_all_ok(&ctx.bus.publish_batch(msgs).await);

            let mut raw = ctx
                .sub(
                    "raw",
                    &format!("{}.raw-event.>", ctx.prefix),
                    Duration::from_secs(30),
                )
                .await;
            let got = fetch_n(&mut raw, 10, Duration::from_secs(2)).await;
            assert_eq!(got.len(), 3);
            assert!(got.iter().all(|d| d.subject == ctx.raw("a")));

            let mut q = ctx
                .sub(
                    "q",
                    &format!("{}.quarantine.>", ctx.prefix),
                    Duration::from_secs(30),
                )
                .await;
            let got = fetch_n(&mut q, 10, Duration::from_secs(2)).await;
            assert_eq!(got.len(), 2);
            assert!(got.iter().all(|d| d.subject == ctx.quarantine("x")));

            // A subject outside the stream has no responder: the bus can't take it.
            let r = ctx
                .bus
                .publish_batch(vec![message(format!("{}.elsewhere", ctx.prefix), "z", "z")])
                .await;
            assert!(matches!(r[0], Err(BusError::Unavailable(_))), "{r:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn stream_limits_give_full_and_config_updates_apply() {
    with_stream(
        |cfg| cfg.max_bytes = 4096,
        |ctx| async move {
            let msgs: Vec<OutMessage> = (0..20)
                .map(|i| message(ctx.raw("big"), format!("b{i}"), incompressible(512, i)))
                .collect();
            let results = ctx.bus.publish_batch(msgs).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let full = results
                .iter()
                .filter(|r| matches!(r, Err(BusError::Full(_))))
                .count();
            assert!(ok >= 1, "{results:?}");
            assert!(full >= 1, "{results:?}");
            assert_eq!(ok + full, 20, "{results:?}");

            // Connecting again with other settings updates the stream in place.
            let cfg = JetStreamConfig {
                max_age_secs: 3600,
                max_bytes: -1,
                ..ctx.cfg.clone()
            };
            let again = JetStreamBus::connect(&cfg).await.expect("reconnect");
            let info = stream_info(&cfg).await;
            assert_eq!(info.config.max_age, Duration::from_secs(3600));
            assert_eq!(info.config.max_bytes, -1);
            assert_eq!(info.state.messages as usize, ok, "update kept the messages");
            let r = again
                .publish_batch(vec![message(ctx.raw("big"), "after", vec![b'x'; 512])])
                .await;
            assert_all_ok(&r);
        },
    )
    .await;
}

#[tokio::test]
async fn connect_to_nothing_is_unavailable_quickly() {
    let cfg = JetStreamConfig {
        url: "nats://127.0.0.1:1".to_string(),
        ..Default::default()
    };
    let t = Instant::now();
    let r = JetStreamBus::connect(&cfg).await;
    assert!(matches!(r, Err(BusError::Unavailable(_))), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

/// A JSON event of about `n` bytes (repetitive, as events are).
fn json_event(n: usize, i: usize) -> String {
    let mut s = format!("{{\"id\":\"e{i}\",\"type\":\"page_view\",\"props\":[");
    let mut k = 0;
    while s.len() < n {
        s.push_str(&format!("{{\"key_{k}\":\"value {k} of event {i}\"}},"));
        k += 1;
    }
    s.push_str("{}]}");
    s
}

#[tokio::test]
async fn compressed_messages_round_trip_and_are_stored_smaller() {
    with_stream(
        |_| {},
        |ctx| async move {
            let events: Vec<String> = (0..20).map(|i| json_event(10_000, i)).collect();
            let msgs: Vec<OutMessage> = events
                .iter()
                .enumerate()
                .map(|(i, e)| message(ctx.raw("page_view"), format!("z{i}"), e.clone()))
                .collect();
            assert_all_ok(&ctx.bus.publish_batch(msgs).await);
            // On the bus: zstd, marked, and much smaller than the event.
            let stream = js_context(&ctx.cfg).await.get_stream(&ctx.cfg.stream).await.expect("stream");
            let stored = stream.get_raw_message(1).await.expect("message 1");
            let encoding = stored.headers.get("Content-Encoding").map(|v| v.as_str().to_owned());
            assert_eq!(encoding.as_deref(), Some("zstd"));
            assert!(stored.payload.len() * 4 < events[0].len(), "{} bytes stored for {}", stored.payload.len(), events[0].len());
            // A consumer sees the event's JSON.
            let mut sub = ctx.sub("zc", &ctx.raw(">"), Duration::from_secs(30)).await;
            let got = fetch_n(&mut sub, 20, Duration::from_secs(5)).await;
            let payloads: Vec<String> = got.iter().map(|d| String::from_utf8_lossy(&d.payload).into_owned()).collect();
            assert_eq!(payloads, events);
            assert!(got.iter().all(|d| d.undecodable().is_none()));
            assert_all_ok(&ack_all(got).await);
        },
    )
    .await;
}

#[tokio::test]
async fn plain_messages_from_an_old_publisher_or_with_compression_off_are_read_as_they_are() {
    with_stream(
        |cfg| cfg.compression = event_bus::MessageCompression::None,
        |ctx| async move {
            let event = json_event(2_000, 1);
            // An old publisher: a plain JetStream publish, no header.
            let js = js_context(&ctx.cfg).await;
            js.publish(ctx.raw("old"), Bytes::from(event.clone())).await.expect("publish").await.expect("stored");
            // This bus with compression off.
            assert_all_ok(&ctx.bus.publish_batch(vec![message(ctx.raw("new"), "n1", event.clone())]).await);
            let stream = js.get_stream(&ctx.cfg.stream).await.expect("stream");
            let stored = stream.get_raw_message(2).await.expect("message 2");
            assert!(stored.headers.get("Content-Encoding").is_none());
            assert_eq!(stored.payload.len(), event.len());
            let mut sub = ctx.sub("plain", &ctx.raw(">"), Duration::from_secs(30)).await;
            let got = fetch_n(&mut sub, 2, Duration::from_secs(5)).await;
            assert_eq!(got.len(), 2);
            assert!(got.iter().all(|d| d.payload.as_ref() == event.as_bytes() && d.undecodable().is_none()));
        },
    )
    .await;
}

#[tokio::test]
async fn a_message_over_the_max_payload_is_refused_even_when_it_would_compress() {
    with_stream(
        |_| {},
        |ctx| async move {
            let max = ctx.bus.max_payload();
            let r = ctx.bus.publish_batch(vec![message(ctx.raw("huge"), "h", vec![b'{'; max + 1])]).await;
            assert!(matches!(r[0], Err(BusError::Rejected(_))), "{r:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn the_stream_is_s2_compressed_and_an_existing_stream_is_updated() {
    with_stream(
        |cfg| cfg.stream_compression = event_bus::StreamCompression::None,
        |ctx| async move {
            use async_nats::jetstream::stream::Compression;
            let info = stream_info(&ctx.cfg).await;
            assert!(matches!(info.config.compression, None | Some(Compression::None)), "{:?}", info.config.compression);
            assert_all_ok(&ctx.bus.publish_batch(vec![message(ctx.raw("a"), "a1", json_event(1000, 1))]).await);
            // The default configuration turns S2 on, in place.
            let cfg = JetStreamConfig { stream_compression: JetStreamConfig::default().stream_compression, ..ctx.cfg.clone() };
            let _again = JetStreamBus::connect(&cfg).await.expect("reconnect");
            let info = stream_info(&cfg).await;
            assert_eq!(info.config.compression, Some(Compression::S2));
            assert_eq!(info.state.messages, 1, "the update kept the messages");
        },
    )
    .await;
}
