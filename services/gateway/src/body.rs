//! Request bodies: decoding (`Content-Encoding: gzip | zstd`) within the size limit, without
//! inflating past it, and splitting into events by `Content-Type` (one JSON object, a JSON
//! array of events, or NDJSON) while keeping each event as the bytes received. A body holds at
//! most a configured number of events: past it, splitting stops (memory stays bounded by the
//! limit, whatever the body holds, e.g. millions of one-byte lines inflated from a small gzip).

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
    /// More events than one request may hold.
    #[error("the body holds more than {0} events: send them in several requests")]
    TooManyEvents(usize),
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

/// The events of a body, each a zero-copy slice of it; at most `max_events` of them.
pub fn split(body: &Bytes, layout: Layout, max_events: usize) -> Result<Vec<Bytes>, BodyError> {
    let events: Vec<Bytes> = match layout {
        Layout::Ndjson => {
            let mut events = Vec::new();
            let lines = body
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
            for line in lines {
                if events.len() == max_events {
                    return Err(BodyError::TooManyEvents(max_events));
                }
                events.push(body.slice_ref(line));
            }
            events
        }
        Layout::Json => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            match first {
                Some(b'[') => {
                    let too_many = std::cell::Cell::new(false);
                    let mut de = serde_json::Deserializer::from_slice(body);
                    let items = serde::de::DeserializeSeed::deserialize(Items { max: max_events, too_many: &too_many }, &mut de)
                        .and_then(|items| de.end().map(|()| items));
                    match items {
                        Ok(items) => items.into_iter().map(|r| body.slice_ref(r.get().as_bytes())).collect(),
                        Err(_) if too_many.get() => return Err(BodyError::TooManyEvents(max_events)),
                        Err(e) => return Err(BodyError::NotEvents(e.to_string())),
                    }
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

/// A JSON array of at most `max` values, kept as raw slices.
struct Items<'f> {
    max: usize,
    too_many: &'f std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_> {
    type Value = Vec<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_> {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                self.too_many.set(true);
                return Err(serde::de::Error::custom("too many events"));
            }
            items.push(item);
        }
        Ok(items)
    }
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
        let ev = split(&body, Layout::Json, 10).unwrap();
        assert_eq!(ev, vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{\"b\":[2]}")]);
        let body = Bytes::from_static(b"{\"a\":1}\r\n\n{\"b\":2}\n");
        assert_eq!(split(&body, Layout::Ndjson, 10).unwrap().len(), 2);
        assert!(matches!(split(&Bytes::from_static(b"[1,"), Layout::Json, 10), Err(BodyError::NotEvents(_))));
    }

    #[test]
    fn the_number_of_events_is_bounded() {
        let lines = Bytes::from("x\n".repeat(11));
        assert_eq!(split(&lines, Layout::Ndjson, 11).map(|e| e.len()), Ok(11));
        assert_eq!(split(&lines, Layout::Ndjson, 10), Err(BodyError::TooManyEvents(10)));
        let array = Bytes::from(format!("[{}1]", "1,".repeat(10)));
        assert_eq!(split(&array, Layout::Json, 11).map(|e| e.len()), Ok(11));
        assert_eq!(split(&array, Layout::Json, 10), Err(BodyError::TooManyEvents(10)));
    }
}
