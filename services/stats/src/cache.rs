//! The cache in front of the database (cache-aside), in three parts:
//!
//! - **Day pieces** (Redis, or in-process when no Redis is configured): today's piece of a
//!   user's window (`{prefix}d:{user}:{day}`, a hash with one field per window length, short
//!   TTL: it changes as events arrive) holds today's counts and the window totals of the
//!   distinct metrics (a distinct union over the window changes with today's values); the
//!   closed days of a window (`{prefix}c:{user}`, a hash with one field per window, longer
//!   TTL: closed days change only with late events or a backfill, and both invalidate).
//! - **Finished responses** in the process (body + ETag) for `local_ttl` (Redis mode: a short
//!   bound on cross-replica staleness; in-process mode: today's TTL).
//! - **Single flight**: concurrent misses of one key run one computation (one database query).
//!
//! Invalidation: after each committed batch the aggregator deletes the touched users' today
//! pieces (and closed pieces when a closed day was touched); a backfill deletes the closed
//! pieces of every user of the day. Redis failures are logged and read as misses.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use redis::aio::ConnectionManager;

/// Counts of a day range: per metric (configuration order), per day.
pub type Counts = Vec<Vec<i64>>;

/// Today's piece of a window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TodayPiece {
    /// Today's count per metric (configuration order).
    pub counts: Vec<i64>,
    /// The distinct metrics' totals over the whole window (configuration order of the
    /// distinct metrics).
    pub totals: Vec<i64>,
}

/// A finished response: its JSON body and ETag.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The JSON body.
    pub body: Bytes,
    /// The strong ETag, quoted.
    pub etag: String,
    /// The same, as a header value.
    pub etag_header: axum::http::HeaderValue,
}

/// Cache lifetimes and sizes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Today's counts.
    pub today_ttl: Duration,
    /// Closed days.
    pub closed_ttl: Duration,
    /// Finished responses in the process, in front of Redis (0: none).
    pub local_ttl: Duration,
    /// Users the in-process layers hold.
    pub local_capacity: u64,
    /// No caching at all (single flight stays).
    pub disabled: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            today_ttl: Duration::from_secs(30),
            closed_ttl: Duration::from_secs(3600),
            local_ttl: Duration::from_secs(1),
            local_capacity: 100_000,
            disabled: false,
        }
    }
}

type UserResponses = Arc<Mutex<Vec<((u16, i32), Arc<Rendered>)>>>;
type ClosedPieces = Arc<Mutex<HashMap<String, Arc<Counts>>>>;
type TodayPieces = Arc<Mutex<HashMap<(i32, u16), Arc<TodayPiece>>>>;

enum Pieces {
    None,
    Redis { conn: ConnectionManager, prefix: String },
    Memory { today: moka::future::Cache<String, TodayPieces>, closed: moka::future::Cache<String, ClosedPieces> },
}

/// Windows of one user held in the process (a bound per user).
const WINDOWS_PER_USER: usize = 16;

