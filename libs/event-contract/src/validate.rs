//! Strict validation of one event without building a DOM.
//!
//! The line is walked once by serde_json's streaming deserializer with visitors that borrow
//! the required fields (`data.id`, `data.type`, `meta.created_at`), check that every object
//! has unique keys (compared after unescaping), and skip everything else. JSON-level errors
//! win over semantic ones: a line that is not strict JSON is `invalid_json` whatever else is
//! wrong with it; among semantic problems the first one found is reported.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::bounds::{self, KEY_ATTRIBUTES, MAX_FIELD_NAME_BYTES};
use crate::{Limits, Reason, Rejection};

/// A valid event: its required fields, borrowed from the line where possible, and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// `data.id` (borrowed unless it contained escapes).
    pub id: Cow<'a, str>,
    /// `data.type` (borrowed unless it contained escapes).
    pub event_type: Cow<'a, str>,
    /// `meta.created_at`, epoch milliseconds.
    pub created_at: i64,
    /// The bytes of the line as received (without the line terminator).
    pub raw: &'a [u8],
}

/// Validates one line against the event contract.
pub fn validate<'a>(line: &'a [u8], limits: &Limits) -> Result<Event<'a>, Rejection> {
    if line.len() > limits.max_event_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!("{} bytes, the limit is {}", line.len(), limits.max_event_bytes),
        ));
    }
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Rejection::new(Reason::EmptyLine, "no JSON value on the line"));
    }
    let text = crate::utf8(line).map_err(|e| {
        Rejection::new(Reason::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;

    let ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = TopSeed { ctx: &ctx }.deserialize(&mut de);
    let top = match parsed {
        Ok(top) => top,
        Err(e) => return Err(Rejection::new(Reason::InvalidJson, e.to_string())),
    };
    if let Err(e) = de.end() {
        return Err(Rejection::new(Reason::TrailingData, e.to_string()));
    }
    if let Some(rejection) = ctx.first.into_inner() {
        return Err(rejection);
    }
    top.into_event(line, limits)
}

/// Collects the first semantic problem while the walk goes on (so syntax errors still win).
#[derive(Default)]
struct Ctx {
    first: RefCell<Option<Rejection>>,
}

impl Ctx {
    fn fail(&self, reason: Reason, detail: impl FnOnce() -> String) {
        let mut first = self.first.borrow_mut();
        if first.is_none() {
            *first = Some(Rejection::new(reason, detail()));
        }
    }
}

/// Where in the event a value sits, for messages; built on the stack, formatted on failure.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                write!(f, "{parent}/")?;
                for c in key.chars() {
                    match c {
                        '~' => f.write_str("~0")?,
                        '/' => f.write_str("~1")?,
                        c => write!(f, "{c}")?,
                    }
                }
                Ok(())
            }
            Path::Index(parent, i) => write!(f, "{parent}/{i}"),
        }
    }
}

impl Path<'_> {
    fn describe(&self) -> String {
        let s = self.to_string();
        if s.is_empty() { "the top level".to_owned() } else { s }
    }
}

/// Keys an object holds before [`KeySet`] moves them to a hash set.
const SMALL_KEYS: usize = 16;

/// The keys seen in one object: an array on the stack (most objects have a few keys, and a
/// heap vector would cost an allocation or three per object, per event), a hash set once the
/// object is large.
struct KeySet<'de> {
    small: [Cow<'de, str>; SMALL_KEYS],
    len: usize,
    large: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> KeySet<'de> {
    fn new() -> Self {
        KeySet { small: Default::default(), len: 0, large: None }
    }

    /// Returns false when the key was already present. Takes the `Cow` to keep a borrowed
    /// key borrowed when it is stored.
    #[allow(clippy::ptr_arg)]
    fn insert(&mut self, key: &Cow<'de, str>) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(key.clone());
        }
        if self.small[..self.len].iter().any(|k| k == key) {
            return false;
        }
        match self.small.get_mut(self.len) {
            Some(slot) => {
                *slot = key.clone();
                self.len += 1;
            }
            None => {
                let mut set: HashSet<Cow<'de, str>> = self.small.iter_mut().map(std::mem::take).collect();
                set.insert(key.clone());
                self.large = Some(set);
            }
        }
        true
    }
}

