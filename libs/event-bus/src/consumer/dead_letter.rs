//! Dead letters: a message a consumer gave up on is published to `dead-letter.<consumer>` as
//! a [`QuarantineMessage`] (reason `consumer_failed`, the consumer's name and error, the
//! original subject and stream sequence, the bytes), and only then terminated on the bus,
//! so it is never lost: the lake writer keeps it in the lake's quarantine, and `eventctl
//! replay` sends it back to the consumer once fixed.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use event_contract::Reason;
use event_contract::wire::{QuarantineMessage, Subject};

use crate::{Bus, BusError, OutMessage};

/// Room left for the headers of a message (the message id) when a dead letter is cut to the
/// bus's largest payload.
const HEADER_ROOM: usize = 512;

/// One message to dead-letter.
pub(crate) struct DeadLetter<'a> {
    pub subject: &'a str,
    pub seq: u64,
    pub raw: &'a Bytes,
    pub error: &'a str,
}

/// The message id of a dead letter: the same failure published twice (a crash between the
/// publish and the terminate) is stored once within the stream's duplicate window.
pub fn dead_letter_id(consumer: &str, seq: u64) -> String {
    format!("dl-{consumer}-{seq}")
}

/// The bus message of a dead letter.
pub(crate) fn message(consumer: &str, dl: &DeadLetter<'_>, max_payload: usize, now_ms: i64) -> OutMessage {
    let q = QuarantineMessage {
        reason: Reason::ConsumerFailed,
        detail: Cow::Borrowed(dl.error),
        source: Cow::Borrowed(consumer),
        index: dl.seq,
        received_at: now_ms,
        subject: Some(Cow::Borrowed(dl.subject)),
        raw_len: dl.raw.len() as u64,
        raw: Cow::Borrowed(dl.raw),
    };
    OutMessage {
        subject: Subject::dead_letter(consumer).to_string(),
        id: dead_letter_id(consumer, dl.seq),
        payload: Bytes::from(q.encode(max_payload.saturating_sub(HEADER_ROOM))),
    }
}

/// Publishes the dead letters; `Ok` once every one is durable on the bus.
pub(crate) async fn publish(bus: &Arc<dyn Bus>, consumer: &str, letters: &[DeadLetter<'_>]) -> Result<(), BusError> {
    let now = chrono_now_ms();
    let max = bus.max_payload();
    let msgs: Vec<OutMessage> = letters.iter().map(|dl| message(consumer, dl, max, now)).collect();
    for r in bus.publish_batch(msgs).await {
        r?;
    }
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
