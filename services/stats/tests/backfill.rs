//! Backfill: a day recomputed from the lake replaces the stored day atomically (repeated event
//! ids counted once, other days untouched, metrics' credited users honoured, distinct values
//! replaced) and the cached statistics of its users are invalidated; on SQLite and on
//! Postgres + Redis.

use std::sync::Arc;

use event_lake::{Lake, PartitionKey, WriteOptions};
use stats::cache::{CacheSettings, StatsCache};
use stats::definitions::{Extractor, day_number, default_metrics};
use stats::store::{Changes, Store};
use stats::StatsReader;

fn ev(id: &str, ty: &str, user: &str, owner: &str, at: i64) -> Vec<u8> {
    format!(r#"{{"data":{{"id":"{id}","type":"{ty}","attributes":{{"user_id":"{user}","product_id":"p1","owner_id":"{owner}"}}}},"meta":{{"created_at":{at}}}}}"#).into_bytes()
}

async fn write(lake: &Lake, ty: &str, lines: &[Vec<u8>], at: i64) {
    let key = PartitionKey::of(Arc::from(ty), at);
    lake.write_events(&key, lines.iter().map(Vec::as_slice)).await.expect("write lake");
}

async fn run(store: Store, cache: StatsCache) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Lake::open(dir.path().to_str().expect("path"), WriteOptions::default()).expect("lake");
    let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 10).expect("date");
    let day = day_number(date);
    let at = i64::from(day) * 86_400_000 + 5 * 3_600_000; // 05:00 UTC
    let next_day_at = at + 86_400_000;
    // Two files of favorites for owner "alice" repeating one id; a contact by "bob"; a sale
    // on the next day (not backfilled).
    write(&lake, "product_favorited", &[ev("f1", "product_favorited", "bob", "alice", at), ev("f2", "product_favorited", "carol", "alice", at)], at).await;
    write(&lake, "product_favorited", &[ev("f2", "product_favorited", "carol", "alice", at), ev("f3", "product_favorited", "bob", "alice", at + 3_600_000)], at).await;
    write(&lake, "product_contacted", &[ev("c1", "product_contacted", "bob", "alice", at)], at).await;
    write(&lake, "product_sold", &[ev("s1", "product_sold", "bob", "alice", next_day_at)], next_day_at).await;

    // What the live aggregator had stored: wrong counts for the day, one on the next day.
    let mut lock = store.lock_consumer("bf").await.expect("lock");
    let pos = store.position("bf").await.expect("position");
    let mut changes = Changes::default();
    changes.counts.push("alice".into(), day, "favorites_received".into(), 99);
    changes.counts.push("zed".into(), day, "views_received".into(), 5);
    changes.values.push("alice".into(), day, "products_contacted".into(), "p-gone".into(), 10_000);
    changes.values.push("alice".into(), day + 1, "products_sold".into(), "p1".into(), 10_000);
    store.ensure_days(&[day, day + 1]).await.expect("partitions");
    store.apply(&mut lock, "bf", pos, pos + 1, &changes).await.expect("apply");

    // A cached read before the backfill.
    let cache = Arc::new(cache);
    let reader = StatsReader::new(store.clone(), cache.clone(), &default_metrics());
    let total = |body: &[u8], metric: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        v["metrics"].as_array().and_then(|m| m.iter().find(|x| x["name"] == metric)).and_then(|x| x["total"].as_i64()).expect("metric")
    };
    let before = reader.user_stats("alice", 3, day + 1).await.expect("read");
    assert_eq!(total(&before.body, "favorites_received"), 99);

    let report = stats::backfill::backfill_day(&lake, &store, Some(&cache), &Extractor::new(default_metrics()), date).await.expect("backfill");
    assert_eq!(report.duplicates, 1, "{report:?}");
    assert_eq!(report.counted, 4, "{report:?}");
    assert!(report.users_invalidated >= 2, "{report:?}"); // alice, zed

    let after = reader.user_stats("alice", 3, day + 1).await.expect("read");
    assert_eq!(total(&after.body, "favorites_received"), 3, "recomputed and the cache invalidated");
    assert_eq!(total(&after.body, "products_sold"), 1, "the next day is untouched");
    assert_eq!(total(&after.body, "products_contacted"), 1, "alice's product p1 was contacted (by bob)");
    let counts = store.user_counts("alice", day, day + 1).await.expect("counts");
    assert!(counts.iter().any(|c| c.day == day && c.metric == "favorites_received" && c.count == 3));
    assert!(store.user_counts("zed", day, day).await.expect("counts").is_empty(), "rows absent from the lake are removed");
    assert_eq!(store.distinct_values("alice", "products_contacted", day).await.expect("values"), vec!["p1"], "values absent from the lake are removed");
    assert!(store.user_counts("bob", day, day).await.expect("counts").is_empty(), "a contact counts for the product's owner");

    // Idempotent: a second run gives the same day.
    stats::backfill::backfill_day(&lake, &store, Some(&cache), &Extractor::new(default_metrics()), date).await.expect("backfill again");
    let again = store.user_counts("alice", day, day).await.expect("counts");
    assert_eq!(again.iter().map(|c| c.count).sum::<i64>(), 4, "3 favorites and 1 product contacted");
}

#[tokio::test]
async fn backfill_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()), "public", 2, true).await.expect("sqlite");
    run(store, StatsCache::in_process(CacheSettings::default())).await;
}

#[tokio::test]
async fn backfill_on_postgres_and_redis() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let schema = format!("stats_bf_{}_{nanos}", std::process::id());
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = Store::open(&url, &schema, 2, true).await.expect("postgres");
    let cache = StatsCache::redis(&redis, &format!("{schema}:"), CacheSettings::default()).await.expect("redis");
    run(store.clone(), cache).await;
    if let Store::Postgres(pg) = &store {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(pg.pool()).await;
    }
}
