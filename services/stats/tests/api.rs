//! The stats API over HTTP as mobile clients and internal callers use it, on both backends
//! (Postgres + Redis, and the embedded SQLite + in-process cache): auth (own stats only,
//! expired and foreign tokens, service keys), bounds of `days`, zeros for a user without
//! events, totals and series, ETag/304 and `Cache-Control: private`, cache hits, invalidation
//! after a commit and expiry; and the checked-in OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use service_kit::auth::hash_key;
use stats::auth::{Authenticator, issue_token};
use stats::cache::{CacheSettings, StatsCache};
use stats::definitions::{default_metrics, today};
use stats::store::{Changes, Store};
use stats::{AppState, StatsReader, router};

const SECRET: &str = "test-secret-test-secret-test-secret-0123";
const SERVICE_KEY: &str = "internal-service-key";
const REVOKED_KEY: &str = "revoked-service-key";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct Harness {
    base: String,
    store: Store,
    cache: Arc<StatsCache>,
    lock: stats::store::ConsumerLock,
    position: i64,
}

impl Harness {
    async fn start(store: Store, cache: StatsCache) -> Harness {
        let cache = Arc::new(cache);
        let auth = Authenticator::with_secret(&[hash_key(SERVICE_KEY)], &[hash_key(REVOKED_KEY)], SECRET).expect("auth");
        let state = AppState::new(StatsReader::new(store.clone(), cache.clone(), &default_metrics()), auth, 64, 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        let mut lock = store.lock_consumer("test").await.expect("lock");
        let position = store.position("test").await.expect("position");
        let _ = &mut lock;
        Harness { base: format!("http://{addr}"), store, cache, lock, position }
    }

    /// Adds counts the way the aggregator does (one transaction with the position).
    async fn add(&mut self, user: &str, day: i32, metric: &str, n: i64) {
        let mut changes = Changes::default();
        changes.counts.push(user.into(), day, metric.into(), n);
        self.commit(day, changes).await;
    }

    /// Adds distinct values the way the aggregator does.
    async fn add_values(&mut self, user: &str, day: i32, metric: &str, values: &[&str]) {
        let mut changes = Changes::default();
        for v in values {
            changes.values.push(user.into(), day, metric.into(), (*v).into(), 10_000);
        }
        self.commit(day, changes).await;
    }

    async fn commit(&mut self, day: i32, changes: Changes) {
        self.store.ensure_days(&[day]).await.expect("partition");
        self.store.apply(&mut self.lock, "test", self.position, self.position + 1, &changes).await.expect("apply");
        self.position += 1;
    }

    async fn get(&self, user: &str, query: &str, auth: Option<&str>, etag: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = reqwest::Client::new().get(format!("{}/v1/users/{user}/stats{query}", self.base));
        if let Some(a) = auth {
            req = req.header("Authorization", format!("Bearer {a}"));
        }
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }
}

fn metric<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["metrics"].as_array().and_then(|m| m.iter().find(|x| x["name"] == name)).expect("metric present")
}

fn token(user: &str) -> String {
    issue_token(SECRET, user, 600).expect("token")
}

