//! [`EventView`]: the one way consumers read an event from the bus, without building a DOM
//! and without copying it.
//!
//! One pass over the event borrows `data.id`, `data.type` and `meta.created_at` and keeps
//! `data.attributes` and `meta` as raw JSON slices (serde_json checks their syntax on the
//! way); fields below them are found on demand ([`EventView::attribute`],
//! [`EventView::get`]) by a scan of the already-checked slice that stops at the key it
//! looks for, so a consumer that reads one attribute of a 10 KB event pays for one key
//! comparison per attribute before it, not for a parse of the rest.
//!
//! The view is lenient where the contract is strict (it does not check duplicate keys, type
//! patterns or bounds: the gateway did), and strict where a consumer needs it: `data.id`,
//! `data.type` must be strings and `meta.created_at` an integer, else [`ViewError`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a payload is not an event a consumer can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event: {0}")]
pub struct ViewError(pub String);

/// An event read from the bus: its required fields borrowed, the rest as raw JSON.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    /// `data.id` (borrowed unless it contains escapes).
    pub id: Cow<'a, str>,
    /// `data.type` (borrowed unless it contains escapes).
    pub event_type: Cow<'a, str>,
    /// `meta.created_at`, epoch milliseconds.
    pub created_at: i64,
    attributes: Option<&'a RawValue>,
    meta: &'a RawValue,
    text: &'a str,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Data<'a>,
    #[serde(borrow)]
    meta: &'a RawValue,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    event_type: Cow<'a, str>,
    #[serde(borrow, default)]
    attributes: Option<&'a RawValue>,
}

impl<'a> EventView<'a> {
    /// Reads the envelope of an event (UTF-8 JSON).
    pub fn parse(payload: &'a [u8]) -> Result<EventView<'a>, ViewError> {
        let text = crate::utf8(payload).map_err(|e| ViewError(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let env: Envelope<'a> = serde_json::from_str(text).map_err(|e| ViewError(e.to_string()))?;
        let created_at = find_key(env.meta.get(), "created_at")
            .ok_or_else(|| ViewError("no `meta.created_at`".into()))?
            .parse::<i64>()
            .map_err(|_| ViewError("`meta.created_at` is not an integer of epoch milliseconds".into()))?;
        Ok(EventView {
            id: env.data.id,
            event_type: env.data.event_type,
            created_at,
            attributes: env.data.attributes,
            meta: env.meta,
            text,
        })
    }

    /// `data.attributes` as raw JSON (`None` when absent).
    pub fn attributes(&self) -> Option<&'a RawValue> {
        self.attributes
    }

    /// `meta` as raw JSON.
    pub fn meta(&self) -> &'a RawValue {
        self.meta
    }

    /// The whole event as text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The raw JSON of the top-level attribute `key` (`data.attributes.<key>`).
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        find_key(self.attributes?.get(), key)
    }

    /// The raw JSON at a path of the event (`data.attributes.user_id`, `meta.actor.id`...).
    pub fn get(&self, path: &FieldPath) -> Option<&'a str> {
        let keys = path.keys.iter().map(String::as_str);
        match path.root {
            Root::Attributes => find_path(self.attributes?.get(), keys),
            Root::Meta => find_path(self.meta.get(), keys),
            Root::Event => find_path(self.text, keys),
        }
    }
}

/// The text of a raw JSON string or integer (a user or product id): strings unescaped,
/// integers as written; `None` for anything else or an empty string.
pub fn id_text(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let text = if raw.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(raw).ok()?
    } else if !raw.is_empty() && raw.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-')) && raw != "-" {
        Cow::Borrowed(raw)
    } else {
        return None;
    };
    (!text.is_empty()).then_some(text)
}

/// Where a path starts: the keys below it are looked up in that slice only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Attributes,
    Meta,
    Event,
}

/// A dotted path into an event (`data.attributes.user_id`), checked once (configuration)
/// and resolved by [`EventView::get`] in the slice it starts in.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldPath {
    root: Root,
    keys: Vec<String>,
    text: String,
}

