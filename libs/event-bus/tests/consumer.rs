//! The consumer runtime on both buses: poison messages found by splitting and dead-lettered
//! while the others go through, a store that is down never producing a dead letter, retries,
//! deferred writes, draining a closing bus, and order kept for a consumer with a high-water
//! mark even when a delivery goes missing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_bus::consumer::{Consumer, ConsumerConfig, ConsumerSpec, Handler, HandlerError, Outcome, Settled};
use event_bus::testing::NatsServer;
use event_bus::{Bus, Delivery, InProcessBus, JetStreamBus, JetStreamConfig, OutMessage, Publisher, Subscriber};
use event_contract::Reason;
use event_contract::wire::QuarantineMessage;
use futures::future::BoxFuture;
use tokio::sync::watch;

/// What a test handler saw and wrote.
#[derive(Default)]
struct Log {
    committed: Vec<String>,
    seqs: Vec<u64>,
    calls: usize,
}

/// Fails a batch permanently when it holds a payload starting with `poison`, transiently
/// while `down` is set; commits the rest (recording payloads in order).
struct Store {
    log: Arc<Mutex<Log>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    /// The bug behind the poison is fixed: poison is written like the rest.
    fixed: Arc<std::sync::atomic::AtomicBool>,
    always_transient: &'static str,
}

fn store(log: &Arc<Mutex<Log>>) -> Store {
    Store { log: log.clone(), down: Arc::default(), fixed: Arc::default(), always_transient: "\u{0}" }
}

impl Handler for Store {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.calls += 1;
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(HandlerError::transient("store down"));
            }
            let texts: Vec<String> = batch.iter().map(|d| String::from_utf8_lossy(&d.payload).into_owned()).collect();
            if !self.fixed.load(std::sync::atomic::Ordering::SeqCst) && texts.iter().any(|t| t.starts_with("poison")) {
                return Err(HandlerError::permanent("the store refused the batch"));
            }
            if texts.iter().any(|t| t.starts_with(self.always_transient)) {
                return Err(HandlerError::transient("timeout (but only for this one)"));
            }
            if texts.iter().any(|t| t.starts_with("panic")) {
                drop(log);
                panic!("handler bug");
            }
            log.committed.extend(texts);
            log.seqs.extend(batch.iter().map(|d| d.seq));
            Ok(Outcome::done())
        })
    }

    fn ready(&mut self) -> BoxFuture<'_, bool> {
        let up = !self.down.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { up })
    }
}

fn spec(name: &str, filter: &str) -> ConsumerSpec {
    let mut s = ConsumerConfig::named(name).spec(vec![filter.to_owned()]);
    s.batch_messages = 50;
    s.batch_wait = Duration::from_millis(20);
    s.retry_initial = Duration::from_millis(10);
    s.retry_max = Duration::from_millis(100);
    s
}

