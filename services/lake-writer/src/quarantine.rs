//! The quarantine consumer's [`Handler`]: the gateway's rejected lines (`quarantine.>`) and
//! every consumer's dead letters (`dead-letter.>`: reason `consumer_failed`, the consumer's
//! name as source, its error as detail, the message's bytes) into the lake's quarantine
//! dataset. Records are buffered (bounded by count and bytes) and written as one file at the
//! latest `max_age` after the first; their messages are acked once it is committed. Nothing
//! here is refused for its content (an unreadable message is kept whole with reason
//! `invalid_json`), so a failed write is the lake's: the records are kept and written again
//! with a doubling backoff, and new batches wait on the bus once the buffer is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use event_bus::Delivery;
use event_bus::consumer::{Handler, HandlerError, Outcome, Settled};
use event_contract::wire::QuarantineMessage;
use event_contract::{Reason, Rejection};
use event_lake::{Lake, QuarantineRecord};
use futures::future::BoxFuture;

/// First wait before writing again after the lake failed (doubles up to [`RETRY_MAX`]).
const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts while the lake fails.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the quarantine consumer wrote since it started.
#[derive(Debug, Default)]
pub struct QuarantineCounters {
    /// Records committed to the quarantine.
    pub written: AtomicU64,
    /// Of those, consumers' dead letters.
    pub dead_letters: AtomicU64,
    /// Writes that failed (retried).
    pub write_failures: AtomicU64,
}

/// Writes quarantined events and dead letters.
pub struct QuarantineWriter {
    lake: Arc<Lake>,
    max_age: Duration,
    max_records: usize,
    max_bytes: usize,
    records: Vec<QuarantineRecord>,
    seqs: Vec<u64>,
    bytes: usize,
    since: Option<Instant>,
    /// While the lake fails: when to try again, the attempt, the last error.
    backoff: Option<(Instant, u32, String)>,
    counters: Arc<QuarantineCounters>,
    done: Vec<Settled>,
}

impl QuarantineWriter {
    /// A writer of files of at most `max_records` records (and `max_bytes` bytes), written at
    /// the latest `max_age` after their first record.
    pub fn new(lake: Arc<Lake>, max_age: Duration, max_records: usize, max_bytes: usize, counters: Arc<QuarantineCounters>) -> Self {
        QuarantineWriter {
            lake,
            max_age,
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
            records: Vec::new(),
            seqs: Vec::new(),
            bytes: 0,
            since: None,
            backoff: None,
            counters,
            done: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.records.len() >= self.max_records || self.bytes >= self.max_bytes
    }

    fn in_backoff(&self) -> bool {
        self.backoff.as_ref().is_some_and(|(at, _, _)| Instant::now() < *at)
    }

    /// Writes the buffered records as one file.
    async fn write(&mut self) -> Result<(), HandlerError> {
        if self.records.is_empty() {
            return Ok(());
        }
        match self.lake.write_quarantine(&self.records).await {
            Ok(_) => {
                let n = self.records.len() as u64;
                let dead = self.records.iter().filter(|r| r.rejection.reason == Reason::ConsumerFailed).count() as u64;
                self.counters.written.fetch_add(n, Ordering::Relaxed);
                self.counters.dead_letters.fetch_add(dead, Ordering::Relaxed);
                metrics::counter!("lake_writer_quarantine_rows_total").increment(n);
                metrics::counter!("lake_writer_dead_letters_kept_total").increment(dead);
                self.records.clear();
                self.bytes = 0;
                self.since = None;
                self.backoff = None;
                self.done.push(Settled::Committed(std::mem::take(&mut self.seqs)));
                Ok(())
            }
            Err(e) => {
                let attempt = self.backoff.as_ref().map_or(0, |b| b.1) + 1;
                let delay = RETRY_INITIAL.saturating_mul(1 << attempt.saturating_sub(1).min(10)).min(RETRY_MAX);
                tracing::warn!(records = self.records.len(), attempt, retry_in = ?delay, error = %e, "quarantine write failed; keeping the records and retrying");
                self.counters.write_failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lake_writer_write_failures_total").increment(1);
                self.backoff = Some((Instant::now() + delay, attempt, e.to_string()));
                Err(HandlerError::transient(format!("writing the quarantine: {e}")))
            }
        }
    }
}

impl Handler for QuarantineWriter {
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>> {
        Box::pin(async move {
            if self.full() {
                // The last write failed: write before taking more (else the batch waits on the bus).
                self.write().await?;
            }
            for d in batch {
                self.records.push(record_of(&d.payload, &d.subject));
                self.seqs.push(d.seq);
                self.bytes += d.payload.len();
                self.since.get_or_insert_with(Instant::now);
            }
            if self.full() && !self.in_backoff() {
                let _ = self.write().await;
            }
            Ok(Outcome { rejected: Vec::new(), deferred: true, settled: std::mem::take(&mut self.done) })
        })
    }

    fn tick(&mut self, flush_all: bool) -> BoxFuture<'_, Vec<Settled>> {
        Box::pin(async move {
            let due = self.full() || self.since.is_some_and(|t| t.elapsed() >= self.max_age);
            if flush_all || (due && !self.in_backoff()) {
                let _ = self.write().await;
            }
            std::mem::take(&mut self.done)
        })
    }

    fn ready(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move { crate::events::lake_answers(&self.lake).await })
    }
}

/// A quarantine record from a [`QuarantineMessage`] (the gateway's rejected lines, the
/// consumers' dead letters); a message of the earlier JSON shape (`raw_b64`) is read too; a
/// message of any other shape is kept whole with reason `invalid_json`.
fn record_of(payload: &[u8], subject: &str) -> QuarantineRecord {
    let now = chrono::Utc::now().timestamp_millis();
    if let Ok(m) = QuarantineMessage::decode(payload) {
        return QuarantineRecord {
            raw_len: m.raw_len,
            raw: m.raw.into_owned(),
            rejection: Rejection::new(m.reason, m.detail),
            source: m.source.into_owned(),
            line: m.index,
            arrived_at: m.received_at,
        };
    }
    legacy_record(payload, subject, now).unwrap_or_else(|| QuarantineRecord {
        raw: payload.to_vec(),
        raw_len: payload.len() as u64,
        rejection: Rejection::new(Reason::InvalidJson, format!("unreadable quarantine message on {subject}")),
        source: subject.to_owned(),
        line: 0,
        arrived_at: now,
    })
}

/// The JSON message gateways published before the wire contract (`reason`, `detail`,
/// `raw_b64`...), still read so that an upgrade keeps what the stream holds.
fn legacy_record(payload: &[u8], subject: &str, now: i64) -> Option<QuarantineRecord> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.get("raw_b64")?.as_str()?).ok()?;
    let reason = Reason::from_code(v.get("reason")?.as_str()?)?;
    let text = |k: &str| v.get(k).and_then(|d| d.as_str()).map(str::to_owned);
    Some(QuarantineRecord {
        raw_len: raw.len() as u64,
        raw,
        rejection: Rejection::new(reason, text("detail").unwrap_or_default()),
        source: text("source").unwrap_or_else(|| subject.to_owned()),
        line: v.get("index").and_then(serde_json::Value::as_u64).unwrap_or(0),
        arrived_at: v.get("received_at").and_then(serde_json::Value::as_i64).unwrap_or(now),
    })
}