impl FieldPath {
    /// Parses `a.b.c` (non-empty keys separated by dots).
    pub fn parse(path: &str) -> Result<FieldPath, String> {
        let parts: Vec<&str> = path.split('.').collect();
        if path.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(format!("invalid JSON path {path:?}: use dotted keys like data.attributes.user_id"));
        }
        let (root, skip) = match parts.as_slice() {
            ["data", "attributes", _, ..] => (Root::Attributes, 2),
            ["meta", _, ..] => (Root::Meta, 1),
            _ => (Root::Event, 0),
        };
        Ok(FieldPath { root, keys: parts[skip..].iter().map(|s| (*s).to_owned()).collect(), text: path.to_owned() })
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn find_path<'a, 'k>(mut json: &'a str, keys: impl Iterator<Item = &'k str>) -> Option<&'a str> {
    for key in keys {
        json = find_key(json, key)?;
    }
    Some(json)
}

/// The raw value of `key` in the JSON object `json` (whose syntax is already checked), or
/// `None` when `json` is not an object or has no such key. Stops at the key; a key written
/// with escapes is compared after unescaping.
pub fn find_key<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let b = json.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(b, i)?;
        let quoted = &json[i..key_end];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        if key_matches(quoted, key) {
            return Some(&json[start..end]);
        }
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return None,
            _ => return None,
        }
    }
}

/// `quoted` is a JSON string with its quotes.
fn key_matches(quoted: &str, key: &str) -> bool {
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains('\\') {
        return inner == key;
    }
    serde_json::from_str::<Cow<'_, str>>(quoted).is_ok_and(|k| k == key)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Index after the closing quote of the string starting at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Index after the value starting at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"meta":{"source":"ios","created_at":1700000000123,"actor":{"id":7}},"data":{"id":"e\u0031","type":"product_sold","attributes":{"big":[1,{"user_id":"no"}],"s":"a\"}b","user_id":"u1","owner_id":42,"nested":{"x":{"y":"z"}}}}}"#;

    #[test]
    fn borrows_the_envelope_and_finds_fields_lazily() {
        let v = EventView::parse(EV.as_bytes()).expect("view");
        assert_eq!(v.id, "e1");
        assert!(matches!(v.id, Cow::Owned(_)), "escaped ids are unescaped");
        assert!(matches!(v.event_type, Cow::Borrowed("product_sold")));
        assert_eq!(v.created_at, 1_700_000_000_123);
        assert_eq!(v.attribute("user_id"), Some("\"u1\""));
        assert_eq!(v.attribute("owner_id"), Some("42"));
        assert_eq!(v.attribute("s"), Some(r#""a\"}b""#));
        assert_eq!(v.attribute("missing"), None);
        let p = |s: &str| FieldPath::parse(s).expect("path");
        assert_eq!(v.get(&p("data.attributes.nested.x.y")), Some("\"z\""));
        assert_eq!(v.get(&p("meta.actor.id")), Some("7"));
        assert_eq!(v.get(&p("data.type")), Some("\"product_sold\""));
        assert_eq!(v.get(&p("data.attributes.big.user_id")), None);
        assert_eq!(id_text(v.attribute("user_id").unwrap_or_default()).as_deref(), Some("u1"));
        assert_eq!(id_text("42").as_deref(), Some("42"));
        assert_eq!(id_text("-"), None);
        assert_eq!(id_text("1.5"), None);
        assert_eq!(id_text("\"\""), None);
        assert!(FieldPath::parse("data..x").is_err());
    }

    #[test]
    fn escaped_keys_and_refusals() {
        let ev = r#"{"data":{"id":"a","type":"t","attributes":{"us\u0065r":"u"}},"meta":{"created_at":5}}"#;
        let v = EventView::parse(ev.as_bytes()).expect("view");
        assert_eq!(v.attribute("user"), Some("\"u\""));
        for bad in [
            &b"{"[..],
            br#"{"data":{"id":1,"type":"t"},"meta":{"created_at":1}}"#,
            br#"{"data":{"id":"a","type":"t"},"meta":{"created_at":1.5}}"#,
            br#"{"data":{"id":"a","type":"t"},"meta":{}}"#,
            br#"{"data":{"id":"a","type":"t"}}"#,
            b"\xff",
        ] {
            assert!(EventView::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(find_key("[1,2]", "a"), None);
        assert_eq!(find_key(r#"{"a" : [ "]" , {"b":"}"} ] , "c":1}"#, "c"), Some("1"));
        assert_eq!(find_key(r#"{"a":{}}"#, "a"), Some("{}"));
    }
}
