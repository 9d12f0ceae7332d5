//! The cache's Redis failing, over HTTP, with the aggregator counting from the bus into
//! Postgres: Redis killed mid-test (answers keep coming from the database, fresh; `/readyz`
//! ready but degraded; `stats_cache_degraded 1`), started again (back to the cache), frozen
//! (one request pays the timeout, the next ones bypass it), and down while the aggregator
//! commits but not restarted (the invalidations it could not send are sent when Redis
//! answers, so no stale entry is served); a service started with Redis down serves too.
//! And the fill/invalidation race: a fill computed before a commit and stored after the
//! commit's invalidation is never served, with Redis and in the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::{InProcessBus, OutMessage, Publisher};
use serde_json::Value;
use service_kit::auth::hash_key;
use stats::aggregator::AggregatorOptions;
use stats::auth::Authenticator;
use stats::cache::{CacheSettings, StatsCache};
use stats::definitions::{DAY_MS, default_metrics, today};
use stats::store::{Changes, Store};
use stats::{AppState, StatsReader, router};

mod common;
use common::{PrivateRedis, spawn_aggregator};

const KEY: &str = "internal-key";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn postgres(schema: &str) -> Store {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    Store::open(&url, schema, 4, true).await.expect("postgres (bash scripts/services.sh up)")
}

async fn drop_schema(store: &Store, schema: &str) {
    if let Store::Postgres(pg) = store {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(pg.pool()).await;
    }
}

fn settings() -> CacheSettings {
    // Long TTLs: only invalidations (never an expiry) may make new counts visible.
    CacheSettings { today_ttl: Duration::from_secs(600), closed_ttl: Duration::from_secs(3600), redis_timeout: Duration::from_millis(300), ..CacheSettings::default() }
}

/// Without the in-process response layer: every read goes to Redis (or around it).
fn redis_only() -> CacheSettings {
    CacheSettings { local_ttl: Duration::ZERO, ..settings() }
}

