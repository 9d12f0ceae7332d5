//! The event consumer's [`Handler`]: deliveries into per-partition buffers; a partition is
//! written as one file when it is full, when the buffers are over budget, or when its oldest
//! event waited `max_age`; its messages are acked once the file is committed.
//!
//! The handler defers every batch ([`Outcome::deferred`]) and reports what it committed in
//! later outcomes and ticks ([`Settled::Committed`]); the runtime keeps the deferred
//! deliveries alive meanwhile. Failures:
//! - an event that fails the contract is written to the lake's quarantine with its reason
//!   (and acked);
//! - a file the lake refuses for its data (a permanent error: an event that cannot be
//!   encoded) is split in halves until the events that fail alone are found; those are
//!   dead-lettered ([`Settled::Poison`]), the others are written;
//! - a lake that does not answer (a transient error) keeps the events: their write is retried
//!   with a doubling backoff while new events are still buffered, and once the memory budget
//!   is used up the handler fails new batches transiently, which holds them on the bus. An
//!   outage is never turned into dead letters.
//!
//! Exactly once, as readers of the lake see it: every commit records this writer's name and
//! the bus positions of its events (see [`event_lake::Provenance`]). A partition holding a
//! redelivered message (the writer crashed after a commit, before its ack) is checked against
//! the positions the table's recent commits ([`REDELIVERY_LOOKBACK_COMMITS`]) hold; events
//! already committed are acked without being written again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_bus::Delivery;
use event_bus::consumer::{Handler, HandlerError, Outcome, Settled, split_failures};
use event_contract::{Limits, validate};
use event_lake::buffer::{BufferLimits, PartitionBuffer, PartitionBuffers};
use event_lake::{Lake, LakeError, PartitionKey, QuarantineRecord};
use futures::future::BoxFuture;
use tokio::task::JoinSet;

/// Files written at once (shredding and Parquet encoding use a core each).
const MAX_CONCURRENT_FLUSHES: usize = 2;
/// First wait before writing again after the lake failed (doubles up to [`RETRY_MAX`]).
const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts while the lake fails.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How many of a table's newest commits a redelivery is checked against. A message comes
/// back `ack_wait` after the crash that lost its ack; in that time a type's table takes a few
/// commits per writer and per partition, far fewer than this.
pub const REDELIVERY_LOOKBACK_COMMITS: usize = 1000;
/// Longest wait for the lake in [`Handler::ready`].
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer did since it started (live: read it while it runs).
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Events received (redeliveries included).
    pub received: AtomicU64,
    /// Rows committed to files.
    pub rows_written: AtomicU64,
    /// Files committed.
    pub files_written: AtomicU64,
    /// Messages settled as written (then acked by the runtime).
    pub committed: AtomicU64,
    /// Events that failed the contract here (written to the quarantine).
    pub invalid: AtomicU64,
    /// Events the lake refused for good (dead-lettered).
    pub poison: AtomicU64,
    /// Writes that failed because the lake did not answer (retried).
    pub write_failures: AtomicU64,
    /// Redelivered events found already committed (acked, not written again).
    pub repeats_skipped: AtomicU64,
}

/// A snapshot of [`WriterCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Events received.
    pub received: u64,
    /// Rows committed to files.
    pub rows_written: u64,
    /// Files committed.
    pub files_written: u64,
    /// Messages settled as written.
    pub committed: u64,
    /// Events that failed the contract (written to the quarantine).
    pub invalid: u64,
    /// Events dead-lettered.
    pub poison: u64,
    /// Writes retried because the lake did not answer.
    pub write_failures: u64,
    /// Redelivered events found already committed (not written again).
    pub repeats_skipped: u64,
}

impl WriterCounters {
    /// The counts now.
    pub fn stats(&self) -> WriterStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriterStats {
            received: l(&self.received),
            rows_written: l(&self.rows_written),
            files_written: l(&self.files_written),
            committed: l(&self.committed),
            invalid: l(&self.invalid),
            poison: l(&self.poison),
            write_failures: l(&self.write_failures),
            repeats_skipped: l(&self.repeats_skipped),
        }
    }
}

