//! [`QuarantineMessage`]: what travels on `quarantine.<source>` (a line the gateway
//! rejected) and on `dead-letter.<consumer>` (a message a consumer could not process), and
//! what the lake writer turns into a row of the lake's quarantine.
//!
//! Encoding: one line of JSON with the metadata, a `\n`, then the raw bytes as received (not
//! base64: no growth, and the bytes are a slice of the payload when read back):
//!
//! ```text
//! {"v":1,"reason":"invalid_json","detail":"...","source":"gateway","index":3,"received_at":1700000000000,"raw_len":42}\n<raw bytes>
//! ```
//!
//! Bounded: the detail is cut to [`MAX_DETAIL_BYTES`], the source and subject to
//! [`MAX_SOURCE_BYTES`], so the metadata line stays under [`MAX_META_BYTES`]; the raw bytes
//! are cut so that the whole message fits the budget given to [`QuarantineMessage::encode`]
//! (the bus's largest payload): the first bytes are kept and `raw_len` keeps the original
//! length, as the lake's `too_large` quarantine does.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::Reason;

/// Version of the encoding (the `v` field).
pub const VERSION: u32 = 1;
/// Longest detail kept (longer ones are cut at a character boundary, with `…`).
pub const MAX_DETAIL_BYTES: usize = 2048;
/// Longest source or subject kept.
pub const MAX_SOURCE_BYTES: usize = 256;
/// Upper bound of the metadata line (JSON escaping can at most sextuple a byte of the bounded
/// strings; in practice it is a few hundred bytes).
pub const MAX_META_BYTES: usize = 6 * (MAX_DETAIL_BYTES + 2 * MAX_SOURCE_BYTES) + 256;

/// A rejected line or a dead letter, with why and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineMessage<'a> {
    /// Why it is quarantined.
    pub reason: Reason,
    /// What exactly was wrong (for a dead letter: the consumer's error).
    pub detail: Cow<'a, str>,
    /// Where it came from: `gateway`, or the name of the consumer that gave up on it.
    pub source: Cow<'a, str>,
    /// Position in its request (the gateway) or its stream sequence (a dead letter).
    pub index: u64,
    /// When it was received (the gateway) or given up (a dead letter), epoch ms.
    pub received_at: i64,
    /// The subject it was published to (a dead letter: where the event came from).
    pub subject: Option<Cow<'a, str>>,
    /// Length of the bytes as received (more than `raw.len()` when they were cut).
    pub raw_len: u64,
    /// The bytes as received (their first bytes when they were cut).
    pub raw: Cow<'a, [u8]>,
}

#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    v: u32,
    reason: &'a str,
    #[serde(borrow)]
    detail: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    index: u64,
    received_at: i64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    subject: Option<Cow<'a, str>>,
    raw_len: u64,
}

/// Why a payload is not a quarantine message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a quarantine message: {0}")]
pub struct DecodeError(pub String);

/// `s` cut to at most `max` bytes at a character boundary (with `…` when cut).
pub fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

impl<'a> QuarantineMessage<'a> {
    /// The bytes to publish, at most `max_bytes` long (the raw bytes are cut to fit; the
    /// metadata is always whole).
    pub fn encode(&self, max_bytes: usize) -> Vec<u8> {
        let meta = Meta {
            v: VERSION,
            reason: self.reason.code(),
            detail: truncate(&self.detail, MAX_DETAIL_BYTES),
            source: truncate(&self.source, MAX_SOURCE_BYTES),
            index: self.index,
            received_at: self.received_at,
            subject: self.subject.as_deref().map(|s| truncate(s, MAX_SOURCE_BYTES)),
            raw_len: self.raw_len.max(self.raw.len() as u64),
        };
        // Serializing a struct of strings and integers cannot fail.
        let mut out = serde_json::to_vec(&meta).unwrap_or_default();
        out.push(b'\n');
        let room = max_bytes.saturating_sub(out.len());
        out.extend_from_slice(&self.raw[..self.raw.len().min(room)]);
        out
    }

    /// Reads a message; the strings and the raw bytes borrow from `payload`.
    pub fn decode(payload: &'a [u8]) -> Result<QuarantineMessage<'a>, DecodeError> {
        let newline = payload.iter().position(|&b| b == b'\n').ok_or_else(|| DecodeError("no metadata line".into()))?;
        let (line, raw) = (&payload[..newline], &payload[newline + 1..]);
        let meta: Meta<'a> = serde_json::from_slice(line).map_err(|e| DecodeError(format!("metadata: {e}")))?;
        if meta.v != VERSION {
            return Err(DecodeError(format!("version {} (this build reads {VERSION})", meta.v)));
        }
        let reason = Reason::from_code(meta.reason).ok_or_else(|| DecodeError(format!("unknown reason {:?}", meta.reason)))?;
        Ok(QuarantineMessage {
            reason,
            detail: meta.detail,
            source: meta.source,
            index: meta.index,
            received_at: meta.received_at,
            subject: meta.subject,
            raw_len: meta.raw_len.max(raw.len() as u64),
            raw: Cow::Borrowed(raw),
        })
    }

    /// True when the raw bytes were cut (only their first bytes are here).
    pub fn is_truncated(&self) -> bool {
        self.raw_len > self.raw.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(raw: &[u8]) -> QuarantineMessage<'_> {
        QuarantineMessage {
            reason: Reason::ConsumerFailed,
            detail: "ERROR: invalid byte sequence for encoding \"UTF8\": 0x00\nline 2".into(),
            source: "stats-aggregator".into(),
            index: 42,
            received_at: 1_700_000_000_000,
            subject: Some("raw-event.product_sold".into()),
            raw_len: raw.len() as u64,
            raw: Cow::Borrowed(raw),
        }
    }

    #[test]
    fn round_trips_with_binary_raw_bytes() {
        let raw = b"{\"a\":1}\n\x00\xff\nmore";
        let m = message(raw);
        let bytes = m.encode(1 << 20);
        let back = QuarantineMessage::decode(&bytes).expect("decode");
        assert_eq!(back, m);
        assert!(!back.is_truncated());
        assert!(matches!(back.raw, Cow::Borrowed(_)));
    }

    #[test]
    fn fits_the_budget_keeping_the_first_bytes_and_the_length() {
        let raw = vec![b'x'; 100_000];
        let mut m = message(&raw);
        let long = "é".repeat(5000);
        m.detail = Cow::Owned(long);
        let bytes = m.encode(10_000);
        assert_eq!(bytes.len(), 10_000);
        let back = QuarantineMessage::decode(&bytes).expect("decode");
        assert!(back.is_truncated());
        assert_eq!(back.raw_len, 100_000);
        assert!(back.raw.iter().all(|&b| b == b'x'));
        assert!(back.detail.len() <= MAX_DETAIL_BYTES && back.detail.ends_with('…'));
        // A budget smaller than the metadata keeps the metadata and no raw byte.
        let tiny = QuarantineMessage::decode(&m.encode(10)).map(|q| q.raw.len()).expect("decode");
        assert_eq!(tiny, 0);
    }

    #[test]
    fn refuses_other_payloads() {
        assert!(QuarantineMessage::decode(b"{\"reason\":\"x\"}").is_err());
        assert!(QuarantineMessage::decode(b"{\"v\":1,\"reason\":\"nope\",\"detail\":\"\",\"source\":\"\",\"index\":0,\"received_at\":0,\"raw_len\":0}\n").is_err());
        assert!(QuarantineMessage::decode(b"not json\nraw").is_err());
    }
}
