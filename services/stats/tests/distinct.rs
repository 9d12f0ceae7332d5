//! Distinct metrics end to end, on SQLite and on Postgres (with a private Redis as cache):
//! generated events over ten days go through the bus into the aggregator, which is aborted
//! five times between a commit and its acks (its committed, un-acked deliveries come back);
//! then every seller's statistics for windows of 1, 2, 7 and 10 days equal an exact
//! computation over the events (per-day distinct products, N-day totals as distinct unions,
//! favorites as plain counts). The same events written to a lake and backfilled day by day
//! give the same stored numbers. A metric's bound on values per user-day is honoured the same
//! way by both stores, live and backfilled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::{InProcessBus, OutMessage, Publisher};
use event_lake::{Lake, PartitionKey, WriteOptions};
use stats::aggregator::AggregatorOptions;
use stats::cache::{CacheSettings, StatsCache};
use stats::definitions::{DAY_MS, Extractor, MetricDef, default_metrics, today};
use stats::store::Store;
use stats::StatsReader;

mod common;
use common::{PrivateRedis, spawn_aggregator};

const SELLERS: u64 = 8;
const PRODUCTS_PER_SELLER: u64 = 10;
const DAYS: i32 = 10;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Event {
    ty: &'static str,
    day: i32,
    at: i64,
    line: String,
}

/// What the statistics must say, computed directly from the events.
#[derive(Default)]
struct Expected {
    /// (seller, metric, day) -> distinct products.
    sets: HashMap<(String, &'static str, i32), BTreeSet<String>>,
    /// (seller, day) -> favorites.
    favorites: HashMap<(String, i32), i64>,
}

impl Expected {
    /// (series, total) of a metric for `seller` over the `days` days ending `t`.
    fn window(&self, seller: &str, metric: &str, days: i32, t: i32) -> (Vec<i64>, i64) {
        let range = t - days + 1..=t;
        if metric == "favorites_received" {
            let series: Vec<i64> = range.map(|d| self.favorites.get(&(seller.to_owned(), d)).copied().unwrap_or(0)).collect();
            let total = series.iter().sum();
            return (series, total);
        }
        let mut union = BTreeSet::new();
        let mut series = Vec::new();
        for d in range {
            let set = self.sets.iter().find(|((s, m, day), _)| s == seller && *m == metric && *day == d).map(|(_, v)| v);
            series.push(set.map_or(0, |s| s.len() as i64));
            union.extend(set.into_iter().flatten().cloned());
        }
        (series, union.len() as i64)
    }
}

fn generate(n: usize, t: i32) -> (Vec<Event>, Expected) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut events = Vec::new();
    let mut expected = Expected::default();
    for i in 0..n {
        let seller = rng.next(SELLERS);
        let product = format!("p{seller}_{}", rng.next(PRODUCTS_PER_SELLER));
        let buyer = format!("b{}", rng.next(20));
        let day = t - rng.next(DAYS as u64) as i32;
        let at = i64::from(day) * DAY_MS + rng.next(DAY_MS as u64) as i64;
        let ty = match rng.next(10) {
            0..=5 => "product_contacted",
            6..=7 => "product_sold",
            _ => "product_favorited",
        };
        let owner = format!("s{seller}");
        match ty {
            "product_contacted" => {
                expected.sets.entry((owner.clone(), "products_contacted", day)).or_default().insert(product.clone());
            }
            "product_sold" => {
                expected.sets.entry((owner.clone(), "products_sold", day)).or_default().insert(product.clone());
            }
            _ => *expected.favorites.entry((owner.clone(), day)).or_default() += 1,
        }
        let line = format!(
            r#"{{"data":{{"id":"e{i}","type":"{ty}","attributes":{{"user_id":"{buyer}","product_id":"{product}","owner_id":"{owner}"}}}},"meta":{{"created_at":{at}}}}}"#
        );
        events.push(Event { ty, day, at, line });
    }
    (events, expected)
}

fn options() -> AggregatorOptions {
    AggregatorOptions {
        consumer: "distinct-test".into(),
        reset_position: false,
        retention_days: 400,
        ahead_days: 3,
    }
}

