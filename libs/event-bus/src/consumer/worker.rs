//! One worker of a consumer: runs its [`Handler`] on the batches the fetcher hands over and
//! settles every delivery (ack, retry, dead letter).
//!
//! A batch that fails as a whole is retried in place when the failure is transient, for as
//! long as it takes (its deliveries kept alive with progress acks; nothing later overtakes
//! it, and its delivery count does not grow: a store that is down or throttling never turns
//! a message into a dead letter); it is split in two halves, handled in order, when the
//! failure is permanent, so the message that fails on its own is found while the others go
//! through, and that message is dead-lettered. A message the bus delivered more than
//! `max_deliver` times without it being settled (it crashed, hung or was killed with the
//! consumer) is handled alone, and given up on beyond twice that, only while the handler's
//! store answers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::dead_letter::{self, DeadLetter};
use super::driver::Shared;
use super::handler::{Handler, HandlerError, Outcome, Settled};
use crate::{BusError, Delivery, ack_all, ack_all_unconfirmed};

/// Trace ids named at most in the span of one handled batch.
const MAX_SPAN_TRACE_IDS: usize = 16;

/// A delivery to dead-letter, the bytes to keep (when the payload was released), and why.
type Doomed = (Delivery, Option<Bytes>, String);

pub(crate) struct Worker<H> {
    shared: Arc<Shared>,
    handler: H,
    /// Deliveries whose handler kept them for a later write, by bus position, with when
    /// they were deferred or last kept alive.
    deferred: HashMap<u64, (Instant, Vec<Delivery>)>,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(shared: Arc<Shared>, handler: H) -> Self {
        Worker { shared, handler, deferred: HashMap::new() }
    }

    pub(crate) async fn run(mut self, queue: Arc<Mutex<mpsc::Receiver<Vec<Delivery>>>>, mut flushes: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut tick = tokio::time::interval(self.shared.spec.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = async { queue.lock().await.recv().await };
            tokio::select! {
                batch = next => match batch {
                    Some(batch) => self.process(batch).await,
                    None => break,
                },
                Some(reply) = flushes.recv() => {
                    self.flush_all().await;
                    let _ = reply.send(());
                }
                _ = tick.tick() => {
                    let settled = self.handler.tick(false).await;
                    self.settle(settled).await;
                    self.keep_deferred_alive().await;
                }
            }
        }
        self.flush_all().await;
        let left: usize = self.deferred.values().map(|(_, v)| v.len()).sum();
        if left > 0 {
            tracing::warn!(consumer = %self.shared.spec.name, left, "stopping with deferred messages not written; the bus redelivers them");
            let left: Vec<Delivery> = self.deferred.drain().flat_map(|(_, (_, v))| v).collect();
            self.release(left);
        }
    }

    /// Asks the handler to write everything it deferred, and settles it.
    async fn flush_all(&mut self) {
        for _ in 0..3 {
            let settled = self.handler.tick(true).await;
            self.settle(settled).await;
            if self.deferred.is_empty() {
                return;
            }
        }
    }

    async fn process(&mut self, mut batch: Vec<Delivery>) {
        // A message that cannot be decoded (it inflates past the bus's largest message) fails
        // the same way whatever the handler does: dead-lettered at once, as stored.
        if batch.iter().any(|d| d.undecodable().is_some()) {
            let (bad, good): (Vec<Delivery>, Vec<Delivery>) = batch.into_iter().partition(|d| d.undecodable().is_some());
            batch = good;
            let doomed = bad.into_iter().map(|d| {
                let why = format!("undecodable message: {}", d.undecodable().unwrap_or_default());
                (d, None, why)
            });
            self.dead_letter(doomed.collect()).await;
        }
        let max = self.shared.spec.max_deliver;
        let mut run = Vec::with_capacity(batch.len());
        for d in batch {
            if d.delivered <= max {
                run.push(d);
                continue;
            }
            if !run.is_empty() {
                self.handle_in_halves(std::mem::take(&mut run)).await;
            }
            self.suspect(d).await;
        }
        if !run.is_empty() {
            self.handle_in_halves(run).await;
        }
    }

    /// A message the bus delivered more than `max_deliver` times without it being settled:
    /// it may crash or hang the consumer, so it is handled on its own, and given up on when
    /// it keeps coming back.
    async fn suspect(&mut self, d: Delivery) {
        let max = self.shared.spec.max_deliver;
        if d.delivered > max.saturating_mul(2) && self.handler.ready().await {
            let why = format!("delivered {} times without being settled (it may crash or hang the consumer)", d.delivered);
            self.dead_letter(vec![(d, None, why)]).await;
            return;
        }
        tracing::warn!(consumer = %self.shared.spec.name, seq = d.seq, delivered = d.delivered, "a message keeps coming back; handling it on its own");
        self.handle_in_halves(vec![d]).await;
    }

