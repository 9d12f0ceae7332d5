//! Benchmark of the features service (run by scripts/bench-features.sh, release build):
//!
//! 1. updates: events through the updater into real Redis, from the in-process bus and from a
//!    private NATS JetStream, against a baseline in the same run (the same events as raw
//!    pipelined `HINCRBY`s, no windows, no exactly-once);
//! 2. freshness: publish -> visible in a read, under a steady background load, over NATS;
//! 3. reads: batches of 500 ids, concurrent clients, over gRPC and HTTP, against a baseline
//!    (the same `MGET` of 500 read views straight from the client).
//!
//! Settings by environment: BENCH_EVENTS (default 400000), BENCH_PRODUCTS (100000),
//! BENCH_READ_SECS (5), BENCH_CONCURRENCY (list, default 1,4,16), REDIS_URL, BENCH_MAX_BATCH (the
//! updater's consumer.batch_messages, default 50000 like the service); BENCH_ONLY=updates
//! stops after the update figures; BENCH_LIST_IDS=30 makes every event a results page
//! (`search_results_shown`) listing 30 products, each one impression.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use event_bus::testing::NatsServer;
use event_bus::consumer::{Consumer, ConsumerConfig};
use event_bus::{Bus, InProcessBus, JetStreamBus, JetStreamConfig, OutMessage, Publisher, Subscriber};
use features::clock::SystemClock;
use features::grpc::FeaturesGrpc;
use features::proto::GetFeaturesRequest;
use features::proto::features_client::FeaturesClient;
use features::query::FeatureReader;
use features::updater::Updater;
use features::{FeaturesConfig, Layout, RedisStore, RedisStoreOptions, WindowStore};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Roughly Zipf-like popularity: the square of a uniform number favours small ids.
    fn product(&mut self, n: u64) -> u64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((u * u * u) * n as f64) as u64
    }
}

const TYPES: [(&str, u64); 5] = [("product_viewed", 70), ("product_liked", 15), ("product_favorited", 5), ("conversation_started", 5), ("product_sold", 5)];

fn events(n: u64, products: u64, seed: u64, tag: &str) -> Vec<OutMessage> {
    let mut rng = Lcg(seed);
    let now = chrono::Utc::now().timestamp_millis();
    let list_ids = env("BENCH_LIST_IDS", 0);
    (0..n)
        .map(|i| {
            if list_ids > 0 {
                let ids: Vec<String> = (0..list_ids).map(|_| format!("\"p{}\"", rng.product(products))).collect();
                let payload = format!(
                    r#"{{"data":{{"id":"{tag}{i}","type":"search_results_shown","attributes":{{"user_id":"u{}","query":"bike","product_ids":[{}]}}}},"meta":{{"created_at":{},"source":"bench"}}}}"#,
                    rng.next() % 1_000_000,
                    ids.join(","),
                    now - (rng.next() % 60_000) as i64
                );
                return OutMessage { subject: "raw-event.search_results_shown".into(), id: format!("{tag}{i}"), payload: payload.into() };
            }
            let mut r = rng.next() % 100;
            let t = TYPES.iter().find(|(_, w)| if r < *w { true } else { r -= w; false }).map_or("product_viewed", |(t, _)| t);
            let p = rng.product(products);
            let payload = format!(
                r#"{{"data":{{"id":"{tag}{i}","type":"{t}","attributes":{{"user_id":"u{}","product_id":"p{p}","owner_id":"u{}"}}}},"meta":{{"created_at":{},"source":"bench"}}}}"#,
                rng.next() % 1_000_000,
                p % 50_000,
                now - (rng.next() % 60_000) as i64
            );
            OutMessage { subject: format!("raw-event.{t}"), id: format!("{tag}{i}"), payload: payload.into() }
        })
        .collect()
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn store(prefix: &str) -> RedisStore {
    RedisStore::connect(
        Layout::default_layout(),
        RedisStoreOptions {
            url: redis_url(),
            prefix: prefix.into(),
            dedup_ttl_secs: 3600,
            expire_budget: 5000,
            timeout: Duration::from_secs(5),
            read_connections: 4,
        },
    )
    .await
    .expect("redis")
}

async fn cleanup(prefix: &str) {
    let mut c = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}*")).arg("COUNT").arg(10_000).query_async(&mut c).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(keys).query_async(&mut c).await.unwrap();
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
}

