//! Where the counts live: Postgres in production (daily partitions, batched upserts through
//! `UNNEST`, advisory lock per aggregator), SQLite embedded. Both keep the counts, the values
//! of distinct metrics (`daily_distinct`: one row per (user, metric, day, value), the per-day
//! count in `daily_stats` being the number of those rows) and the bus position of each
//! aggregator, all updated in one transaction.

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The stored position is not the one this aggregator read: another aggregator with the
    /// same consumer name wrote meanwhile. Nothing was applied.
    #[error("consumer {consumer:?}: position moved from {expected} by another writer")]
    PositionMoved {
        /// The consumer.
        consumer: String,
        /// The position this writer expected.
        expected: i64,
    },
    /// A bad database URL or setting.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// True when the database refused the data itself (SQLSTATE class 22, data exception,
    /// e.g. a text holding a NUL; class 23, a constraint): the same write fails again. A
    /// database that is down, a timeout, a missing partition are not.
    pub fn is_permanent(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(db)) = self else { return false };
        db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
    }
}

/// Counts to add (or to write), column by column; one entry per distinct (user, day, metric).
#[derive(Debug, Default, Clone)]
pub struct Rows {
    /// User ids.
    pub users: Vec<String>,
    /// Days since 1970-01-01.
    pub days: Vec<i32>,
    /// Metric names.
    pub metrics: Vec<String>,
    /// Counts.
    pub counts: Vec<i64>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Appends one row.
    pub fn push(&mut self, user: String, day: i32, metric: String, count: i64) {
        self.users.push(user);
        self.days.push(day);
        self.metrics.push(metric);
        self.counts.push(count);
    }

}

/// Values of distinct metrics to add, column by column; one entry per distinct (user, day,
/// metric, value), sorted. A value already stored adds nothing; a new one adds 1 to the
/// day's count unless the day already holds `caps` values (then it is dropped and counted in
/// [`Applied::capped`]).
#[derive(Debug, Default, Clone)]
pub struct Values {
    /// User ids.
    pub users: Vec<String>,
    /// Days since 1970-01-01.
    pub days: Vec<i32>,
    /// Metric names.
    pub metrics: Vec<String>,
    /// The distinct values.
    pub values: Vec<String>,
    /// The metric's bound on values per (user, day).
    pub caps: Vec<i32>,
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No values.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Appends one value.
    pub fn push(&mut self, user: String, day: i32, metric: String, value: String, cap: i32) {
        self.users.push(user);
        self.days.push(day);
        self.metrics.push(metric);
        self.values.push(value);
        self.caps.push(cap);
    }
}

/// What a batch (or a backfilled day) writes: counts to add and distinct values to add.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Event counts (metrics without `distinct`).
    pub counts: Rows,
    /// Distinct values (metrics with `distinct`).
    pub values: Values,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.values.is_empty()
    }
}

/// What a write did beyond the obvious.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// New distinct values dropped because their (user, day, metric) was at its bound.
    pub capped: u64,
}

/// A user's stored statistics over a window.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserCounts {
    /// Per-day counts (distinct metrics: the day's number of distinct values).
    pub days: Vec<DayCount>,
    /// Distinct metrics: the number of distinct values over the union window, per metric.
    pub unions: Vec<(String, i64)>,
}

/// One stored count read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    /// Day since 1970-01-01.
    pub day: i32,
    /// Metric name.
    pub metric: String,
    /// Count.
    pub count: i64,
}