    /// Handles `msgs`, splitting on failure (left half first: the order is kept).
    async fn handle_in_halves(&mut self, msgs: Vec<Delivery>) {
        let spec = self.shared.spec.clone();
        let mut stack = vec![msgs];
        while let Some(msgs) = stack.pop() {
            let mut attempt = 0u32;
            let mut kept_alive = Instant::now();
            loop {
                match self.handle_once(&msgs).await {
                    Ok(outcome) => {
                        self.apply(msgs, outcome).await;
                        break;
                    }
                    Err(e) if e.is_permanent() => {
                        if msgs.len() == 1 {
                            self.dead_letter(msgs.into_iter().map(|d| (d, None, e.message.clone())).collect()).await;
                        } else {
                            tracing::warn!(consumer = %spec.name, messages = msgs.len(), error = %e, "a batch failed for good; splitting it to find the message that fails");
                            let (left, right) = halves(msgs);
                            stack.push(right);
                            stack.push(left);
                        }
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("bus_consumer_retries_total", "consumer" => spec.name.clone()).increment(1);
                        if self.shared.stopping() {
                            tracing::warn!(consumer = %spec.name, error = %e, "stopping while a batch keeps failing; the bus redelivers it");
                            self.release(msgs);
                            for rest in stack.drain(..) {
                                self.release(rest);
                            }
                            return;
                        }
                        let delay = spec.backoff(attempt);
                        tracing::warn!(consumer = %spec.name, messages = msgs.len(), attempt, error = %e, retry_in = ?delay, "transient failure; retrying the same batch");
                        if kept_alive.elapsed() + delay >= spec.ack_wait / 3 {
                            keep_alive(msgs.iter().chain(stack.iter().flatten())).await;
                            kept_alive = Instant::now();
                        }
                        // What the handler deferred earlier waits behind this batch: it must
                        // not come back either while the store is down.
                        self.keep_deferred_alive().await;
                        self.shared.sleep(delay).await;
                    }
                }
            }
        }
    }