/// The events of one file to write, with the bus positions they settle (same order).
struct Job {
    key: PartitionKey,
    lines: Lines,
    seqs: Vec<u64>,
    /// Some of its events were redelivered: check them against the table's commits first.
    check: bool,
}

enum Lines {
    /// A partition taken from the buffers (compressed).
    Buffer(PartitionBuffer),
    /// Events whose write failed and is retried.
    Items(Vec<Bytes>),
}

impl Job {
    /// Bytes it holds (raw bytes of the events: at least what it keeps in memory).
    fn bytes(&self) -> usize {
        match &self.lines {
            Lines::Buffer(b) => b.raw_bytes(),
            Lines::Items(items) => items.iter().map(Bytes::len).sum(),
        }
    }
}

/// What a write did.
#[derive(Default)]
struct Flushed {
    committed: Vec<u64>,
    /// Redelivered events already in the table (part of `committed`).
    skipped: u64,
    rows: u64,
    files: u64,
    poison: Vec<(u64, Bytes, String)>,
    /// Not written because the lake failed: retried later.
    retry: Option<(Job, String)>,
    /// Lost by the writer (its buffer could not be read back): redelivered by the bus.
    lost: Option<(Vec<u64>, String)>,
}

/// The event consumer's handler (one per concurrent batch).
pub struct EventWriter {
    lake: Arc<Lake>,
    buffers: PartitionBuffers,
    /// Bus positions of the buffered events, per partition, in buffer order.
    pending: HashMap<PartitionKey, Vec<u64>>,
    /// Partitions buffering a redelivered message.
    recheck: std::collections::HashSet<PartitionKey>,
    /// This writer's name in the commits (the consumer's durable name).
    source: Arc<str>,
    max_age: Duration,
    memory_bytes: usize,
    limits: Limits,
    counters: Arc<WriterCounters>,
    /// Files being written on the blocking pool.
    flushing: JoinSet<Flushed>,
    /// Files to write: taken from the buffers while flushes are at capacity or the lake
    /// fails, and writes that failed and are retried.
    waiting: VecDeque<Job>,
    waiting_bytes: usize,
    /// While the lake fails: when to try again, the attempt, the last error.
    backoff: Option<(Instant, u32, String)>,
    /// Settled since the last outcome or tick.
    done: Vec<Settled>,
}

impl EventWriter {
    /// A writer over a lake with a memory budget for its buffers; `max_age` bounds how long
    /// an event waits before its partition is written.
    /// `source` names the consumer in the commits (its durable name: bus positions are
    /// unique within its stream). Events are checked against `limits`, the gateway's.
    pub fn new(lake: Arc<Lake>, source: &str, limits: Limits, memory_bytes: usize, max_age: Duration, counters: Arc<WriterCounters>) -> Self {
        let buffer_limits = BufferLimits {
            max_bytes: memory_bytes,
            max_partition_raw_bytes: (memory_bytes / 8).max(1 << 20),
            chunk_bytes: 16 << 10,
            ..BufferLimits::default()
        };
        EventWriter {
            lake,
            buffers: PartitionBuffers::new(buffer_limits),
            pending: HashMap::new(),
            recheck: std::collections::HashSet::new(),
            source: Arc::from(source),
            max_age,
            memory_bytes,
            limits,
            counters,
            flushing: JoinSet::new(),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            backoff: None,
            done: Vec::new(),
        }
    }

    /// Memory held by events not written yet (buffers, files waiting to be written).
    fn held_bytes(&self) -> usize {
        self.buffers.mem_bytes() + self.waiting_bytes
    }

    fn in_backoff(&self) -> bool {
        self.backoff.as_ref().is_some_and(|(at, _, _)| Instant::now() < *at)
    }

