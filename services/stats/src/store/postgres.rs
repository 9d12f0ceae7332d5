//! Postgres: `daily_stats` partitioned by day, `consumer_positions`, migrations from the
//! repository's `migrations/` (sqlx), batched upserts through `UNNEST` arrays.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::{DayCount, Rows, StoreError};
use crate::definitions::day_date;

/// Rows per upsert statement (bounded statement size; one transaction either way).
const CHUNK: usize = 20_000;

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
            sqlx::migrate!("../../migrations").run(&pool).await?;
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
    pub(super) async fn apply(conn: &mut sqlx::PgConnection, consumer: &str, expected: i64, new: i64, rows: &Rows) -> Result<(), StoreError> {
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
        upsert_rows(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
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
        let cutoff_name = format!("daily_stats_{}", day_date(cutoff).format("%Y%m%d"));
        let mut dropped = Vec::new();
        for name in children {
            let Some(digits) = name.strip_prefix("daily_stats_") else { continue };
            if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) || name >= cutoff_name {
                continue;
            }
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{name}\""))).execute(&self.pool).await?;
            if let Some(d) = chrono::NaiveDate::parse_from_str(digits, "%Y%m%d").ok().map(crate::definitions::day_number) {
                self.partitions.lock().unwrap_or_else(|p| p.into_inner()).remove(&d);
            }
            tracing::info!(partition = %name, "retention: dropped");
            dropped.push(name);
        }
        Ok(dropped)
    }

    pub(super) async fn user_counts(&self, user: &str, from: i32, to: i32) -> Result<Vec<DayCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT (day - DATE '1970-01-01')::int4 AS d, metric, count FROM daily_stats \
             WHERE user_id = $1 AND day >= DATE '1970-01-01' + $2::int4 AND day <= DATE '1970-01-01' + $3::int4",
        )
        .bind(user)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(DayCount { day: r.try_get(0)?, metric: r.try_get(1)?, count: r.try_get(2)? }))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn replace_day(&self, day: i32, metrics: &[String], rows: &Rows) -> Result<Vec<String>, StoreError> {
        self.ensure_partitions(&[day]).await?;
        let mut tx = self.pool.begin().await?;
        let old: Vec<String> = sqlx::query_scalar(
            "DELETE FROM daily_stats WHERE day = DATE '1970-01-01' + $1::int4 AND metric = ANY($2::text[]) RETURNING user_id",
        )
        .bind(day)
        .bind(metrics)
        .fetch_all(&mut *tx)
        .await?;
        upsert_rows(&mut tx, rows).await?;
        tx.commit().await?;
        let mut users: HashSet<String> = old.into_iter().collect();
        users.extend(rows.users.iter().cloned());
        Ok(users.into_iter().collect())
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
