//! SQLite, the embedded default: the same tables (days as day numbers, no partitions;
//! retention deletes rows), schema created in code at open, WAL mode. Distinct values are
//! added one statement each (in-process, cheap), with the same bound and counts as Postgres.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

use super::{Applied, Changes, DayCount, Rows, StoreError, UserCounts, Values};

/// Rows per INSERT statement (4 parameters each, under SQLite's parameter limit).
const CHUNK: usize = 2_000;

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS daily_stats (
        user_id TEXT NOT NULL, day INTEGER NOT NULL, metric TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (user_id, metric, day)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS daily_distinct (
        user_id TEXT NOT NULL, metric TEXT NOT NULL, day INTEGER NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (user_id, metric, day, value)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS consumer_positions (consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
];

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn upsert_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO daily_stats (user_id, day, metric, count) VALUES ");
    for i in 0..n {
        sql.push_str(if i == 0 { "(?, ?, ?, ?)" } else { ", (?, ?, ?, ?)" });
    }
    sql.push_str(" ON CONFLICT (user_id, metric, day) DO UPDATE SET count = count + excluded.count");
    sql
}

async fn upsert(conn: &mut sqlx::SqliteConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut start = 0;
    while start < rows.len() {
        let end = (start + CHUNK).min(rows.len());
        let mut q = sqlx::query(AssertSqlSafe(upsert_sql(end - start)));
        for i in start..end {
            q = q.bind(&rows.users[i]).bind(rows.days[i]).bind(&rows.metrics[i]).bind(rows.counts[i]);
        }
        q.execute(&mut *conn).await?;
        start = end;
    }
    Ok(())
}

/// Adds distinct values (sorted by user, day, metric) within their metric's bound, and the
/// number added to each day's count.
async fn add_values(conn: &mut sqlx::SqliteConnection, values: &Values) -> Result<Applied, sqlx::Error> {
    let mut applied = Applied::default();
    let mut i = 0;
    while i < values.len() {
        let (user, day, metric) = (&values.users[i], values.days[i], &values.metrics[i]);
        let mut j = i;
        while j < values.len() && values.users[j] == *user && values.days[j] == day && values.metrics[j] == *metric {
            j += 1;
        }
        let have: i64 = sqlx::query_scalar("SELECT count FROM daily_stats WHERE user_id = ? AND metric = ? AND day = ?")
            .bind(user)
            .bind(metric)
            .bind(day)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(0);
        let cap = i64::from(values.caps[i]);
        let mut added = 0i64;
        for k in i..j {
            if have + added >= cap {
                let stored: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM daily_distinct WHERE user_id = ? AND metric = ? AND day = ? AND value = ?)")
                    .bind(user)
                    .bind(metric)
                    .bind(day)
                    .bind(&values.values[k])
                    .fetch_one(&mut *conn)
                    .await?;
                applied.capped += u64::from(!stored);
                continue;
            }
            let inserted = sqlx::query("INSERT INTO daily_distinct (user_id, metric, day, value) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(user)
                .bind(metric)
                .bind(day)
                .bind(&values.values[k])
                .execute(&mut *conn)
                .await?
                .rows_affected();
            added += i64::try_from(inserted).unwrap_or(0);
        }
        if added > 0 {
            let mut rows = Rows::default();
            rows.push(user.clone(), day, metric.clone(), added);
            upsert(conn, &rows).await?;
        }
        i = j;
    }
    Ok(applied)
}

impl SqliteStore {
    /// Opens (creating) the database file and its tables.
    pub async fn open(url: &str, max_connections: u32) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(max_connections.clamp(1, 8)).connect_with(options).await?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await?;
        }
        Ok(SqliteStore { pool })
    }

    pub(super) async fn position(&self, consumer: &str) -> Result<i64, StoreError> {
        sqlx::query("INSERT INTO consumer_positions (consumer, seq) VALUES (?, 0) ON CONFLICT (consumer) DO NOTHING")
            .bind(consumer)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT seq FROM consumer_positions WHERE consumer = ?").bind(consumer).fetch_one(&self.pool).await?)
    }

    pub(super) async fn set_position(&self, consumer: &str, seq: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO consumer_positions (consumer, seq) VALUES (?, ?) ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq")
            .bind(consumer)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn apply(&self, consumer: &str, expected: i64, new: i64, changes: &Changes) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query("UPDATE consumer_positions SET seq = ? WHERE consumer = ? AND seq = ?")
            .bind(new)
            .bind(consumer)
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Err(StoreError::PositionMoved { consumer: consumer.to_owned(), expected });
        }
        upsert(&mut tx, &changes.counts).await?;
        let applied = add_values(&mut tx, &changes.values).await?;
        tx.commit().await?;
        Ok(applied)
    }

    pub(super) async fn delete_before(&self, cutoff: i32) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM daily_distinct WHERE day < ?").bind(cutoff).execute(&mut *tx).await?;
        let n = sqlx::query("DELETE FROM daily_stats WHERE day < ?").bind(cutoff).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(if n > 0 { vec![format!("{n} rows before day {cutoff}")] } else { Vec::new() })
    }

    pub(super) async fn user_stats(&self, user: &str, from: i32, to: i32, union_from: Option<i32>) -> Result<UserCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT day, metric, count FROM daily_stats WHERE user_id = ? AND day >= ? AND day <= ? \
             UNION ALL \
             SELECT NULL, metric, count(DISTINCT value) FROM daily_distinct \
             WHERE ? IS NOT NULL AND user_id = ? AND day >= ? AND day <= ? GROUP BY metric",
        )
        .bind(user)
        .bind(from)
        .bind(to)
        .bind(union_from)
        .bind(user)
        .bind(union_from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
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
        Ok(sqlx::query_scalar("SELECT value FROM daily_distinct WHERE user_id = ? AND metric = ? AND day = ? ORDER BY value")
            .bind(user)
            .bind(metric)
            .bind(day)
            .fetch_all(&self.pool)
            .await?)
    }

    pub(super) async fn replace_day(&self, day: i32, metrics: &[String], changes: &Changes) -> Result<(Vec<String>, Applied), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut users: HashSet<String> = HashSet::new();
        for m in metrics {
            sqlx::query("DELETE FROM daily_distinct WHERE day = ? AND metric = ?").bind(day).bind(m).execute(&mut *tx).await?;
            let old: Vec<String> = sqlx::query_scalar("DELETE FROM daily_stats WHERE day = ? AND metric = ? RETURNING user_id")
                .bind(day)
                .bind(m)
                .fetch_all(&mut *tx)
                .await?;
            users.extend(old);
        }
        upsert(&mut tx, &changes.counts).await?;
        let applied = add_values(&mut tx, &changes.values).await?;
        tx.commit().await?;
        users.extend(changes.counts.users.iter().cloned());
        users.extend(changes.values.users.iter().cloned());
        Ok((users.into_iter().collect(), applied))
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