    async fn accept(&mut self, batch: &[Delivery]) -> Result<Vec<(usize, String)>, HandlerError> {
        self.collect_finished();
        if self.held_bytes() > self.memory_bytes && self.backoff.is_some() {
            // The lake fails and the budget is used up: try now, else hold the batch on the bus.
            self.write_waiting_now().await;
            if self.held_bytes() > self.memory_bytes {
                let why = self.backoff.as_ref().map_or_else(String::new, |(_, _, e)| e.clone());
                return Err(HandlerError::transient(format!(
                    "the lake does not take writes ({why}); {} bytes of events wait to be written",
                    self.held_bytes()
                )));
            }
        }
        let mut valid = Vec::with_capacity(batch.len());
        let mut invalid = Vec::new();
        let mut invalid_seqs = Vec::new();
        for (i, d) in batch.iter().enumerate() {
            match validate(&d.payload, &self.limits) {
                Ok(ev) => valid.push((i, PartitionKey::of(Arc::from(ev.event_type.as_ref()), ev.created_at))),
                Err(rejection) => {
                    invalid.push(QuarantineRecord {
                        raw: d.payload.to_vec(),
                        raw_len: d.payload.len() as u64,
                        rejection,
                        source: format!("bus:{}", d.subject),
                        line: d.seq,
                        arrived_at: chrono::Utc::now().timestamp_millis(),
                    });
                    invalid_seqs.push(d.seq);
                }
            }
        }
        // The quarantine first: a failure there leaves nothing buffered (the batch is retried).
        if !invalid.is_empty() {
            self.lake
                .write_quarantine(&invalid)
                .await
                .map_err(|e| HandlerError::transient(format!("writing invalid events to the quarantine: {e}")))?;
            self.counters.invalid.fetch_add(invalid.len() as u64, Ordering::Relaxed);
            metrics::counter!("lake_writer_invalid_total").increment(invalid.len() as u64);
            self.done.push(Settled::Committed(invalid_seqs));
        }
        self.counters.received.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut rejected = Vec::new();
        for (i, key) in valid {
            let d = &batch[i];
            match self.buffers.push(&key, &d.payload) {
                Ok(full) => {
                    if d.redelivered {
                        self.recheck.insert(key.clone());
                    }
                    self.pending.entry(key).or_default().push(d.seq);
                    if let Some((k, p)) = full {
                        self.enqueue(k, p);
                    }
                }
                Err(e) => rejected.push((i, format!("the event cannot be buffered: {e}"))),
            }
            while self.buffers.over_budget() {
                match self.buffers.take_largest() {
                    Some((k, p)) => self.enqueue(k, p),
                    None => break,
                }
            }
        }
        self.start_due().await;
        self.collect_finished();
        Ok(rejected)
    }

    /// Queues a partition taken from the buffers for writing.
    fn enqueue(&mut self, key: PartitionKey, buf: PartitionBuffer) {
        let seqs = self.pending.remove(&key).unwrap_or_default();
        let check = self.recheck.remove(&key);
        let job = Job { key, lines: Lines::Buffer(buf), seqs, check };
        self.waiting_bytes += job.bytes();
        self.waiting.push_back(job);
    }

    /// Starts the waiting writes, waiting for a running one to finish when
    /// [`MAX_CONCURRENT_FLUSHES`] run (that holds the consumer back while the lake is slow);
    /// nothing is started while the lake is in backoff.
    async fn start_due(&mut self) {
        while !self.waiting.is_empty() && !self.in_backoff() {
            if self.flushing.len() >= MAX_CONCURRENT_FLUSHES {
                if let Some(r) = self.flushing.join_next().await {
                    self.finished(r);
                }
                continue;
            }
            self.start_next();
        }
    }

    /// Writes every waiting file now (the backoff ignored, each tried once) and waits for
    /// every running write.
    async fn write_waiting_now(&mut self) {
        let mut n = self.waiting.len();
        while n > 0 {
            if self.flushing.len() >= MAX_CONCURRENT_FLUSHES {
                if let Some(r) = self.flushing.join_next().await {
                    self.finished(r);
                }
                continue;
            }
            self.start_next();
            n -= 1;
        }
        while let Some(r) = self.flushing.join_next().await {
            self.finished(r);
        }
    }

