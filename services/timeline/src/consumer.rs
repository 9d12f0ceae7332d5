//! The timeline's handler of the bus consumer runtime ([`event_bus::consumer`]): a batch of
//! events becomes their items, written in one `put_batch`; the runtime acks the batch after
//! the write, retries it when the store failed, and splits it when the store refused it.
//!
//! Idempotence: an item's keys are the user and `<created_at>#<id>`, and a put overwrites, so
//! a redelivered or replayed event only rewrites its own item: no exactly-once bookkeeping is
//! needed, and several replicas (or concurrent batches) may write at once.
//!
//! Per event: items are written for each user the configured paths name; events without a
//! user, older than the hot window, or not events at all are counted and skipped; an event
//! that can never be stored (an id too long for DynamoDB's sort key) is refused and
//! dead-lettered, and the store refusing a batch (`ValidationException`, an SQLite
//! constraint) makes the runtime find the event that fails on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use event_bus::Delivery;
use event_bus::consumer::{Handler, HandlerError, Outcome};
use futures::future::BoxFuture;

use crate::item::{Built, ItemBuilder, ItemOptions};
use crate::store::Store;

/// What the timeline's handler did since it started (the runtime counts deliveries, acks and
/// dead letters).
#[derive(Debug, Default)]
pub struct TimelineCounters {
    /// Items written (one per user of an event; rewrites of redeliveries included).
    pub items_written: AtomicU64,
    /// Events without a user (skipped).
    pub skipped_no_user: AtomicU64,
    /// Events older than the hot window (skipped).
    pub skipped_expired: AtomicU64,
    /// Messages that were not events (skipped).
    pub invalid: AtomicU64,
}

/// A snapshot of [`TimelineCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerStats {
    /// Items written.
    pub items_written: u64,
    /// Events without a user.
    pub skipped_no_user: u64,
    /// Events older than the hot window.
    pub skipped_expired: u64,
    /// Messages that were not events.
    pub invalid: u64,
}

impl TimelineCounters {
    /// The counts now.
    pub fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            items_written: self.items_written.load(Ordering::Relaxed),
            skipped_no_user: self.skipped_no_user.load(Ordering::Relaxed),
            skipped_expired: self.skipped_expired.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
        }
    }
}

/// Writes batches of events into the store.
pub struct TimelineHandler {
    store: Arc<dyn Store>,
    builder: ItemBuilder,
    counters: Arc<TimelineCounters>,
}

/// `n` handlers (one per concurrent batch) sharing their counters.
pub fn handlers(store: Arc<dyn Store>, opts: Arc<ItemOptions>, n: usize) -> (Vec<TimelineHandler>, Arc<TimelineCounters>) {
    let counters = Arc::new(TimelineCounters::default());
    let hs = (0..n.max(1))
        .map(|_| TimelineHandler { store: store.clone(), builder: ItemBuilder::new(opts.clone()), counters: counters.clone() })
        .collect();
    (hs, counters)
}

impl Handler for TimelineHandler {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let now_secs = chrono::Utc::now().timestamp();
            let mut items = Vec::with_capacity(batch.len());
            let mut rejected = Vec::new();
            let (mut no_user, mut expired, mut invalid) = (0u64, 0u64, 0u64);
            for (i, d) in batch.iter().enumerate() {
                match self.builder.build(&d.payload, now_secs) {
                    Built::Items(v) => items.extend(v),
                    Built::NoUser => no_user += 1,
                    Built::Expired => expired += 1,
                    Built::Invalid(why) => {
                        invalid += 1;
                        tracing::debug!(subject = %d.subject, why, "not an event; skipped");
                    }
                    Built::Unstorable(why) => rejected.push((i, why)),
                }
            }
            metrics::counter!("timeline_events_received_total").increment(batch.len() as u64);
            if let Err(e) = self.store.put_batch(&items).await {
                metrics::counter!("timeline_write_failures_total").increment(1);
                return Err(if e.is_permanent() { HandlerError::permanent(e.to_string()) } else { HandlerError::transient(e.to_string()) });
            }
            let c = &self.counters;
            c.items_written.fetch_add(items.len() as u64, Ordering::Relaxed);
            c.skipped_no_user.fetch_add(no_user, Ordering::Relaxed);
            c.skipped_expired.fetch_add(expired, Ordering::Relaxed);
            c.invalid.fetch_add(invalid, Ordering::Relaxed);
            metrics::counter!("timeline_items_written_total").increment(items.len() as u64);
            metrics::counter!("timeline_events_skipped_total", "reason" => "no_user").increment(no_user);
            metrics::counter!("timeline_events_skipped_total", "reason" => "expired").increment(expired);
            metrics::counter!("timeline_events_skipped_total", "reason" => "invalid").increment(invalid);
            Ok(Outcome { rejected, ..Outcome::default() })
        })
    }

    fn ready(&mut self) -> BoxFuture<'_, bool> {
        self.store.is_ready()
    }
}
