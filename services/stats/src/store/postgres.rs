//! Postgres: `daily_stats` and `daily_distinct` partitioned by day, `consumer_positions`,
//! migrations from the repository's `migrations/` (embedded in the binary, applied by sqlx's
//! runtime migrator: see [`migrator`]), batched upserts through `UNNEST` arrays; distinct
//! values are inserted, bounded and counted in one statement per chunk.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row, SqlSafeStr};

use super::{Applied, Changes, DayCount, Rows, StoreError, UserCounts, Values};
use crate::definitions::day_date;

/// Rows per upsert statement (bounded statement size; one transaction either way).
const CHUNK: usize = 20_000;

/// The files of `migrations/`: (version, description, SQL), as sqlx names them from
/// `<version>_<description>.sql`. A test checks this list against the folder.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (20250601000001, "stats daily", include_str!("../../../../migrations/20250601000001_stats_daily.sql")),
    (20250601000002, "stats distinct", include_str!("../../../../migrations/20250601000002_stats_distinct.sql")),
];

/// The migrations, embedded at compile time: the same versions, descriptions and checksums
/// as `sqlx::migrate!("../../migrations")` gave, without its proc-macro (and the ~140 host
/// crates it compiles), so databases migrated before keep validating.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                let no_tx = sql.starts_with("-- no-transaction");
                Migration::new(version, description.into(), MigrationType::Simple, AssertSqlSafe(sql).into_sql_str(), no_tx)
            })
            .collect(),
    )
}

/// The Postgres store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    options: Arc<PgConnectOptions>,
    /// Days whose partition is known to exist.
    partitions: Arc<Mutex<HashSet<i32>>>,
}

const UPSERT: &str = "INSERT INTO daily_stats (user_id, day, metric, count) \
     SELECT u, DATE '1970-01-01' + d, m, c FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::int8[]) AS t(u, d, m, c) \
     ON CONFLICT (user_id, metric, day) DO UPDATE SET count = daily_stats.count + EXCLUDED.count";

/// Adds distinct values in one statement: the values not stored yet are ranked per (user,
/// day, metric) and kept while the day's count plus their rank stays within the metric's
/// bound; the kept ones are inserted and the day's count grows by the number inserted. Returns
/// how many new values were dropped at the bound.
const ADD_VALUES: &str = "WITH input AS ( \
         SELECT DISTINCT u, d, m, v, c FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[], $5::int4[]) AS t(u, d, m, v, c)), \
     fresh AS ( \
         SELECT i.* FROM input i WHERE NOT EXISTS (SELECT 1 FROM daily_distinct x \
             WHERE x.user_id = i.u AND x.metric = i.m AND x.day = DATE '1970-01-01' + i.d AND x.value = i.v)), \
     ranked AS ( \
         SELECT f.u, f.d, f.m, f.v, f.c, row_number() OVER (PARTITION BY f.u, f.d, f.m ORDER BY f.v) AS r, \
             COALESCE((SELECT s.count FROM daily_stats s \
                 WHERE s.user_id = f.u AND s.metric = f.m AND s.day = DATE '1970-01-01' + f.d), 0) AS have \
         FROM fresh f), \
     ins AS ( \
         INSERT INTO daily_distinct (user_id, metric, day, value) \
         SELECT u, m, DATE '1970-01-01' + d, v FROM ranked WHERE have + r <= c \
         ON CONFLICT DO NOTHING RETURNING user_id, metric, day), \
     counted AS ( \
         INSERT INTO daily_stats (user_id, day, metric, count) \
         SELECT user_id, day, metric, count(*) FROM ins GROUP BY user_id, day, metric \
         ON CONFLICT (user_id, metric, day) DO UPDATE SET count = daily_stats.count + EXCLUDED.count RETURNING 1) \
     SELECT (SELECT count(*) FROM ranked WHERE have + r > c)::int8 AS capped, (SELECT count(*) FROM counted)::int8 AS keys";

/// A user's per-day counts, and the distinct totals over the union window when asked ($4).
const USER_STATS: &str = "SELECT (day - DATE '1970-01-01')::int4 AS d, metric, count FROM daily_stats \
     WHERE user_id = $1 AND day >= DATE '1970-01-01' + $2::int4 AND day <= DATE '1970-01-01' + $3::int4 \
     UNION ALL \
     SELECT NULL::int4, metric, count(DISTINCT value)::int8 FROM daily_distinct \
     WHERE $4::int4 IS NOT NULL AND user_id = $1 AND day >= DATE '1970-01-01' + $4::int4 AND day <= DATE '1970-01-01' + $3::int4 \
     GROUP BY metric";