fn msgs(subject: &str, payloads: &[String]) -> Vec<OutMessage> {
    payloads.iter().map(|p| OutMessage { subject: subject.into(), id: String::new(), payload: Bytes::from(p.clone()) }).collect()
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn dead_letters(sub: &mut dyn Subscriber) -> Vec<(String, QuarantineMessage<'static>)> {
    let mut out = Vec::new();
    for d in sub.fetch(1000, Duration::from_millis(200)).await.expect("fetch") {
        let q = QuarantineMessage::decode(&d.payload).expect("a quarantine message");
        let owned = QuarantineMessage {
            reason: q.reason,
            detail: q.detail.into_owned().into(),
            source: q.source.into_owned().into(),
            index: q.index,
            received_at: q.received_at,
            subject: q.subject.map(|s| s.into_owned().into()),
            raw_len: q.raw_len,
            raw: q.raw.into_owned().into(),
        };
        out.push((d.subject.clone(), owned));
        d.ack().await.expect("ack");
    }
    out
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_others_go_through_in_order() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let mut dl = bus.subscriber("dl", "dead-letter.>", Duration::from_secs(30));
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec("c1", "raw-event.>")).await.expect("subscribe");
    let payloads: Vec<String> = (0..200).map(|i| if i == 77 { "poison-77".to_owned() } else { format!("m{i:03}") }).collect();
    assert!(bus.publish_batch(msgs("raw-event.t", &payloads)).await.iter().all(Result::is_ok));
    let log = Arc::new(Mutex::new(Log::default()));
    let (stop_tx, stop) = watch::channel(false);
    let handler = store(&log);
    let fixed = handler.fixed.clone();
    let run = tokio::spawn(consumer.run(vec![handler], stop));
    wait_for("199 committed", 10, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 199).await;
    let got = dead_letters(&mut dl).await;
    assert_eq!(got.len(), 1);
    let (subject, q) = &got[0];
    assert_eq!(subject, "dead-letter.c1");
    assert_eq!((q.reason, q.source.as_ref(), q.subject.as_deref()), (Reason::ConsumerFailed, "c1", Some("raw-event.t")));
    assert_eq!(q.raw.as_ref(), b"poison-77");
    assert!(q.detail.contains("refused"), "{}", q.detail);
    let committed = log.lock().unwrap_or_else(|p| p.into_inner()).committed.clone();
    let mut sorted = committed.clone();
    sorted.sort();
    assert_eq!(committed, sorted, "the order of the stream is kept");
    // Fixed: the replay brings it back to this consumer only, once.
    let mut other = bus.subscriber("other", "raw-event.>", Duration::from_secs(30));
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = event_bus::replay(&bus, "c1", 0, 100).await.expect("replay");
    assert_eq!((r.found, r.replayed), (1, 1));
    wait_for("the replayed message", 10, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 200).await;
    assert_eq!(log.lock().unwrap_or_else(|p| p.into_inner()).committed.last().map(String::as_str), Some("poison-77"));
    assert!(other.fetch(10, Duration::from_millis(100)).await.expect("fetch").is_empty(), "other consumers do not get replays");
    assert_eq!(event_bus::replay(&bus, "c1", 0, 100).await.expect("replay").found, 0, "a replayed dead letter is gone");
    stop_tx.send(true).expect("stop");
    let report = run.await.expect("run");
    assert_eq!((report.acked, report.dead_lettered), (200, 1));
    assert_eq!(bus.pending("c1"), Some(0));
}

#[tokio::test]
async fn a_store_that_is_down_never_makes_a_dead_letter_and_nothing_is_lost() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let mut dl = bus.subscriber("dl", "dead-letter.>", Duration::from_secs(30));
    let mut s = spec("c2", "raw-event.>");
    s.max_deliver = 2;
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), s).await.expect("subscribe");
    let payloads: Vec<String> = (0..120).map(|i| format!("m{i:03}")).collect();
    assert!(bus.publish_batch(msgs("raw-event.t", &payloads)).await.iter().all(Result::is_ok));
    let log = Arc::new(Mutex::new(Log::default()));
    let handler = store(&log);
    let down = handler.down.clone();
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(consumer.run(vec![handler], stop));
    // Down for well over max_deliver attempts of single messages.
    wait_for("many attempts", 10, || log.lock().unwrap_or_else(|p| p.into_inner()).calls > 30).await;
    assert!(log.lock().unwrap_or_else(|p| p.into_inner()).committed.is_empty());
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("everything committed", 10, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 120).await;
    assert!(dead_letters(&mut dl).await.is_empty(), "no dead letter while the store was down");
    stop_tx.send(true).expect("stop");
    let report = run.await.expect("run");
    assert_eq!(report.dead_lettered, 0);
    assert!(report.retries > 0);
}

