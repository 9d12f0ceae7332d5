//! The updater: consumes the counted event types from the bus (one durable consumer per
//! type, so the bus sends only those), aggregates hits in memory for a short interval, writes
//! them with their bus positions in one atomic store call, acks only after that write, and
//! runs the windows' expiry on the same tick.
//!
//! Exactly-once: the store skips hits whose (source, position) it applied before, and a
//! batch's increments and positions are written together or not at all. One batch is written
//! at a time (while the next one is parsed and aggregated); a failed write is retried with
//! the same batch before any later batch is written (the fetch tasks block on the bounded
//! channel meanwhile), so no position ever moves past an unapplied message; a crash before
//! the write loses nothing (the deliveries are unacked and come back), a crash after it
//! counts nothing twice (the redeliveries are recognised).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use event_bus::{Delivery, Subscriber, ack_all_unconfirmed};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::layout::{Batch, Hit, Layout};
use crate::store::WindowStore;

/// A bus consumer and the name its positions are stored under.
pub struct Source {
    /// Position namespace: positions of two sources with the same name must be comparable
    /// (JetStream stream sequences: the stream's name; in-process: the durable's name).
    pub name: String,
    /// The consumer.
    pub subscriber: Box<dyn Subscriber>,
}

/// Updater settings.
#[derive(Debug, Clone)]
pub struct UpdaterOptions {
    /// Write at least this often.
    pub flush_interval: Duration,
    /// ... or once this many hits are aggregated.
    pub max_batch_events: usize,
    /// Deliveries fetched at once per source.
    pub fetch_batch: usize,
}

impl UpdaterOptions {
    /// The settings of the service's configuration.
    pub fn from_config(config: &crate::config::FeaturesConfig) -> Self {
        UpdaterOptions {
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            max_batch_events: config.max_batch_events,
            fetch_batch: config.fetch_batch,
        }
    }
}

/// Counts since start, readable while it runs.
#[derive(Debug, Default)]
pub struct UpdaterStats {
    /// Deliveries received.
    pub received: AtomicU64,
    /// Hits counted in the store.
    pub applied: AtomicU64,
    /// Hits recognised as already counted (redeliveries).
    pub duplicates: AtomicU64,
    /// Deliveries not counted (no product id, unknown type, unreadable).
    pub skipped: AtomicU64,
    /// Successful writes.
    pub flushes: AtomicU64,
    /// Deliveries acked.
    pub acked: AtomicU64,
    /// Time spent in store writes, microseconds.
    pub write_micros: AtomicU64,
}

/// The updater.
pub struct Updater {
    layout: Layout,
    store: Arc<dyn WindowStore>,
    clock: Arc<dyn Clock>,
    opts: UpdaterOptions,
    stats: Arc<UpdaterStats>,
}

struct Pending {
    deliveries: Vec<Delivery>,
    hits: Vec<Hit>,
    positions: HashMap<usize, u64>,
    in_batch: HashSet<(usize, u64)>,
}

