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
//! **Versions** close the race between a fill and an invalidation (a read that queried the
//! database just before a commit must not store its older counts after the commit's
//! invalidation): every user has a version (`{prefix}v:{user}` in Redis, created on first
//! read, replaced by every invalidation; and one in the process for the local layers), read
//! *before* the database; a piece or response is stored tagged with the version it was
//! computed under and is a hit only while that is still the user's version. Redis versions
//! also carry the cache's epoch (`{prefix}epoch`), bumped when more invalidations were lost
//! to a Redis outage than could be kept.
//!
//! Redis unreachable: see [`link`]: the cache is bypassed (the API serves from the database),
//! `/readyz` says degraded, and the cache is used again when Redis answers.

mod link;
mod single_flight;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use link::{MAX_PENDING, RedisLink};
pub use single_flight::SingleFlight;

use crate::ttl_cache::TtlCache;

/// Counts of a day range: per metric (configuration order), per day.
pub type Counts = Vec<Vec<i64>>;

/// Today's piece of a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Longest wait for one Redis command (or connection) before Redis is considered down.
    pub redis_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            today_ttl: Duration::from_secs(30),
            closed_ttl: Duration::from_secs(3600),
            local_ttl: Duration::from_secs(1),
            local_capacity: 100_000,
            disabled: false,
            redis_timeout: Duration::from_millis(500),
        }
    }
}

/// The version a piece was read under, to store fills with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Redis pieces: `{epoch}:{user version}`.
    Redis(String),
    /// In-process pieces: the user's local version.
    Local(u64),
    /// The version could not be read (Redis down or failing): fills are not stored.
    None,
}

/// What a lookup of a window found.
#[derive(Debug)]
pub struct Found {
    /// The closed days `first..today`, when cached under the current version.
    pub closed: Option<Counts>,
    /// Today's piece, when cached under the current version.
    pub today: Option<TodayPiece>,
    /// The version to store fills under.
    pub tag: Tag,
    /// The user's local version when the lookup began (for the finished response).
    pub local: u64,
}

/// A piece in Redis, with the version it was computed under.
#[derive(Serialize, Deserialize)]
struct Tagged<T> {
    v: String,
    p: T,
}

type UserResponses = Arc<Mutex<Vec<((u16, i32), u64, Arc<Rendered>)>>>;
type ClosedPieces = Arc<Mutex<HashMap<String, (u64, Arc<Counts>)>>>;
type TodayPieces = Arc<Mutex<HashMap<(i32, u16), (u64, Arc<TodayPiece>)>>>;

enum Pieces {
    None,
    Redis(Arc<RedisLink>),
    Memory { today: moka::future::Cache<String, TodayPieces>, closed: moka::future::Cache<String, ClosedPieces> },
}

/// Windows of one user held in the process (a bound per user).
const WINDOWS_PER_USER: usize = 16;

/// The cache.
pub struct StatsCache {
    settings: CacheSettings,
    pieces: Pieces,
    responses: Option<TtlCache<String, UserResponses>>,
    /// Users' local versions (a user without one gets a fresh one: an evicted version makes
    /// what was stored under it a miss, never a stale hit).
    versions: TtlCache<String, u64>,
    next_version: AtomicU64,
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

    /// Redis pieces (shared by the replicas) with keys under `prefix`. Only a malformed URL
    /// is an error: an unreachable Redis makes the cache degraded (bypassed) until it answers.
    pub async fn redis(url: &str, prefix: &str, settings: CacheSettings) -> Result<StatsCache, CacheError> {
        let pieces = if settings.disabled {
            Pieces::None
        } else {
            // Versions outlive every piece stored under them.
            let version_ttl = settings.closed_ttl.max(settings.today_ttl).as_secs() + 60;
            Pieces::Redis(RedisLink::open(url, prefix, settings.redis_timeout, version_ttl).await?)
        };
        let response_ttl = settings.local_ttl;
        Ok(Self::with(settings, pieces, response_ttl))
    }

