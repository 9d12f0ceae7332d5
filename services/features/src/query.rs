//! The one read function behind HTTP and gRPC: checks a batch of product ids, bounds the
//! reads in flight, and asks the store (one round trip per batch).

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::layout::Layout;
use crate::store::{StoreError, WindowStore};

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No id.
    #[error("product_ids is empty: give 1 to {max} ids")]
    Empty {
        /// The limit.
        max: usize,
    },
    /// Too many ids.
    #[error("{got} product ids: at most {max} per request")]
    TooMany {
        /// Ids given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An id is empty or too long.
    #[error("product_ids[{index}] is {reason}")]
    BadId {
        /// Its position.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Too many reads in flight.
    #[error("too many reads in flight; retry shortly")]
    Overloaded,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Features of a batch, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Column names.
    pub columns: Vec<String>,
    /// (product id, one value per column).
    pub products: Vec<(String, Vec<i64>)>,
    /// Windows exact as of this instant.
    pub as_of_ms: i64,
}

/// The read side: store, layout, limits.
pub struct FeatureReader {
    store: Arc<dyn WindowStore>,
    layout: Layout,
    max_ids: usize,
    max_id_bytes: usize,
    in_flight: Semaphore,
    /// Retry-After for overload and store failures, seconds.
    pub retry_after_secs: u64,
}

impl FeatureReader {
    /// A reader.
    pub fn new(store: Arc<dyn WindowStore>, layout: Layout, max_ids: usize, max_id_bytes: usize, max_in_flight: usize, retry_after_secs: u64) -> FeatureReader {
        FeatureReader { store, layout, max_ids, max_id_bytes, in_flight: Semaphore::new(max_in_flight.max(1)), retry_after_secs }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn WindowStore> {
        &self.store
    }

    /// Largest batch.
    pub fn max_ids(&self) -> usize {
        self.max_ids
    }

    /// Features of `ids` (unknown products: zeros).
    pub async fn features(&self, ids: Vec<String>) -> Result<Answer, QueryError> {
        let started = std::time::Instant::now();
        if ids.is_empty() {
            return Err(QueryError::Empty { max: self.max_ids });
        }
        if ids.len() > self.max_ids {
            return Err(QueryError::TooMany { got: ids.len(), max: self.max_ids });
        }
        for (index, id) in ids.iter().enumerate() {
            if id.is_empty() {
                return Err(QueryError::BadId { index, reason: "empty".into() });
            }
            if id.len() > self.max_id_bytes {
                return Err(QueryError::BadId { index, reason: format!("longer than {} bytes", self.max_id_bytes) });
            }
        }
        let _permit = self.in_flight.try_acquire().map_err(|_| QueryError::Overloaded)?;
        let sums = self.store.read(&ids).await?;
        metrics::histogram!("features_read_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("features_read_products_total").increment(ids.len() as u64);
        Ok(Answer {
            columns: self.layout.columns().to_vec(),
            products: ids.into_iter().zip(sums.values).collect(),
            as_of_ms: sums.as_of_ms,
        })
    }
}
