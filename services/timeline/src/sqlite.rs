//! The embedded store: one SQLite file through sqlx, with the DynamoDB table's layout and
//! semantics (same keys, upserts, half-open time ranges on the sort key, type filter,
//! expired items hidden). The schema is created idempotently when the store opens; expired
//! rows are deleted by [`SqliteStore::purge_expired`] (DynamoDB's TTL does it there).

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};

use crate::item::{Attrs, Item, range_bounds};
use crate::store::{Order, Page, PageQuery, Store, StoreError, dedup};

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS timeline_items (
        pk TEXT NOT NULL, sk TEXT NOT NULL, t TEXT NOT NULL, a TEXT, z BLOB, l TEXT NOT NULL,
        ttl INTEGER NOT NULL, PRIMARY KEY (pk, sk)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS timeline_items_ttl ON timeline_items (ttl)",
];

const UPSERT: &str = "INSERT OR REPLACE INTO timeline_items (pk, sk, t, a, z, l, ttl) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// ?1 user, ?2..?3 sort-key bounds (inclusive), ?4 continue after, ?5 now (s), ?6 types as
/// a JSON array or NULL, ?7 limit.
const PAGE_ASC: &str = "SELECT sk, t, a, z, l, ttl FROM timeline_items
    WHERE pk = ?1 AND sk >= ?2 AND sk <= ?3 AND sk > ?4 AND ttl > ?5
      AND (?6 IS NULL OR t IN (SELECT value FROM json_each(?6)))
    ORDER BY sk ASC LIMIT ?7";
const PAGE_DESC: &str = "SELECT sk, t, a, z, l, ttl FROM timeline_items
    WHERE pk = ?1 AND sk >= ?2 AND sk <= ?3 AND sk < ?4 AND ttl > ?5
      AND (?6 IS NULL OR t IN (SELECT value FROM json_each(?6)))
    ORDER BY sk DESC LIMIT ?7";

const PURGE: &str = "DELETE FROM timeline_items WHERE (pk, sk) IN
    (SELECT pk, sk FROM timeline_items WHERE ttl <= ?1 LIMIT 10000)";

/// Rows of one INSERT transaction.
const TX_ROWS: usize = 1000;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A write error: a constraint, a value too big or of the wrong type is the data's fault
/// (SQLite result codes 18, 19 and 20, with their extended forms), anything else the
/// store's.
fn write_error(e: sqlx::Error) -> StoreError {
    let refused = e
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<u32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 18..=20));
    if refused { StoreError::Refused(e.to_string()) } else { backend(e) }
}

impl SqliteStore {
    /// Opens (creating if missing) the file and its schema.
    pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(backend)?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(backend)?;
        }
        Ok(SqliteStore { pool })
    }

    /// Deletes items expired at `now_secs` (at most 10,000 a call); returns how many.
    pub async fn purge_expired(&self, now_secs: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(PURGE).bind(now_secs).execute(&self.pool).await.map_err(backend)?.rows_affected())
    }

    async fn put(&self, items: &[Item]) -> Result<(), StoreError> {
        let items = dedup(items);
        for chunk in items.chunks(TX_ROWS) {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            for it in chunk {
                let (json, zstd) = match &it.attrs {
                    Some(Attrs::Json(s)) => (Some(s.as_str()), None),
                    Some(Attrs::Zstd(z)) => (None, Some(z.as_slice())),
                    None => (None, None),
                };
                sqlx::query(UPSERT)
                    .bind(&it.user)
                    .bind(&it.sk)
                    .bind(&it.event_type)
                    .bind(json)
                    .bind(zstd)
                    .bind(&it.lake)
                    .bind(it.expires_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(write_error)?;
            }
            tx.commit().await.map_err(write_error)?;
        }
        Ok(())
    }

    async fn page(&self, q: &PageQuery) -> Result<Page, StoreError> {
        let (lo, hi) = range_bounds(q.from, q.to);
        let (sql, start) = match q.order {
            Order::Asc => (PAGE_ASC, q.after.clone().unwrap_or_default()),
            Order::Desc => (PAGE_DESC, q.after.clone().unwrap_or_else(|| "~".into())),
        };
        let types = (!q.types.is_empty()).then(|| serde_json::Value::from(q.types.clone()).to_string());
        let rows = sqlx::query(sql)
            .bind(&q.user)
            .bind(lo)
            .bind(hi)
            .bind(start)
            .bind(q.now_secs)
            .bind(types)
            .bind(i64::try_from(q.limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        let more = rows.len() > q.limit;
        let mut items = rows.iter().take(q.limit).map(|r| row_item(&q.user, r)).collect::<Result<Vec<_>, _>>()?;
        items.truncate(q.limit);
        let next_after = if more { items.last().map(|i| i.sk.clone()) } else { None };
        Ok(Page { items, next_after })
    }
}

fn row_item(user: &str, r: &SqliteRow) -> Result<Item, StoreError> {
    let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let json: Option<String> = r.try_get("a").map_err(corrupt)?;
    let zstd: Option<Vec<u8>> = r.try_get("z").map_err(corrupt)?;
    Ok(Item {
        user: user.to_owned(),
        sk: r.try_get("sk").map_err(corrupt)?,
        event_type: r.try_get("t").map_err(corrupt)?,
        attrs: json.map(Attrs::Json).or(zstd.map(Attrs::Zstd)),
        lake: r.try_get("l").map_err(corrupt)?,
        expires_at: r.try_get("ttl").map_err(corrupt)?,
    })
}

impl Store for SqliteStore {
    fn put_batch<'a>(&'a self, items: &'a [Item]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.put(items))
    }
    fn query<'a>(&'a self, q: &'a PageQuery) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(self.page(q))
    }
    fn is_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { sqlx::query("SELECT 1").execute(&self.pool).await.is_ok() })
    }
}
