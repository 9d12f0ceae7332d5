//! The fetcher of a consumer: fetches from the durable consumer, cuts batches by count,
//! bytes and time, hands them to the workers (bounded: one batch waiting per worker), keeps
//! the consumer's metrics, and stops cleanly.
//!
//! Stopping: when `stop` turns true, what was fetched and not handed over is nak'ed (another
//! replica takes it at once), the workers finish their batch, write what they deferred and
//! ack it. When the bus is closing (the in-process bus of `eventctl dev` after Ctrl-C), the
//! consumer instead drains it: it keeps fetching, has everything written once nothing new
//! comes, and ends when the bus says its durable is empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::config::ConsumerSpec;
use super::handler::Handler;
use super::worker::{Worker, keep_alive};
use crate::{Bus, BusError, Delivery, Subscriber};

/// Longest wait of one fetch when nothing is buffered (how quickly a stop is noticed).
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How often the lag gauges are refreshed.
const STATE_EVERY: Duration = Duration::from_secs(5);
/// How often an ordered consumer that holds messages for a missing delivery looks again.
const GAP_RECHECK: Duration = Duration::from_millis(250);

/// What a consumer did since it started (live: read it while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries received.
    pub received: AtomicU64,
    /// Deliveries that were redeliveries.
    pub redeliveries: AtomicU64,
    /// Deliveries acked.
    pub acked: AtomicU64,
    /// Messages dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Transient failures (each retry of a batch, each deferred write that failed).
    pub retries: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Deliveries received.
    pub received: u64,
    /// Deliveries that were redeliveries.
    pub redeliveries: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Transient failures.
    pub retries: u64,
}

