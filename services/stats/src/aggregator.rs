//! The aggregator: consumes the bus in order, counts per (user, UTC day, metric) and commits
//! each batch's counts together with the bus position, exactly once.
//!
//! Per batch: deliveries whose `seq` is at or below the stored position were counted already
//! (a redelivery after a lost ack, or after a crash between commit and ack) and are skipped;
//! the others are tallied in memory (event counts, and the distinct values of distinct
//! metrics); then ONE transaction upserts the counts, adds the new distinct values (and their
//! number to the day's count) and moves the position from the value this aggregator read to the batch's highest `seq`; then the batch
//! is acked. If the commit fails the same batch is retried (its deliveries kept alive with
//! `in_progress`) and nothing more is fetched, so the position never passes an event that is
//! not counted. A crash before the commit loses nothing (the deliveries come back); after it,
//! nothing is counted twice (their `seq` is covered by the position).
//!
//! Ordering: the position is a high-water mark, so an event must never be applied after a
//! later one. In steady state everything fetched is settled before the next fetch. After a
//! restart the previous instance's un-acked deliveries are redelivered only when their ack
//! wait expires, and new messages could come first: so the aggregator takes its consumer's
//! lock (Postgres advisory lock: one writer per consumer), then waits over one `ack_wait`
//! before its first fetch, after which the bus redelivers those messages before new ones. Commits
//! run on the session that holds the lock, so a writer that lost it cannot commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::{Delivery, Subscriber, ack_all};
use event_contract::wire::event_type_of;
use tokio::sync::watch;

use crate::cache::StatsCache;
use crate::definitions::{Extractor, today};
use crate::store::{ConsumerLock, Store, StoreError};
use crate::tally::Tally;

/// How the aggregator runs.
#[derive(Debug, Clone)]
pub struct AggregatorOptions {
    /// The consumer name: its position row and lock (the durable consumer's name).
    pub consumer: String,
    /// Deliveries per batch (one transaction each).
    pub fetch_batch: usize,
    /// Waited after taking the lock and before the first fetch (the bus's ack wait; zero for
    /// a fresh in-process bus).
    pub startup_wait: Duration,
    /// Set the position to 0 at start (a fresh in-process bus numbers from 1 again).
    pub reset_position: bool,
    /// Days kept (older partitions dropped; older events ignored).
    pub retention_days: u32,
    /// Partitions created ahead of today (newer events are ignored).
    pub ahead_days: u32,
}

/// What the aggregator did since it started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AggregatorStats {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries skipped because the stored position covers them (counted before).
    pub already_counted: u64,
    /// Events that counted for at least one metric.
    pub counted: u64,
    /// Unreadable payloads (acked and skipped).
    pub unreadable: u64,
    /// Events outside the kept days (acked and skipped).
    pub out_of_range: u64,
    /// Batches committed.
    pub batches: u64,
    /// Count rows upserted and distinct values offered.
    pub rows: u64,
    /// Distinct values not counted because their (user, day, metric) was at its bound.
    pub capped: u64,
}

/// Why the aggregator stopped.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The store failed outside of a retried commit, or another writer moved the position.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session holding the consumer's lock is gone: another instance may take over.
    #[error("lost the lock of consumer {0:?}; stopping so that a single writer remains")]
    LockLost(String),
}

/// The aggregator.
pub struct Aggregator {
    store: Store,
    cache: Arc<StatsCache>,
    extractor: Extractor,
    opts: AggregatorOptions,
    stats: AggregatorStats,
}

const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

impl Aggregator {
    /// An aggregator writing to `store` and invalidating `cache`.
    pub fn new(store: Store, cache: Arc<StatsCache>, extractor: Extractor, opts: AggregatorOptions) -> Self {
        Aggregator { store, cache, extractor, opts, stats: AggregatorStats::default() }
    }

