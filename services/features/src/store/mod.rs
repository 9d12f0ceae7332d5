//! Where the windows live: the [`WindowStore`] trait with a Redis implementation (production)
//! and an in-memory one (embedded mode, `eventctl dev`), with the same bucket and window
//! semantics (see [`crate::layout`]) and the same tests.
//!
//! Model, for every product and window `w` (bucket size `g`, `n` buckets): a *window sum* per
//! counter (what reads return), the *bucket counts* that make it up, and a *schedule*: the
//! set of products with a non-empty bucket `b` is filed under `(w, b + n)`, the bucket at
//! which `b` leaves the window. Two markers per window: `closed` (buckets due at or before it
//! accept no more events into this window) and `done` (schedules up to it are processed).
//! Applying increments adds to bucket and sum only while `b + n > max(closed, current
//! bucket)`; expiring moves `closed` to the current bucket, then for each due bucket in
//! `done+1..=closed` subtracts every scheduled product's bucket count from its sum and
//! deletes that bucket. A read is the sums only: one hash lookup of `counters x windows`
//! fields per product.

pub mod memory;
pub mod product_state;
pub mod redis;

use futures::future::BoxFuture;

use crate::layout::Batch;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreOptions};


/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or did not answer (retry later).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Redis is set up so that the store cannot keep its promises (an eviction policy that
    /// may drop the state of exactly-once updates): fix the server, retrying does not help.
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Hits counted.
    pub applied: usize,
    /// Hits skipped because their bus position was applied before (redeliveries).
    pub duplicates: usize,
}

/// What an expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Product buckets that left a window.
    pub expired: usize,
    /// True when every window is exact as of `now` (else call again: the work per call is
    /// bounded).
    pub complete: bool,
}

/// Window sums of a batch of products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    /// The instant of the last complete expiry pass, epoch ms (0: none yet).
    pub as_of_ms: i64,
    /// Per requested product (in order), one value per column ([`crate::Layout::columns`]).
    pub values: Vec<Vec<i64>>,
}

/// The record of a rebuild from the lake ([`crate::backfill`]), kept in the store: while it
/// says `running`, the store holds a partial rebuild (a new run clears it first); once
/// `done`, the updater restarts its bus consumer at `from_ms` the first time it starts on
/// this store (and records `rewound`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    /// True once every event and mark of the rebuild is in the store.
    pub done: bool,
    /// When the rebuild started (its snapshot of the lake), epoch ms.
    pub started_ms: i64,
    /// The updater's consumer takes over from the messages published at or after this
    /// instant (the lake's commits since then had their bus positions marked as applied).
    pub from_ms: i64,
    /// The bus source whose positions were marked (the JetStream stream), empty when none
    /// were (the in-process bus).
    pub source: String,
    /// Events read from the lake.
    pub events: u64,
    /// Hits counted (an event of a list counts once per product).
    pub hits: u64,
    /// Bus positions marked as applied.
    pub marked: u64,
    /// True once the updater restarted its consumer at `from_ms`.
    pub rewound: bool,
}

/// Windowed counters per product.
pub trait WindowStore: Send + Sync + 'static {
    /// Counts the batch's hits and records its bus positions, atomically and exactly once:
    /// hits whose (source, position) was applied before are skipped.
    fn apply<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<ApplyReport, StoreError>>;

    /// Moves every window to `now`: buckets that left a window are subtracted from its sums.
    /// Bounded work per call; `complete` says whether more is due.
    fn expire(&self, now_ms: i64) -> BoxFuture<'_, Result<ExpireReport, StoreError>>;

    /// The window sums of these products (zeros for unknown ones), in one round trip.
    fn read<'a>(&'a self, products: &'a [String]) -> BoxFuture<'a, Result<Sums, StoreError>>;

    /// The stored position of a bus source (0 if none).
    fn position<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Whether the store answers (for `/readyz`).
    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// True when the store holds nothing: no counts, no positions, no rebuild record (a new
    /// Redis, or one that lost its data).
    fn is_empty(&self) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Removes everything the store holds (before a rebuild).
    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The rebuild record, if any.
    fn handover(&self) -> BoxFuture<'_, Result<Option<Handover>, StoreError>>;

    /// Stores the rebuild record.
    fn set_handover<'a>(&'a self, handover: &'a Handover) -> BoxFuture<'a, Result<(), StoreError>>;
}
