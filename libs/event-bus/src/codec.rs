//! Compression of messages on the JetStream bus: zstd per message at the publisher, marked by
//! a `Content-Encoding: zstd` header, undone where a delivery is made, bounded.
//!
//! - A payload shorter than [`MIN_COMPRESS_BYTES`], or one that zstd does not make smaller,
//!   is sent as it is, without the header.
//! - A message without the header is read as it is (messages stored before compression was
//!   turned on, other publishers), so turning compression on or off needs no migration.
//! - Decoding never inflates past a bound (the bus's largest message, the server's
//!   `max_payload`): the frame's declared size is checked before anything is allocated, and a
//!   frame without a declared size is read through a bounded streaming decoder with a bounded
//!   window. A message that would exceed it, is not valid zstd, or has an unknown encoding is
//!   a [`DecodeError`]: the consumer runtime dead-letters it (a permanent failure of that
//!   message), with its bytes as stored.
//!
//! The compression contexts are kept per thread (creating one costs more than compressing a
//! 1 KB event).

use std::cell::RefCell;
use std::io::Read;

use bytes::Bytes;

/// The header that marks a compressed message.
pub const CONTENT_ENCODING: &str = "Content-Encoding";
/// Its value for zstd.
pub const ZSTD: &str = "zstd";
/// Payloads shorter than this are not compressed (a zstd frame has ~10 bytes of overhead and
/// the header costs 25 more).
pub const MIN_COMPRESS_BYTES: usize = 128;
/// The largest window a streaming decode accepts (2^23 = 8 MiB), bounding its memory.
const MAX_WINDOW_LOG: u32 = 23;

/// Compression of each message by the publisher (`compression` in the bus configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageCompression {
    /// zstd per message (default).
    #[default]
    Zstd,
    /// Messages are published as they are.
    None,
}

/// JetStream's own compression of the stream's store (`stream_compression`; NATS 2.10 or
/// newer, older servers ignore it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamCompression {
    /// S2 on the file store (default).
    #[default]
    S2,
    /// The store keeps messages as they are published.
    None,
}

/// Why a delivered message could not be decoded: permanent for that message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// It would inflate past the bound.
    #[error("the zstd message inflates past {max} bytes (the bus's largest message)")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// Not a valid zstd frame.
    #[error("the message is not valid zstd: {0}")]
    Corrupt(String),
    /// A `Content-Encoding` this bus does not know.
    #[error("unknown Content-Encoding {0:?}")]
    UnknownEncoding(String),
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The zstd frame of `payload` at `level` when it is worth sending instead (long enough and
/// smaller); `None` means "send it as it is".
pub fn compress(payload: &[u8], level: i32) -> Option<Vec<u8>> {
    if payload.len() < MIN_COMPRESS_BYTES {
        return None;
    }
    let out = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        c.compress(payload).ok()
    })?;
    (out.len() < payload.len()).then_some(out)
}

/// The payload a handler sees: `payload` itself when `encoding` is `None`, its decompressed
/// bytes (at most `max`) when it is `zstd`.
pub fn decode(encoding: Option<&str>, payload: Bytes, max: usize) -> Result<Bytes, DecodeError> {
    match encoding.map(str::trim) {
        None => Ok(payload),
        Some(e) if e.is_empty() || e.eq_ignore_ascii_case("identity") => Ok(payload),
        Some(e) if e.eq_ignore_ascii_case(ZSTD) => decompress(&payload, max).map(Bytes::from),
        Some(other) => Err(DecodeError::UnknownEncoding(other.to_owned())),
    }
}

/// Decompresses a zstd frame, never producing (or allocating) more than `max` bytes.
pub fn decompress(frame: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Err(_) => Err(DecodeError::Corrupt("no zstd frame header".to_owned())),
        Ok(Some(size)) if size > max as u64 => Err(DecodeError::TooLarge { max }),
        Ok(Some(size)) => {
            // The declared size is allocated exactly: a frame that lies (or a second frame
            // after it) overflows the buffer and fails instead of growing it.
            let capacity = usize::try_from(size).map_err(|_| DecodeError::TooLarge { max })?;
            DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| DecodeError::Corrupt(e.to_string()))?);
                }
                let d = slot.as_mut().ok_or_else(|| DecodeError::Corrupt("no decompression context".to_owned()))?;
                let out = d.decompress(frame, capacity).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
                if out.len() as u64 == size { Ok(out) } else { Err(DecodeError::Corrupt(format!("the frame declared {size} bytes and held {}", out.len()))) }
            })
        }
        // No declared size (a streaming compressor): read through a bounded decoder.
        Ok(None) => {
            let mut decoder = zstd::stream::read::Decoder::new(frame).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            decoder.window_log_max(MAX_WINDOW_LOG).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            let mut out = Vec::with_capacity(frame.len().saturating_mul(4).min(max));
            decoder
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            if out.len() > max { Err(DecodeError::TooLarge { max }) } else { Ok(out) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Vec<u8> {
        let mut s = String::from("{\"type\":\"page_view\",\"props\":[");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!("{{\"k{i}\":\"value number {i}\"}},"));
            i += 1;
        }
        s.push_str("{}]}");
        s.into_bytes()
    }

    #[test]
    fn round_trip_and_plain_messages_pass_through() {
        let raw = event(10_000);
        let z = compress(&raw, 3).expect("worth compressing");
        assert!(z.len() * 4 < raw.len(), "{} -> {}", raw.len(), z.len());
        assert_eq!(decode(Some("zstd"), Bytes::from(z), 1 << 20).unwrap(), Bytes::from(raw.clone()));
        assert_eq!(decode(None, Bytes::from(raw.clone()), 10).unwrap(), Bytes::from(raw));
        assert_eq!(compress(b"{\"short\":1}", 3), None, "short payloads are sent as they are");
    }

    #[test]
    fn inflating_past_the_bound_is_refused_with_or_without_a_declared_size() {
        let zeros = vec![b'0'; 4 << 20];
        let declared = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(declared.len() < 1024);
        assert_eq!(decompress(&declared, 1 << 20), Err(DecodeError::TooLarge { max: 1 << 20 }));
        // A streamed frame (no content size in its header).
        let mut streamed = Vec::new();
        {
            let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
            enc.include_contentsize(false).unwrap();
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
            enc.finish().unwrap();
        }
        assert!(matches!(zstd::zstd_safe::get_frame_content_size(&streamed), Ok(None)));
        assert_eq!(decompress(&streamed, 1 << 20), Err(DecodeError::TooLarge { max: 1 << 20 }));
        assert_eq!(decompress(&streamed, 4 << 20).unwrap().len(), 4 << 20);
        assert!(matches!(decode(Some("zstd"), Bytes::from_static(b"not zstd at all"), 1 << 20), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode(Some("br"), Bytes::from_static(b"x"), 1 << 20), Err(DecodeError::UnknownEncoding(_))));
    }
}