/// Deserializes a string, borrowed when it has no escapes.
struct CowStr;

impl<'de> DeserializeSeed<'de> for CowStr {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Kinds of JSON value, for checks of required fields.
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'de> {
    Str(Cow<'de, str>),
    Int(i128),
    Float,
    Other(&'static str),
}

/// Any JSON value, walked strictly: unique keys in every object; strings and integers kept.
struct Any<'c, 'p> {
    ctx: &'c Ctx,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for Any<'_, '_> {
    type Value = Scalar<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Any<'_, '_> {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Any { ctx: self.ctx, path: Path::Index(&self.path, i) })?
            .is_some()
        {
            i += 1;
        }
        Ok(Scalar::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = KeySet::new();
        while let Some(key) = map.next_key_seed(CowStr)? {
            check_unique(self.ctx, &mut keys, &key, &self.path);
            map.next_value_seed(Any { ctx: self.ctx, path: Path::Key(&self.path, &key) })?;
        }
        Ok(Scalar::Other("an object"))
    }
}

#[allow(clippy::ptr_arg)] // the Cow is stored by KeySet::insert
fn check_unique<'de>(ctx: &Ctx, keys: &mut KeySet<'de>, key: &Cow<'de, str>, path: &Path<'_>) {
    if key.len() > MAX_FIELD_NAME_BYTES {
        ctx.fail(Reason::FieldNameTooLong, || {
            let shown: String = key.chars().take(64).collect();
            format!("a key in {} is {} bytes, the limit is {MAX_FIELD_NAME_BYTES}: {shown:?}...", path.describe(), key.len())
        });
    }
    if !keys.insert(key) {
        ctx.fail(Reason::DuplicateKey, || format!("key {key:?} appears twice in {}", path.describe()));
    }
}

/// The parts of the top-level object the contract looks at.
#[derive(Default)]
struct Top<'de> {
    is_object: bool,
    not_object_kind: &'static str,
    data: Option<Data<'de>>,
    meta: Option<Meta>,
}

#[derive(Default)]
struct Data<'de> {
    is_object: bool,
    id: Option<Scalar<'de>>,
    event_type: Option<Scalar<'de>>,
    attributes_is_object: Option<bool>,
    /// The string values of `user_id`, `product_id`, `owner_id` in `data.attributes`.
    keys: Vec<(&'static str, Cow<'de, str>)>,
}

#[derive(Default)]
struct Meta {
    is_object: bool,
    created_at: Option<Scalar<'static>>,
}

struct TopSeed<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Top<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! forward_non_map {
    ($kind:literal, $($method:ident($($arg:ty)?)),*) => {
        $(fn $method<E: de::Error>(self $(, _: $arg)?) -> Result<Self::Value, E> {
            Ok(Self::Value::not_object($kind))
        })*
    };
}