impl Counters {
    /// The counts now.
    pub fn report(&self) -> Report {
        Report {
            received: self.received.load(Ordering::Relaxed),
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// What the fetcher and the workers share.
pub(crate) struct Shared {
    pub spec: ConsumerSpec,
    pub bus: Arc<dyn Bus>,
    pub counters: Arc<Counters>,
    /// Deliveries received and not settled yet (held, queued, in a worker, deferred).
    pub outstanding: AtomicI64,
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`, or less when asked to stop.
    pub async fn sleep(&self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

/// A durable consumer of the bus, ready to run (messages are kept for it from
/// [`Consumer::subscribe`] on, also on the in-process bus).
pub struct Consumer {
    spec: ConsumerSpec,
    bus: Arc<dyn Bus>,
    sub: Box<dyn Subscriber>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Consumer {
    /// Creates (or reuses) the durable consumer of `spec` on `bus`.
    pub async fn subscribe(bus: Arc<dyn Bus>, spec: ConsumerSpec) -> Result<Consumer, BusError> {
        if spec.ordered && spec.concurrency != 1 {
            return Err(BusError::Rejected(format!("consumer {:?}: an ordered consumer handles one batch at a time", spec.name)));
        }
        let sub = bus.subscribe(&spec).await?;
        Ok(Consumer { spec, bus, sub, counters: Arc::new(Counters::default()) })
    }

    /// Its spec.
    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    /// Its live counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Runs `handlers` (one per concurrent batch: `spec.concurrency` of them) until `stop`
    /// turns true, or until a closing bus is drained; returns what it did.
    pub async fn run<H: Handler>(self, handlers: Vec<H>, stop: watch::Receiver<bool>) -> Report {
        let Consumer { spec, bus, mut sub, counters } = self;
        if handlers.len() != spec.concurrency {
            tracing::warn!(consumer = %spec.name, handlers = handlers.len(), concurrency = spec.concurrency, "as many handlers as the concurrency are expected");
        }
        let shared = Arc::new(Shared { spec: spec.clone(), bus, counters: counters.clone(), outstanding: AtomicI64::new(0), stop: stop.clone() });
        let workers = handlers.len().max(1);
        let (queue_tx, queue_rx) = mpsc::channel::<Vec<Delivery>>(workers);
        let queue_rx = Arc::new(Mutex::new(queue_rx));
        let mut flushes = Vec::new();
        // A JoinSet, so that workers end with this future even when it is dropped or aborted
        // (a crashing host task must not leave a worker committing behind its successor).
        let mut tasks = tokio::task::JoinSet::new();
        for handler in handlers {
            let (ftx, frx) = mpsc::channel(1);
            flushes.push(ftx);
            tasks.spawn(Worker::new(shared.clone(), handler).run(queue_rx.clone(), frx));
        }
        let mut fetcher = Fetcher {
            shared: shared.clone(),
            queue: queue_tx,
            flushes,
            buf: Vec::new(),
            buf_bytes: 0,
            first_at: None,
            kept_alive: Instant::now(),
            holding_since: None,
            next_gap_check: Instant::now(),
        };
        tracing::info!(consumer = %spec.name, filters = ?spec.filter_subjects(), ordered = spec.ordered, workers, "consumer started");
        let drained = fetcher.run(&mut *sub, stop).await;
        let Fetcher { queue, flushes, buf, .. } = fetcher;
        if !buf.is_empty() {
            shared.outstanding.fetch_sub(buf.len() as i64, Ordering::Relaxed);
            for d in buf {
                let _ = d.nak().await;
            }
        }
        drop(queue);
        drop(flushes);
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(consumer = %spec.name, error = %e, "a consumer worker failed");
            }
        }
        let report = counters.report();
        tracing::info!(consumer = %spec.name, drained, ?report, "consumer stopped");
        report
    }
}

struct Fetcher {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Vec<Delivery>>,
    flushes: Vec<mpsc::Sender<oneshot::Sender<()>>>,
    /// Fetched, not handed over yet (stream order for an ordered consumer).
    buf: Vec<Delivery>,
    buf_bytes: usize,
    first_at: Option<Instant>,
    kept_alive: Instant,
    /// An ordered consumer waiting for deliveries outside this process, since when.
    holding_since: Option<Instant>,
    next_gap_check: Instant,
}

impl Fetcher {
    /// Fetches and hands over until stopped (false) or the closing bus is drained (true).
    async fn run(&mut self, sub: &mut dyn Subscriber, mut stop: watch::Receiver<bool>) -> bool {
        let spec = self.shared.spec.clone();
        let mut next_state = Instant::now();
        loop {
            if *stop.borrow() {
                return false;
            }
            if Instant::now() >= next_state {
                next_state = Instant::now() + STATE_EVERY;
                self.record_state(sub).await;
            }
            let due = self.first_at.map(|t| t + spec.batch_wait);
            let full = self.buf.len() >= spec.batch_messages || self.buf_bytes >= spec.batch_bytes;
            if !self.buf.is_empty() && (full || due.is_some_and(|d| Instant::now() >= d)) && self.may_hand_over(sub).await {
                if !self.hand_over(&mut stop).await {
                    return false;
                }
                continue;
            }
            self.keep_alive_if_due().await;
            let wait = match due {
                Some(d) if self.holding_since.is_none() => d.saturating_duration_since(Instant::now()).min(IDLE_WAIT),
                Some(_) => GAP_RECHECK,
                None => IDLE_WAIT,
            };
            // While holding for a gap the buffer may grow past one batch (bounded by the
            // bus's max_ack_pending).
            let want = spec.batch_messages.saturating_sub(self.buf.len()).max(if self.holding_since.is_some() { spec.batch_messages } else { 1 });
            let fetched = tokio::select! {
                r = sub.fetch(want, wait.max(Duration::from_millis(1))) => r,
                _ = stop.changed() => return false,
            };
            match fetched {
                Ok(ds) if ds.is_empty() => {
                    if sub.is_closing() && !self.drain_round(sub, &mut stop).await {
                        return false;
                    }
                }
                Ok(ds) => self.take(ds),
                Err(BusError::Closed) => {
                    if !self.buf.is_empty() {
                        // Cannot happen (a closed durable is empty), but never drop a delivery.
                        self.holding_since = None;
                        if !self.hand_over(&mut stop).await {
                            return false;
                        }
                    }
                    self.flush_workers().await;
                    return true;
                }
                Err(e) => {
                    tracing::warn!(consumer = %spec.name, error = %e, "fetch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_WAIT) => {}
                        _ = stop.changed() => return false,
                    }
                }
            }
        }
    }

    fn take(&mut self, ds: Vec<Delivery>) {
        let spec = &self.shared.spec;
        let n = ds.len() as u64;
        let redelivered = ds.iter().filter(|d| d.redelivered).count() as u64;
        self.shared.counters.received.fetch_add(n, Ordering::Relaxed);
        self.shared.counters.redeliveries.fetch_add(redelivered, Ordering::Relaxed);
        self.shared.outstanding.fetch_add(n as i64, Ordering::Relaxed);
        metrics::counter!("bus_consumer_received_total", "consumer" => spec.name.clone()).increment(n);
        if redelivered > 0 {
            metrics::counter!("bus_consumer_redeliveries_total", "consumer" => spec.name.clone()).increment(redelivered);
        }
        if self.first_at.is_none() {
            self.first_at = Some(Instant::now());
            self.kept_alive = Instant::now();
        }
        self.buf_bytes += ds.iter().map(|d| d.payload.len()).sum::<usize>();
        self.buf.extend(ds);
        if spec.ordered {
            self.buf.sort_by_key(|d| d.seq);
        }
    }

    /// An ordered consumer hands a batch over only when every delivery of its durable that
    /// is not settled is in this process: then no message below the batch can arrive after
    /// it (deliveries lost on the way, or left by a previous instance, come back only after
    /// their ack wait; until then the consumer holds what it fetched).
    async fn may_hand_over(&mut self, sub: &mut dyn Subscriber) -> bool {
        if !self.shared.spec.ordered {
            return true;
        }
        if Instant::now() < self.next_gap_check {
            return false;
        }
        let outstanding = self.shared.outstanding.load(Ordering::Relaxed).max(0) as u64;
        let state = match sub.state().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(consumer = %self.shared.spec.name, error = %e, "cannot read the consumer's state; holding the batch");
                self.next_gap_check = Instant::now() + IDLE_WAIT;
                return false;
            }
        };
        if state.ack_pending <= outstanding {
            if let Some(since) = self.holding_since.take() {
                tracing::info!(consumer = %self.shared.spec.name, waited = ?since.elapsed(), "the missing deliveries came back; going on in order");
            }
            return true;
        }
        if self.holding_since.is_none() {
            self.holding_since = Some(Instant::now());
            tracing::warn!(
                consumer = %self.shared.spec.name,
                outside = state.ack_pending - outstanding,
                held = self.buf.len(),
                ack_wait = ?self.shared.spec.ack_wait,
                "deliveries of this consumer are outside this process (lost on the way, or left by a previous instance); holding what was fetched until the bus redelivers them, so nothing is applied out of order"
            );
        }
        self.next_gap_check = Instant::now() + GAP_RECHECK;
        false
    }

    /// Hands one batch to the workers (waiting for room, keeping the batch alive); false when
    /// stopped meanwhile (the batch stays in `buf` and is nak'ed).
    async fn hand_over(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let spec = self.shared.spec.clone();
        let permit = loop {
            tokio::select! {
                p = self.queue.reserve() => match p {
                    Ok(p) => break p,
                    Err(_) => return false,
                },
                _ = tokio::time::sleep(spec.ack_wait / 3) => {
                    keep_alive(self.buf.iter()).await;
                    self.kept_alive = Instant::now();
                }
                _ = stop.changed() => return false,
            }
        };
        let mut bytes = 0usize;
        let mut n = 0usize;
        for d in &self.buf {
            if n >= spec.batch_messages || (n > 0 && bytes + d.payload.len() > spec.batch_bytes) {
                break;
            }
            bytes += d.payload.len();
            n += 1;
        }
        let rest = self.buf.split_off(n);
        let batch = std::mem::replace(&mut self.buf, rest);
        self.buf_bytes = self.buf_bytes.saturating_sub(bytes);
        self.first_at = if self.buf.is_empty() { None } else { Some(Instant::now()) };
        permit.send(batch);
        true
    }

    async fn keep_alive_if_due(&mut self) {
        if !self.buf.is_empty() && self.kept_alive.elapsed() >= self.shared.spec.ack_wait / 3 {
            keep_alive(self.buf.iter()).await;
            self.kept_alive = Instant::now();
        }
    }

    /// The bus is closing and nothing new came: hand over what is held and have every
    /// worker write what it deferred; false when stopped meanwhile.
    async fn drain_round(&mut self, sub: &mut dyn Subscriber, stop: &mut watch::Receiver<bool>) -> bool {
        while !self.buf.is_empty() {
            if self.may_hand_over(sub).await {
                if !self.hand_over(stop).await {
                    return false;
                }
            } else {
                tokio::time::sleep(GAP_RECHECK).await;
            }
        }
        self.flush_workers().await;
        true
    }

    /// Has every worker write what it deferred (after the batches already queued).
    async fn flush_workers(&mut self) {
        let mut waits = Vec::new();
        for f in &self.flushes {
            let (tx, rx) = oneshot::channel();
            if f.send(tx).await.is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }

    async fn record_state(&self, sub: &mut dyn Subscriber) {
        let name = self.shared.spec.name.clone();
        match sub.state().await {
            Ok(s) => {
                metrics::gauge!("bus_consumer_pending_messages", "consumer" => name.clone()).set(s.pending as f64);
                metrics::gauge!("bus_consumer_ack_pending_messages", "consumer" => name).set(s.ack_pending as f64);
            }
            Err(e) => tracing::debug!(consumer = %name, error = %e, "consumer state unavailable"),
        }
    }
}
