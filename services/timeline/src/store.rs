//! The storage behind the API and the consumer: a [`Store`] puts batches of items
//! (idempotently: an item with the same keys is overwritten) and answers time-ordered pages
//! of one user's items. DynamoDB in production, SQLite embedded; both have the same
//! semantics, checked by one test suite.

use futures::future::BoxFuture;

use crate::item::Item;

/// Time order of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// One page request.
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// The user.
    pub user: String,
    /// Event time from (epoch ms, inclusive).
    pub from: i64,
    /// Event time to (epoch ms, exclusive).
    pub to: i64,
    /// Only these types (empty: all).
    pub types: Vec<String>,
    /// At most this many items.
    pub limit: usize,
    /// Continue after this sort key (from a cursor).
    pub after: Option<String>,
    /// Order.
    pub order: Order,
    /// Items that expired before this (epoch seconds) are not returned (DynamoDB deletes
    /// expired items lazily).
    pub now_secs: i64,
}

/// One page of items.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The items, in order.
    pub items: Vec<Item>,
    /// Where the next page starts (the last sort key read), when there may be more.
    pub next_after: Option<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend refused or failed the operation.
    #[error("store error: {0}")]
    Backend(String),
    /// Writes were still throttled (or left unprocessed) after every attempt.
    #[error("write still throttled after {attempts} attempts ({left} items unwritten)")]
    Throttled {
        /// Attempts made.
        attempts: u32,
        /// Items not written.
        left: usize,
    },
    /// A stored item could not be read back.
    #[error("corrupt item: {0}")]
    Corrupt(String),
    /// The backend refused the data itself (a DynamoDB `ValidationException`, an SQLite
    /// constraint): writing the same items again fails again.
    #[error("the store refused the items: {0}")]
    Refused(String),
}

impl StoreError {
    /// True when the same write can never succeed (the consumer dead-letters the event).
    pub fn is_permanent(&self) -> bool {
        matches!(self, StoreError::Refused(_))
    }
}

/// A store of per-user items.
pub trait Store: Send + Sync + 'static {
    /// Writes the items (any number; the store splits them into its own batches). Items with
    /// the keys of stored ones overwrite them. Resolves once every item is durable.
    fn put_batch<'a>(&'a self, items: &'a [Item]) -> BoxFuture<'a, Result<(), StoreError>>;
    /// One page of a user's items.
    fn query<'a>(&'a self, q: &'a PageQuery) -> BoxFuture<'a, Result<Page, StoreError>>;
    /// True when the backend answers (for /readyz).
    fn is_ready(&self) -> BoxFuture<'_, bool>;
}

/// The items without repeated keys (the last one wins): DynamoDB refuses a batch with the
/// same key twice, and a redelivered event may be fetched with its first delivery.
pub fn dedup(items: &[Item]) -> Vec<&Item> {
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        seen.insert((it.user.as_str(), it.sk.as_str()), i);
    }
    let mut keep: Vec<usize> = seen.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &items[i]).collect()
}