async fn exercise(mut h: Harness) {
    let user = unique("user");
    let t = today();
    let me = token(&user);

    // Auth.
    assert_eq!(h.get(&user, "", None, None).await.0, 401);
    assert_eq!(h.get(&user, "", Some("not-a-token"), None).await.0, 401);
    let expired = issue_token(SECRET, &user, 0).map(|_| ()).and_then(|_| {
        // exp one hour in the past
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &stats::auth::Claims { sub: user.clone(), exp: (chrono::Utc::now().timestamp() - 3600) as u64 },
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .map_err(|e| e.to_string())
    });
    assert_eq!(h.get(&user, "", Some(&expired.expect("expired token")), None).await.0, 401);
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &stats::auth::Claims { sub: user.clone(), exp: (chrono::Utc::now().timestamp() + 600) as u64 },
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .expect("token");
    assert_eq!(h.get(&user, "", Some(&wrong_secret), None).await.0, 401);
    let (status, body, _) = h.get(&user, "", Some(&token("someone-else")), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(h.get(&user, "", Some(REVOKED_KEY), None).await.0, 403);
    assert_eq!(h.get(&user, "", Some(SERVICE_KEY), None).await.0, 200);

    // A user without events: zeros, 7 days by default.
    let (status, body, headers) = h.get(&user, "", Some(&me), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["days"], 7);
    assert_eq!(body["dates"].as_array().map(Vec::len), Some(7));
    assert_eq!(body["to"], stats::definitions::day_date(t).to_string());
    for m in default_metrics() {
        let x = metric(&body, &m.name);
        assert_eq!(x["total"], 0);
        assert_eq!(x["series"], serde_json::json!([0, 0, 0, 0, 0, 0, 0]));
    }
    assert!(headers["cache-control"].to_str().unwrap_or("").starts_with("private"));

    // Bounds of days.
    for bad in ["?days=0", "?days=91", "?days=-1", "?days=abc", "?days=7.5"] {
        let (status, body, _) = h.get(&user, bad, Some(&me), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_days");
    }
    let (status, body, _) = h.get(&user, "?days=90", Some(&me), None).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&body, "views_received")["series"].as_array().map(Vec::len), Some(90));
    assert_eq!(h.get(&user, "?days=1", Some(&me), None).await.0, 200);

    // Counts: closed days and today, totals and series; invalidation after a commit.
    h.add(&user, t - 2, "favorites_received", 3).await;
    h.add(&user, t - 10, "favorites_received", 100).await; // outside a 7-day window
    h.cache.invalidate(&[(user.clone(), true)], t).await;
    let (_, body, headers) = h.get(&user, "?days=7", Some(&me), None).await;
    assert_eq!(metric(&body, "favorites_received")["total"], 3);
    assert_eq!(metric(&body, "favorites_received")["series"], serde_json::json!([0, 0, 0, 0, 3, 0, 0]));
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let (_, body30, _) = h.get(&user, "?days=30", Some(&me), None).await;
    assert_eq!(metric(&body30, "favorites_received")["total"], 103);

    // ETag: 304 when unchanged.
    let (status, _, headers304) = h.get(&user, "?days=7", Some(&me), Some(&etag)).await;
    assert_eq!(status, 304);
    assert_eq!(headers304["etag"].to_str().ok(), Some(etag.as_str()));

    // Cached: a write without invalidation is not seen yet...
    h.add(&user, t, "views_received", 5).await;
    let (_, body, _) = h.get(&user, "?days=7", Some(&me), None).await;
    assert_eq!(metric(&body, "views_received")["total"], 0, "served from the cache");
    // ...the aggregator's invalidation after its commit makes it visible at once.
    h.cache.invalidate(&[(user.clone(), false)], t).await;
    let (status, body, _) = h.get(&user, "?days=7", Some(&me), Some(&etag)).await;
    assert_eq!(status, 200, "changed: a new ETag");
    assert_eq!(metric(&body, "views_received")["total"], 5);
    assert_eq!(metric(&body, "views_received")["series"][6], 5);
    assert_eq!(metric(&body, "favorites_received")["total"], 3);

    // Expiry: without invalidation, today's counts show once the short TTL has passed.
    h.add(&user, t, "views_received", 2).await;
    let (_, body, _) = h.get(&user, "?days=7", Some(&me), None).await;
    assert_eq!(metric(&body, "views_received")["total"], 5, "still cached");
    tokio::time::sleep(h.cache.settings().today_ttl + Duration::from_millis(300)).await;
    let (_, body, _) = h.get(&user, "?days=7", Some(&me), None).await;
    assert_eq!(metric(&body, "views_received")["total"], 7, "expired");
    // The closed days survived today's expiry (longer TTL) and are still right.
    assert_eq!(metric(&body, "favorites_received")["total"], 3);

    // A distinct metric: per-day distinct values, and the window's total a union (p2 on two
    // days counts once); today's new value shows after the invalidation, in the total too.
    h.add_values(&user, t - 2, "products_contacted", &["p1", "p2"]).await;
    h.add_values(&user, t, "products_contacted", &["p2", "p3"]).await;
    h.cache.invalidate(&[(user.clone(), true)], t).await;
    let (_, body, _) = h.get(&user, "?days=7", Some(&me), None).await;
    let contacted = metric(&body, "products_contacted");
    assert_eq!(contacted["distinct"], "product_id");
    assert_eq!(contacted["series"], serde_json::json!([0, 0, 0, 0, 2, 0, 2]));
    assert_eq!(contacted["total"], 3, "a union, not the sum of the days");
    let (_, body, _) = h.get(&user, "?days=1", Some(&me), None).await;
    assert_eq!(metric(&body, "products_contacted")["total"], 2);
    h.add_values(&user, t, "products_contacted", &["p1", "p3", "p4"]).await;
    h.cache.invalidate(&[(user.clone(), false)], t).await;
    let (_, body, _) = h.get(&user, "?days=7", Some(&me), None).await;
    assert_eq!(metric(&body, "products_contacted")["series"], serde_json::json!([0, 0, 0, 0, 2, 0, 4]));
    assert_eq!(metric(&body, "products_contacted")["total"], 4);
    assert!(metric(&body, "favorites_received").get("distinct").is_none());

    // Many concurrent first requests of one key all get the same answer.
    let other = unique("burst");
    h.add(&other, t - 1, "views_received", 4).await;
    let tok = token(&other);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = format!("{}/v1/users/{other}/stats?days=3", h.base);
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new().get(url).bearer_auth(tok).send().await.expect("req");
            r.json::<Value>().await.expect("json")
        }));
    }
    for task in tasks {
        let body = task.await.expect("task");
        assert_eq!(metric(&body, "views_received")["series"], serde_json::json!([0, 4, 0]));
    }
}