    /// Runs until `stop` turns true (finishing the batch in hand), or a fatal error.
    pub async fn run(mut self, mut sub: impl Subscriber, mut stop: watch::Receiver<bool>) -> Result<AggregatorStats, AggregatorError> {
        let consumer = self.opts.consumer.clone();
        let mut lock = tokio::select! {
            l = self.store.lock_consumer(&consumer) => l?,
            _ = stop.changed() => return Ok(self.stats),
        };
        if self.opts.reset_position {
            self.store.set_position(&consumer, 0).await?;
        }
        if !self.opts.startup_wait.is_zero() {
            tracing::info!(consumer, wait = ?self.opts.startup_wait, "lock taken; waiting one ack wait so a previous instance's deliveries come back before new ones");
            tokio::select! {
                _ = tokio::time::sleep(self.opts.startup_wait) => {},
                _ = stop.changed() => return Ok(self.stats),
            }
        }
        let mut position = self.store.position(&consumer).await?;
        tracing::info!(consumer, position, "aggregator started");
        self.maintenance().await;
        let mut last_maintenance = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let fetched = tokio::select! {
                r = sub.fetch(self.opts.fetch_batch, Duration::from_millis(500)) => r,
                _ = stop.changed() => break,
            };
            match fetched {
                Ok(deliveries) if deliveries.is_empty() => {}
                Ok(deliveries) => {
                    if let Some(p) = self.process(&mut lock, position, deliveries, &stop).await? {
                        position = p;
                    } else {
                        break; // stop requested while a commit kept failing: nothing applied
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if last_maintenance.elapsed() >= MAINTENANCE_EVERY {
                self.maintenance().await;
                last_maintenance = Instant::now();
            }
        }
        tracing::info!(consumer, position, stats = ?self.stats, "aggregator stopped");
        Ok(self.stats)
    }

    /// Creates the coming partitions and drops the expired ones (errors are logged).
    async fn maintenance(&self) {
        let t = today();
        let days: Vec<i32> = (t - 1..=t + self.opts.ahead_days as i32).collect();
        if let Err(e) = self.store.ensure_days(&days).await {
            tracing::error!(error = %e, "could not create the coming partitions");
        }
        match self.store.drop_before(t - self.opts.retention_days as i32 + 1).await {
            Ok(dropped) if !dropped.is_empty() => tracing::info!(?dropped, "retention applied"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
    }

    /// Counts and commits one batch; the new position, or `None` when asked to stop before
    /// the commit succeeded.
    async fn process(
        &mut self,
        lock: &mut ConsumerLock,
        position: i64,
        deliveries: Vec<Delivery>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Option<i64>, AggregatorError> {
        let t = today();
        let (oldest, newest) = (t - self.opts.retention_days as i32 + 1, t + self.opts.ahead_days as i32);
        let mut tally = Tally::new();
        let mut new_position = position;
        let mut credited: Vec<(String, usize, Option<String>)> = Vec::new();
        for d in &deliveries {
            self.stats.received += 1;
            let seq = i64::try_from(d.seq).unwrap_or(i64::MAX);
            if seq <= position {
                self.stats.already_counted += 1;
                continue;
            }
            new_position = new_position.max(seq);
            if let Some(t) = event_type_of(&d.subject)
                && !self.extractor.counts_type(t)
            {
                continue;
            }
            credited.clear();
            match self.extractor.extract(&d.payload, |user, m, v| credited.push((user.to_owned(), m, v.map(str::to_owned)))) {
                Ok(Some(c)) if c.day < oldest || c.day > newest => self.stats.out_of_range += 1,
                Ok(Some(c)) => {
                    self.stats.counted += 1;
                    for (user, m, v) in &credited {
                        tally.add(user, c.day, *m, v.as_deref());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.stats.unreadable += 1;
                    tracing::warn!(error = %e, seq, subject = %d.subject, "skipping an unreadable event");
                }
            }
        }
        metrics::counter!("stats_aggregator_received_total").increment(deliveries.len() as u64);
        if new_position == position {
            self.ack(deliveries).await;
            return Ok(Some(position));
        }
        let changes = tally.into_changes(self.extractor.metrics());
        let mut days: Vec<i32> = changes.counts.days.iter().chain(&changes.values.days).copied().collect();
        days.sort_unstable();
        days.dedup();
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = match self.store.ensure_days(&days).await {
                Ok(()) => self.store.apply(lock, &self.opts.consumer, position, new_position, &changes).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(applied) => {
                    if applied.capped > 0 {
                        self.stats.capped += applied.capped;
                        metrics::counter!("stats_distinct_capped_total").increment(applied.capped);
                        tracing::warn!(capped = applied.capped, "distinct values over their metric's max_distinct_per_day were not counted");
                    }
                    break;
                }
                Err(e @ StoreError::PositionMoved { .. }) => return Err(e.into()),
                Err(e) => {
                    if !lock.is_held().await {
                        return Err(AggregatorError::LockLost(self.opts.consumer.clone()));
                    }
                    metrics::counter!("stats_aggregator_commit_failures_total").increment(1);
                    self.store.forget_days();
                    tracing::warn!(error = %e, retry_in = ?backoff, "commit failed; retrying the same batch");
                    if *stop.borrow() {
                        return Ok(None);
                    }
                    for d in &deliveries {
                        let _ = d.in_progress().await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let written = (changes.counts.len() + changes.values.len()) as u64;
        self.stats.batches += 1;
        self.stats.rows += written;
        metrics::counter!("stats_aggregator_rows_total").increment(written);
        metrics::gauge!("stats_aggregator_position").set(new_position as f64);
        self.cache.invalidate(&changes.touched_users(t), t).await;
        self.ack(deliveries).await;
        Ok(Some(new_position))
    }

    async fn ack(&mut self, deliveries: Vec<Delivery>) {
        let results = ack_all(deliveries).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            // Counted already: when they come back their seq is covered by the position.
            tracing::warn!(failed, "some acks failed; the redeliveries will be skipped");
        }
    }
}
