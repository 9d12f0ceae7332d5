//! The event consumer: deliveries into per-partition buffers, files committed, then acks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use event_bus::{Delivery, Subscriber, ack_all};
use event_contract::{Limits, validate};
use event_lake::buffer::{BufferLimits, PartitionBuffer, PartitionBuffers};
use event_lake::{Lake, LakeError, PartitionKey, QuarantineRecord, WrittenFile};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the writer did since it started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriterStats {
    /// Events received.
    pub received: u64,
    /// Rows committed to files.
    pub rows_written: u64,
    /// Files committed.
    pub files_written: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries that failed the contract here (written to the quarantine).
    pub invalid: u64,
}

/// Consumes events and writes them to the lake.
pub struct EventWriter {
    lake: Arc<Lake>,
    buffers: PartitionBuffers,
    pending: HashMap<PartitionKey, Vec<Delivery>>,
    max_age: Duration,
    fetch_batch: usize,
    limits: Limits,
    stats: WriterStats,
    /// Flushes running on the blocking pool, with the deliveries each one settles.
    flushing: JoinSet<Flushed>,
}

/// A finished flush: its partition, the deliveries it settles, and what it wrote.
type Flushed = (PartitionKey, Vec<Delivery>, Result<Option<WrittenFile>, LakeError>);

/// Flushes running at once (shredding and Parquet encoding use a core each).
const MAX_CONCURRENT_FLUSHES: usize = 2;

impl EventWriter {
    /// A writer over a lake with a memory budget for its buffers.
    pub fn new(lake: Arc<Lake>, memory_bytes: usize, max_age: Duration, fetch_batch: usize) -> Self {
        let limits = BufferLimits {
            max_bytes: memory_bytes,
            max_partition_raw_bytes: (memory_bytes / 8).max(1 << 20),
            chunk_bytes: 16 << 10,
            ..BufferLimits::default()
        };
        EventWriter {
            lake,
            buffers: PartitionBuffers::new(limits),
            pending: HashMap::new(),
            max_age,
            fetch_batch,
            limits: Limits::default(),
            stats: WriterStats::default(),
            flushing: JoinSet::new(),
        }
    }

    /// Runs until `stop` turns true, then flushes and acks everything buffered.
    pub async fn run(mut self, mut sub: impl Subscriber, mut stop: watch::Receiver<bool>) -> WriterStats {
        let tick = Duration::from_millis(500).min(self.max_age);
        loop {
            if *stop.borrow() {
                break;
            }
            let fetched = tokio::select! {
                r = sub.fetch(self.fetch_batch, tick) => r,
                _ = stop.changed() => break,
            };
            match fetched {
                Ok(deliveries) => {
                    if let Err(e) = self.accept(deliveries).await {
                        tracing::error!(error = %e, "could not write to the lake; deliveries will come back");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            for (k, p) in self.buffers.take_older_than(self.max_age) {
                self.flush(k, p).await;
            }
            while let Some(done) = self.flushing.try_join_next() {
                self.settle(done).await;
            }
        }
        for (k, p) in self.buffers.take_all() {
            self.flush(k, p).await;
        }
        while let Some(done) = self.flushing.join_next().await {
            self.settle(done).await;
        }
        tracing::info!(?self.stats, "lake writer stopped");
        self.stats
    }

    async fn accept(&mut self, deliveries: Vec<Delivery>) -> Result<(), LakeError> {
        let mut invalid = Vec::new();
        for mut d in deliveries {
            self.stats.received += 1;
            // The bytes go into the compressed buffer; the delivery keeps only its ack handle.
            let payload = std::mem::take(&mut d.payload);
            match validate(&payload, &self.limits) {
                Ok(ev) => {
                    let key = PartitionKey::of(Arc::from(ev.event_type.as_ref()), ev.created_at);
                    let full = self.buffers.push(&key, &payload)?;
                    self.pending.entry(key).or_default().push(d);
                    if let Some((k, p)) = full {
                        self.flush(k, p).await;
                    }
                }
                Err(rejection) => {
                    invalid.push((QuarantineRecord {
                        raw: payload.to_vec(),
                        raw_len: payload.len() as u64,
                        rejection,
                        source: format!("bus:{}", d.subject),
                        line: 0,
                        arrived_at: chrono::Utc::now().timestamp_millis(),
                    }, d));
                }
            }
            while self.buffers.over_budget() {
                match self.buffers.take_largest() {
                    Some((k, p)) => self.flush(k, p).await,
                    None => break,
                }
            }
        }
        if !invalid.is_empty() {
            let (records, ds): (Vec<_>, Vec<_>) = invalid.into_iter().unzip();
            self.stats.invalid += records.len() as u64;
            self.lake.write_quarantine(&records).await?;
            self.ack(ds).await;
        }
        Ok(())
    }

    /// Starts writing a partition's file on the blocking pool (waiting for a running flush
    /// to finish first when `MAX_CONCURRENT_FLUSHES` are running). Its deliveries are acked
    /// when the file is committed, nak'ed when it fails.
    async fn flush(&mut self, key: PartitionKey, buf: PartitionBuffer) {
        while self.flushing.len() >= MAX_CONCURRENT_FLUSHES {
            match self.flushing.join_next().await {
                Some(done) => self.settle(done).await,
                None => break,
            }
        }
        let deliveries = self.pending.remove(&key).unwrap_or_default();
        let lake = self.lake.clone();
        let handle = tokio::runtime::Handle::current();
        self.flushing.spawn_blocking(move || {
            let written = buf.into_records().and_then(|records| handle.block_on(lake.write_events(&key, records.iter())));
            (key, deliveries, written)
        });
    }

    /// Acks or naks the deliveries of a finished flush.
    async fn settle(
        &mut self,
        done: Result<Flushed, tokio::task::JoinError>,
    ) {
        match done {
            Ok((key, deliveries, Ok(file))) => {
                if let Some(f) = file {
                    self.stats.rows_written += f.rows;
                    self.stats.files_written += 1;
                    metrics::counter!("lake_writer_rows_written_total").increment(f.rows);
                    metrics::counter!("lake_writer_files_written_total").increment(1);
                    tracing::debug!(partition = %key.dir(), rows = f.rows, "committed");
                }
                self.ack(deliveries).await;
            }
            Ok((key, deliveries, Err(e))) => {
                tracing::error!(partition = %key.dir(), error = %e, "flush failed; its events will be redelivered");
                for d in deliveries {
                    let _ = d.nak().await;
                }
            }
            Err(e) => {
                // The deliveries were dropped with the task: they are redelivered.
                tracing::error!(error = %e, "flush task failed; its events will be redelivered");
            }
        }
    }

    async fn ack(&mut self, deliveries: Vec<Delivery>) {
        let results = ack_all(deliveries).await;
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.stats.acked += ok;
        metrics::counter!("lake_writer_acked_total").increment(ok);
        if ok < results.len() as u64 {
            tracing::warn!(failed = results.len() as u64 - ok, "some acks failed; those events will be redelivered (compaction removes the repeats)");
        }
    }
}
