//! SQLite, the embedded default: the same tables (days as day numbers, no partitions;
//! retention deletes rows), schema created in code at open, WAL mode.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

use super::{DayCount, Rows, StoreError};

/// Rows per INSERT statement (4 parameters each, under SQLite's parameter limit).
const CHUNK: usize = 2_000;

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS daily_stats (
        user_id TEXT NOT NULL, day INTEGER NOT NULL, metric TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (user_id, metric, day)) WITHOUT ROWID",
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

    pub(super) async fn apply(&self, consumer: &str, expected: i64, new: i64, rows: &Rows) -> Result<(), StoreError> {
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
        upsert(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn delete_before(&self, cutoff: i32) -> Result<Vec<String>, StoreError> {
        let n = sqlx::query("DELETE FROM daily_stats WHERE day < ?").bind(cutoff).execute(&self.pool).await?.rows_affected();
        Ok(if n > 0 { vec![format!("{n} rows before day {cutoff}")] } else { Vec::new() })
    }

    pub(super) async fn user_counts(&self, user: &str, from: i32, to: i32) -> Result<Vec<DayCount>, StoreError> {
        let rows = sqlx::query("SELECT day, metric, count FROM daily_stats WHERE user_id = ? AND day >= ? AND day <= ?")
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
        let mut tx = self.pool.begin().await?;
        let mut users: HashSet<String> = HashSet::new();
        for m in metrics {
            let old: Vec<String> = sqlx::query_scalar("DELETE FROM daily_stats WHERE day = ? AND metric = ? RETURNING user_id")
                .bind(day)
                .bind(m)
                .fetch_all(&mut *tx)
                .await?;
            users.extend(old);
        }
        upsert(&mut tx, rows).await?;
        tx.commit().await?;
        users.extend(rows.users.iter().cloned());
        Ok(users.into_iter().collect())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