#[tokio::test]
async fn a_panic_is_dead_lettered_and_a_transient_failure_is_retried_however_long() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let mut dl = bus.subscriber("dl", "dead-letter.>", Duration::from_secs(30));
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec("c3", "raw-event.>")).await.expect("subscribe");
    let payloads: Vec<String> = (0..60)
        .map(|i| match i {
            10 => "stuck-10".to_owned(),
            40 => "panic-40".to_owned(),
            _ => format!("m{i:03}"),
        })
        .collect();
    assert!(bus.publish_batch(msgs("raw-event.t", &payloads)).await.iter().all(Result::is_ok));
    let log = Arc::new(Mutex::new(Log::default()));
    let handler = Store { always_transient: "stuck", ..store(&log) };
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(consumer.run(vec![handler], stop));
    // The first batch holds the message that fails transiently: it is retried, never
    // dead-lettered (its store may be throttling); the panic is dead-lettered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = log.lock().unwrap_or_else(|p| p.into_inner()).calls;
    assert!(calls > 5, "retried: {calls} calls");
    assert!(dead_letters(&mut dl).await.is_empty(), "a transient failure is not a poison");
    stop_tx.send(true).expect("stop");
    let report = run.await.expect("run");
    assert_eq!(report.dead_lettered, 0);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Alone, a panic fails its batch for good: dead-lettered; the others go through.
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec("c3b", "raw-event.x")).await.expect("subscribe");
    let payloads: Vec<String> = (0..60).map(|i| if i == 40 { "panic-40".to_owned() } else { format!("m{i:03}") }).collect();
    assert!(bus.publish_batch(msgs("raw-event.x", &payloads)).await.iter().all(Result::is_ok));
    let log = Arc::new(Mutex::new(Log::default()));
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(consumer.run(vec![store(&log)], stop));
    wait_for("59 committed", 20, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 59).await;
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.is_empty() && Instant::now() < deadline {
        got.extend(dead_letters(&mut dl).await.into_iter().map(|(_, q)| String::from_utf8_lossy(&q.raw).into_owned()));
    }
    assert_eq!(got, vec!["panic-40"]);
    stop_tx.send(true).expect("stop");
    assert_eq!(run.await.expect("run").dead_lettered, 1);
}

/// Buffers everything, writes on `tick`: one "write" fails for good for payloads starting
/// with `poison`, found by splitting the buffered group.
struct Deferring {
    buffered: Vec<(u64, Bytes)>,
    log: Arc<Mutex<Log>>,
}

impl Handler for Deferring {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        self.buffered.extend(batch.iter().map(|d| (d.seq, d.payload.clone())));
        Box::pin(async { Ok(Outcome { deferred: true, ..Outcome::default() }) })
    }

    fn tick(&mut self, flush_all: bool) -> BoxFuture<'_, Vec<Settled>> {
        Box::pin(async move {
            if !flush_all && self.buffered.len() < 100 {
                return Vec::new();
            }
            let items = std::mem::take(&mut self.buffered);
            let log = self.log.clone();
            let split = event_bus::consumer::split_failures(items, |g: &[(u64, Bytes)]| {
                let bad = g.iter().any(|(_, p)| p.starts_with(b"poison"));
                let texts: Vec<String> = g.iter().map(|(_, p)| String::from_utf8_lossy(p).into_owned()).collect();
                let log = log.clone();
                Box::pin(async move {
                    if bad {
                        return Err(HandlerError::permanent("cannot encode"));
                    }
                    log.lock().unwrap_or_else(|p| p.into_inner()).committed.extend(texts);
                    Ok(())
                })
            })
            .await;
            let mut settled = vec![Settled::Committed(split.committed.iter().map(|(s, _)| *s).collect())];
            for ((seq, raw), error) in split.poison {
                settled.push(Settled::Poison { seq, raw, error });
            }
            settled
        })
    }
}

