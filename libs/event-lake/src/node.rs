//! A JSON tree that borrows from the line it was parsed from: the write path's view of an
//! event.
//!
//! Shredding needs every value of an event once, in document order, and looks keys up in
//! small objects. `serde_json::Value` would allocate a `String` per key and string and a
//! B-tree per object; a `Node` borrows keys and strings from the line (only strings with
//! escapes are copied) and keeps objects as the vector of members they were. Numbers keep
//! `serde_json`'s distinctions (i64, u64 beyond i64, f64), and [`Node::write_json`] prints
//! them as `serde_json` prints a `Value`, so the lake stores the same text either way.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// Members of an object, in document order (keys are unique: the contract refuses duplicates).
pub type Members<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// One JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits an i64.
    Int(i64),
    /// An integer above `i64::MAX` (up to `u64::MAX`).
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// A string (borrowed unless it had escapes).
    Str(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object.
    Object(Members<'a>),
}

impl<'a> Node<'a> {
    /// Parses one JSON document.
    ///
    /// The bytes are checked as UTF-8 once, as a whole (SIMD), and parsed as a `str`: parsing
    /// bytes checks every string on its own, about 1% more instructions for an ingest.
    pub fn parse(raw: &'a [u8]) -> Result<Node<'a>, serde_json::Error> {
        let text = event_contract::utf8(raw).map_err(<serde_json::Error as de::Error>::custom)?;
        serde_json::from_str(text)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        member(self.as_object()?, key)
    }

    /// The members, when an object.
    pub fn as_object(&self) -> Option<&Members<'a>> {
        match self {
            Node::Object(m) => Some(m),
            _ => None,
        }
    }

    /// Is it a number?
    pub fn is_number(&self) -> bool {
        matches!(self, Node::Int(_) | Node::UInt(_) | Node::Float(_))
    }

    /// The value as an i64, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Node::Int(i) => Some(*i),
            Node::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The value as an f64, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Node::Int(i) => Some(*i as f64),
            Node::UInt(u) => Some(*u as f64),
            Node::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The JSON text of the value, appended to `out` (as `serde_json` prints it).
    pub fn write_json(&self, out: &mut String) {
        let mut buf = std::mem::take(out).into_bytes();
        // Serializing plain values into memory cannot fail, and serde_json writes UTF-8.
        let _ = serde_json::to_writer(&mut buf, self);
        *out = match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
    }

    /// The JSON text of the value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The value of `key` among an object's members.
pub fn member<'m, 'a>(members: &'m [(Cow<'a, str>, Node<'a>)], key: &str) -> Option<&'m Node<'a>> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map(Node::Int).unwrap_or(Node::UInt(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Node::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members.push((key.0, map.next_value()?));
        }
        Ok(Node::Object(members))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::UInt(u) => s.serialize_u64(*u),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(v) => s.serialize_str(v),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Node::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_serde_json_prints_a_value() {
        let lines = [
            r#"{"a":1,"b":-2,"c":18446744073709551615,"d":1.5,"e":1e300,"f":2.0,"g":"x\"y\u00e9\n","h":[null,true,false,{}],"i":{"j":[]}}"#,
            r#"{"z":0.1,"y":-0.0,"x":123456789012345678901234567890,"w":1E2}"#,
        ];
        for line in lines {
            let node = Node::parse(line.as_bytes()).unwrap();
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            // Same members in document order (Value sorts its keys, so compare as values).
            let back: serde_json::Value = serde_json::from_str(&node.to_json()).unwrap();
            assert_eq!(back, value);
            for (k, v) in node.as_object().unwrap() {
                assert_eq!(v.to_json(), value[k.as_ref()].to_string(), "member {k}");
            }
        }
    }

    #[test]
    fn borrows_strings_without_escapes() {
        let line = br#"{"plain":"abc","esc\u0041":"a\"b"}"#;
        let node = Node::parse(line).unwrap();
        let m = node.as_object().unwrap();
        assert!(matches!(m[0].0, Cow::Borrowed("plain")));
        assert!(matches!(m[0].1, Node::Str(Cow::Borrowed("abc"))));
        assert_eq!(m[1].0, "escA");
        assert_eq!(m[1].1, Node::Str(Cow::Owned("a\"b".into())));
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let err = Node::parse(b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(err.to_string().contains("utf-8"), "{err}");
        assert!(Node::parse(b"{\"a\":1} x").is_err());
    }
}
