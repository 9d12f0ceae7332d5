//! A JSON tree that borrows from the line it was parsed from: the write path's view of an
//! event.
//!
//! Shredding needs every value of an event once, in document order, and looks keys up in
//! small objects. `serde_json::Value` would allocate a `String` per key and string and a
//! B-tree per object; a `Node` borrows keys and strings from the line (only strings with
//! escapes are copied) and keeps objects as the vector of members they were. Numbers keep
//! `serde_json`'s distinctions (i64, u64 beyond i64, f64), and [`Node::write_json`] prints
//! them as `serde_json` prints a `Value`, so the lake stores the same text either way.
//!
//! Numbers keep every digit: a number that neither an i64/u64 nor an f64 holds exactly (an
//! integer beyond 64 bits, a decimal with more significant digits than an f64 keeps, a value
//! below f64's range) is kept as its JSON text ([`Node::Number`], borrowed from the line),
//! which the lake stores in a JSON column or the leftovers and prints back as written. A
//! number beyond f64's range (about 1.8e308) does not parse at all: the contract refuses it.

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
    /// Any other number that an f64 holds exactly (its shortest text has the same value).
    Float(f64),
    /// A number no i64, u64 or f64 holds exactly: its JSON text as written.
    Number(&'a str),
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
        let mut node: Node<'a> = serde_json::from_str(text)?;
        if node.has_float() {
            keep_digits(&mut node, text);
        }
        Ok(node)
    }

    /// Does the tree hold an f64 (which may have lost digits of its text)?
    fn has_float(&self) -> bool {
        match self {
            Node::Float(_) => true,
            Node::Array(items) => items.iter().any(Node::has_float),
            Node::Object(members) => members.iter().any(|(_, v)| v.has_float()),
            _ => false,
        }
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
        matches!(self, Node::Int(_) | Node::UInt(_) | Node::Float(_) | Node::Number(_))
    }

    /// The value as an i64, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Node::Int(i) => Some(*i),
            Node::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    /// The value as an f64, when it is a number an f64 holds exactly (or an integer: i64 and
    /// u64 values are converted).
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

    /// The value as a `serde_json::Value` (a [`Node::Number`] becomes the nearest f64, or
    /// null beyond f64's range: `Value` cannot hold its digits).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Number(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            Node::Str(s) => Value::String(s.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(members) => Value::Object(members.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()),
        }
    }

    /// Sorts the members of every object by key (as `serde_json::Value` prints them); of
    /// members with the same key, the one added last is kept.
    pub fn sort_keys(&mut self) {
        match self {
            Node::Array(items) => items.iter_mut().for_each(Node::sort_keys),
            Node::Object(members) => {
                members.reverse();
                members.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the last added comes first
                members.dedup_by(|later, first| later.0 == first.0);
                members.iter_mut().for_each(|(_, v)| v.sort_keys());
            }
            _ => {}
        }
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
            // serde_json prints a RawValue as it is (its `raw_value` feature is on in the
            // workspace); the text was a number of a parsed document.
            Node::Number(text) => match serde_json::value::RawValue::from_string((*text).to_owned()) {
                Ok(raw) => raw.serialize(s),
                Err(_) => s.serialize_str(text),
            },
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

/// Replaces the f64s of `node` that lost digits of their text by [`Node::Number`]s of it.
///
/// The number tokens of `text` and the number nodes of the tree come in the same (document)
/// order, so one pass over the text pairs them.
fn keep_digits<'a>(node: &mut Node<'a>, text: &'a str) {
    let mut tokens = NumberTokens { text, pos: 0 };
    walk_numbers(node, &mut tokens);
}

fn walk_numbers<'a>(node: &mut Node<'a>, tokens: &mut NumberTokens<'a>) {
    match node {
        Node::Int(_) | Node::UInt(_) => {
            tokens.next();
        }
        Node::Float(f) => {
            if let Some(token) = tokens.next()
                && !f64_holds(token, *f)
            {
                *node = Node::Number(token);
            }
        }
        Node::Array(items) => items.iter_mut().for_each(|i| walk_numbers(i, tokens)),
        Node::Object(members) => members.iter_mut().for_each(|(_, v)| walk_numbers(v, tokens)),
        _ => {}
    }
}