    fn start_next(&mut self) {
        let Some(job) = self.waiting.pop_front() else { return };
        self.waiting_bytes = self.waiting_bytes.saturating_sub(job.bytes());
        let seqs = job.seqs.clone();
        let lake = self.lake.clone();
        let source = self.source.clone();
        let handle = tokio::runtime::Handle::current();
        self.flushing.spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_job(&lake, &source, &handle, job))).unwrap_or_else(|_| Flushed {
                lost: Some((seqs, "the file writer panicked".into())),
                ..Flushed::default()
            })
        });
    }

    fn collect_finished(&mut self) {
        while let Some(r) = self.flushing.try_join_next() {
            self.finished(r);
        }
    }

    /// Records what a write did.
    fn finished(&mut self, result: Result<Flushed, tokio::task::JoinError>) {
        let f = match result {
            Ok(f) => f,
            Err(e) => {
                // Cannot happen (the task catches panics); its deliveries are released on stop.
                tracing::error!(error = %e, "a file write task failed");
                return;
            }
        };
        let wrote = !f.committed.is_empty();
        if f.files > 0 {
            self.counters.rows_written.fetch_add(f.rows, Ordering::Relaxed);
            self.counters.files_written.fetch_add(f.files, Ordering::Relaxed);
            metrics::counter!("lake_writer_rows_written_total").increment(f.rows);
            metrics::counter!("lake_writer_files_written_total").increment(f.files);
        }
        if f.skipped > 0 {
            tracing::info!(events = f.skipped, "redelivered events were already committed; acking them without writing");
            self.counters.repeats_skipped.fetch_add(f.skipped, Ordering::Relaxed);
            metrics::counter!("lake_writer_repeats_skipped_total").increment(f.skipped);
        }
        if !f.committed.is_empty() {
            let n = f.committed.len() as u64;
            self.counters.committed.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("lake_writer_acked_total").increment(n);
            self.done.push(Settled::Committed(f.committed));
        }
        for (seq, raw, error) in f.poison {
            tracing::error!(seq, error = %error, "the lake refuses this event for good; dead-lettering it");
            self.counters.poison.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lake_writer_poison_total").increment(1);
            self.done.push(Settled::Poison { seq, raw, error });
        }
        if let Some((seqs, error)) = f.lost {
            tracing::error!(events = seqs.len(), error = %error, "buffered events could not be read back; the bus redelivers them");
            self.done.push(Settled::Retry { seqs, error });
        }
        match f.retry {
            Some((job, error)) => {
                let attempt = self.backoff.as_ref().map_or(0, |b| b.1) + 1;
                let delay = RETRY_INITIAL.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(RETRY_MAX);
                tracing::warn!(partition = %job.key.dir(), events = job.seqs.len(), attempt, retry_in = ?delay, error = %error, "the lake did not take the file; keeping its events and retrying");
                self.counters.write_failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lake_writer_write_failures_total").increment(1);
                self.backoff = Some((Instant::now() + delay, attempt, error));
                self.waiting_bytes += job.bytes();
                self.waiting.push_back(job);
            }
            None if wrote => self.backoff = None,
            None => {}
        }
    }
}

/// Whether a lake error can go away by itself. The store (network, permissions, a missing
/// bucket), local I/O, schema or commit contention (a staged schema another writer changed
/// included: the file is encoded again), the table log and an unreadable schema are the
/// lake's state: transient. Parsing, shredding and encoding failures depend on the events:
/// permanent.
pub(crate) fn classify(e: &LakeError) -> HandlerError {
    match e {
        LakeError::Store(_)
        | LakeError::Io(_)
        | LakeError::SchemaContended(_)
        | LakeError::CommitContended(_)
        | LakeError::SchemaConflict { .. }
        | LakeError::Delta(_)
        | LakeError::InvalidLocation { .. }
        | LakeError::Corrupt(_) => {
            HandlerError::transient(e.to_string())
        }
        LakeError::Parquet(_)
        | LakeError::Arrow(_)
        | LakeError::Internal(_)
        | LakeError::NoSuchVersion { .. }
        | LakeError::VersionUnavailable { .. } => HandlerError::permanent(e.to_string()),
    }
}

