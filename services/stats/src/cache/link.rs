//! The Redis connection of the cache, and what happens when Redis is unreachable.
//!
//! - The connection is made lazily and re-made by the connection manager; every command has a
//!   response timeout, so a frozen Redis costs at most one timeout.
//! - A connection failure or timeout marks Redis **down**: from then on the cache is bypassed
//!   (reads go to the database, within the API's in-flight bound) instead of paying a timeout
//!   per request. A probe PINGs every second and marks it **up** again when it answers.
//! - Invalidations that cannot be sent while Redis is down are kept (at most
//!   [`MAX_PENDING`] users) and sent when it is back: a Redis that was only unreachable (not
//!   restarted) would otherwise serve entries the aggregator meant to invalidate. Past the
//!   bound, the cache's epoch is bumped instead, which invalidates every entry at once.
//! - State: `stats_cache_degraded` (1 while down), `stats_cache_errors_total`,
//!   `stats_cache_total{layer="redis",result="bypassed"}`, and [`RedisLink::degraded`] for
//!   `/readyz`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Users whose invalidation waits for Redis to come back; beyond, the epoch is bumped.
pub const MAX_PENDING: usize = 100_000;
/// How often the link is checked.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Users per invalidation pipeline.
const CHUNK: usize = 5000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Pending {
    /// User -> whether its closed days changed too.
    users: HashMap<String, bool>,
    /// More users than [`MAX_PENDING`] were waiting: bump the epoch instead.
    overflowed: bool,
}

/// The cache's Redis: the connection, its state, the invalidations waiting for it.
pub struct RedisLink {
    conn: ConnectionManager,
    prefix: String,
    /// Lifetime of a user's version key (longer than any piece's).
    version_ttl_secs: u64,
    up: AtomicBool,
    last_error: Mutex<String>,
    pending: Mutex<Pending>,
    /// Source of versions: unpredictable, unique per process.
    random: std::collections::hash_map::RandomState,
    counter: AtomicU64,
}

