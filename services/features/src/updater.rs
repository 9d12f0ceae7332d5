//! The updater: a handler of the bus consumer runtime ([`event_bus::consumer`]) on the
//! counted event types (one durable consumer with one filter subject per type, so the bus
//! sends only those). The runtime cuts batches (`consumer.batch_wait_ms`, 150 ms by default:
//! the freshness; `consumer.batch_messages`: the memory bound); the handler turns a batch
//! into hits and writes them with the batch's bus position in one atomic store call; the
//! runtime acks only after that write; the windows' expiry runs on the runtime's tick.
//!
//! Exactly-once: the store skips hits whose (source, position) it applied before (a bitmap of
//! applied positions, and the highest position per source), and a batch's increments, marks
//! and position are written together or not at all. A failed write fails the batch
//! transiently: the runtime retries the same batch before handing over any later one; a crash
//! before the write loses nothing (the deliveries are unacked and come back), a crash after
//! it counts nothing twice (the redeliveries are recognised by their marks, also when they
//! come back below the stored position: positions are looked up in the bitmaps, not only
//! compared with the high-water mark, so a message dead-lettered, skipped or delivered out of
//! order never makes the position skip one that is not applied). An event whose product id
//! is longer than the API accepts (`max_id_bytes`) could never be read: it is refused and
//! dead-lettered, and its position is not marked, so a replay (a new position) counts it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use event_bus::Delivery;
use event_bus::consumer::{Handler, HandlerError, Outcome, Settled};
use futures::future::BoxFuture;

use crate::clock::Clock;
use crate::layout::{Batch, Hit, Layout};
use crate::store::WindowStore;

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
    /// Time spent in store writes, microseconds.
    pub write_micros: AtomicU64,
}

/// The updater's handler.
pub struct Updater {
    layout: Layout,
    store: Arc<dyn WindowStore>,
    clock: Arc<dyn Clock>,
    /// Position namespace: positions under one name must be comparable (JetStream stream
    /// sequences: the stream's name; in-process: the durable's name).
    source: String,
    max_id_bytes: usize,
    stats: Arc<UpdaterStats>,
}

impl Updater {
    /// An updater writing into `store`, its positions under `source`.
    pub fn new(layout: Layout, store: Arc<dyn WindowStore>, clock: Arc<dyn Clock>, source: String, max_id_bytes: usize) -> Updater {
        Updater { layout, store, clock, source, max_id_bytes, stats: Arc::new(UpdaterStats::default()) }
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<UpdaterStats> {
        self.stats.clone()
    }

    /// The hits of a batch, the batch's highest position, and the deliveries refused.
    fn hits(&self, deliveries: &[Delivery]) -> (Vec<Hit>, u64, Vec<(usize, String)>) {
        let arrival = self.clock.now_ms();
        let mut hits = Vec::with_capacity(deliveries.len());
        let mut rejected = Vec::new();
        let mut position = 0u64;
        // A redelivery of a message still waiting in this batch is counted once.
        let mut in_batch = HashSet::with_capacity(deliveries.len());
        for (i, d) in deliveries.iter().enumerate() {
            position = position.max(d.seq);
            if !in_batch.insert(d.seq) {
                continue;
            }
            match self.layout.hit_of(&d.subject, &d.payload, arrival) {
                Some(c) if !c.listed && c.products[0].len() > self.max_id_bytes => rejected.push((
                    i,
                    format!("attributes.product_id is {} bytes, more than max_id_bytes ({}): it could never be read", c.products[0].len(), self.max_id_bytes),
                )),
                Some(c) if c.products.len() > crate::config::MAX_LIST_IDS => rejected.push((
                    i,
                    format!("the event lists {} products, more than {}: it is not counted in part", c.products.len(), crate::config::MAX_LIST_IDS),
                )),
                Some(c) => {
                    // Of a list, an id too long to be read is left out (and counted); the
                    // others count. All hits of one message share its position, and the stores
                    // apply them together.
                    for product in c.products {
                        if product.len() > self.max_id_bytes {
                            metrics::counter!("features_listed_ids_skipped_total").increment(1);
                            continue;
                        }
                        hits.push(Hit { product, counter: c.counter, t_ms: c.t_ms, source: 0, seq: d.seq });
                    }
                }
                None => {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("features_events_skipped_total").increment(1);
                }
            }
        }
        (hits, position, rejected)
    }
}

impl Handler for Updater {
    fn handle<'a>(&'a mut self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            self.stats.received.fetch_add(deliveries.len() as u64, Ordering::Relaxed);
            let (hits, position, rejected) = self.hits(deliveries);
            let batch = Batch { marks: Vec::new(), unmarked: false, now_ms: self.clock.now_ms(), sources: vec![self.source.clone()], hits, positions: vec![(0, position)] };
            let started = std::time::Instant::now();
            let r = self.store.apply(&batch).await.map_err(|e| {
                metrics::counter!("features_flush_failures_total").increment(1);
                HandlerError::transient(e.to_string())
            })?;
            let stats = &self.stats;
            stats.applied.fetch_add(r.applied as u64, Ordering::Relaxed);
            stats.duplicates.fetch_add(r.duplicates as u64, Ordering::Relaxed);
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            stats.write_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            metrics::counter!("features_events_applied_total").increment(r.applied as u64);
            metrics::counter!("features_events_duplicate_total").increment(r.duplicates as u64);
            metrics::histogram!("features_flush_seconds").record(started.elapsed().as_secs_f64());
            Ok(Outcome { rejected, ..Outcome::default() })
        })
    }

    /// The windows move on with time even without events.
    fn tick(&mut self, _flush_all: bool) -> BoxFuture<'_, Vec<Settled>> {
        Box::pin(async move {
            expire(&*self.store, &*self.clock).await;
            Vec::new()
        })
    }

    fn ready(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.store.ready().await.is_ok() })
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