/// Writes one file (on a blocking thread); a file refused for its data is split to find the
/// events that fail alone. Redelivered events already committed are dropped first.
fn write_job(lake: &Arc<Lake>, source: &str, handle: &tokio::runtime::Handle, job: Job) -> Flushed {
    let Job { key, lines, seqs, check } = job;
    let items: Vec<Bytes> = match lines {
        Lines::Buffer(buf) => {
            let records = match buf.into_records() {
                Ok(r) => r,
                Err(e) => return Flushed { lost: Some((seqs, e.to_string())), ..Flushed::default() },
            };
            if records.iter().count() != seqs.len() {
                return Flushed { lost: Some((seqs, "buffered events and their positions differ".into())), ..Flushed::default() };
            }
            if !check {
                let provenance = event_lake::Provenance { source, positions: &seqs };
                return match handle.block_on(lake.write_events_from(&key, records.iter(), Some(provenance))) {
                    Ok(file) => committed(seqs, file.map(|f| f.rows)),
                    Err(e) => failed(lake, source, handle, key, seqs, records.iter().map(Bytes::copy_from_slice).collect(), &e),
                };
            }
            records.iter().map(Bytes::copy_from_slice).collect()
        }
        Lines::Items(items) => items,
    };
    let (seqs, items, already) = if check {
        match handle.block_on(lake.committed_positions(&key.event_type, source, REDELIVERY_LOOKBACK_COMMITS)) {
            Ok(done) => {
                let (mut keep_s, mut keep_i, mut already) = (Vec::new(), Vec::new(), Vec::new());
                for (s, i) in seqs.into_iter().zip(items) {
                    if done.contains(&s) {
                        already.push(s);
                    } else {
                        keep_s.push(s);
                        keep_i.push(i);
                    }
                }
                (keep_s, keep_i, already)
            }
            Err(e) => {
                let why = format!("checking redelivered events against the table's commits: {e}");
                return Flushed { retry: Some((Job { key, lines: Lines::Items(items), seqs, check }, why)), ..Flushed::default() };
            }
        }
    } else {
        (seqs, items, Vec::new())
    };
    let skipped = already.len() as u64;
    let mut flushed = if items.is_empty() {
        Flushed::default()
    } else {
        let provenance = event_lake::Provenance { source, positions: &seqs };
        match handle.block_on(lake.write_events_from(&key, items.iter().map(|b| &b[..]), Some(provenance))) {
            Ok(file) => committed(seqs, file.map(|f| f.rows)),
            Err(e) => failed(lake, source, handle, key, seqs, items, &e),
        }
    };
    if skipped > 0 {
        // Already in the table: settled now, whatever happens to the rest.
        flushed.committed.extend(already);
        flushed.skipped = skipped;
    }
    flushed
}

fn committed(seqs: Vec<u64>, rows: Option<u64>) -> Flushed {
    Flushed { committed: seqs, rows: rows.unwrap_or(0), files: u64::from(rows.is_some()), ..Flushed::default() }
}