/// True for errors that mean Redis cannot be reached (not a refused command).
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisLink {
    /// A link to `url` (only a malformed URL is an error: Redis may be down at start), checked
    /// once now and then every second by a probe that ends when the link is dropped.
    pub async fn open(url: &str, prefix: &str, timeout: Duration, version_ttl_secs: u64) -> Result<Arc<RedisLink>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let link = Arc::new(RedisLink {
            conn,
            prefix: prefix.to_owned(),
            version_ttl_secs,
            up: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            pending: Mutex::new(Pending::default()),
            random: std::collections::hash_map::RandomState::new(),
            counter: AtomicU64::new(0),
        });
        link.probe().await;
        if !link.is_up() {
            tracing::warn!(error = %link.last_error(), "Redis is unreachable at start; serving from the database until it answers");
        }
        tokio::spawn(probe_loop(Arc::downgrade(&link)));
        Ok(link)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Lifetime of version keys.
    pub fn version_ttl_secs(&self) -> u64 {
        self.version_ttl_secs
    }

    /// False while Redis is considered unreachable.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn last_error(&self) -> String {
        lock(&self.last_error).clone()
    }

    /// Why the cache is degraded, if it is.
    pub fn degraded(&self) -> Option<String> {
        (!self.is_up()).then(|| format!("redis unreachable ({}): serving from the database", self.last_error()))
    }

    /// A new version value (unpredictable, unique).
    pub fn new_version(&self) -> String {
        format!("{:016x}", self.random.hash_one(self.counter.fetch_add(1, Ordering::Relaxed)))
    }

    /// Runs a pipeline unless Redis is down; `None` when skipped or failed (a connection
    /// failure marks Redis down).
    pub async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline, what: &'static str) -> Option<T> {
        if !self.is_up() {
            metrics::counter!("stats_cache_total", "layer" => "redis", "result" => "bypassed").increment(1);
            return None;
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<T>(&mut conn).await {
            Ok(v) => Some(v),
            Err(e) => {
                metrics::counter!("stats_cache_errors_total").increment(1);
                if is_unreachable(&e) {
                    self.mark_down(&e.to_string());
                } else {
                    tracing::warn!(error = %e, what, "redis refused a command");
                }
                None
            }
        }
    }

    fn mark_down(&self, error: &str) {
        *lock(&self.last_error) = error.to_owned();
        if self.up.swap(false, Ordering::AcqRel) {
            metrics::gauge!("stats_cache_degraded").set(1.0);
            tracing::warn!(error, "Redis unreachable: serving from the database until it answers again");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            metrics::gauge!("stats_cache_degraded").set(0.0);
            tracing::info!("Redis answers again: back to the cache");
        }
    }

    /// PINGs Redis (whatever its state) and updates the state; when up, sends the pending
    /// invalidations.
    async fn probe(&self) {
        let mut conn = self.conn.clone();
        match redis::cmd("PING").query_async::<String>(&mut conn).await {
            Ok(_) => {
                if self.flush_pending().await {
                    self.mark_up();
                }
            }
            Err(e) => self.mark_down(&e.to_string()),
        }
    }

    /// Invalidates users: a new version for each (the pieces cached under the old one are no
    /// longer valid), and their pieces deleted (`(user, closed)`: today's piece of `today`,
    /// and the closed days when `closed`). Kept for later when Redis is down.
    pub async fn invalidate(&self, users: &[(String, bool)], today: i32) {
        if !self.is_up() {
            self.keep_pending(users);
            return;
        }
        for chunk in users.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (u, closed) in chunk {
                self.push_invalidation(&mut pipe, u, *closed, Some(today));
            }
            if self.query::<()>(&pipe, "invalidate").await.is_none() {
                tracing::warn!(users = chunk.len(), "redis invalidation failed; kept until Redis answers");
                self.keep_pending(chunk);
            }
        }
    }

    fn push_invalidation(&self, pipe: &mut redis::Pipeline, user: &str, closed: bool, today: Option<i32>) {
        let p = &self.prefix;
        pipe.cmd("SET").arg(format!("{p}v:{user}")).arg(self.new_version()).arg("EX").arg(self.version_ttl_secs).ignore();
        if let Some(today) = today {
            pipe.cmd("DEL").arg(format!("{p}d:{user}:{today}")).ignore();
        }
        if closed {
            pipe.cmd("DEL").arg(format!("{p}c:{user}")).ignore();
        }
    }

    fn keep_pending(&self, users: &[(String, bool)]) {
        let mut pending = lock(&self.pending);
        for (u, closed) in users {
            if pending.users.len() >= MAX_PENDING && !pending.users.contains_key(u) {
                pending.overflowed = true;
                pending.users.clear();
                break;
            }
            *pending.users.entry(u.clone()).or_insert(false) |= *closed;
        }
        metrics::gauge!("stats_cache_pending_invalidations").set(pending.users.len() as f64);
    }

    /// Users whose invalidation waits for Redis (and whether the epoch must be bumped).
    pub fn pending(&self) -> (usize, bool) {
        let p = lock(&self.pending);
        (p.users.len(), p.overflowed)
    }

    /// Sends the pending invalidations; true when none is left.
    async fn flush_pending(&self) -> bool {
        let (users, overflowed) = {
            let mut p = lock(&self.pending);
            (std::mem::take(&mut p.users), std::mem::take(&mut p.overflowed))
        };
        if users.is_empty() && !overflowed {
            return true;
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        if overflowed {
            // Too many to name: every entry of this cache becomes invalid.
            pipe.cmd("INCR").arg(format!("{}epoch", self.prefix)).ignore();
        }
        let list: Vec<(String, bool)> = users.into_iter().collect();
        for (u, closed) in &list {
            self.push_invalidation(&mut pipe, u, *closed, None);
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                tracing::info!(users = list.len(), epoch_bumped = overflowed, "invalidations kept while Redis was unreachable were sent");
                metrics::gauge!("stats_cache_pending_invalidations").set(0.0);
                true
            }
            Err(e) => {
                let mut p = lock(&self.pending);
                p.overflowed |= overflowed;
                drop(p);
                self.keep_pending(&list);
                self.mark_down(&e.to_string());
                false
            }
        }
    }

    /// Tries to send the pending invalidations for up to `wait` (a process about to exit,
    /// like a backfill); the number of users still pending.
    pub async fn settle(&self, wait: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.probe().await;
            let (left, overflowed) = self.pending();
            if (left == 0 && !overflowed) || tokio::time::Instant::now() >= deadline {
                return left + usize::from(overflowed);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn probe_loop(link: Weak<RedisLink>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(link) = link.upgrade() else { return };
        link.probe().await;
    }
}
