//! The quarantine consumer: rejected events published by the gateway (`quarantine.>`) into
//! the lake's quarantine dataset, acked after the file is committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use event_bus::{Delivery, Subscriber, ack_all};
use event_contract::wire::QuarantineMessage;
use event_contract::{Reason, Rejection};
use event_lake::{Lake, QuarantineRecord};
use tokio::sync::watch;

/// Writes quarantined events.
pub struct QuarantineWriter {
    lake: Arc<Lake>,
    max_age: Duration,
    max_records: usize,
}

impl QuarantineWriter {
    /// A writer flushing at most every `max_age` or `max_records`.
    pub fn new(lake: Arc<Lake>, max_age: Duration, max_records: usize) -> Self {
        QuarantineWriter { lake, max_age, max_records }
    }

    /// Runs until `stop`, then flushes.
    pub async fn run(self, mut sub: impl Subscriber, mut stop: watch::Receiver<bool>) {
        let mut records = Vec::new();
        let mut deliveries: Vec<Delivery> = Vec::new();
        let mut since = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let fetched = tokio::select! {
                r = sub.fetch(500, Duration::from_millis(500)) => r,
                _ = stop.changed() => break,
            };
            match fetched {
                Ok(ds) => {
                    for mut d in ds {
                        records.push(record_of(&std::mem::take(&mut d.payload), &d.subject));
                        deliveries.push(d);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "quarantine fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if !records.is_empty() && (records.len() >= self.max_records || since.elapsed() >= self.max_age) {
                self.flush(&mut records, &mut deliveries).await;
                since = Instant::now();
            }
        }
        if !records.is_empty() {
            self.flush(&mut records, &mut deliveries).await;
        }
    }

    async fn flush(&self, records: &mut Vec<QuarantineRecord>, deliveries: &mut Vec<Delivery>) {
        match self.lake.write_quarantine(records).await {
            Ok(_) => {
                ack_all(std::mem::take(deliveries)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "quarantine write failed; redelivery will retry");
                for d in deliveries.drain(..) {
                    let _ = d.nak().await;
                }
            }
        }
        records.clear();
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