fn failed(
    lake: &Arc<Lake>,
    source: &str,
    handle: &tokio::runtime::Handle,
    key: PartitionKey,
    seqs: Vec<u64>,
    items: Vec<Bytes>,
    e: &LakeError,
) -> Flushed {
    let error = classify(e);
    if !error.is_permanent() {
        // The commit may have landed before the error (a lost answer): the retry checks.
        return Flushed { retry: Some((Job { key, lines: Lines::Items(items), seqs, check: true }, error.message)), ..Flushed::default() };
    }
    tracing::warn!(partition = %key.dir(), events = items.len(), error = %error, "the lake refuses a file for its data; splitting it to find the events that fail");
    let written = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let pairs: Vec<(u64, Bytes)> = seqs.into_iter().zip(items).collect();
    let source: Arc<str> = Arc::from(source);
    let split = handle.block_on(split_failures(pairs, |group: &[(u64, Bytes)]| {
        let lines: Vec<Bytes> = group.iter().map(|(_, b)| b.clone()).collect();
        let positions: Vec<u64> = group.iter().map(|(s, _)| *s).collect();
        let (lake, key, written, source) = (lake.clone(), key.clone(), written.clone(), source.clone());
        Box::pin(async move {
            let provenance = event_lake::Provenance { source: &source, positions: &positions };
            let file = lake.write_events_from(&key, lines.iter().map(|b| &b[..]), Some(provenance)).await.map_err(|e| classify(&e))?;
            if let Some(f) = file {
                written.0.fetch_add(f.rows, Ordering::Relaxed);
                written.1.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }));
    Flushed {
        committed: split.committed.into_iter().map(|(s, _)| s).collect(),
        skipped: 0,
        rows: written.0.load(Ordering::Relaxed),
        files: written.1.load(Ordering::Relaxed),
        poison: split.poison.into_iter().map(|((seq, raw), why)| (seq, raw, why)).collect(),
        retry: split.retry.map(|(rest, why)| {
            let (seqs, items) = rest.into_iter().unzip();
            (Job { key, lines: Lines::Items(items), seqs, check: true }, why)
        }),
        lost: None,
    }
}

impl Handler for EventWriter {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            let rejected = self.accept(batch).await?;
            Ok(Outcome { rejected, deferred: true, settled: std::mem::take(&mut self.done) })
        })
    }

    fn tick(&mut self, flush_all: bool) -> BoxFuture<'_, Vec<Settled>> {
        Box::pin(async move {
            self.collect_finished();
            if flush_all {
                for (k, p) in self.buffers.take_all() {
                    self.enqueue(k, p);
                }
                self.write_waiting_now().await;
            } else {
                for (k, p) in self.buffers.take_older_than(self.max_age) {
                    self.enqueue(k, p);
                }
                self.start_due().await;
                self.collect_finished();
            }
            std::mem::take(&mut self.done)
        })
    }

    fn ready(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { lake_answers(&self.lake).await })
    }
}

/// True when the lake's store answers (a listing of its schemas).
pub(crate) async fn lake_answers(lake: &Lake) -> bool {
    matches!(tokio::time::timeout(READY_TIMEOUT, lake.registry.types()).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> Bytes {
        Bytes::from(format!(r#"{{"data":{{"id":"e{i}","type":"t","attributes":{{"n":{i}}}}},"meta":{{"created_at":{}}}}}"#, 1_763_856_000_000i64 + i as i64))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_refused_for_one_event_is_split_and_only_that_event_is_poison() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Arc::new(Lake::open(dir.path().to_str().expect("utf8"), event_lake::WriteOptions::default()).expect("lake"));
        let key = PartitionKey::of(Arc::from("t"), 1_763_856_000_000);
        // Bytes that never passed the contract: the lake refuses the file for its data.
        let mut items: Vec<Bytes> = (0..7).map(line).collect();
        items.insert(3, Bytes::from_static(b"{\"data\":"));
        let seqs: Vec<u64> = (10..18).collect();
        let job = Job { key, lines: Lines::Items(items), seqs, check: false };
        let handle = tokio::runtime::Handle::current();
        let l = lake.clone();
        let f = tokio::task::spawn_blocking(move || write_job(&l, "test", &handle, job)).await.expect("join");
        assert_eq!(f.committed, vec![10, 11, 12, 14, 15, 16, 17]);
        assert_eq!(f.poison.len(), 1);
        assert_eq!(f.poison[0].0, 13);
        assert_eq!(&f.poison[0].1[..], b"{\"data\":");
        assert!(f.retry.is_none() && f.lost.is_none());
        assert_eq!(f.rows, 7);
        let mut rows = 0;
        for file in lake.list_data_files(None).await.expect("list") {
            rows += lake.read_events(&file).await.expect("read").len();
        }
        assert_eq!(rows, 7);
    }

    #[test]
    fn an_unreachable_lake_is_transient_bad_data_is_permanent() {
        let io = LakeError::Io(std::io::Error::other("connection refused"));
        assert!(!classify(&io).is_permanent());
        assert!(!classify(&LakeError::SchemaContended("t".into())).is_permanent());
        assert!(classify(&LakeError::Internal("a validated event does not parse".into())).is_permanent());
    }
}