trait NotObject {
    fn not_object(kind: &'static str) -> Self;
}

impl NotObject for Top<'_> {
    fn not_object(kind: &'static str) -> Self {
        Top { not_object_kind: kind, ..Top::default() }
    }
}
impl NotObject for Data<'_> {
    fn not_object(_: &'static str) -> Self {
        Data::default()
    }
}
impl NotObject for Meta {
    fn not_object(_: &'static str) -> Self {
        Meta::default()
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Top<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    forward_non_map!("a scalar", visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut i = 0;
        while seq.next_element_seed(Any { ctx: self.ctx, path: Path::Index(&Path::Root, i) })?.is_some() {
            i += 1;
        }
        Ok(Top::not_object("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = Top { is_object: true, ..Top::default() };
        let mut keys = KeySet::new();
        while let Some(key) = map.next_key_seed(CowStr)? {
            check_unique(self.ctx, &mut keys, &key, &Path::Root);
            let path = Path::Key(&Path::Root, &key);
            match key.as_ref() {
                "data" => {
                    let data = map.next_value_seed(DataSeed { ctx: self.ctx, path })?;
                    top.data.get_or_insert(data);
                }
                "meta" => {
                    let meta = map.next_value_seed(MetaSeed { ctx: self.ctx, path })?;
                    top.meta.get_or_insert(meta);
                }
                _ => {
                    map.next_value_seed(Any { ctx: self.ctx, path })?;
                }
            }
        }
        Ok(top)
    }
}

struct DataSeed<'c, 'p> {
    ctx: &'c Ctx,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_> {
    type Value = Data<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_> {
    type Value = Data<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    forward_non_map!("a scalar", visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Any { ctx: self.ctx, path: self.path }.visit_seq(seq)?;
        Ok(Data::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut data = Data { is_object: true, ..Data::default() };
        let mut keys = KeySet::new();
        while let Some(key) = map.next_key_seed(CowStr)? {
            check_unique(self.ctx, &mut keys, &key, &self.path);
            let path = Path::Key(&self.path, &key);
            if key == "attributes" {
                let attrs = map.next_value_seed(AttributesSeed { ctx: self.ctx, path })?;
                if data.attributes_is_object.is_none() {
                    data.attributes_is_object = Some(attrs.is_object);
                    data.keys = attrs.keys;
                }
                continue;
            }
            let value = map.next_value_seed(Any { ctx: self.ctx, path })?;
            match key.as_ref() {
                "id" => {
                    data.id.get_or_insert(value);
                }
                "type" => {
                    data.event_type.get_or_insert(value);
                }
                _ => {}
            }
        }
        Ok(data)
    }
}

/// `data.attributes`: walked strictly, keeping the string values of the key attributes.
struct AttributesSeed<'c, 'p> {
    ctx: &'c Ctx,
    path: Path<'p>,
}

struct Attributes<'de> {
    is_object: bool,
    keys: Vec<(&'static str, Cow<'de, str>)>,
}

impl<'de> DeserializeSeed<'de> for AttributesSeed<'_, '_> {
    type Value = Attributes<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl NotObject for Attributes<'_> {
    fn not_object(_: &'static str) -> Self {
        Attributes { is_object: false, keys: Vec::new() }
    }
}

impl<'de> Visitor<'de> for AttributesSeed<'_, '_> {
    type Value = Attributes<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    forward_non_map!("a scalar", visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Any { ctx: self.ctx, path: self.path }.visit_seq(seq)?;
        Ok(Attributes::not_object("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut attrs = Attributes { is_object: true, keys: Vec::new() };
        let mut keys = KeySet::new();
        while let Some(key) = map.next_key_seed(CowStr)? {
            check_unique(self.ctx, &mut keys, &key, &self.path);
            let path = Path::Key(&self.path, &key);
            let value = map.next_value_seed(Any { ctx: self.ctx, path })?;
            if let (Some(name), Scalar::Str(s)) = (KEY_ATTRIBUTES.iter().find(|k| **k == key), value) {
                attrs.keys.push((*name, s));
            }
        }
        Ok(attrs)
    }
}

struct MetaSeed<'c, 'p> {
    ctx: &'c Ctx,
    path: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for MetaSeed<'_, '_> {
    type Value = Meta;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetaSeed<'_, '_> {
    type Value = Meta;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    forward_non_map!("a scalar", visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64), visit_str(&str), visit_unit());
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Any { ctx: self.ctx, path: self.path }.visit_seq(seq)?;
        Ok(Meta::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut meta = Meta { is_object: true, ..Meta::default() };
        let mut keys = KeySet::new();
        while let Some(key) = map.next_key_seed(CowStr)? {
            check_unique(self.ctx, &mut keys, &key, &self.path);
            let path = Path::Key(&self.path, &key);
            if key == "created_at" {
                let v = map.next_value_seed(Any { ctx: self.ctx, path })?;
                let v = match v {
                    Scalar::Str(_) => Scalar::Other("a string"),
                    Scalar::Int(i) => Scalar::Int(i),
                    Scalar::Float => Scalar::Float,
                    Scalar::Other(k) => Scalar::Other(k),
                };
                meta.created_at.get_or_insert(v);
            } else {
                map.next_value_seed(Any { ctx: self.ctx, path })?;
            }
        }
        Ok(meta)
    }
}

fn kind(s: &Scalar<'_>) -> &'static str {
    match s {
        Scalar::Str(_) => "a string",
        Scalar::Int(_) | Scalar::Float => "a number",
        Scalar::Other(k) => k,
    }
}

impl<'de> Top<'de> {
    fn into_event(self, raw: &'de [u8], limits: &Limits) -> Result<Event<'de>, Rejection> {
        if !self.is_object {
            return Err(Rejection::new(Reason::NotAnObject, format!("the line is {}", self.not_object_kind)));
        }
        let data = self.data.ok_or_else(|| Rejection::new(Reason::MissingData, "no key `data`"))?;
        if !data.is_object {
            return Err(Rejection::new(Reason::DataNotObject, "`data` must be an object"));
        }
        let id = match data.id {
            None => return Err(Rejection::new(Reason::MissingId, "no key `data.id`")),
            Some(Scalar::Str(s)) => match bounds::id_problem(&s) {
                None => s,
                Some(problem) => return Err(Rejection::new(Reason::InvalidId, format!("`data.id` {problem}"))),
            },
            Some(other) => {
                return Err(Rejection::new(Reason::InvalidId, format!("`data.id` is {}", kind(&other))));
            }
        };
        let event_type = match data.event_type {
            None => return Err(Rejection::new(Reason::MissingType, "no key `data.type`")),
            Some(Scalar::Str(s)) if bounds::is_valid_type(&s) => s,
            Some(Scalar::Str(s)) => {
                let shown: String = s.chars().take(64).collect();
                let problem = bounds::describe_type_problem(&s);
                return Err(Rejection::new(Reason::InvalidType, format!("`data.type` {shown:?} {problem}")));
            }
            Some(other) => {
                return Err(Rejection::new(Reason::InvalidType, format!("`data.type` is {}", kind(&other))));
            }
        };
        match data.attributes_is_object {
            None => return Err(Rejection::new(Reason::MissingAttributes, "no key `data.attributes`")),
            Some(false) => {
                return Err(Rejection::new(Reason::AttributesNotObject, "`data.attributes` must be an object"));
            }
            Some(true) => {}
        }
        for (name, value) in &data.keys {
            if let Some(problem) = bounds::key_problem(value) {
                return Err(Rejection::new(Reason::InvalidKey, format!("`data.attributes.{name}` {problem}")));
            }
        }
        let meta = self.meta.ok_or_else(|| Rejection::new(Reason::MissingMeta, "no key `meta`"))?;
        if !meta.is_object {
            return Err(Rejection::new(Reason::MetaNotObject, "`meta` must be an object"));
        }
        let created_at = match meta.created_at {
            None => return Err(Rejection::new(Reason::MissingCreatedAt, "no key `meta.created_at`")),
            Some(Scalar::Int(v)) => v,
            Some(Scalar::Float) => {
                return Err(Rejection::new(
                    Reason::InvalidCreatedAt,
                    "`meta.created_at` has a fraction or an exponent; it must be an integer of epoch milliseconds",
                ));
            }
            Some(other) => {
                return Err(Rejection::new(
                    Reason::InvalidCreatedAt,
                    format!("`meta.created_at` is {}; it must be an integer of epoch milliseconds", kind(&other)),
                ));
            }
        };
        if created_at < i128::from(limits.min_created_at) || created_at >= i128::from(limits.max_created_at) {
            return Err(Rejection::new(
                Reason::CreatedAtOutOfRange,
                format!(
                    "`meta.created_at` {created_at} is outside [{}, {})",
                    limits.min_created_at, limits.max_created_at
                ),
            ));
        }
        // In range of i64 by the check above.
        let created_at = created_at as i64;
        Ok(Event { id, event_type, created_at, raw })
    }
}