impl PgStore {
    /// Connects with `search_path` = `schema` (created if missing when migrating) and applies
    /// the migrations when `migrate`.
    pub async fn open(url: &str, schema: &str, max_connections: u32, migrate: bool) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]).application_name("stats");
        if migrate && schema != "public" {
            let mut c = sqlx::PgConnection::connect_with(&options).await?;
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))).execute(&mut c).await?;
            c.close().await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        if migrate {
            migrator().run(&pool).await?;
        }
        Ok(PgStore { pool, options: Arc::new(options), partitions: Arc::new(Mutex::new(HashSet::new())) })
    }

    /// The pool (tests, the benchmark loader).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn position(&self, consumer: &str) -> Result<i64, StoreError> {
        sqlx::query("INSERT INTO consumer_positions (consumer, seq) VALUES ($1, 0) ON CONFLICT (consumer) DO NOTHING")
            .bind(consumer)
            .execute(&self.pool)
            .await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM consumer_positions WHERE consumer = $1")
            .bind(consumer)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }

    pub(super) async fn set_position(&self, consumer: &str, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consumer_positions (consumer, seq) VALUES ($1, $2) \
             ON CONFLICT (consumer) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()",
        )
        .bind(consumer)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs on `conn`, the session holding the consumer's advisory lock: if that session is
    /// gone, so is the lock, and nothing is committed.
    pub(super) async fn apply(conn: &mut sqlx::PgConnection, consumer: &str, expected: i64, new: i64, changes: &Changes) -> Result<Applied, StoreError> {
        let mut tx = conn.begin().await?;
        let moved = sqlx::query("UPDATE consumer_positions SET seq = $2, updated_at = now() WHERE consumer = $1 AND seq = $3")
            .bind(consumer)
            .bind(new)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Err(StoreError::PositionMoved { consumer: consumer.to_owned(), expected });
        }
        upsert_rows(&mut tx, &changes.counts).await?;
        let applied = add_values(&mut tx, &changes.values).await?;
        tx.commit().await?;
        Ok(applied)
    }

    pub(super) async fn ensure_partitions(&self, days: &[i32]) -> Result<(), StoreError> {
        let missing: Vec<i32> = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            let mut m: Vec<i32> = days.iter().copied().filter(|d| !known.contains(d)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        for day in missing {
            sqlx::query("SELECT stats_ensure_partition(DATE '1970-01-01' + $1::int4)").bind(day).execute(&self.pool).await?;
            self.partitions.lock().unwrap_or_else(|p| p.into_inner()).insert(day);
            tracing::debug!(day = %day_date(day), "partition ready");
        }
        Ok(())
    }

    /// Forgets which partitions exist (after a failed write: one may have been dropped by hand).
    pub(super) fn forget_partitions(&self) {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub(super) async fn drop_partitions_before(&self, cutoff: i32) -> Result<Vec<String>, StoreError> {
        let children: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'daily_stats'::regclass",
        )
        .fetch_all(&self.pool)
        .await?;
        let cutoff_digits = day_date(cutoff).format("%Y%m%d").to_string();
        let mut dropped = Vec::new();
        for name in children {
            let Some(digits) = name.strip_prefix("daily_stats_") else { continue };
            if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) || *digits >= *cutoff_digits {
                continue;
            }
            // The day's distinct values go with its counts (one transaction: both or neither).
            let mut tx = self.pool.begin().await?;
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"daily_distinct_{digits}\""))).execute(&mut *tx).await?;
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{name}\""))).execute(&mut *tx).await?;
            tx.commit().await?;
            if let Some(d) = chrono::NaiveDate::parse_from_str(digits, "%Y%m%d").ok().map(crate::definitions::day_number) {
                self.partitions.lock().unwrap_or_else(|p| p.into_inner()).remove(&d);
            }
            tracing::info!(partition = %name, "retention: dropped");
            dropped.push(name);
        }
        Ok(dropped)
    }

    pub(super) async fn user_stats(&self, user: &str, from: i32, to: i32, union_from: Option<i32>) -> Result<UserCounts, StoreError> {
        let rows = sqlx::query(USER_STATS).bind(user).bind(from).bind(to).bind(union_from).fetch_all(&self.pool).await?;
        let mut out = UserCounts::default();
        for r in &rows {
            let day: Option<i32> = r.try_get(0)?;
            let (metric, count): (String, i64) = (r.try_get(1)?, r.try_get(2)?);
            match day {
                Some(day) => out.days.push(DayCount { day, metric, count }),
                None => out.unions.push((metric, count)),
            }
        }
        Ok(out)
    }

    pub(super) async fn distinct_values(&self, user: &str, metric: &str, day: i32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT value FROM daily_distinct WHERE user_id = $1 AND metric = $2 AND day = DATE '1970-01-01' + $3::int4 ORDER BY value",
        )
        .bind(user)
        .bind(metric)
        .bind(day)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn replace_day(&self, day: i32, metrics: &[String], changes: &Changes) -> Result<(Vec<String>, Applied), StoreError> {
        self.ensure_partitions(&[day]).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM daily_distinct WHERE day = DATE '1970-01-01' + $1::int4 AND metric = ANY($2::text[])")
            .bind(day)
            .bind(metrics)
            .execute(&mut *tx)
            .await?;
        let old: Vec<String> = sqlx::query_scalar(
            "DELETE FROM daily_stats WHERE day = DATE '1970-01-01' + $1::int4 AND metric = ANY($2::text[]) RETURNING user_id",
        )
        .bind(day)
        .bind(metrics)
        .fetch_all(&mut *tx)
        .await?;
        upsert_rows(&mut tx, &changes.counts).await?;
        let applied = add_values(&mut tx, &changes.values).await?;
        tx.commit().await?;
        let mut users: HashSet<String> = old.into_iter().collect();
        users.extend(changes.counts.users.iter().cloned());
        users.extend(changes.values.users.iter().cloned());
        Ok((users.into_iter().collect(), applied))
    }

    pub(super) async fn lock_consumer(&self, consumer: &str) -> Result<sqlx::PgConnection, StoreError> {
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        let mut waited = false;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('stats-consumer:' || current_schema() || ':' || $1, 0))")
                .bind(consumer)
                .fetch_one(&mut conn)
                .await?;
            if got {
                if waited {
                    tracing::info!(consumer, "aggregator lock acquired");
                }
                return Ok(conn);
            }
            if !waited {
                tracing::warn!(consumer, "another aggregator holds this consumer; waiting for it to stop");
                waited = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Adds distinct `values` inside `tx` (see [`ADD_VALUES`]), in chunks of `CHUNK` values (a
/// chunk sees the counts the previous ones wrote, so the bound holds across chunks).
async fn add_values(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, values: &Values) -> Result<Applied, sqlx::Error> {
    let mut applied = Applied::default();
    let mut start = 0;
    while start < values.len() {
        let end = (start + CHUNK).min(values.len());
        let capped: i64 = sqlx::query_scalar(ADD_VALUES)
            .bind(&values.users[start..end])
            .bind(&values.days[start..end])
            .bind(&values.metrics[start..end])
            .bind(&values.values[start..end])
            .bind(&values.caps[start..end])
            .fetch_one(&mut **tx)
            .await?;
        applied.capped += u64::try_from(capped).unwrap_or(0);
        start = end;
    }
    Ok(applied)
}

/// Adds `rows` to their counts inside `tx`, in `UNNEST` batches of `CHUNK` rows.
async fn upsert_rows(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut start = 0;
    while start < rows.len() {
        let end = (start + CHUNK).min(rows.len());
        sqlx::query(UPSERT)
            .bind(&rows.users[start..end])
            .bind(&rows.days[start..end])
            .bind(&rows.metrics[start..end])
            .bind(&rows.counts[start..end])
            .execute(&mut **tx)
            .await?;
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list is the folder: a migration added to `migrations/` but not to
    /// [`MIGRATIONS`] (or edited differently) fails here, not in production.
    #[tokio::test]
    async fn embedded_migrations_match_the_folder() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let from_folder = Migrator::new(dir).await.expect("reading migrations/");
        let key = |m: &Migration| (m.version, m.description.to_string(), m.migration_type, m.checksum.to_vec(), m.no_tx);
        let folder: Vec<_> = from_folder.iter().map(key).collect();
        let embedded: Vec<_> = migrator().iter().map(key).collect();
        assert_eq!(embedded, folder);
        assert!(!embedded.is_empty());
    }
}
