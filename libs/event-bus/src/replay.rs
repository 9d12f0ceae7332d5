//! Replaying a consumer's dead letters once the cause is fixed (`eventctl replay`).
//!
//! Where they are read from: the bus itself. JetStream keeps `dead-letter.<consumer>` in the
//! platform's stream for its retention (`max_age`, 3 days by default); the in-process bus of
//! `eventctl dev` keeps the last [`RETAINED_DEAD_LETTERS`] in memory. (Every dead letter is
//! also in the lake's quarantine, reason `consumer_failed`, for as long as the lake keeps it:
//! the record to query, not the source of replays.)
//!
//! How a replayed message reaches only that consumer: it is published to
//! `replay.<consumer>.<type>`, a subject only that consumer's durable takes (every durable
//! filters on its own `replay.<name>.>` besides its events; NATS 2.10 or newer for several
//! filter subjects), with message id `replay-<consumer>-<original stream sequence>` (the same
//! dead letter replayed twice within the duplicate window is stored once). Once published, the
//! dead letter is deleted from the bus, so a second replay does not send it again; if the
//! consumer still fails on it, it becomes a new dead letter.

use bytes::Bytes;
use event_contract::wire::{EventView, QuarantineMessage, Subject, event_type_of};

use crate::{Bus, BusError, OutMessage};

/// Dead letters the in-process bus keeps for replays (the oldest are forgotten first).
pub const RETAINED_DEAD_LETTERS: usize = 10_000;

/// A dead letter kept by the bus.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    /// Its id in the bus (JetStream: its stream sequence).
    pub id: u64,
    /// When it was published, epoch ms.
    pub published_ms: i64,
    /// Its subject (`dead-letter.<consumer>`).
    pub subject: String,
    /// The [`QuarantineMessage`] bytes.
    pub payload: Bytes,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    /// The consumer.
    pub consumer: String,
    /// Dead letters found.
    pub found: usize,
    /// Re-published to the consumer (and removed from the dead letters).
    pub replayed: usize,
    /// Kept: only their first bytes were kept (they were larger than the bus's payload).
    pub truncated: usize,
    /// Kept: not a dead letter the replay can read.
    pub unreadable: usize,
    /// Kept: the publish failed (run the replay again).
    pub failed: usize,
}

/// Re-publishes at most `limit` dead letters of `consumer` published at or after `since_ms`
/// (oldest first) to `replay.<consumer>.<type>`.
pub async fn replay(bus: &dyn Bus, consumer: &str, since_ms: i64, limit: usize) -> Result<ReplayReport, BusError> {
    if !event_contract::wire::is_valid_name(consumer) {
        return Err(BusError::Rejected(format!("invalid consumer name {consumer:?}")));
    }
    let letters = bus.dead_letters(consumer, since_ms, limit).await?;
    let mut report = ReplayReport { consumer: consumer.to_owned(), found: letters.len(), ..ReplayReport::default() };
    for chunk in letters.chunks(500) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut msgs = Vec::with_capacity(chunk.len());
        for letter in chunk {
            let Ok(q) = QuarantineMessage::decode(&letter.payload) else {
                report.unreadable += 1;
                continue;
            };
            if q.is_truncated() {
                report.truncated += 1;
                continue;
            }
            let from_subject = q.subject.as_deref().and_then(event_type_of).map(str::to_owned);
            let Some(event_type) = from_subject.or_else(|| EventView::parse(&q.raw).ok().map(|v| v.event_type.into_owned())) else {
                report.unreadable += 1;
                continue;
            };
            let Ok(subject) = Subject::parse(&Subject::replay(consumer, &event_type).to_string()).map(|s| s.to_string()) else {
                report.unreadable += 1;
                continue;
            };
            let start = letter.payload.len() - q.raw.len();
            msgs.push(OutMessage { subject, id: format!("replay-{consumer}-{}", q.index), payload: letter.payload.slice(start..) });
            ids.push(letter.id);
        }
        for (id, result) in ids.into_iter().zip(bus.publish_batch(msgs).await) {
            match result {
                Ok(()) => {
                    report.replayed += 1;
                    if let Err(e) = bus.forget_dead_letter(consumer, id).await {
                        tracing::warn!(consumer, id, error = %e, "replayed, but the dead letter could not be removed (a later replay sends it again)");
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(consumer, id, error = %e, "replay publish failed; the dead letter is kept");
                }
            }
        }
    }
    tracing::info!(?report, "replay done");
    Ok(report)
}