/// Publishes the events in chunks; for each chunk, freezes the cache's Redis, waits until
/// the aggregator has committed a batch (it then hangs in the invalidation that comes before
/// its acks) and aborts it, as a crash between commit and ack would: the batch's deliveries
/// come back to the next aggregator, which must not count them again.
async fn aggregate_with_crashes(store: &Store, cache: &Arc<StatsCache>, redis: &PrivateRedis, metrics: &[MetricDef], events: &[Event]) {
    let bus = InProcessBus::new(100_000, 256 << 20);
    let durable = options().consumer;
    let start = || spawn_aggregator(&bus, store, cache, metrics, options(), 97);
    let mut running = start().await;
    let mut crashes = 0;
    for chunk in events.chunks(events.len() / 5 + 1) {
        let before = store.position(&durable).await.expect("position");
        redis.pause();
        let msgs = chunk
            .iter()
            .map(|e| OutMessage { subject: format!("raw-event.{}", e.ty), id: String::new(), payload: e.line.clone().into_bytes().into() })
            .collect();
        assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.position(&durable).await.expect("position") == before {
            assert!(Instant::now() < deadline, "no batch committed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        running.1.abort();
        let _ = running.1.await;
        drop(running.0);
        crashes += 1;
        redis.resume();
        running = start().await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.pending(&durable).unwrap_or(0) > 0 || store.position(&durable).await.unwrap_or(0) < events.len() as i64 {
        assert!(Instant::now() < deadline, "not all events were counted: position {:?}", store.position(&durable).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = running.0.send(true);
    let report = running.1.await.expect("task");
    assert_eq!(crashes, 5);
    assert!(report.redeliveries >= 97, "the last crash's committed batch came back (and, the totals show, was skipped): {report:?}");
}

fn metric<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["metrics"].as_array().and_then(|m| m.iter().find(|x| x["name"] == name)).expect("metric present")
}

async fn check_api(reader: &StatsReader, expected: &Expected, t: i32) {
    for s in 0..SELLERS {
        let seller = format!("s{s}");
        for days in [1u16, 2, 7, 10] {
            let r = reader.user_stats(&seller, days, t).await.expect("stats");
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            for name in ["products_contacted", "products_sold", "favorites_received"] {
                let (series, total) = expected.window(&seller, name, i32::from(days), t);
                let m = metric(&body, name);
                assert_eq!(m["series"], serde_json::json!(series), "{seller} {name} {days} days");
                assert_eq!(m["total"], total, "{seller} {name} {days} days");
            }
            assert_eq!(metric(&body, "products_contacted")["distinct"], "product_id");
            assert!(metric(&body, "favorites_received").get("distinct").is_none());
        }
    }
    // The union is a union: over ten days a seller has at most its 10 products, while the
    // days' distinct counts add up to more.
    let (series, total) = expected.window("s0", "products_contacted", DAYS, t);
    assert!(total <= PRODUCTS_PER_SELLER as i64 && series.iter().sum::<i64>() > total, "the data exercises unions: {series:?} {total}");
}

/// Everything stored for closed days, per seller: per-day counts and the 9-day unions.
async fn closed_days(store: &Store, t: i32) -> BTreeMap<String, (Vec<(i32, String, i64)>, Vec<(String, i64)>)> {
    let mut out = BTreeMap::new();
    for s in 0..SELLERS {
        let seller = format!("s{s}");
        let got = store.user_stats(&seller, t - DAYS + 1, t - 1, Some(t - DAYS + 1)).await.expect("read");
        let mut days: Vec<(i32, String, i64)> = got.days.into_iter().map(|d| (d.day, d.metric, d.count)).collect();
        let mut unions = got.unions;
        days.sort();
        unions.sort();
        out.insert(seller, (days, unions));
    }
    out
}

async fn backfill_closed_days(lake: &Lake, store: &Store, metrics: &[MetricDef], t: i32) {
    for day in t - DAYS + 1..t {
        let date = stats::definitions::day_date(day);
        let report = stats::backfill::backfill_day(lake, store, None, &Extractor::new(metrics.to_vec()), date).await.expect("backfill");
        assert_eq!(report.capped, 0);
    }
}

async fn write_lake(dir: &std::path::Path, events: &[Event]) -> Lake {
    let lake = Lake::open(dir.to_str().expect("path"), WriteOptions::default()).expect("lake");
    let mut parts: BTreeMap<(&str, i64), Vec<&[u8]>> = BTreeMap::new();
    for e in events {
        parts.entry((e.ty, e.at.div_euclid(3_600_000))).or_default().push(e.line.as_bytes());
    }
    for ((ty, hour), lines) in parts {
        let key = PartitionKey::of(Arc::from(ty), hour * 3_600_000);
        lake.write_events(&key, lines.into_iter()).await.expect("write lake");
    }
    lake
}

async fn run(store: Store, backfilled: Store) {
    let t = today();
    let metrics = default_metrics();
    let (events, expected) = generate(3000, t);
    assert!(events.iter().any(|e| e.day == t) && events.iter().any(|e| e.day == t - DAYS + 1));
    let redis = PrivateRedis::start();
    let cache = Arc::new(StatsCache::redis(&redis.url(), "stats:", CacheSettings::default()).await.expect("redis"));
    let reader = StatsReader::new(store.clone(), cache.clone(), &metrics);
    // Cached answers from before the events must not survive the aggregator's commits.
    for s in 0..SELLERS {
        reader.user_stats(&format!("s{s}"), 7, t).await.expect("stats");
    }
    aggregate_with_crashes(&store, &cache, &redis, &metrics, &events).await;
    check_api(&reader, &expected, t).await;

    // The lake holds the same events: a backfill of each closed day into an empty store gives
    // the same stored numbers, and a backfill over the live store changes nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = write_lake(dir.path(), &events).await;
    let live = closed_days(&store, t).await;
    backfill_closed_days(&lake, &backfilled, &metrics, t).await;
    assert_eq!(closed_days(&backfilled, t).await, live, "backfill computes what the aggregator computed");
    backfill_closed_days(&lake, &store, &metrics, t).await;
    assert_eq!(closed_days(&store, t).await, live, "backfilling the live store changes nothing");
    check_api(&StatsReader::new(store.clone(), Arc::new(StatsCache::in_process(CacheSettings::default())), &metrics), &expected, t).await;
}

/// A bound of 3 values per user-day: a seller with 5 products contacted on a day gets 3, the
/// same 3 (the smallest) live and backfilled; values already stored are not refused.
async fn bound(store: Store, backfilled: Store) {
    let t = today();
    let day = t - 1;
    let metrics = vec![MetricDef { max_distinct_per_day: 3, ..MetricDef::distinct("contacted", "product_contacted", "owner_id", "product_id") }];
    let ev = |i: usize, p: &str| Event {
        ty: "product_contacted",
        day,
        at: i64::from(day) * DAY_MS + i as i64,
        line: format!(r#"{{"data":{{"id":"c{i}","type":"product_contacted","attributes":{{"user_id":"b","product_id":"{p}","owner_id":"s"}}}},"meta":{{"created_at":{}}}}}"#, i64::from(day) * DAY_MS + i as i64),
    };
    let events = vec![ev(0, "p5"), ev(1, "p4"), ev(2, "p5"), ev(3, "p3"), ev(4, "p1"), ev(5, "p2"), ev(6, "p4")];
    let cache = Arc::new(StatsCache::in_process(CacheSettings::default()));
    let bus = InProcessBus::new(1000, 1 << 20);
    // One event per batch: values arrive in publish order.
    let opts = AggregatorOptions { consumer: "bound".into(), ..options() };
    let (stop_tx, task) = spawn_aggregator(&bus, &store, &cache, &metrics, opts, 1).await;
    let msgs = events.iter().map(|e| OutMessage { subject: "raw-event.product_contacted".into(), id: String::new(), payload: e.line.clone().into_bytes().into() }).collect();
    assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.position("bound").await.unwrap_or(0) < events.len() as i64 {
        assert!(Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    task.await.expect("task");
    // p1 and p2 came after the bound (p5, p4, p3 stored; repeats are not refused).
    assert_eq!(store.distinct_values("s", "contacted", day).await.expect("values"), vec!["p3", "p4", "p5"]);
    assert_eq!(store.user_counts("s", day, day).await.expect("counts")[0].count, 3);

    let dir = tempfile::tempdir().expect("tempdir");
    let lake = write_lake(dir.path(), &events).await;
    let report = stats::backfill::backfill_day(&lake, &backfilled, None, &Extractor::new(metrics), stats::definitions::day_date(day)).await.expect("backfill");
    assert_eq!(report.capped, 2);
    assert_eq!(backfilled.distinct_values("s", "contacted", day).await.expect("values"), vec!["p1", "p2", "p3"], "the smallest values of the day");
    assert_eq!(backfilled.user_counts("s", day, day).await.expect("counts")[0].count, 3);
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn sqlite(dir: &std::path::Path, name: &str) -> Store {
    Store::open(&format!("sqlite://{}/{name}.db", dir.display()), "public", 4, true).await.expect("sqlite")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_counts_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(sqlite(dir.path(), "live").await, sqlite(dir.path(), "backfilled").await).await;
    bound(sqlite(dir.path(), "bound").await, sqlite(dir.path(), "bound_bf").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_counts_on_postgres_and_redis() {
    let (a, b, c, d) = (unique("stats_dl"), unique("stats_db"), unique("stats_dc"), unique("stats_dd"));
    let stores = [postgres(&a).await, postgres(&b).await, postgres(&c).await, postgres(&d).await];
    run(stores[0].clone(), stores[1].clone()).await;
    bound(stores[2].clone(), stores[3].clone()).await;
    for (store, schema) in stores.iter().zip([&a, &b, &c, &d]) {
        drop_schema(store, schema).await;
    }
}