fn short_ttls() -> CacheSettings {
    CacheSettings { today_ttl: Duration::from_secs(1), closed_ttl: Duration::from_secs(60), local_ttl: Duration::from_millis(200), ..CacheSettings::default() }
}

#[tokio::test]
async fn api_on_postgres_and_redis() {
    let schema = unique("stats_api");
    let store = Store::open(&pg_url(), &schema, 4, true).await.expect("postgres (bash scripts/services.sh up)");
    let cache = StatsCache::redis(&redis_url(), &format!("{schema}:"), short_ttls()).await.expect("redis");
    assert!(cache.is_redis());
    exercise(Harness::start(store.clone(), cache).await).await;
    if let Store::Postgres(pg) = &store {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(pg.pool()).await;
    }
}

#[tokio::test]
async fn api_on_sqlite_and_in_process_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/stats.db", dir.path().display());
    let store = Store::open(&url, "public", 4, true).await.expect("sqlite");
    exercise(Harness::start(store, StatsCache::in_process(short_ttls())).await).await;
}

#[tokio::test]
async fn retention_drops_old_partitions() {
    let schema = unique("stats_ret");
    let store = Store::open(&pg_url(), &schema, 2, true).await.expect("postgres");
    let t = today();
    store.ensure_days(&[t - 500, t - 401, t - 3, t]).await.expect("partitions");
    let dropped = store.drop_before(t - 399).await.expect("retention");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    let again = store.drop_before(t - 399).await.expect("retention");
    assert!(again.is_empty());
    if let Store::Postgres(pg) = &store {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'daily_stats'::regclass")
            .fetch_one(pg.pool())
            .await
            .expect("count");
        assert_eq!(left, 2);
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(pg.pool()).await;
    }
}

#[test]
fn openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/stats.json");
    let current = stats::openapi::pretty_json();
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, &current).expect("write openapi/stats.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(checked_in == current, "openapi/stats.json is stale: run UPDATE_OPENAPI=1 cargo test -p stats --test api");
}
