//! Rebuilding the windows from the lake (`features::backfill`), on a local lake and real
//! Redis (and a private NATS JetStream for the handover):
//! - the rebuilt windows equal counting the same events live, lists included; a second run
//!   is refused on a store that holds windows, `reset` rebuilds the same values, and a
//!   rebuild interrupted half-way is started again without counting anything twice;
//! - the handover: an updater counted part of a stream, Redis lost its data, the lake holds
//!   some of the events (with their bus positions) and not the newest; after the rebuild the
//!   updater restarts, rewinds and counts the rest; events published during and after the
//!   handover count too; every event is counted exactly once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Lcg, cleanup, redis_store, redis_url, unique_prefix};
use event_bus::consumer::ConsumerConfig;
use event_bus::testing::NatsServer;
use event_bus::{Bus, JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use event_lake::{Lake, PartitionKey, Provenance, WriteOptions};
use features::backfill::{BackfillError, BackfillOptions, backfill};
use features::layout::{Batch, Hit};
use features::store::Handover;
use features::{Backend, Features, FeaturesConfig, Layout, MemoryStore, WindowStore};
use service_kit::shutdown::Shutdown;

const HOUR: i64 = 3_600_000;

/// One event of the mix the default counters count (and one type they do not).
fn event(i: usize, created_at: i64, rng: &mut Lcg) -> (String, String) {
    let p = |rng: &mut Lcg| format!("p{}", rng.next() % 12);
    let (t, attributes) = match i % 6 {
        0 | 1 => ("product_viewed", serde_json::json!({"product_id": p(rng), "user_id": "u1"})),
        2 => {
            let ids: Vec<String> = (0..(3 + rng.next() % 5)).map(|_| p(rng)).collect();
            ("search_results_shown", serde_json::json!({"query": "bike", "product_ids": ids}))
        }
        3 => ("product_liked", serde_json::json!({"product_id": p(rng)})),
        4 => ("conversation_started", serde_json::json!({"product_id": p(rng), "seller_id": "s1"})),
        _ => ("product_sold", serde_json::json!({"product_id": p(rng), "price": 10})),
    };
    let body = serde_json::json!({"data": {"id": format!("e{i}"), "type": t, "attributes": attributes}, "meta": {"created_at": created_at}});
    (t.to_owned(), body.to_string())
}

/// Events over the last eight days (some older than the longest window).
fn events(n: usize, now: i64, seed: u64) -> Vec<(String, String)> {
    let mut rng = Lcg(seed);
    (0..n).map(|i| {
        let age = (rng.next() % (8 * 24 * HOUR as u64)) as i64;
        event(i, now - age, &mut rng)
    }).collect()
}

/// The events written to the lake, one commit per (type, hour), with the bus positions given
/// (as the lake writer records them).
async fn write_lake(lake: &Lake, events: &[(String, String)], positions: Option<&[u64]>) {
    let mut parts: BTreeMap<PartitionKey, (Vec<&[u8]>, Vec<u64>)> = BTreeMap::new();
    for (k, (t, body)) in events.iter().enumerate() {
        let created: i64 = serde_json::from_str::<serde_json::Value>(body).unwrap()["meta"]["created_at"].as_i64().unwrap();
        let e = parts.entry(PartitionKey::of(Arc::from(t.as_str()), created)).or_default();
        e.0.push(body.as_bytes());
        if let Some(p) = positions {
            e.1.push(p[k]);
        }
    }
    for (key, (lines, pos)) in parts {
        let provenance = positions.map(|_| Provenance { source: "lake-writer:lake-writer", positions: &pos });
        lake.write_events_from(&key, lines, provenance).await.expect("write");
    }
}

/// The windows of counting `events` live at `now`, each once.
async fn expected(layout: &Layout, events: &[(String, String)], now: i64) -> MemoryStore {
    let store = MemoryStore::new(layout.clone(), 1_000_000, 100_000);
    let mut hits = Vec::new();
    for (k, (t, body)) in events.iter().enumerate() {
        if let Some(c) = layout.hit_of(t, body.as_bytes(), now) {
            for product in c.products {
                hits.push(Hit { product, counter: c.counter, t_ms: c.t_ms, source: 0, seq: k as u64 + 1 });
            }
        }
    }
    let batch = Batch { now_ms: now, sources: vec!["s".into()], positions: vec![(0, events.len() as u64)], hits, marks: Vec::new(), unmarked: false };
    store.apply(&batch).await.unwrap();
    while !store.expire(now).await.unwrap().complete {}
    store
}

fn products() -> Vec<String> {
    (0..12).map(|p| format!("p{p}")).collect()
}

fn options(source: Option<&str>) -> BackfillOptions {
    BackfillOptions { margin_ms: 600_000, source: source.map(str::to_owned), reset: false, max_id_bytes: 512 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_equals_counting_the_events_live_and_never_counts_twice() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), WriteOptions::default()).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let evs = events(1500, now, 7);
    write_lake(&lake, &evs, None).await;
    let layout = Layout::default_layout();
    let want = expected(&layout, &evs, now).await.read(&products()).await.unwrap().values;
    assert!(want.iter().all(|v| v[2] > 0 && v[8] > 0), "every product has 7d impressions and conversations: {want:?}");
    assert!(want.iter().any(|v| v[0] < v[2]), "the 1h window holds fewer than the 7d one");

    let prefix = unique_prefix("rebuild");
    let store = redis_store(layout.clone(), &prefix, 1000).await;
    let report = backfill(&lake, &layout, &store, now, &options(None)).await.expect("rebuild");
    assert_eq!(report.handover.events, evs.iter().filter(|e| e.0 != "product_sold").filter(|e| {
        let t = serde_json::from_str::<serde_json::Value>(&e.1).unwrap()["meta"]["created_at"].as_i64().unwrap();
        t.div_euclid(HOUR) >= (now - 7 * 24 * HOUR).div_euclid(HOUR)
    }).count() as u64, "events of the counted types in the hours of the longest window");
    assert!(report.handover.done && !report.handover.rewound);
    assert_eq!(store.read(&products()).await.unwrap().values, want);

    // The store holds windows: a second rebuild is refused; with reset it rebuilds the same.
    assert!(matches!(backfill(&lake, &layout, &store, now, &options(None)).await, Err(BackfillError::NotEmpty)));
    let reset = BackfillOptions { reset: true, ..options(None) };
    backfill(&lake, &layout, &store, now, &reset).await.expect("reset");
    assert_eq!(store.read(&products()).await.unwrap().values, want);

    // A rebuild interrupted half-way (its record says running, some counts are in): the next
    // run starts again from an empty store.
    store.clear().await.unwrap();
    let running = Handover { done: false, started_ms: now, from_ms: now, source: String::new(), events: 0, hits: 0, marked: 0, rewound: false };
    store.set_handover(&running).await.unwrap();
    let partial: Vec<Hit> = (0..50).map(|k| Hit { product: "p1".into(), counter: 0, t_ms: now, source: 0, seq: k + 1 }).collect();
    store.apply(&Batch { now_ms: now, sources: vec!["lake".into()], hits: partial, positions: Vec::new(), marks: Vec::new(), unmarked: true }).await.unwrap();
    backfill(&lake, &layout, &store, now, &options(None)).await.expect("restart");
    assert_eq!(store.read(&products()).await.unwrap().values, want);
    cleanup(&prefix).await;
}