/// The store: Postgres or SQLite, chosen by the URL.
#[derive(Clone)]
pub enum Store {
    /// Production.
    Postgres(PgStore),
    /// Embedded.
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens `postgres://...` (in `schema`) or `sqlite:...`; applies migrations when asked.
    pub async fn open(url: &str, schema: &str, max_connections: u32, migrate: bool) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::open(url, max_connections).await?))
        } else {
            Ok(Store::Postgres(PgStore::open(url, schema, max_connections, migrate).await?))
        }
    }

    /// The position stored for a consumer (0 when none), creating its row.
    pub async fn position(&self, consumer: &str) -> Result<i64, StoreError> {
        match self {
            Store::Postgres(s) => s.position(consumer).await,
            Store::Sqlite(s) => s.position(consumer).await,
        }
    }

    /// Overwrites a consumer's position (the embedded bus restarts its sequences at 1).
    pub async fn set_position(&self, consumer: &str, seq: i64) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.set_position(consumer, seq).await,
            Store::Sqlite(s) => s.set_position(consumer, seq).await,
        }
    }

    /// In ONE transaction: adds the changes (counts, distinct values) and moves the
    /// consumer's position from `expected` to `new` ([`StoreError::PositionMoved`] and nothing
    /// applied if it is not `expected`). Postgres: on the session holding the consumer's lock.
    pub async fn apply(&self, lock: &mut ConsumerLock, consumer: &str, expected: i64, new: i64, changes: &Changes) -> Result<Applied, StoreError> {
        match (self, lock) {
            (Store::Postgres(_), ConsumerLock::Postgres(conn)) => PgStore::apply(conn, consumer, expected, new, changes).await,
            (Store::Sqlite(s), _) => s.apply(consumer, expected, new, changes).await,
            (Store::Postgres(_), ConsumerLock::Embedded) => Err(StoreError::Config("a Postgres aggregator needs its lock session".into())),
        }
    }

    /// Makes sure the days can be written (Postgres: their partitions exist).
    pub async fn ensure_days(&self, days: &[i32]) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.ensure_partitions(days).await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// Forgets which days are known writable, so the next [`Store::ensure_days`] checks again.
    pub fn forget_days(&self) {
        if let Store::Postgres(s) = self {
            s.forget_partitions();
        }
    }

    /// Deletes the days before `cutoff` (Postgres: drops their partitions); what was removed.
    pub async fn drop_before(&self, cutoff: i32) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Postgres(s) => s.drop_partitions_before(cutoff).await,
            Store::Sqlite(s) => s.delete_before(cutoff).await,
        }
    }

    /// A user's counts for days `from..=to`.
    pub async fn user_counts(&self, user: &str, from: i32, to: i32) -> Result<Vec<DayCount>, StoreError> {
        Ok(self.user_stats(user, from, to, None).await?.days)
    }

    /// In one query: a user's per-day counts for days `from..=to` and, when `union_from` is
    /// given, the number of distinct values of each distinct metric over `union_from..=to`.
    pub async fn user_stats(&self, user: &str, from: i32, to: i32, union_from: Option<i32>) -> Result<UserCounts, StoreError> {
        match self {
            Store::Postgres(s) => s.user_stats(user, from, to, union_from).await,
            Store::Sqlite(s) => s.user_stats(user, from, to, union_from).await,
        }
    }

    /// The distinct values stored for a user, metric and day (tests, investigations).
    pub async fn distinct_values(&self, user: &str, metric: &str, day: i32) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Postgres(s) => s.distinct_values(user, metric, day).await,
            Store::Sqlite(s) => s.distinct_values(user, metric, day).await,
        }
    }

    /// In ONE transaction: removes the counts and distinct values of `metrics` on `day` and
    /// writes `changes` (all of that day) instead. Returns the users whose counts were
    /// removed or written, and what the write did.
    pub async fn replace_day(&self, day: i32, metrics: &[String], changes: &Changes) -> Result<(Vec<String>, Applied), StoreError> {
        match self {
            Store::Postgres(s) => s.replace_day(day, metrics, changes).await,
            Store::Sqlite(s) => s.replace_day(day, metrics, changes).await,
        }
    }

    /// Takes the single-writer lock of a consumer (Postgres advisory lock held on a dedicated
    /// connection until the returned guard is dropped), waiting while another process holds it.
    pub async fn lock_consumer(&self, consumer: &str) -> Result<ConsumerLock, StoreError> {
        match self {
            Store::Postgres(s) => s.lock_consumer(consumer).await.map(ConsumerLock::Postgres),
            Store::Sqlite(_) => Ok(ConsumerLock::Embedded),
        }
    }

    /// True when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.ping().await,
            Store::Sqlite(s) => s.ping().await,
        }
    }
}

/// The single-writer lock of an aggregator; released when dropped (its connection closes).
pub enum ConsumerLock {
    /// A Postgres session holding `pg_advisory_lock`.
    Postgres(sqlx::PgConnection),
    /// SQLite: one process owns the file.
    Embedded,
}

impl ConsumerLock {
    /// True while the lock is still held (its connection answers).
    pub async fn is_held(&mut self) -> bool {
        match self {
            ConsumerLock::Postgres(c) => sqlx::Connection::ping(c).await.is_ok(),
            ConsumerLock::Embedded => true,
        }
    }
}