    async fn handle_once(&mut self, msgs: &[Delivery]) -> Result<Outcome, HandlerError> {
        let started = Instant::now();
        // The batch is handled in a span naming the trace ids it carries (W3C `traceparent`
        // of the requests that published them; the first few, a batch may hold thousands).
        let mut trace_ids: Vec<String> = Vec::new();
        for t in msgs.iter().filter_map(|d| d.trace) {
            let id = t.trace_id_hex();
            if !trace_ids.contains(&id) {
                trace_ids.push(id);
                if trace_ids.len() == MAX_SPAN_TRACE_IDS {
                    break;
                }
            }
        }
        let span = tracing::info_span!("bus.handle", consumer = %self.shared.spec.name, messages = msgs.len(), trace_ids = %trace_ids.join(","));
        let result = AssertUnwindSafe(tracing::Instrument::instrument(self.handler.handle(msgs), span)).catch_unwind().await;
        metrics::histogram!("bus_consumer_handler_seconds", "consumer" => self.shared.spec.name.clone()).record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Err(HandlerError::permanent(format!("the handler panicked: {what}")))
            }
        }
    }

    async fn apply(&mut self, msgs: Vec<Delivery>, outcome: Outcome) {
        let mut rejected: HashMap<usize, String> = outcome.rejected.into_iter().collect();
        let mut doomed = Vec::new();
        let mut rest = Vec::with_capacity(msgs.len());
        for (i, d) in msgs.into_iter().enumerate() {
            match rejected.remove(&i) {
                Some(why) => doomed.push((d, None, why)),
                None => rest.push(d),
            }
        }
        if !doomed.is_empty() {
            self.dead_letter(doomed).await;
        }
        if outcome.deferred {
            for mut d in rest {
                d.payload = Bytes::new();
                self.deferred.entry(d.seq).or_insert_with(|| (Instant::now(), Vec::new())).1.push(d);
            }
        } else {
            self.ack(rest).await;
        }
        self.settle(outcome.settled).await;
    }

    async fn settle(&mut self, settled: Vec<Settled>) {
        for s in settled {
            match s {
                Settled::Committed(seqs) => {
                    let ds = self.take_deferred(&seqs);
                    self.ack(ds).await;
                }
                Settled::Retry { seqs, error } => {
                    let ds = self.take_deferred(&seqs);
                    tracing::warn!(consumer = %self.shared.spec.name, messages = ds.len(), error = %error, "not written; redelivering after a backoff");
                    self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                    for d in ds {
                        let delay = self.shared.spec.backoff(d.delivered);
                        let _ = d.nak_after(delay).await;
                        self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Settled::Poison { seq, raw, error } => {
                    let ds = self.take_deferred(&[seq]);
                    let doomed = ds.into_iter().map(|d| (d, Some(raw.clone()), error.clone())).collect();
                    self.dead_letter(doomed).await;
                }
            }
        }
    }

    fn take_deferred(&mut self, seqs: &[u64]) -> Vec<Delivery> {
        seqs.iter().filter_map(|s| self.deferred.remove(s)).flat_map(|(_, v)| v).collect()
    }

    /// A deferring handler that cannot write yet (its store down) keeps its messages: they
    /// must not come back meanwhile. Those deferred for a third of the ack wait get a
    /// progress ack (normally none: handlers write well within it).
    async fn keep_deferred_alive(&mut self) {
        let due = self.shared.spec.ack_wait / 3;
        let stale: Vec<&Delivery> = self.deferred.values().filter(|(at, _)| at.elapsed() >= due).flat_map(|(_, v)| v).collect();
        if stale.is_empty() {
            return;
        }
        keep_alive(stale.into_iter()).await;
        for (at, _) in self.deferred.values_mut() {
            if at.elapsed() >= due {
                *at = Instant::now();
            }
        }
    }

    async fn ack(&mut self, ds: Vec<Delivery>) {
        if ds.is_empty() {
            return;
        }
        let n = ds.len();
        let results = if self.shared.spec.confirm_acks { ack_all(ds).await } else { ack_all_unconfirmed(ds).await };
        let ok = results.iter().filter(|r| r.is_ok()).count();
        self.shared.outstanding.fetch_sub(n as i64, Ordering::Relaxed);
        self.shared.counters.acked.fetch_add(ok as u64, Ordering::Relaxed);
        metrics::counter!("bus_consumer_acked_total", "consumer" => self.shared.spec.name.clone()).increment(ok as u64);
        if ok < n {
            tracing::warn!(consumer = %self.shared.spec.name, failed = n - ok, "some acks failed; those messages come back and are recognised or rewritten");
        }
    }

    /// Publishes the dead letters, then terminates their deliveries; retries the publish
    /// while the bus is unavailable (a message is terminated only once it is kept).
    async fn dead_letter(&mut self, doomed: Vec<Doomed>) {
        let spec = self.shared.spec.clone();
        let mut attempt = 0u32;
        loop {
            let letters: Vec<DeadLetter<'_>> = doomed
                .iter()
                .map(|(d, raw, error)| DeadLetter { subject: &d.subject, seq: d.seq, raw: raw.as_ref().unwrap_or(&d.payload), error })
                .collect();
            match dead_letter::publish(&self.shared.bus, &spec.name, &letters).await {
                Ok(()) => break,
                Err(BusError::Rejected(why)) => {
                    tracing::error!(consumer = %spec.name, error = %why, "the bus refused the dead letters; terminating them anyway (the events stay in the lake)");
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    if self.shared.stopping() {
                        tracing::warn!(consumer = %spec.name, error = %e, "stopping before the dead letters were published; the bus redelivers them");
                        self.release(doomed.into_iter().map(|(d, _, _)| d).collect());
                        return;
                    }
                    let delay = spec.backoff(attempt);
                    tracing::warn!(consumer = %spec.name, error = %e, retry_in = ?delay, "publishing dead letters failed; retrying");
                    self.shared.sleep(delay).await;
                }
            }
        }
        for (d, _, error) in doomed {
            tracing::error!(consumer = %spec.name, seq = d.seq, subject = %d.subject, delivered = d.delivered, error = %error, "dead-lettered");
            if let Err(e) = d.term().await {
                tracing::warn!(consumer = %spec.name, error = %e, "terminating a dead letter failed; it may come back (its dead letter has the same id)");
            }
            self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
            self.shared.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("bus_consumer_dead_letters_total", "consumer" => spec.name.clone()).increment(1);
        }
    }

    /// Lets deliveries go unsettled: the bus redelivers them.
    fn release(&self, ds: Vec<Delivery>) {
        self.shared.outstanding.fetch_sub(ds.len() as i64, Ordering::Relaxed);
        drop(ds);
    }
}

fn halves(mut msgs: Vec<Delivery>) -> (Vec<Delivery>, Vec<Delivery>) {
    let right = msgs.split_off(msgs.len() / 2);
    (msgs, right)
}

/// Extends the ack deadline of deliveries that wait for a retry.
pub(crate) async fn keep_alive<'a>(ds: impl Iterator<Item = &'a Delivery>) {
    let _ = futures::future::join_all(ds.map(Delivery::in_progress)).await;
}
