//! Request bodies: decoding (`Content-Encoding: gzip | zstd`) within the size limit, without
//! inflating past it, and splitting into events by `Content-Type` (one JSON object, a JSON
//! array of events, or NDJSON) while keeping each event as the bytes received.

use std::io::Read;

use bytes::Bytes;
use serde_json::value::RawValue;

/// Why a body cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit once decoded.
    #[error("the body is larger than {0} bytes once decoded")]
    TooLarge(usize),
    /// A content encoding we do not decode.
    #[error("unsupported Content-Encoding {0:?} (use gzip, zstd or none)")]
    UnsupportedEncoding(String),
    /// A content type we do not read.
    #[error("unsupported Content-Type {0:?} (use application/json or application/x-ndjson)")]
    UnsupportedType(String),
    /// The compressed stream is corrupt.
    #[error("the body does not decode as {0}: {1}")]
    Corrupt(&'static str, String),
    /// A JSON body that is neither an object nor an array of values.
    #[error("the JSON body is not an event or an array of events: {0}")]
    NotEvents(String),
    /// No event at all.
    #[error("the body holds no event")]
    Empty,
}

/// Decodes the body, refusing (without inflating further) once it passes `limit`.
pub fn decode(body: Bytes, encoding: Option<&str>, limit: usize) -> Result<Bytes, BodyError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(body),
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Some("zstd") => Box::new(
            zstd::Decoder::new(&body[..]).map_err(|e| BodyError::Corrupt("zstd", e.to_string()))?,
        ),
        Some(other) => return Err(BodyError::UnsupportedEncoding(other.to_owned())),
    };
    let name = if encoding.as_deref() == Some("zstd") { "zstd" } else { "gzip" };
    let mut out = Vec::with_capacity((body.len() * 4).min(limit + 1));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Corrupt(name, e.to_string()))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// How the events of a body are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON object, or a JSON array of events.
    Json,
    /// One event per line.
    Ndjson,
}

/// The layout of a `Content-Type` header.
pub fn layout(content_type: Option<&str>) -> Result<Layout, BodyError> {
    let ct = content_type.unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(Layout::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/jsonlines"
        | "application/x-jsonlines" => Ok(Layout::Ndjson),
        _ => Err(BodyError::UnsupportedType(ct.to_owned())),
    }
}

/// The events of a body, each a zero-copy slice of it.
pub fn split(body: &Bytes, layout: Layout) -> Result<Vec<Bytes>, BodyError> {
    let events: Vec<Bytes> = match layout {
        Layout::Ndjson => body
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| body.slice_ref(l))
            .collect(),
        Layout::Json => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            match first {
                Some(b'[') => {
                    let items: Vec<&RawValue> =
                        serde_json::from_slice(body).map_err(|e| BodyError::NotEvents(e.to_string()))?;
                    items.into_iter().map(|r| body.slice_ref(r.get().as_bytes())).collect()
                }
                Some(_) => vec![body.clone()],
                None => Vec::new(),
            }
        }
    };
    if events.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_small_bomb_is_refused_without_inflating_it() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 50 << 20]).unwrap();
        let bomb = Bytes::from(enc.finish().unwrap());
        assert!(bomb.len() < 100_000);
        assert_eq!(decode(bomb, Some("gzip"), 1 << 20), Err(BodyError::TooLarge(1 << 20)));
    }

    #[test]
    fn arrays_and_lines_split_into_slices() {
        let body = Bytes::from_static(b"[{\"a\":1}, {\"b\":[2]}]");
        let ev = split(&body, Layout::Json).unwrap();
        assert_eq!(ev, vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{\"b\":[2]}")]);
        let body = Bytes::from_static(b"{\"a\":1}\r\n\n{\"b\":2}\n");
        assert_eq!(split(&body, Layout::Ndjson).unwrap().len(), 2);
        assert!(matches!(split(&Bytes::from_static(b"[1,"), Layout::Json), Err(BodyError::NotEvents(_))));
    }
}