fn id_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["data"]["id"].as_str().unwrap().to_owned()
}

fn message(t: &str, body: &str) -> OutMessage {
    OutMessage::event(t, &id_of(body), body.to_owned().into())
}

/// The stream sequence of each event id published so far (read by a probe consumer).
async fn stream_positions(bus: &JetStreamBus, n: usize) -> std::collections::HashMap<String, u64> {
    let spec = ConsumerConfig::named("probe").spec(vec!["raw-event.>".into()]);
    let mut sub = bus.subscribe(&spec).await.expect("probe");
    let mut out = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        for d in sub.fetch(500, Duration::from_millis(200)).await.expect("fetch") {
            out.insert(id_of(std::str::from_utf8(&d.payload).unwrap()), d.seq);
        }
    }
    assert_eq!(out.len(), n, "positions of every event");
    out
}

async fn start(config: &FeaturesConfig, bus: &JetStreamBus) -> (Arc<features::updater::UpdaterStats>, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let service = Features::build(config, Some(Arc::new(bus.clone()) as Arc<dyn Bus>)).await.expect("build");
    let stats = service.updater_stats().expect("updater");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        service.run(http, grpc, Shutdown::on(rx)).await.expect("features");
    });
    (stats, stop, task)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updater_takes_over_from_the_rebuild_exactly_once() {
    use std::sync::atomic::Ordering::Relaxed;
    let nats = NatsServer::start();
    let bus_config = JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() };
    let bus = JetStreamBus::connect(&bus_config).await.expect("bus");
    let prefix = unique_prefix("handover");
    let config = FeaturesConfig {
        backend: Backend::Redis,
        redis_url: redis_url(),
        key_prefix: prefix.clone(),
        consumer: ConsumerConfig { batch_wait_ms: 50, ack_wait_secs: 5, ..FeaturesConfig::default().consumer },
        api_key_hashes: vec![service_kit::auth::hash_key("test-key")],
        bus: bus_config.clone(),
        ..FeaturesConfig::default()
    };
    let layout = Layout::new(&config.counters, &config.windows);
    let now = chrono::Utc::now().timestamp_millis();
    // Within the last two days, so that nothing leaves a window while the test runs.
    let mut rng = Lcg(11);
    let evs: Vec<(String, String)> = (0..300).map(|i| event(i, now - (rng.next() % (48 * HOUR as u64)) as i64, &mut rng)).collect();
    let (a, b) = evs.split_at(200);

    // 1. The updater counts the first 200 events.
    let (stats, stop, task) = start(&config, &bus).await;
    assert!(bus.publish_batch(a.iter().map(|(t, b)| message(t, b)).collect()).await.iter().all(Result::is_ok));
    let counted_a = a.iter().filter(|(t, b)| layout.hit_of(t, b.as_bytes(), i64::MAX).is_some()).count() as u64;
    wait_for("the first events", || stats.received.load(Relaxed) >= counted_a).await;
    let _ = stop.send(true);
    task.await.unwrap();

    // 2. Redis loses everything. The lake holds the first 150 with their stream sequences
    // (as the lake writer commits them); the next 50 are still in the lake writer's buffers.
    cleanup(&prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), WriteOptions::default()).unwrap();
    let seq_of = stream_positions(&bus, a.len()).await;
    let positions: Vec<u64> = a[..150].iter().map(|(_, body)| seq_of[&id_of(body)]).collect();
    write_lake(&lake, &a[..150], Some(&positions)).await;

    // 3. While the updater is down, 50 more are published (not in the lake).
    assert!(bus.publish_batch(b[..50].iter().map(|(t, b)| message(t, b)).collect()).await.iter().all(Result::is_ok));

    // 4. The rebuild, then the updater again: it rewinds and takes over.
    let store = redis_store(layout.clone(), &prefix, 1000).await;
    let report = backfill(&lake, &layout, &store, chrono::Utc::now().timestamp_millis(), &options(Some(&bus_config.stream))).await.expect("rebuild");
    // The positions of the counted types' recent commits (the updater never gets the others).
    let counted_in_lake = a[..150].iter().filter(|(t, _)| layout.counter_of(t).is_some()).count() as u64;
    assert_eq!(report.handover.marked, counted_in_lake, "every position of the counted tables' recent commits is marked");
    let (stats, stop, task) = start(&config, &bus).await;
    assert!(store.handover().await.unwrap().is_some_and(|h| h.rewound), "the updater took the handover");
    // 5. And 50 more after the handover.
    assert!(bus.publish_batch(b[50..].iter().map(|(t, b)| message(t, b)).collect()).await.iter().all(Result::is_ok));

    // (What counting each event once gives as of now: computed again at each look, a
    // minute may end meanwhile.)
    let want = || async { expected(&layout, &evs, chrono::Utc::now().timestamp_millis()).await.read(&products()).await.unwrap().values };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = store.read(&products()).await.unwrap().values;
        let want = want().await;
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "after the handover:\n got {got:?}\nwant {want:?}\nupdater applied {} duplicates {}", stats.applied.load(Relaxed), stats.duplicates.load(Relaxed));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The redeliveries of what the lake held were recognised, not counted again.
    let lake_hits: usize = a[..150].iter().filter_map(|(t, b)| layout.hit_of(t, b.as_bytes(), i64::MAX)).map(|c| c.products.len()).sum();
    assert_eq!(stats.duplicates.load(Relaxed) as usize, lake_hits);
    // Stable: nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.read(&products()).await.unwrap().values, want().await);
    let _ = stop.send(true);
    task.await.unwrap();
    cleanup(&prefix).await;
}
