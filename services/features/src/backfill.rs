//! Rebuilding the windows from the lake, and handing over to the live updater exactly once.
//!
//! The lake holds every valid event; the windows only need those of the longest window. A
//! rebuild reads, for each counted type, the table's files of the hours since
//! `now - longest window` (pruned by the Delta log's partition values) at one table version,
//! turns every event into hits as the updater would ([`Layout::hit_of`], counting at
//! `meta.created_at`), and writes them into an **empty** store (a store holding anything is
//! refused, unless asked to clear it; a rebuild interrupted half-way is cleared and started
//! again, so a restart counts nothing twice).
//!
//! The handover: the rebuild records an instant `from = start - margin`. Every commit of the
//! lake at or after `from` carries the bus positions (JetStream stream sequences) of its
//! events; the rebuild marks those positions as applied in the store, as if the updater had
//! counted them. The updater, starting on a store whose rebuild is done and not yet taken
//! over, rewinds its durable consumer to the messages published at or after `from`
//! ([`event_bus::Bus::rewind`]). Then every counted event is counted once:
//! - in the lake snapshot and published before `from`: by the rebuild only (the bus does not
//!   deliver it again);
//! - in the snapshot and published at or after `from`: by the rebuild, and its redelivery is
//!   recognised by its mark (it was committed after it was published, so at or after
//!   `from`);
//! - not in the snapshot (still in the lake writer's buffers, or published later): by the
//!   updater only, if it was published at or after `from`.
//!
//! What the margin bounds: an event published before `from` and not yet in the lake when the
//! rebuild reads it (the lake writer more than `margin` behind) would be counted by neither;
//! the margin (15 minutes by default) is far above the lake writer's latency (seconds, its
//! `max_age` plus a commit). Events that never pass the bus (`eventctl ingest`) are counted
//! by the rebuild only. Bus positions are marked only when they survive a restart
//! (JetStream); the in-process bus of `eventctl dev` starts empty, so nothing it delivers is
//! in the lake already.

use std::time::Instant;

use event_lake::{Lake, LakeError};

use crate::config::MAX_LIST_IDS;
use crate::layout::{Batch, Hit, Layout};
use crate::store::{Handover, StoreError, WindowStore};

/// Hits per store write.
const HITS_PER_WRITE: usize = 50_000;
/// Positions marked per store write.
const MARKS_PER_WRITE: usize = 100_000;
/// Commits are looked at this much before `from` too: the lake writer's clock and the bus
/// server's may differ a little (marking more positions is always correct, they are in the
/// snapshot).
const CLOCK_SKEW_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// How a rebuild runs.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The handover margin, ms (see the module doc).
    pub margin_ms: i64,
    /// The bus source whose positions are marked (the updater's: the JetStream stream's
    /// name); `None` marks nothing (the in-process bus).
    pub source: Option<String>,
    /// Clear a store that holds something instead of refusing it.
    pub reset: bool,
    /// Longest product id counted (as the updater's `max_id_bytes`).
    pub max_id_bytes: usize,
}

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Reading the lake failed.
    #[error("reading the lake: {0}")]
    Lake(#[from] LakeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store is not empty and no reset was asked for.
    #[error(
        "the store already holds windows (a live updater, or an earlier rebuild): a rebuild starts from an empty store; clear it first (eventctl features backfill --reset)"
    )]
    NotEmpty,
}

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackfillReport {
    /// The record left in the store.
    pub handover: Handover,
    /// Data files read.
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Rebuilds the windows of `layout` in `store` from `lake`, as of `now_ms` (see the module
/// doc).
pub async fn backfill(lake: &Lake, layout: &Layout, store: &dyn WindowStore, now_ms: i64, options: &BackfillOptions) -> Result<BackfillReport, BackfillError> {
    let started = Instant::now();
    if !store.is_empty().await? {
        let interrupted = store.handover().await?.is_some_and(|h| !h.done);
        if !(interrupted || options.reset) {
            return Err(BackfillError::NotEmpty);
        }
        tracing::info!(interrupted, "clearing the store before the rebuild");
        store.clear().await?;
    }
    let from_ms = now_ms - options.margin_ms.max(0);
    let mut record = Handover {
        done: false,
        started_ms: now_ms,
        from_ms,
        source: options.source.clone().unwrap_or_default(),
        events: 0,
        hits: 0,
        marked: 0,
        rewound: false,
    };
    store.set_handover(&record).await?;

    let first_hour = (now_ms - layout.longest_ms()).div_euclid(HOUR_MS);
    let mut positions: Vec<u64> = Vec::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut seq = 0u64;
    let mut hits: Vec<Hit> = Vec::with_capacity(HITS_PER_WRITE);
    for event_type in layout.event_types() {
        let Some(snapshot) = lake.recent_snapshot(&event_type, Some((first_hour, i64::MAX)), from_ms - CLOCK_SKEW_MS).await? else { continue };
        tracing::info!(event_type, version = snapshot.version, files = snapshot.files.len(), "rebuilding from the lake");
        for file in &snapshot.files {
            files += 1;
            bytes += file.meta.size;
            for event in lake.read_events_json(file).await? {
                record.events += 1;
                let Some(counted) = layout.hit_of(&event_type, event.as_bytes(), i64::MAX) else { continue };
                if counted.products.len() > MAX_LIST_IDS {
                    continue;
                }
                seq += 1;
                for product in counted.products {
                    if product.len() <= options.max_id_bytes {
                        hits.push(Hit { product, counter: counted.counter, t_ms: counted.t_ms, source: 0, seq });
                    }
                }
            }
            if hits.len() >= HITS_PER_WRITE {
                record.hits += write_hits(store, now_ms, &mut hits).await?;
            }
        }
        if options.source.is_some() {
            positions.extend(snapshot.positions);
        }
    }
    record.hits += write_hits(store, now_ms, &mut hits).await?;

    if let Some(source) = &options.source {
        positions.sort_unstable();
        positions.dedup();
        for part in positions.chunks(MARKS_PER_WRITE) {
            let batch = Batch {
                now_ms,
                sources: vec![source.clone()],
                hits: Vec::new(),
                positions: Vec::new(),
                marks: part.iter().map(|&p| (0, p)).collect(),
                unmarked: false,
            };
            store.apply(&batch).await?;
        }
        record.marked = positions.len() as u64;
    }
    // The windows as of the end of the rebuild.
    let end_ms = now_ms + started.elapsed().as_millis() as i64;
    for _ in 0..10_000 {
        if store.expire(end_ms).await?.complete {
            break;
        }
    }
    record.done = true;
    store.set_handover(&record).await?;
    Ok(BackfillReport { handover: record, files, bytes, seconds: started.elapsed().as_secs_f64() })
}

/// Writes the hits gathered so far (running numbers, not bus positions) and empties the
/// buffer; returns how many were counted.
async fn write_hits(store: &dyn WindowStore, now_ms: i64, hits: &mut Vec<Hit>) -> Result<u64, StoreError> {
    if hits.is_empty() {
        return Ok(0);
    }
    let batch = Batch {
        now_ms,
        sources: vec!["lake".into()],
        hits: std::mem::take(hits),
        positions: Vec::new(),
        marks: Vec::new(),
        unmarked: true,
    };
    let r = store.apply(&batch).await?;
    Ok(r.applied as u64)
}

/// Whether the updater takes over a rebuild now: it finds one done and not yet taken over.
pub async fn pending_handover(store: &dyn WindowStore) -> Result<Option<Handover>, StoreError> {
    Ok(store.handover().await?.filter(|h| h.done && !h.rewound))
}