/// Sum of MEMORY USAGE over the keys of a prefix, and their number.
async fn memory_of(prefix: &str) -> (u64, u64) {
    let mut c = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (mut cursor, mut bytes, mut n) = (0u64, 0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}*")).arg("COUNT").arg(10_000).query_async(&mut c).await.unwrap();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut c).await.unwrap();
        bytes += sizes.into_iter().flatten().sum::<u64>();
        n += keys.len() as u64;
        cursor = next;
        if cursor == 0 {
            return (bytes, n);
        }
    }
}

async fn keys_like(prefix: &str, kind: &str) -> u64 {
    let mut c = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let (mut cursor, mut n) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}{kind}*")).arg("COUNT").arg(10_000).query_async(&mut c).await.unwrap();
        n += keys.len() as u64;
        cursor = next;
        if cursor == 0 {
            return n;
        }
    }
}

fn updater(store: Arc<dyn WindowStore>, source: &str) -> Updater {
    Updater::new(Layout::default_layout(), store, Arc::new(SystemClock), source.into(), 256)
}

/// The service's consumer (batches of BENCH_MAX_BATCH, 150 ms) under a durable name.
async fn consumer(bus: Arc<dyn Bus>, durable: &str) -> Consumer {
    let config = FeaturesConfig {
        consumer: ConsumerConfig {
            durable: durable.into(),
            batch_messages: env("BENCH_MAX_BATCH", 50_000) as usize,
            ..FeaturesConfig::default().consumer
        },
        ..FeaturesConfig::default()
    };
    Consumer::subscribe(bus, config.consumer_spec(&Layout::default_layout())).await.unwrap()
}