/// The cache.
pub struct StatsCache {
    settings: CacheSettings,
    pieces: Pieces,
    responses: Option<moka::future::Cache<String, UserResponses>>,
    flights: Arc<SingleFlight<Arc<Rendered>>>,
}

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct CacheError(#[from] redis::RedisError);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StatsCache {
    /// In-process pieces (the embedded default, or one replica).
    pub fn in_process(settings: CacheSettings) -> StatsCache {
        let pieces = if settings.disabled {
            Pieces::None
        } else {
            Pieces::Memory {
                today: moka::future::Cache::builder().max_capacity(settings.local_capacity).time_to_live(settings.today_ttl).build(),
                closed: moka::future::Cache::builder().max_capacity(settings.local_capacity).time_to_live(settings.closed_ttl).build(),
            }
        };
        let response_ttl = settings.today_ttl;
        Self::with(settings, pieces, response_ttl)
    }

    /// Redis pieces (shared by the replicas) with keys under `prefix`.
    pub async fn redis(url: &str, prefix: &str, settings: CacheSettings) -> Result<StatsCache, CacheError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_connection_manager().await?;
        let pieces = if settings.disabled { Pieces::None } else { Pieces::Redis { conn, prefix: prefix.to_owned() } };
        let response_ttl = settings.local_ttl;
        Ok(Self::with(settings, pieces, response_ttl))
    }

    fn with(settings: CacheSettings, pieces: Pieces, response_ttl: Duration) -> StatsCache {
        let responses = (!settings.disabled && !response_ttl.is_zero())
            .then(|| moka::future::Cache::builder().max_capacity(settings.local_capacity).time_to_live(response_ttl).build());
        StatsCache { settings, pieces, responses, flights: Arc::new(SingleFlight::default()) }
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// True when Redis backs the pieces.
    pub fn is_redis(&self) -> bool {
        matches!(self.pieces, Pieces::Redis { .. })
    }

    /// The single flight of response computations.
    pub fn flights(&self) -> &Arc<SingleFlight<Arc<Rendered>>> {
        &self.flights
    }

    /// A finished response held in the process.
    pub async fn response(&self, user: &str, days: u16, today: i32) -> Option<Arc<Rendered>> {
        let entry = self.responses.as_ref()?.get(user).await?;
        lock(&entry).iter().find(|(k, _)| *k == (days, today)).map(|(_, r)| r.clone())
    }

    /// Keeps a finished response in the process.
    pub async fn put_response(&self, user: &str, days: u16, today: i32, rendered: Arc<Rendered>) {
        let Some(responses) = &self.responses else { return };
        let entry = responses.get_with(user.to_owned(), async { Arc::new(Mutex::new(Vec::new())) }).await;
        let mut list = lock(&entry);
        list.retain(|(k, _)| k.1 == today && k.0 != days);
        list.push(((days, today), rendered));
    }

    /// The cached pieces of a window: (closed days `first..today`, today's piece).
    pub async fn pieces(&self, user: &str, days: u16, first: i32, today: i32) -> (Option<Counts>, Option<TodayPiece>) {
        let field = format!("{days}:{first}");
        match &self.pieces {
            Pieces::None => (None, None),
            Pieces::Memory { today: t, closed } => {
                let today_piece = match t.get(user).await {
                    Some(map) => lock(&map).get(&(today, days)).map(|p| (**p).clone()),
                    None => None,
                };
                let closed_counts = match closed.get(user).await {
                    Some(map) => lock(&map).get(&field).map(|c| (**c).clone()),
                    None => None,
                };
                (closed_counts, today_piece)
            }
            Pieces::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                pipe.cmd("HGET").arg(format!("{prefix}c:{user}")).arg(&field);
                pipe.cmd("HGET").arg(format!("{prefix}d:{user}:{today}")).arg(days);
                match pipe.query_async::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&mut conn).await {
                    Ok((c, t)) => (
                        c.and_then(|b| serde_json::from_slice::<Counts>(&b).ok()),
                        t.and_then(|b| serde_json::from_slice::<TodayPiece>(&b).ok()),
                    ),
                    Err(e) => {
                        metrics::counter!("stats_cache_errors_total").increment(1);
                        tracing::warn!(error = %e, "redis read failed; reading the database");
                        (None, None)
                    }
                }
            }
        }
    }

    /// Stores the pieces of a window (closed only when the window has closed days).
    pub async fn put_pieces(&self, user: &str, days: u16, first: i32, today: i32, closed: Option<&Counts>, today_piece: Option<&TodayPiece>) {
        let field = format!("{days}:{first}");
        match &self.pieces {
            Pieces::None => {}
            Pieces::Memory { today: t, closed: c } => {
                if let Some(tp) = today_piece {
                    let map = t.get_with(user.to_owned(), async { Arc::new(Mutex::new(HashMap::new())) }).await;
                    let mut m = lock(&map);
                    m.retain(|k, _| k.0 == today);
                    if m.len() >= WINDOWS_PER_USER {
                        m.clear();
                    }
                    m.insert((today, days), Arc::new(tp.clone()));
                }
                if let Some(cc) = closed {
                    let map = c.get_with(user.to_owned(), async { Arc::new(Mutex::new(HashMap::new())) }).await;
                    let mut m = lock(&map);
                    if m.len() >= WINDOWS_PER_USER {
                        m.clear();
                    }
                    m.insert(field, Arc::new(cc.clone()));
                }
            }
            Pieces::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                if let Some(tp) = today_piece {
                    let key = format!("{prefix}d:{user}:{today}");
                    let v = serde_json::to_vec(tp).unwrap_or_default();
                    pipe.cmd("HSET").arg(&key).arg(days).arg(v).ignore();
                    // NX: a window added later does not extend the pieces already there.
                    pipe.cmd("EXPIRE").arg(&key).arg(self.settings.today_ttl.as_secs().max(1)).arg("NX").ignore();
                }
                if let Some(cc) = closed {
                    let key = format!("{prefix}c:{user}");
                    let v = serde_json::to_vec(cc).unwrap_or_default();
                    pipe.cmd("HSET").arg(&key).arg(&field).arg(v).ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(self.settings.closed_ttl.as_secs().max(1)).arg("NX").ignore();
                }
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    metrics::counter!("stats_cache_errors_total").increment(1);
                    tracing::warn!(error = %e, "redis write failed");
                }
            }
        }
    }

    /// Forgets what is cached for users: `(user, closed)` drops today's pieces and the
    /// responses, and the closed pieces too when `closed` (a closed day changed).
    pub async fn invalidate(&self, users: &[(String, bool)], today: i32) {
        if let Some(r) = &self.responses {
            for (u, _) in users {
                r.invalidate(u).await;
            }
        }
        match &self.pieces {
            Pieces::None => {}
            Pieces::Memory { today: t, closed } => {
                for (u, c) in users {
                    t.invalidate(u).await;
                    if *c {
                        closed.invalidate(u).await;
                    }
                }
            }
            Pieces::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                for chunk in users.chunks(5000) {
                    let mut pipe = redis::pipe();
                    for (u, c) in chunk {
                        pipe.cmd("DEL").arg(format!("{prefix}d:{u}:{today}")).ignore();
                        if *c {
                            pipe.cmd("DEL").arg(format!("{prefix}c:{u}")).ignore();
                        }
                    }
                    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                        metrics::counter!("stats_cache_errors_total").increment(1);
                        tracing::warn!(error = %e, users = chunk.len(), "redis invalidation failed; entries expire with their TTL");
                    }
                }
            }
        }
    }

    /// True when the cache answers (Redis PING).
    pub async fn ping(&self) -> Result<(), String> {
        match &self.pieces {
            Pieces::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| format!("redis: {e}"))
            }
            _ => Ok(()),
        }
    }
}

