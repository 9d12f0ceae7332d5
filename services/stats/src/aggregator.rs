//! The aggregator: a handler of the bus consumer runtime ([`event_bus::consumer`], run
//! `ordered`) that counts per (user, UTC day, metric) and commits each batch's counts
//! together with the bus position, exactly once.
//!
//! Per batch: deliveries whose `seq` is at or below the stored position were counted already
//! (a redelivery after a lost ack, or after a crash between commit and ack) and are skipped;
//! the others are tallied in memory (event counts, and the distinct values of distinct
//! metrics); then ONE transaction upserts the counts, adds the new distinct values (and their
//! number to the day's count) and moves the position from the value this aggregator read to
//! the batch's highest `seq`; then the runtime acks the batch. A commit that fails because the
//! database is unavailable fails the batch transiently: the runtime retries the same batch
//! (kept alive) and hands over nothing later, so the position never passes an event that is
//! not counted. A commit the database refuses for the batch's data (an `owner_id` holding a
//! NUL, a constraint: SQLSTATE classes 22 and 23) fails it permanently: the runtime splits it
//! in halves, in order, commits the halves that go through and dead-letters the event that
//! fails on its own. A crash before the commit loses nothing (the deliveries come back);
//! after it, nothing is counted twice (their `seq` is covered by the position).
//!
//! Ordering: the position is a high-water mark, so an event must never be applied after a
//! later one. The runtime's ordered mode guarantees it: batches are handed over one at a
//! time, in stream order, and only when every delivery of the durable consumer that is not
//! settled is in this process. A delivery outside it (lost on the way when a fetch was cut
//! short, fetched by another client, or left un-acked by a previous instance that crashed)
//! comes back after its ack wait, before anything after it is committed. Dead letters and
//! events skipped for being unreadable or out of range are settled (terminated or acked)
//! when the position passes them: the runtime dead-letters the event that fails alone
//! before it hands over the half after it, so the position never passes a message that is
//! neither counted nor kept. One writer per consumer: the aggregator takes its consumer's
//! lock (Postgres advisory lock) before it starts, and commits on the session that holds it,
//! so a writer that lost it cannot commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::Delivery;
use event_bus::consumer::{Handler, HandlerError, Outcome};
use event_contract::wire::event_type_of;
use futures::future::BoxFuture;
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
    lock: ConsumerLock,
    position: i64,
    last_maintenance: Instant,
    /// Where a fatal error is reported, and the switch that stops the service on it.
    fatal: Fatal,
}

/// A fatal error of the aggregator (another writer, its lock lost): it is recorded here and
/// the service is stopped, so the orchestrator restarts it.
#[derive(Clone)]
pub struct Fatal {
    /// The error.
    pub error: Arc<std::sync::Mutex<Option<AggregatorError>>>,
    /// Turned true on a fatal error.
    pub stop: watch::Sender<bool>,
}

impl Fatal {
    /// A fatal-error slot and the receiver of its stop switch.
    pub fn new() -> (Fatal, watch::Receiver<bool>) {
        let (stop, rx) = watch::channel(false);
        (Fatal { error: Arc::default(), stop }, rx)
    }

    /// The recorded error, if any.
    pub fn take(&self) -> Option<AggregatorError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn raise(&self, e: AggregatorError) -> HandlerError {
        tracing::error!(error = %e, "aggregator stopping");
        let message = e.to_string();
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        let _ = self.stop.send(true);
        HandlerError::transient(message)
    }
}

const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

impl Aggregator {
    /// Takes the consumer's lock (waiting while another aggregator holds it), reads the
    /// position, runs the first maintenance: an aggregator ready to be handed batches.
    pub async fn start(store: Store, cache: Arc<StatsCache>, extractor: Extractor, opts: AggregatorOptions, fatal: Fatal) -> Result<Self, AggregatorError> {
        let consumer = opts.consumer.clone();
        let lock = store.lock_consumer(&consumer).await?;
        if opts.reset_position {
            store.set_position(&consumer, 0).await?;
        }
        let position = store.position(&consumer).await?;
        tracing::info!(consumer, position, "aggregator started");
        let aggregator = Aggregator {
            store,
            cache,
            extractor,
            opts,
            stats: AggregatorStats::default(),
            lock,
            position,
            last_maintenance: Instant::now(),
            fatal,
        };
        aggregator.maintenance().await;
        Ok(aggregator)
    }

    /// What it did since it started.
    pub fn stats(&self) -> &AggregatorStats {
        &self.stats
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

    /// Counts and commits one batch.
    async fn process(&mut self, deliveries: &[Delivery]) -> Result<Outcome, HandlerError> {
        let position = self.position;
        let t = today();
        let (oldest, newest) = (t - self.opts.retention_days as i32 + 1, t + self.opts.ahead_days as i32);
        let mut tally = Tally::new();
        let mut new_position = position;
        let mut credited: Vec<(String, usize, Option<String>)> = Vec::new();
        for d in deliveries {
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
            return Ok(Outcome::done());
        }
        let changes = tally.into_changes(self.extractor.metrics());
        let mut days: Vec<i32> = changes.counts.days.iter().chain(&changes.values.days).copied().collect();
        days.sort_unstable();
        days.dedup();
        let result = match self.store.ensure_days(&days).await {
            Ok(()) => self.store.apply(&mut self.lock, &self.opts.consumer, position, new_position, &changes).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(applied) => {
                if applied.capped > 0 {
                    self.stats.capped += applied.capped;
                    metrics::counter!("stats_distinct_capped_total").increment(applied.capped);
                    tracing::warn!(capped = applied.capped, "distinct values over their metric's max_distinct_per_day were not counted");
                }
            }
            Err(e @ StoreError::PositionMoved { .. }) => return Err(self.fatal.raise(e.into())),
            Err(e) => {
                if !self.lock.is_held().await {
                    return Err(self.fatal.raise(AggregatorError::LockLost(self.opts.consumer.clone())));
                }
                metrics::counter!("stats_aggregator_commit_failures_total").increment(1);
                self.store.forget_days();
                if e.is_permanent() {
                    return Err(HandlerError::permanent(format!("the database refused the batch's counts: {e}")));
                }
                return Err(HandlerError::transient(format!("commit failed: {e}")));
            }
        }
        let written = (changes.counts.len() + changes.values.len()) as u64;
        self.stats.batches += 1;
        self.stats.rows += written;
        metrics::counter!("stats_aggregator_rows_total").increment(written);
        metrics::gauge!("stats_aggregator_position").set(new_position as f64);
        tracing::debug!(consumer = %self.opts.consumer, position = new_position, rows = written, "committed");
        self.cache.invalidate(&changes.touched_users(t), t).await;
        self.position = new_position;
        Ok(Outcome::done())
    }
}

impl Handler for Aggregator {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(self.process(batch))
    }

    fn tick(&mut self, _flush_all: bool) -> BoxFuture<'_, Vec<event_bus::consumer::Settled>> {
        Box::pin(async move {
            if self.last_maintenance.elapsed() >= MAINTENANCE_EVERY {
                self.maintenance().await;
                self.last_maintenance = Instant::now();
            }
            Vec::new()
        })
    }

    fn ready(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.store.ping().await.is_ok() })
    }
}