impl Updater {
    /// An updater writing into `store`.
    pub fn new(layout: Layout, store: Arc<dyn WindowStore>, clock: Arc<dyn Clock>, opts: UpdaterOptions) -> Updater {
        Updater { layout, store, clock, opts, stats: Arc::new(UpdaterStats::default()) }
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<UpdaterStats> {
        self.stats.clone()
    }

    /// Runs until `stop` turns true, then writes and acks what it aggregated.
    pub async fn run(self, sources: Vec<Source>, mut stop: watch::Receiver<bool>) {
        let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        // Bounded hand-off from the fetch tasks: at most a few fetches per source in memory.
        let (tx, mut rx) = mpsc::channel::<(usize, Vec<Delivery>)>(sources.len() * 2);
        let (fetch_stop_tx, fetch_stop) = watch::channel(false);
        let mut fetchers = Vec::new();
        for (i, s) in sources.into_iter().enumerate() {
            fetchers.push(tokio::spawn(fetch_loop(i, s.subscriber, self.opts.fetch_batch, tx.clone(), fetch_stop.clone())));
        }
        drop(tx);
        let mut pending = Pending { deliveries: Vec::new(), hits: Vec::new(), positions: HashMap::new(), in_batch: HashSet::new() };
        let mut deadline = Instant::now() + self.opts.flush_interval;
        // The write of the previous batch runs while the next one is parsed and aggregated;
        // a batch starts writing only once the previous one is written and acked.
        let mut writing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                got = rx.recv() => match got {
                    Some((source, ds)) => self.accept(&mut pending, source, ds),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    self.flush(&names, &mut pending, &stop, &mut writing).await;
                    deadline = Instant::now() + self.opts.flush_interval;
                }
                _ = stop.changed() => break,
            }
            if pending.hits.len() >= self.opts.max_batch_events {
                self.flush(&names, &mut pending, &stop, &mut writing).await;
            }
        }
        let _ = fetch_stop_tx.send(true);
        // What the fetch tasks already handed over is written too.
        rx.close();
        while let Some((source, ds)) = rx.recv().await {
            self.accept(&mut pending, source, ds);
        }
        for f in fetchers {
            let _ = f.await;
        }
        self.flush(&names, &mut pending, &stop, &mut writing).await;
        if let Some(w) = writing.take() {
            let _ = w.await;
        }
        tracing::info!(
            applied = self.stats.applied.load(Ordering::Relaxed),
            duplicates = self.stats.duplicates.load(Ordering::Relaxed),
            "features updater stopped"
        );
    }

    fn accept(&self, pending: &mut Pending, source: usize, deliveries: Vec<Delivery>) {
        let arrival = self.clock.now_ms();
        self.stats.received.fetch_add(deliveries.len() as u64, Ordering::Relaxed);
        for d in deliveries {
            let pos = pending.positions.entry(source).or_insert(0);
            *pos = (*pos).max(d.seq);
            // A redelivery of a message still waiting in this batch is counted once.
            if pending.in_batch.insert((source, d.seq)) {
                match self.layout.hit_of(&d.subject, &d.payload, arrival) {
                    Some((product, counter, t_ms)) => pending.hits.push(Hit { product, counter, t_ms, source, seq: d.seq }),
                    None => {
                        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("features_events_skipped_total").increment(1);
                    }
                }
            }
            pending.deliveries.push(d);
        }
    }

    /// Hands the batch to a write task (after the previous write finished): it writes it,
    /// retrying the same batch until it succeeds or the updater stops, then acks its
    /// deliveries and runs the windows' expiry.
    async fn flush(&self, names: &[String], pending: &mut Pending, stop: &watch::Receiver<bool>, writing: &mut Option<tokio::task::JoinHandle<()>>) {
        if let Some(w) = writing.take() {
            let _ = w.await;
        }
        let batch = Batch {
            now_ms: self.clock.now_ms(),
            sources: names.to_vec(),
            hits: std::mem::take(&mut pending.hits),
            positions: pending.positions.drain().collect(),
        };
        pending.in_batch.clear();
        let deliveries = std::mem::take(&mut pending.deliveries);
        let (store, stats, clock, stop) = (self.store.clone(), self.stats.clone(), self.clock.clone(), stop.clone());
        *writing = Some(tokio::spawn(async move {
            if !deliveries.is_empty() && !write(&*store, &stats, &batch, &stop).await {
                return;
            }
            // Unconfirmed acks (no round trip each): a lost ack only brings the message back,
            // and its redelivery is recognised as counted.
            let results = ack_all_unconfirmed(deliveries).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            stats.acked.fetch_add(ok as u64, Ordering::Relaxed);
            if ok < results.len() {
                tracing::warn!(failed = results.len() - ok, "some acks failed; the redeliveries will be recognised as counted");
            }
            expire(&*store, &*clock).await;
        }));
    }
}

/// Writes a batch, retrying the same batch; false when it gave up at shutdown (the
/// deliveries stay unacked, so the bus redelivers them to the next run).
async fn write(store: &dyn WindowStore, stats: &UpdaterStats, batch: &Batch, stop: &watch::Receiver<bool>) -> bool {
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match store.apply(batch).await {
            Ok(r) => {
                stats.applied.fetch_add(r.applied as u64, Ordering::Relaxed);
                stats.duplicates.fetch_add(r.duplicates as u64, Ordering::Relaxed);
                stats.flushes.fetch_add(1, Ordering::Relaxed);
                stats.write_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                metrics::counter!("features_events_applied_total").increment(r.applied as u64);
                metrics::counter!("features_events_duplicate_total").increment(r.duplicates as u64);
                metrics::histogram!("features_flush_seconds").record(started.elapsed().as_secs_f64());
                return true;
            }
            Err(e) => {
                if *stop.borrow() && started.elapsed() > Duration::from_secs(5) {
                    tracing::error!(error = %e, events = batch.hits.len(), "giving up writing at shutdown; the bus will redeliver");
                    return false;
                }
                tracing::warn!(error = %e, events = batch.hits.len(), "store write failed; retrying the same batch");
                metrics::counter!("features_flush_failures_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Runs expiry passes until the windows are exact as of now (bounded per call).
async fn expire(store: &dyn WindowStore, clock: &dyn Clock) {
    for _ in 0..20 {
        match store.expire(clock.now_ms()).await {
            Ok(r) => {
                metrics::counter!("features_buckets_expired_total").increment(r.expired as u64);
                if r.complete {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "expiry pass failed; retrying next tick");
                return;
            }
        }
    }
}

async fn fetch_loop(
    source: usize,
    mut sub: Box<dyn Subscriber>,
    max: usize,
    tx: mpsc::Sender<(usize, Vec<Delivery>)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let fetched = tokio::select! {
            r = sub.fetch(max, Duration::from_millis(100)) => r,
            _ = stop.changed() => return,
        };
        match fetched {
            Ok(ds) if ds.is_empty() => {}
            Ok(ds) => {
                if tx.send((source, ds)).await.is_err() {
                    return;
                }
            }
            Err(event_bus::BusError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