#[tokio::test]
async fn a_closing_bus_is_drained_into_a_deferring_handler() {
    let bus = InProcessBus::new(100_000, 64 << 20);
    let mut dl = bus.subscriber("dl", "dead-letter.>", Duration::from_secs(30));
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), spec("c4", "raw-event.>")).await.expect("subscribe");
    let payloads: Vec<String> = (0..5000).map(|i| if i == 4321 { "poison".to_owned() } else { format!("m{i:04}") }).collect();
    assert!(bus.publish_batch(msgs("raw-event.t", &payloads)).await.iter().all(Result::is_ok));
    bus.close();
    let log = Arc::new(Mutex::new(Log::default()));
    // No stop signal: the closed bus ends the run once everything is written and acked.
    let (_stop_tx, stop) = watch::channel(false);
    let report = tokio::time::timeout(Duration::from_secs(20), consumer.run(vec![Deferring { buffered: Vec::new(), log: log.clone() }], stop))
        .await
        .expect("the consumer drains the closed bus and stops");
    assert_eq!(log.lock().unwrap_or_else(|p| p.into_inner()).committed.len(), 4999);
    assert_eq!((report.acked, report.dead_lettered), (4999, 1));
    assert_eq!(bus.pending("c4"), Some(0));
    let got = dead_letters(&mut dl).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.raw.as_ref(), b"poison", "the bytes of a deferred message come from the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_poison_goes_to_the_dead_letters_and_an_ordered_consumer_waits_for_a_missing_delivery() {
    let nats = NatsServer::start();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");
    let bus_dyn: Arc<dyn Bus> = Arc::new(bus.clone());
    let mut s = spec("ordered", "raw-event.>");
    s.ordered = true;
    s.ack_wait = Duration::from_secs(2);
    let consumer = Consumer::subscribe(bus_dyn.clone(), s).await.expect("subscribe");
    // Another client takes the first message of the durable and never acks it: the runtime
    // must not hand later messages to an ordered handler before it comes back.
    let same = consumer.spec().clone();
    let mut thief = bus_dyn.subscribe(&same).await.expect("the same durable");
    let payloads: Vec<String> = (0..100).map(|i| if i == 50 { "poison-50".to_owned() } else { format!("m{i:03}") }).collect();
    assert!(bus.publish_batch(msgs("raw-event.t", &payloads)).await.iter().all(Result::is_ok));
    let stolen = thief.fetch(1, Duration::from_secs(2)).await.expect("steal");
    assert_eq!(stolen.len(), 1);
    assert_eq!(stolen[0].payload.as_ref(), b"m000");
    drop(stolen); // neither acked nor nak'ed: back after the ack wait
    let log = Arc::new(Mutex::new(Log::default()));
    let (stop_tx, stop) = watch::channel(false);
    let handler = store(&log);
    let fixed = handler.fixed.clone();
    let run = tokio::spawn(consumer.run(vec![handler], stop));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(log.lock().unwrap_or_else(|p| p.into_inner()).committed.is_empty(), "nothing handed over while m000 is outside");
    wait_for("99 committed", 20, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 99).await;
    let (committed, seqs) = {
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        (log.committed.clone(), log.seqs.clone())
    };
    assert_eq!(committed.first().map(String::as_str), Some("m000"), "the stolen message first");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "stream order: {seqs:?}");
    let dl_spec = ConsumerConfig::named("reader").spec(vec!["dead-letter.>".into()]);
    let mut dl = bus_dyn.subscribe(&dl_spec).await.expect("dead letters");
    let got = dead_letters(&mut *dl).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.as_str(), got[0].1.raw.as_ref(), got[0].1.index > 0), ("dead-letter.ordered", &b"poison-50"[..], true));
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = event_bus::replay(&bus, "ordered", 0, 100).await.expect("replay");
    assert_eq!((r.found, r.replayed), (1, 1));
    wait_for("the replayed message", 10, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 100).await;
    assert_eq!(event_bus::replay(&bus, "ordered", 0, 100).await.expect("replay").found, 0, "deleted from the stream once replayed");
    stop_tx.send(true).expect("stop");
    let report = run.await.expect("run");
    assert_eq!((report.acked, report.dead_lettered), (100, 1));
}

/// Keeps `keep*` messages for a later write (deferred); fails batches holding `fail*`
/// transiently until `down_until`.
struct KeepsWhileDown {
    handled: Arc<Mutex<Vec<String>>>,
    kept: Vec<u64>,
    down_until: Instant,
}