type Flight<V> = Shared<BoxFuture<'static, Result<V, Arc<str>>>>;

/// Concurrent calls with one key share one computation (run as its own task, so a caller
/// that goes away does not cancel it for the others).
pub struct SingleFlight<V> {
    inflight: Mutex<HashMap<String, (u64, Flight<V>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight { inflight: Mutex::new(HashMap::new()), next: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    /// Runs `make()` unless a computation of `key` is running; either way, its result.
    pub async fn run<F>(self: &Arc<Self>, key: String, make: impl FnOnce() -> F) -> Result<V, Arc<str>>
    where
        F: Future<Output = Result<V, Arc<str>>> + Send + 'static,
    {
        let flight = {
            let mut map = lock(&self.inflight);
            if let Some((_, f)) = map.get(&key) {
                metrics::counter!("stats_single_flight_joined_total").increment(1);
                f.clone()
            } else {
                let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let this = self.clone();
                let k = key.clone();
                let work = make();
                // Spawned while the map is locked: the task's removal waits for our insert.
                let handle = tokio::spawn(async move {
                    let r = work.await;
                    let mut map = lock(&this.inflight);
                    if map.get(&k).is_some_and(|(i, _)| *i == id) {
                        map.remove(&k);
                    }
                    r
                });
                let flight: Flight<V> = async move {
                    match handle.await {
                        Ok(r) => r,
                        Err(e) => Err(Arc::from(format!("computation failed: {e}"))),
                    }
                }
                .boxed()
                .shared();
                map.insert(key, (id, flight.clone()));
                flight
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn single_flight_runs_once_for_concurrent_callers() {
        let sf: Arc<SingleFlight<u64>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let sf = sf.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                sf.run("k".into(), move || async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(7)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Finished flights are forgotten: the next call runs again.
        let r = sf.run("k".into(), || async { Ok(8) }).await.unwrap();
        assert_eq!(r, 8);
    }
}
