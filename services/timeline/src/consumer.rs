//! The bus consumer: fetches a batch of events, builds their items, writes them in one
//! `put_batch`, then acks the batch; on a failed write it naks it (the bus redelivers; the
//! puts are idempotent, so a redelivery only rewrites the same items). Events without a user
//! are counted and acked; so are events older than the hot window and invalid messages.

use std::sync::Arc;
use std::time::Duration;

use event_bus::{Delivery, Subscriber, ack_all};
use tokio::sync::watch;

use crate::item::{Built, ItemBuilder, ItemOptions};
use crate::store::Store;

/// What the consumer did since it started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConsumerStats {
    /// Deliveries received.
    pub received: u64,
    /// Items written (one per user of an event; rewrites of redeliveries included).
    pub items_written: u64,
    /// Events without a user (skipped).
    pub skipped_no_user: u64,
    /// Events older than the hot window (skipped).
    pub skipped_expired: u64,
    /// Messages that were not events (skipped).
    pub invalid: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Batches whose write failed (nak'ed for redelivery).
    pub failed_batches: u64,
}

/// Consumes events into a store.
pub struct TimelineConsumer {
    store: Arc<dyn Store>,
    builder: ItemBuilder,
    fetch_batch: usize,
    stats: ConsumerStats,
    progress: watch::Sender<ConsumerStats>,
}

impl TimelineConsumer {
    /// A consumer writing to `store`.
    pub fn new(store: Arc<dyn Store>, opts: Arc<ItemOptions>, fetch_batch: usize) -> Self {
        let (progress, _) = watch::channel(ConsumerStats::default());
        TimelineConsumer { store, builder: ItemBuilder::new(opts), fetch_batch, stats: ConsumerStats::default(), progress }
    }

    /// The counters, updated after each batch (for tests, `eventctl dev` and benchmarks).
    pub fn progress(&self) -> watch::Receiver<ConsumerStats> {
        self.progress.subscribe()
    }

    /// Runs until `stop` turns true; the batch being written when it does is finished and
    /// acked first.
    pub async fn run(mut self, mut sub: impl Subscriber, mut stop: watch::Receiver<bool>) -> ConsumerStats {
        loop {
            if *stop.borrow() {
                break;
            }
            let fetched = tokio::select! {
                r = sub.fetch(self.fetch_batch, Duration::from_millis(500)) => r,
                _ = stop.changed() => break,
            };
            match fetched {
                Ok(deliveries) if deliveries.is_empty() => {}
                Ok(deliveries) => {
                    if !self.process(deliveries).await {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!(stats = ?self.stats, "timeline consumer stopped");
        self.stats
    }

    /// Writes one batch; false when the write failed (the batch was nak'ed).
    pub async fn process(&mut self, deliveries: Vec<Delivery>) -> bool {
        let now_secs = chrono::Utc::now().timestamp();
        let mut items = Vec::with_capacity(deliveries.len());
        let (mut no_user, mut expired, mut invalid) = (0u64, 0u64, 0u64);
        for d in &deliveries {
            match self.builder.build(&d.payload, now_secs) {
                Built::Items(v) => items.extend(v),
                Built::NoUser => no_user += 1,
                Built::Expired => expired += 1,
                Built::Invalid(why) => {
                    invalid += 1;
                    tracing::debug!(subject = %d.subject, why, "not an event; skipped");
                }
            }
        }
        self.stats.received += deliveries.len() as u64;
        metrics::counter!("timeline_events_received_total").increment(deliveries.len() as u64);
        if let Err(e) = self.store.put_batch(&items).await {
            self.stats.failed_batches += 1;
            self.progress.send_replace(self.stats.clone());
            metrics::counter!("timeline_write_failures_total").increment(1);
            tracing::error!(error = %e, events = deliveries.len(), "write failed; the batch will be redelivered");
            for d in deliveries {
                let _ = d.nak().await;
            }
            return false;
        }
        self.stats.items_written += items.len() as u64;
        metrics::counter!("timeline_items_written_total").increment(items.len() as u64);
        self.stats.skipped_no_user += no_user;
        self.stats.skipped_expired += expired;
        self.stats.invalid += invalid;
        metrics::counter!("timeline_events_skipped_total", "reason" => "no_user").increment(no_user);
        metrics::counter!("timeline_events_skipped_total", "reason" => "expired").increment(expired);
        metrics::counter!("timeline_events_skipped_total", "reason" => "invalid").increment(invalid);
        let results = ack_all(deliveries).await;
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.stats.acked += ok;
        self.progress.send_replace(self.stats.clone());
        if ok < results.len() as u64 {
            tracing::warn!(failed = results.len() as u64 - ok, "some acks failed; those events come back and rewrite their items");
        }
        true
    }

    /// Counters so far.
    pub fn stats(&self) -> &ConsumerStats {
        &self.stats
    }
}