    fn with(settings: CacheSettings, pieces: Pieces, response_ttl: Duration) -> StatsCache {
        let responses = (!settings.disabled && !response_ttl.is_zero()).then(|| TtlCache::new(settings.local_capacity, response_ttl));
        let versions = TtlCache::new(settings.local_capacity, settings.closed_ttl + Duration::from_secs(60));
        StatsCache { settings, pieces, responses, versions, next_version: AtomicU64::new(1), flights: Arc::new(SingleFlight::default()) }
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// True when Redis backs the pieces.
    pub fn is_redis(&self) -> bool {
        matches!(self.pieces, Pieces::Redis(_))
    }

    /// The Redis link, in Redis mode.
    pub fn redis_link(&self) -> Option<&Arc<RedisLink>> {
        match &self.pieces {
            Pieces::Redis(link) => Some(link),
            _ => None,
        }
    }

    /// The single flight of response computations.
    pub fn flights(&self) -> &Arc<SingleFlight<Arc<Rendered>>> {
        &self.flights
    }

    fn next_version(&self) -> u64 {
        self.next_version.fetch_add(1, Ordering::Relaxed)
    }

    /// The user's local version (a fresh one when it has none).
    async fn local_version(&self, user: &str) -> u64 {
        self.versions.get_or_insert_with(user, || self.next_version())
    }

    /// A finished response held in the process, if computed under the user's current version.
    pub async fn response(&self, user: &str, days: u16, today: i32) -> Option<Arc<Rendered>> {
        let entry = self.responses.as_ref()?.get(user)?;
        let version = self.versions.get(user)?;
        lock(&entry).iter().find(|(k, v, _)| *k == (days, today) && *v == version).map(|(_, _, r)| r.clone())
    }

    /// Keeps a finished response computed under `version` (see [`Found::local`]).
    pub async fn put_response(&self, user: &str, days: u16, today: i32, version: u64, rendered: Arc<Rendered>) {
        let Some(responses) = &self.responses else { return };
        let entry = responses.get_or_insert_with(user, || Arc::new(Mutex::new(Vec::new())));
        let mut list = lock(&entry);
        list.retain(|(k, v, _)| k.1 == today && k.0 != days && *v == version);
        list.push(((days, today), version, rendered));
    }

    /// The cached pieces of a window (closed days `first..today`, today's piece), each only
    /// when stored under the user's current version, and the version to store fills under.
    /// Read before the database, so that a commit in between makes the fill a miss later.
    pub async fn pieces(&self, user: &str, days: u16, first: i32, today: i32) -> Found {
        let local = self.local_version(user).await;
        let field = format!("{days}:{first}");
        let (closed, today_piece, tag) = match &self.pieces {
            Pieces::None => (None, None, Tag::None),
            Pieces::Memory { today: t, closed } => {
                let today_piece = match t.get(user).await {
                    Some(map) => lock(&map).get(&(today, days)).filter(|(v, _)| *v == local).map(|(_, p)| (**p).clone()),
                    None => None,
                };
                let closed_counts = match closed.get(user).await {
                    Some(map) => lock(&map).get(&field).filter(|(v, _)| *v == local).map(|(_, c)| (**c).clone()),
                    None => None,
                };
                (closed_counts, today_piece, Tag::Local(local))
            }
            Pieces::Redis(link) => {
                let p = link.prefix();
                let version_key = format!("{p}v:{user}");
                let mut pipe = redis::pipe();
                // A user without a version gets one (never "no version", which an evicted key
                // would bring back).
                pipe.cmd("SET").arg(&version_key).arg(link.new_version()).arg("NX").arg("EX").arg(link.version_ttl_secs()).ignore();
                pipe.cmd("GET").arg(&version_key);
                pipe.cmd("GET").arg(format!("{p}epoch"));
                pipe.cmd("HGET").arg(format!("{p}c:{user}")).arg(&field);
                pipe.cmd("HGET").arg(format!("{p}d:{user}:{today}")).arg(days);
                type Read = (Option<String>, Option<String>, Option<Vec<u8>>, Option<Vec<u8>>);
                match link.query::<Read>(&pipe, "read").await {
                    Some((Some(version), epoch, c, t)) => {
                        let tag = format!("{}:{version}", epoch.as_deref().unwrap_or("0"));
                        let closed = c.and_then(|b| serde_json::from_slice::<Tagged<Counts>>(&b).ok()).filter(|x| x.v == tag).map(|x| x.p);
                        let today_piece = t.and_then(|b| serde_json::from_slice::<Tagged<TodayPiece>>(&b).ok()).filter(|x| x.v == tag).map(|x| x.p);
                        (closed, today_piece, Tag::Redis(tag))
                    }
                    _ => (None, None, Tag::None),
                }
            }
        };
        Found { closed, today: today_piece, tag, local }
    }

    /// Stores the pieces of a window computed under `tag` (closed only when the window has
    /// closed days).
    pub async fn put_pieces(&self, user: &str, days: u16, first: i32, today: i32, tag: &Tag, closed: Option<&Counts>, today_piece: Option<&TodayPiece>) {
        let field = format!("{days}:{first}");
        match (&self.pieces, tag) {
            (Pieces::Memory { today: t, closed: c }, Tag::Local(version)) => {
                if let Some(tp) = today_piece {
                    let map = t.get_with(user.to_owned(), async { Arc::new(Mutex::new(HashMap::new())) }).await;
                    let mut m = lock(&map);
                    m.retain(|k, (v, _)| k.0 == today && v == version);
                    if m.len() >= WINDOWS_PER_USER {
                        m.clear();
                    }
                    m.insert((today, days), (*version, Arc::new(tp.clone())));
                }
                if let Some(cc) = closed {
                    let map = c.get_with(user.to_owned(), async { Arc::new(Mutex::new(HashMap::new())) }).await;
                    let mut m = lock(&map);
                    m.retain(|_, (v, _)| v == version);
                    if m.len() >= WINDOWS_PER_USER {
                        m.clear();
                    }
                    m.insert(field, (*version, Arc::new(cc.clone())));
                }
            }
            (Pieces::Redis(link), Tag::Redis(version)) => {
                let p = link.prefix();
                let mut pipe = redis::pipe();
                if let Some(tp) = today_piece {
                    let key = format!("{p}d:{user}:{today}");
                    let v = serde_json::to_vec(&Tagged { v: version.clone(), p: tp }).unwrap_or_default();
                    pipe.cmd("HSET").arg(&key).arg(days).arg(v).ignore();
                    // NX: a window added later does not extend the pieces already there.
                    pipe.cmd("EXPIRE").arg(&key).arg(self.settings.today_ttl.as_secs().max(1)).arg("NX").ignore();
                }
                if let Some(cc) = closed {
                    let key = format!("{p}c:{user}");
                    let v = serde_json::to_vec(&Tagged { v: version.clone(), p: cc }).unwrap_or_default();
                    pipe.cmd("HSET").arg(&key).arg(&field).arg(v).ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(self.settings.closed_ttl.as_secs().max(1)).arg("NX").ignore();
                }
                let _ = link.query::<()>(&pipe, "fill").await;
            }
            _ => {}
        }
    }

    /// Forgets what is cached for users: `(user, closed)` drops today's pieces and the
    /// responses, and the closed pieces too when `closed` (a closed day changed). Every
    /// user gets a new version, so a fill computed before this call is never served after
    /// it. With Redis down, the Redis part waits until it answers (see [`link`]).
    pub async fn invalidate(&self, users: &[(String, bool)], today: i32) {
        for (u, _) in users {
            self.versions.insert(u.clone(), self.next_version());
        }
        if let Some(r) = &self.responses {
            for (u, _) in users {
                r.remove(u.as_str());
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
            Pieces::Redis(link) => link.invalidate(users, today).await,
        }
    }

    /// For `/readyz`: why the cache is degraded (Redis unreachable), if it is.
    pub fn degraded(&self) -> Option<String> {
        self.redis_link().and_then(|l| l.degraded())
    }
}