impl Handler for KeepsWhileDown {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let texts: Vec<String> = batch.iter().map(|d| String::from_utf8_lossy(&d.payload).into_owned()).collect();
            self.handled.lock().unwrap_or_else(|p| p.into_inner()).extend(texts.iter().cloned());
            if texts.iter().any(|t| t.starts_with("fail")) && Instant::now() < self.down_until {
                return Err(HandlerError::transient("store down"));
            }
            if texts.iter().any(|t| t.starts_with("keep")) {
                self.kept.extend(batch.iter().map(|d| d.seq));
                return Ok(Outcome { deferred: true, ..Outcome::default() });
            }
            Ok(Outcome::done())
        })
    }

    fn tick(&mut self, flush_all: bool) -> BoxFuture<'_, Vec<Settled>> {
        Box::pin(async move {
            if !flush_all && Instant::now() < self.down_until {
                return Vec::new();
            }
            vec![Settled::Committed(std::mem::take(&mut self.kept))]
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_messages_stay_alive_while_a_later_batch_is_retried() {
    let bus = InProcessBus::new(1000, 1 << 20);
    let mut s = spec("c6", "raw-event.>");
    s.ack_wait = Duration::from_millis(600);
    let consumer = Consumer::subscribe(Arc::new(bus.clone()), s).await.expect("subscribe");
    let handled = Arc::new(Mutex::new(Vec::new()));
    // The store is down for five ack waits, after the first message was deferred.
    let handler = KeepsWhileDown { handled: handled.clone(), kept: Vec::new(), down_until: Instant::now() + Duration::from_secs(3) };
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(consumer.run(vec![handler], stop));
    assert!(bus.publish_batch(msgs("raw-event.t", &["keep-1".to_owned()])).await.iter().all(Result::is_ok));
    wait_for("the first message", 5, || !handled.lock().unwrap_or_else(|p| p.into_inner()).is_empty()).await;
    assert!(bus.publish_batch(msgs("raw-event.t", &["fail-1".to_owned()])).await.iter().all(Result::is_ok));
    wait_for("everything written", 15, || bus.pending("c6") == Some(0)).await;
    let seen = handled.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(seen.iter().filter(|t| *t == "keep-1").count(), 1, "the deferred message came back while the next batch was retried: {seen:?}");
    stop_tx.send(true).expect("stop");
    let report = run.await.expect("run");
    assert_eq!((report.redeliveries, report.dead_lettered), (0, 0));
}

/// A zstd message that inflates past the bus's largest message (a "zip bomb" from a foreign
/// or broken publisher) is dead-lettered as stored, never decoded into memory, and the
/// consumer goes on; a compressed message and a plain one (an old publisher) both reach the
/// handler as the event's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_a_message_that_inflates_past_the_bound_is_dead_lettered_and_the_others_go_through() {
    let nats = NatsServer::start();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");
    let max = bus.max_payload();
    let bus_dyn: Arc<dyn Bus> = Arc::new(bus.clone());
    let consumer = Consumer::subscribe(bus_dyn.clone(), spec("inflate", "raw-event.>")).await.expect("subscribe");
    let raw = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("raw client"));
    let bomb = zstd::bulk::compress(&vec![b'0'; max * 4], 3).expect("compress");
    assert!(bomb.len() < 4096, "{} bytes on the bus", bomb.len());
    let big = format!("m-big {}", "{\"k\":\"some value\"},".repeat(600));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Encoding", "zstd");
    for (subject, payload, headers) in [
        ("raw-event.t", Bytes::from("m-old-plain"), None),
        ("raw-event.t", Bytes::from(bomb.clone()), Some(headers.clone())),
        ("raw-event.t", Bytes::from(zstd::bulk::compress(big.as_bytes(), 3).expect("compress")), Some(headers.clone())),
    ] {
        let ack = match headers {
            Some(h) => raw.publish_with_headers(subject, h, payload).await,
            None => raw.publish(subject, payload).await,
        };
        ack.expect("publish").await.expect("stored");
    }
    assert!(bus.publish_batch(msgs("raw-event.t", &[big.clone(), "m-new-short".to_owned()])).await.iter().all(Result::is_ok));
    let log = Arc::new(Mutex::new(Log::default()));
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(consumer.run(vec![store(&log)], stop));
    wait_for("4 committed", 20, || log.lock().unwrap_or_else(|p| p.into_inner()).committed.len() == 4).await;
    let committed = log.lock().unwrap_or_else(|p| p.into_inner()).committed.clone();
    assert_eq!(committed, vec!["m-old-plain".to_owned(), big.clone(), big, "m-new-short".to_owned()]);
    let dl_spec = ConsumerConfig::named("reader").spec(vec!["dead-letter.>".into()]);
    let mut dl = bus_dyn.subscribe(&dl_spec).await.expect("dead letters");
    let got = dead_letters(&mut *dl).await;
    assert_eq!(got.len(), 1);
    let (subject, q) = &got[0];
    assert_eq!((subject.as_str(), q.subject.as_deref()), ("dead-letter.inflate", Some("raw-event.t")));
    assert_eq!(q.raw.as_ref(), &bomb[..], "kept as stored, not inflated");
    assert!(q.detail.contains("inflates past"), "{}", q.detail);
    stop_tx.send(true).expect("stop");
    let report = run.await.expect("run");
    assert_eq!((report.acked, report.dead_lettered), (4, 1));
}