struct Service {
    base: String,
    client: reqwest::Client,
    bus: InProcessBus,
    store: Store,
    published: usize,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Service {
    /// The API and the aggregator (in-process bus) over `store`, with `cache`.
    async fn start(store: Store, cache: StatsCache) -> Service {
        let cache = Arc::new(cache);
        let metrics = default_metrics();
        let bus = InProcessBus::new(10_000, 64 << 20);
        let opts = AggregatorOptions { consumer: "degraded".into(), reset_position: true, retention_days: 400, ahead_days: 3 };
        let (stop, _task) = spawn_aggregator(&bus, &store, &cache, &metrics, opts, 100).await;
        let auth = Authenticator::new(&[hash_key(KEY)], &[], &Default::default()).expect("auth");
        let state = AppState::new(StatsReader::new(store.clone(), cache, &metrics), auth, 64, 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        Service { base, client: reqwest::Client::new(), bus, store, published: 0, stop }
    }

    /// Publishes `n` favorites of u1's products today and waits until they are counted.
    async fn favorites(&mut self, n: usize) {
        let at = i64::from(today()) * DAY_MS + 1000;
        let msgs = (0..n)
            .map(|i| {
                let id = self.published + i;
                let line = format!(r#"{{"data":{{"id":"f{id}","type":"product_favorited","attributes":{{"user_id":"b","product_id":"p","owner_id":"u1"}}}},"meta":{{"created_at":{at}}}}}"#);
                OutMessage { subject: "raw-event.product_favorited".into(), id: String::new(), payload: line.into_bytes().into() }
            })
            .collect();
        assert!(self.bus.publish_batch(msgs).await.iter().all(Result::is_ok));
        self.published += n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.store.position("degraded").await.unwrap_or(0) < self.published as i64 {
            assert!(Instant::now() < deadline, "not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The invalidation follows the commit.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// u1's favorites today, and how long the answer took.
    async fn read(&self) -> (i64, Duration) {
        let started = Instant::now();
        let resp = self.client.get(format!("{}/v1/users/u1/stats?days=2", self.base)).bearer_auth(KEY).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.expect("json");
        let fav = body["metrics"].as_array().and_then(|m| m.iter().find(|x| x["name"] == "favorites_received")).expect("metric");
        (fav["total"].as_i64().expect("total"), started.elapsed())
    }

    async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.expect("request");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    }

    async fn wait_ready(&self, degraded: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, text) = self.get_text("/readyz").await;
            assert_eq!(status, 200, "{text}");
            if text.contains("degraded") == degraded {
                return;
            }
            assert!(Instant::now() < deadline, "readyz stayed {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn redis_keys(url: &str) -> usize {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    redis::cmd("DBSIZE").query_async::<usize>(&mut conn).await.expect("dbsize")
}

fn metric_line(text: &str, name: &str) -> String {
    text.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_frozen_and_back() {
    let _ = service_kit::telemetry::prometheus();
    let schema = unique("stats_deg");
    let store = postgres(&schema).await;
    let mut redis = PrivateRedis::start();
    let cache = StatsCache::redis(&redis.url(), "stats:", redis_only()).await.expect("cache");
    let mut svc = Service::start(store.clone(), cache).await;

    // Redis up: answers cached, invalidated by the aggregator's commits.
    svc.favorites(3).await;
    assert_eq!(svc.read().await.0, 3);
    assert!(redis_keys(&redis.url()).await > 0, "the cache is in Redis");
    svc.wait_ready(false).await;

    // Redis killed: answers from the database (fresh), ready but degraded, in the metrics.
    redis.kill();
    svc.favorites(2).await;
    let (n, _) = svc.read().await;
    assert_eq!(n, 5, "served from the database");
    svc.wait_ready(true).await;
    let (_, metrics) = svc.get_text("/metrics").await;
    assert_eq!(metric_line(&metrics, "stats_cache_degraded"), "stats_cache_degraded 1");
    for _ in 0..5 {
        let (n, took) = svc.read().await;
        assert_eq!(n, 5);
        assert!(took < Duration::from_millis(250), "no Redis timeout per request while down: {took:?}");
    }
    svc.favorites(1).await;
    assert_eq!(svc.read().await.0, 6);

    // Redis back (empty): the cache is used again.
    redis.restart();
    svc.wait_ready(false).await;
    assert_eq!(svc.read().await.0, 6);
    assert!(redis_keys(&redis.url()).await > 0, "back to the cache");
    let (_, metrics) = svc.get_text("/metrics").await;
    assert_eq!(metric_line(&metrics, "stats_cache_degraded"), "stats_cache_degraded 0");

    // Redis frozen (its data kept): one request waits out the timeout, the next ones bypass
    // it; a commit meanwhile cannot invalidate the entries cached in Redis (6 favorites).
    redis.pause();
    let (n, first) = svc.read().await;
    assert_eq!(n, 6);
    assert!(first < Duration::from_secs(2), "bounded by the Redis timeout: {first:?}");
    svc.wait_ready(true).await;
    let (n, next) = svc.read().await;
    assert_eq!(n, 6);
    assert!(next < Duration::from_millis(250), "{next:?}");
    svc.favorites(1).await;
    assert_eq!(svc.read().await.0, 7);
    // Unfrozen: the invalidation kept meanwhile is sent, so the old entry is not served.
    redis.resume();
    svc.wait_ready(false).await;
    assert_eq!(svc.read().await.0, 7, "the invalidations kept while Redis was unreachable were sent");
    svc.favorites(1).await;
    assert_eq!(svc.read().await.0, 8);
    let _ = svc.stop.send(true);

    // A service started while Redis is down serves from the database, then uses the cache
    // once Redis answers.
    redis.kill();
    let cache = StatsCache::redis(&redis.url(), "stats2:", redis_only()).await.expect("a down Redis is not a start-up error");
    assert!(cache.degraded().is_some());
    let svc2 = Service::start(store.clone(), cache).await;
    svc2.wait_ready(true).await;
    assert_eq!(svc2.read().await.0, 8);
    redis.restart();
    svc2.wait_ready(false).await;
    assert_eq!(svc2.read().await.0, 8);
    let _ = svc2.stop.send(true);
    drop_schema(&store, &schema).await;
}

/// The race, made deterministic through the cache's own steps: a read looks its pieces up
/// (miss) and queries the database; a commit and its invalidation happen; the read then
/// stores its pieces and its finished response, computed before the commit. The next read
/// must show the commit (without versions, either layer would serve the old counts).
async fn late_fill_is_never_served(store: Store, cache: StatsCache) {
    let cache = Arc::new(cache);
    let metrics = default_metrics();
    let names: Vec<String> = metrics.iter().map(|m| m.name.clone()).collect();
    let reader = StatsReader::new(store.clone(), cache.clone(), &metrics);
    let t = today();
    let mut lock = store.lock_consumer("race").await.expect("lock");
    assert_eq!(store.position("race").await.expect("position"), 0);
    let views = |n: i64| {
        let mut changes = Changes::default();
        changes.counts.push("u1".into(), t, "views_received".into(), n);
        changes
    };
    let views_in = |body: &[u8]| -> i64 {
        let v: Value = serde_json::from_slice(body).expect("json");
        v["metrics"].as_array().and_then(|m| m.iter().find(|x| x["name"] == "views_received")).and_then(|x| x["total"].as_i64()).expect("views")
    };
    store.ensure_days(&[t]).await.expect("partition");
    store.apply(&mut lock, "race", 0, 1, &views(1)).await.expect("apply");
    cache.invalidate(&[("u1".into(), false)], t).await;
    let before = reader.user_stats("u1", 2, t).await.expect("read");
    assert_eq!(views_in(&before.body), 1);
    cache.invalidate(&[("u1".into(), false)], t).await;

    // The read: lookup (miss) and database query...
    let found = cache.pieces("u1", 2, t - 1, t).await;
    assert!(found.today.is_none() && found.closed.is_none());
    let old = store.user_stats("u1", t, t, None).await.expect("db");
    // ...the aggregator commits and invalidates...
    store.apply(&mut lock, "race", 1, 2, &views(10)).await.expect("apply");
    cache.invalidate(&[("u1".into(), false)], t).await;
    // ...and the read stores what it computed before the commit, late.
    let counts = stats::query::fill(&names, &old.days, t, t).into_iter().map(|s| s[0]).collect();
    let stale_today = stats::cache::TodayPiece { counts, totals: vec![0; metrics.iter().filter(|m| m.is_distinct()).count()] };
    cache.put_pieces("u1", 2, t - 1, t, &found.tag, Some(&vec![vec![0]; names.len()]), Some(&stale_today)).await;
    cache.put_response("u1", 2, t, found.local, before.clone()).await;

    let after = reader.user_stats("u1", 2, t).await.expect("read");
    assert_eq!(views_in(&after.body), 11, "neither the late pieces nor the late response are served");
    // And what this read cached is served next.
    assert_eq!(views_in(&reader.user_stats("u1", 2, t).await.expect("read").body), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_invalidation_race_with_redis() {
    let schema = unique("stats_race");
    let store = postgres(&schema).await;
    let redis = PrivateRedis::start();
    let cache = StatsCache::redis(&redis.url(), "stats:", settings()).await.expect("cache");
    late_fill_is_never_served(store.clone(), cache).await;
    drop_schema(&store, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_invalidation_race_in_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()), "public", 2, true).await.expect("sqlite");
    late_fill_is_never_served(store, StatsCache::in_process(settings())).await;
}