/// The number tokens of a JSON text, in order (strings, keys included, are skipped).
struct NumberTokens<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for NumberTokens<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    // Skip the string: to its closing quote, past escapes.
                    i += 1;
                    loop {
                        match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
                            Some(k) if bytes[i + k] == b'\\' => i += k + 2,
                            Some(k) => {
                                i += k + 1;
                                break;
                            }
                            None => {
                                self.pos = bytes.len();
                                return None;
                            }
                        }
                    }
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                        i += 1;
                    }
                    self.pos = i;
                    return self.text.get(start..i);
                }
                _ => i += 1,
            }
        }
        self.pos = i;
        None
    }
}

/// Does `f` (the f64 nearest to the JSON number `token`) have the token's exact value?
///
/// Fast path: a decimal of at most 15 significant digits (f64 keeps 15 digits) within the
/// normal range round-trips. Otherwise the shortest text of `f` is compared with the token,
/// both reduced to (sign, significant digits, exponent).
pub fn f64_holds(token: &str, f: f64) -> bool {
    let Some(t) = Decimal::parse(token) else { return false };
    if t.digits.is_empty() {
        return f == 0.0; // a zero, of any sign
    }
    if t.digits.len() <= 15 && (-300..=300).contains(&t.exponent) {
        return true;
    }
    if !f.is_finite() || f == 0.0 {
        return false;
    }
    let shortest = format!("{:e}", f);
    Decimal::parse(&shortest).is_some_and(|d| d == t)
}

/// A decimal number as (sign, significant digits without leading or trailing zeros, the
/// exponent of its first digit).
#[derive(PartialEq, Debug)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// Parses JSON number text, or Rust's `{:e}` output.
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(k) => (&rest[..k], rest[k + 1..].trim_start_matches('+').parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let lead = all.iter().take_while(|b| **b == b'0').count();
        let digits: Vec<u8> = {
            let rest = &all[lead..];
            let trail = rest.iter().rev().take_while(|b| **b == b'0').count();
            rest[..rest.len() - trail].to_vec()
        };
        // The first significant digit's power of ten.
        let exponent = exp.checked_add(int.len() as i64 - 1 - lead as i64)?;
        Some(Decimal { negative, digits, exponent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_as_serde_json_prints_a_value() {
        let lines = [
            r#"{"a":1,"b":-2,"c":18446744073709551615,"d":1.5,"e":1e300,"f":2.0,"g":"x\"y\u00e9\n","h":[null,true,false,{}],"i":{"j":[]}}"#,
            // (A number no f64 holds exactly prints as written: `numbers_keep_every_digit`.)
            r#"{"z":0.1,"y":-0.0,"x":1.2345678901234568e29,"w":1E2}"#,
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
    fn numbers_keep_every_digit() {
        let line = r#"{"big":123456789012345678901234567890,"pi":3.14159265358979323846264338327950288,"tiny":1e-400,"s":"1.0000000000000000001 \"2\"","ok":[0.1,12.99,1e300,-0.0,2.0,1.7976931348623157e308],"n":-98765432109876543210.5,"i":42}"#;
        let node = Node::parse(line.as_bytes()).unwrap();
        let m = node.as_object().unwrap();
        assert_eq!(m[0].1, Node::Number("123456789012345678901234567890"));
        assert_eq!(m[1].1, Node::Number("3.14159265358979323846264338327950288"));
        assert_eq!(m[2].1, Node::Number("1e-400"));
        assert!(matches!(m[3].1, Node::Str(_)));
        let Node::Array(ok) = &m[4].1 else { panic!("not an array") };
        assert!(ok.iter().all(|n| matches!(n, Node::Float(_))), "{ok:?}");
        assert_eq!(m[5].1, Node::Number("-98765432109876543210.5"));
        assert_eq!(m[6].1, Node::Int(42));
        // Printed back with the same digits.
        let text = node.to_json();
        for digits in ["123456789012345678901234567890", "3.14159265358979323846264338327950288", "1e-400", "-98765432109876543210.5"] {
            assert!(text.contains(digits), "{digits} in {text}");
        }
        // And parsed again, the same tree.
        assert_eq!(Node::parse(text.as_bytes()).unwrap(), node);
    }

    #[test]
    fn exactness_of_f64s() {
        for (t, exact) in [
            ("0.1", true),
            ("123456789012345.6", true),
            ("1234567890123456789", false),
            ("9007199254740993", false),
            ("9007199254740992", true),
            ("1.0000000000000002", true),
            ("1.00000000000000002", false),
            ("1E2", true),
            ("0.000", true),
            ("5e-324", true),
            ("2e-324", false),
        ] {
            let f: f64 = t.parse().unwrap();
            assert_eq!(f64_holds(t, f), exact, "{t}");
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