/// Runs the updater over pre-published events until `counted` are applied; events/s.
async fn drain(store: Arc<dyn WindowStore>, consumer: Consumer, source: &str, counted: u64) -> f64 {
    let u = updater(store, source);
    let stats = u.stats();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(consumer.run(vec![u], stop));
    while stats.applied.load(Ordering::Relaxed) < counted {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if started.elapsed() > Duration::from_secs(300) {
            panic!("updater stuck at {}", stats.applied.load(Ordering::Relaxed));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    task.await.unwrap();
    let write = stats.write_micros.load(Ordering::Relaxed) as f64 / 1e6;
    println!("    ({} writes, {:.0}% of the time in store writes)", stats.flushes.load(Ordering::Relaxed), 100.0 * write / secs);
    counted as f64 / secs
}

/// The hits the updater applies for `msgs` (one per counted event; one per distinct listed
/// product of a results page).
fn counted(msgs: &[OutMessage]) -> u64 {
    let layout = Layout::default_layout();
    msgs.iter().filter_map(|m| layout.hit_of(&m.subject, &m.payload, i64::MAX)).map(|c| c.products.len() as u64).sum()
}

async fn baseline_hincrby(msgs: &[OutMessage], prefix: &str) -> f64 {
    let layout = Layout::default_layout();
    let mut c = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    for chunk in msgs.chunks(10_000) {
        let mut pipe = redis::pipe();
        for m in chunk {
            if let Some(c) = layout.hit_of(&m.subject, &m.payload, i64::MAX) {
                for p in &c.products {
                    pipe.cmd("HINCRBY").arg(format!("{prefix}raw:{p}")).arg(&layout.counters[c.counter]).arg(1).ignore();
                }
            }
        }
        let _: () = pipe.query_async(&mut c).await.unwrap();
    }
    msgs.len() as f64 / started.elapsed().as_secs_f64()
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn report(name: &str, mut lat: Vec<f64>, secs: f64) -> (f64, f64) {
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
    println!("  {name:<28} {:>8.0} batches/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms", lat.len() as f64 / secs, p50, p99, lat.last().copied().unwrap_or(0.0));
    (p50, p99)
}

fn ids(rng: &mut Lcg, products: u64) -> Vec<String> {
    (0..500).map(|_| format!("p{}", rng.product(products * 2))).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("BENCH_EVENTS", 400_000);
    let products = env("BENCH_PRODUCTS", 100_000);
    let read_secs = env("BENCH_READ_SECS", 5);
    let concs: Vec<usize> = std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "1,4,16".into()).split(',').filter_map(|c| c.trim().parse().ok()).collect();
    let run = format!("bench:features:{}:", std::process::id());
    println!("features benchmark: {n} events over {products} products (Zipf-like), 2 cores shared by Redis, NATS and this process");

    // --- updates -------------------------------------------------------------------------
    let msgs = events(n, products, 1, "a");
    let want = counted(&msgs);
    let base = baseline_hincrby(&msgs, &format!("{run}base:")).await;
    cleanup(&format!("{run}base:")).await;
    println!("updates:");
    println!("  baseline raw pipelined HINCRBY   {base:>10.0} events/s");

    let bus = InProcessBus::new(n as usize + 10, 1 << 30);
    let layout = Layout::default_layout();
    let inproc = consumer(Arc::new(bus.clone()), "features").await;
    for chunk in msgs.chunks(10_000) {
        assert!(bus.publish_batch(chunk.to_vec()).await.iter().all(Result::is_ok));
    }
    let prefix = format!("{run}inproc:");
    let s: Arc<dyn WindowStore> = Arc::new(store(&prefix).await);
    let rate_inproc = drain(s, inproc, "features", want).await;
    println!("  updater, in-process bus          {rate_inproc:>10.0} events/s  ({:.2} x baseline)", rate_inproc / base);
    if env("BENCH_LIST_IDS", 0) > 0 {
        // With lists, the updater's rate counts listed products (hits); pages are messages.
        let per_page = want as f64 / n as f64;
        println!(
            "    results pages of {} products: {:.0} pages/s through the updater ({:.0} product impressions/s); the baseline: {:.0} pages/s",
            env("BENCH_LIST_IDS", 0),
            rate_inproc / per_page,
            rate_inproc,
            base
        );
    }
    // Keep this prefix's data for the read phase; its memory per product:
    let (bytes, keys) = memory_of(&prefix).await;
    println!("  Redis memory after it: {:.1} MiB in {keys} keys ({} product states), {:.0} bytes per product", bytes as f64 / 1048576.0, keys_like(&prefix, "st:").await, bytes as f64 / keys_like(&prefix, "st:").await.max(1) as f64);

    let nats = NatsServer::start();
    let js = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.unwrap();
    let from_nats = consumer(Arc::new(js.clone()), "features").await;
    let pub_started = Instant::now();
    for chunk in msgs.chunks(5000) {
        assert!(js.publish_batch(chunk.to_vec()).await.iter().all(Result::is_ok));
    }
    let pub_rate = n as f64 / pub_started.elapsed().as_secs_f64();
    let nprefix = format!("{run}nats:");
    let s: Arc<dyn WindowStore> = Arc::new(store(&nprefix).await);
    let rate_nats = drain(s, from_nats, "EVENTS", want).await;
    println!("  updater, NATS JetStream          {rate_nats:>10.0} events/s  ({:.2} x baseline; publishing ran at {pub_rate:.0}/s before)", rate_nats / base);
    // The bus alone on the same machine: the same consumers fetching and acking the same
    // messages with no processing at all (what the NATS figure above can at most reach here).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in layout.event_types() {
        let mut sub = js.subscriber(&format!("bare-{t}"), &format!("raw-event.{t}"), Duration::from_secs(60), 100_000).await.unwrap();
        let want = msgs.iter().filter(|m| m.subject == format!("raw-event.{t}")).count();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < want {
                let ds = sub.fetch(5000, Duration::from_millis(100)).await.unwrap();
                got += ds.len();
                event_bus::ack_all_unconfirmed(ds).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let bare = counted(&msgs) as f64 / started.elapsed().as_secs_f64();
    println!("  NATS alone: fetch + ack, no work {bare:>10.0} events/s  (the updater from NATS: {:.2} x this)", rate_nats / bare);
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "updates") {
        drop(nats);
        cleanup(&prefix).await;
        cleanup(&nprefix).await;
        return;
    }

    // --- freshness -----------------------------------------------------------------------
    let fprefix = format!("{run}fresh:");
    let fstore: Arc<dyn WindowStore> = Arc::new(store(&fprefix).await);
    let fresh = consumer(Arc::new(js.clone()), "fresh").await;
    // Start after what is already in the stream: the fresh consumer replays it first.
    let u = updater(fstore.clone(), "EVENTS");
    let stats = u.stats();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(fresh.run(vec![u], stop));
    while stats.applied.load(Ordering::Relaxed) < want {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bg_rate = 10_000u64;
    let bg = {
        let js = js.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            let tick = Duration::from_millis(50);
            loop {
                let batch = events(bg_rate / 20, products, 1000 + i, &format!("bg{i}-"));
                let t = Instant::now();
                if js.publish_batch(batch).await.iter().any(Result::is_err) {
                    return;
                }
                i += 1;
                tokio::time::sleep(tick.saturating_sub(t.elapsed())).await;
            }
        })
    };
    let mut delays = Vec::new();
    for k in 0..200 {
        let id = format!("fresh-{k}");
        let payload = format!(r#"{{"data":{{"id":"{id}","type":"product_viewed","attributes":{{"product_id":"{id}"}}}},"meta":{{"created_at":{}}}}}"#, chrono::Utc::now().timestamp_millis());
        let msg = OutMessage { subject: "raw-event.product_viewed".into(), id: id.clone(), payload: payload.into() };
        assert!(js.publish_batch(vec![msg]).await.iter().all(Result::is_ok));
        let on_bus = Instant::now();
        let key = [id];
        loop {
            let v = fstore.read(&key).await.unwrap();
            if v.values[0][0] >= 1 {
                break;
            }
            if on_bus.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(on_bus.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(17)).await;
    }
    bg.abort();
    let _ = stop_tx.send(true);
    let _ = task.await;
    delays.sort_by(f64::total_cmp);
    println!("freshness (publish acked -> visible in a read; {bg_rate} events/s background, flush every 150 ms):");
    println!("  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms", pct(&delays, 0.5), pct(&delays, 0.99), delays.last().copied().unwrap_or(0.0));
    drop(nats);
    cleanup(&nprefix).await;
    cleanup(&fprefix).await;

    // --- reads ---------------------------------------------------------------------------
    let rstore: Arc<dyn WindowStore> = Arc::new(store(&prefix).await);
    let reader = Arc::new(FeatureReader::new(rstore, layout.clone(), 1000, 256, 1024, 1));
    // The servers on their own runtime (2 workers), the clients on this one.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_reader = reader.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send((http.local_addr().unwrap(), grpc.local_addr().unwrap())).unwrap();
            tokio::spawn(axum::serve(service_kit::serve::nodelay(http), features::api::router(server_reader.clone(), features::api::Access::Open)).into_future());
            tonic::transport::Server::builder()
                .add_service(FeaturesGrpc::server(server_reader, features::api::Access::Open))
                .serve_with_incoming(features::grpc::incoming(grpc))
                .await
                .unwrap();
        });
    });
    let (http_addr, grpc_addr) = addr_rx.recv().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = |s| Instant::now() + Duration::from_secs(s);
    for conc in concs {
    println!("reads: batches of 500 ids (about half known), {conc} concurrent clients, {read_secs} s each:");

    // Baseline: the same HMGETs as a raw pipeline.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut tasks = Vec::new();
    let end = deadline(read_secs);
    for k in 0..conc {
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(k as u64 + 10);
            let mut lat = Vec::new();
            while Instant::now() < end {
                let batch = ids(&mut rng, products);
                let t = Instant::now();
                let mut mget = redis::cmd("MGET");
                for id in &batch {
                    mget.arg(format!("{prefix}s:{id}"));
                }
                let _: Vec<Option<Vec<u8>>> = mget.query_async(&mut conn).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let (_, base_p99) = report("baseline raw Redis MGET", lat, read_secs as f64);

    // gRPC.
    let mut tasks = Vec::new();
    let end = deadline(read_secs);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}")).unwrap().connect().await.unwrap();
    for k in 0..conc {
        let mut c = FeaturesClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(k as u64 + 10);
            let mut lat = Vec::new();
            while Instant::now() < end {
                let batch = ids(&mut rng, products);
                let t = Instant::now();
                let r = c.get_features(GetFeaturesRequest { product_ids: batch }).await.unwrap().into_inner();
                assert_eq!(r.products.len(), 500);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let (_, grpc_p99) = report("gRPC GetFeatures", lat, read_secs as f64);

    // HTTP.
    let http = reqwest::Client::builder().pool_max_idle_per_host(conc.max(1)).build().unwrap();
    let url = format!("http://{http_addr}/v1/features");
    let mut tasks = Vec::new();
    let end = deadline(read_secs);
    for k in 0..conc {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(k as u64 + 10);
            let mut lat = Vec::new();
            while Instant::now() < end {
                let body = serde_json::to_vec(&serde_json::json!({ "product_ids": ids(&mut rng, products) })).unwrap();
                let t = Instant::now();
                let r = http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let (_, http_p99) = report("HTTP POST /v1/features", lat, read_secs as f64);
    println!("  p99 ratio to baseline: gRPC {:.2}, HTTP {:.2}", grpc_p99 / base_p99, http_p99 / base_p99);
    }
    cleanup(&prefix).await;
}
