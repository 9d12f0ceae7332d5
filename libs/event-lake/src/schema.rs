//! Per-type schemas: the typed columns of an event type, inferred from its events and
//! extended additively.
//!
//! Every event type has the system columns `id` (string), `created_at` (timestamp, UTC, ms)
//! and `_leftovers` (JSON text of the values no typed column holds), then one typed column per
//! `meta` field (named `meta_<key>`) and per `attributes` field (named `<key>`). Nested objects
//! become structs and arrays become lists when their type can be fixed, JSON text otherwise.
//! A column never changes type; a value that does not fit its column goes to `_leftovers`.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::node::{Members, Node};

/// Name of the event id column.
pub const ID: &str = "id";
/// Name of the event time column.
pub const CREATED_AT: &str = "created_at";
/// Name of the JSON column of values no typed column holds (JSON Pointer -> value).
pub const LEFTOVERS: &str = "_leftovers";
/// Arrow field metadata key holding the JSON Pointer a column comes from.
pub const PATH_METADATA: &str = "lake.path";
/// Arrow field metadata key set on JSON text columns.
pub const JSON_METADATA: &str = "lake.json";

/// Names no typed column may take (compared case-insensitively): system columns and the
/// Hive partition columns readers add.
const RESERVED: &[&str] = &[ID, CREATED_AT, LEFTOVERS, "type", "date", "hour"];

/// How deep objects and arrays are typed; deeper values are stored as JSON text.
pub const MAX_DEPTH: usize = 4;

/// The type of a column or of a struct field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DType {
    /// JSON true/false.
    Bool,
    /// JSON integers that fit an i64.
    Int,
    /// JSON numbers (integers up to 2^53 are exact).
    Float,
    /// JSON strings.
    Str,
    /// Any JSON value, stored as its JSON text.
    Json,
    /// JSON arrays whose elements all have one type.
    List {
        /// Element type.
        item: Box<DType>,
    },
    /// JSON objects, field by field.
    Struct {
        /// Fields, in order of first appearance.
        fields: Vec<StructField>,
    },
}

/// A field of a struct type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructField {
    /// The JSON key.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub dtype: DType,
}

/// Where in the event a typed column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// `meta.<key>`.
    Meta,
    /// `data.attributes.<key>`.
    Attributes,
}

impl Section {
    /// JSON Pointer of the section's object.
    pub fn pointer(self) -> &'static str {
        match self {
            Section::Meta => "/meta",
            Section::Attributes => "/data/attributes",
        }
    }
}

/// A typed column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name in the Parquet files.
    pub name: String,
    /// Section of the event.
    pub section: Section,
    /// The key in that section.
    pub key: String,
    /// Column type.
    #[serde(rename = "type")]
    pub dtype: DType,
}

/// The schema of one event type at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeSchema {
    /// The event type.
    pub event_type: String,
    /// Version, starting at 1; each extension adds one.
    pub version: u64,
    /// Typed columns, in order of addition.
    pub columns: Vec<Column>,
}

impl TypeSchema {
    /// The empty schema (version 0) of a type never seen.
    pub fn empty(event_type: &str) -> Self {
        TypeSchema { event_type: event_type.to_owned(), version: 0, columns: Vec::new() }
    }

    /// The column for a key of a section.
    pub fn column(&self, section: Section, key: &str) -> Option<(usize, &Column)> {
        self.columns.iter().enumerate().find(|(_, c)| c.section == section && c.key == key)
    }

    /// The Arrow schema of the files written with this schema.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 3);
        fields.push(Field::new(ID, DataType::Utf8, false));
        fields.push(Field::new(CREATED_AT, timestamp_type(), false));
        for c in &self.columns {
            let mut meta = std::collections::HashMap::new();
            meta.insert(PATH_METADATA.to_owned(), format!("{}/{}", c.section.pointer(), escape_pointer(&c.key)));
            if c.dtype == DType::Json {
                meta.insert(JSON_METADATA.to_owned(), "true".to_owned());
            }
            fields.push(Field::new(&c.name, c.dtype.arrow(), true).with_metadata(meta));
        }
        let mut leftovers = std::collections::HashMap::new();
        leftovers.insert(JSON_METADATA.to_owned(), "true".to_owned());
        fields.push(Field::new(LEFTOVERS, DataType::Utf8, true).with_metadata(leftovers));
        Arc::new(Schema::new(fields))
    }

    /// Extends the schema with what a batch needs: new columns and new struct fields.
    /// Returns true when anything was added. Existing types never change.
    pub fn extend(&mut self, needs: &[(Section, String, DType)], max_columns: usize) -> bool {
        let mut changed = false;
        for (section, key, dtype) in needs {
            if let Some(idx) = self.columns.iter().position(|c| c.section == *section && &c.key == key) {
                changed |= self.columns[idx].dtype.add_fields(dtype);
            } else if self.columns.len() < max_columns {
                let name = self.free_name(*section, key);
                self.columns.push(Column { name, section: *section, key: key.clone(), dtype: dtype.clone() });
                changed = true;
            }
        }
        changed
    }

    /// This committed schema extended by a writer's staged one (see
    /// [`crate::registry::SchemaRegistry::stage`]), whose files were already encoded: every
    /// staged column must land under the same name with a type that holds its values, or the
    /// files could not be read as the table says. `Ok((merged, changed))`, or `Err` saying which
    /// column another writer committed differently meanwhile.
    pub fn merge_staged(&self, staged: &TypeSchema, max_columns: usize) -> Result<(TypeSchema, bool), String> {
        let mut merged = self.clone();
        let needs: Vec<(Section, String, DType)> = staged.columns.iter().map(|c| (c.section, c.key.clone(), c.dtype.clone())).collect();
        let changed = merged.extend(&needs, max_columns);
        for c in &staged.columns {
            match merged.column(c.section, &c.key) {
                Some((_, m)) if m.name == c.name && m.dtype.holds(&c.dtype) => {}
                Some((_, m)) => {
                    return Err(format!(
                        "field {:?} is column {:?} of type {} in the table, but {:?} of type {} in this load's files",
                        c.key,
                        m.name,
                        m.dtype.arrow(),
                        c.name,
                        c.dtype.arrow()
                    ));
                }
                None => return Err(format!("field {:?} has no column in the table (its column limit was reached)", c.key)),
            }
        }
        if changed {
            merged.version = self.version + 1;
        }
        Ok((merged, changed))
    }

    /// A column name for a key: readable, unique case-insensitively, not reserved.
    fn free_name(&self, section: Section, key: &str) -> String {
        let taken: HashSet<String> = self
            .columns
            .iter()
            .map(|c| c.name.to_ascii_lowercase())
            .chain(RESERVED.iter().map(|r| (*r).to_owned()))
            .collect();
        let base = match section {
            Section::Meta => format!("meta_{}", sanitize(key)),
            Section::Attributes => sanitize(key),
        };
        let candidates = std::iter::once(base.clone())
            .chain(std::iter::once(format!("attr_{base}")))
            .chain((2..).map(|n| format!("{base}_{n}")));
        candidates
            .into_iter()
            .find(|n| !taken.contains(&n.to_ascii_lowercase()))
            .unwrap_or(base)
    }
}

/// The Arrow type of created_at.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Column-name safe form of a key: `[A-Za-z_][A-Za-z0-9_]*`, at most 120 bytes.
fn sanitize(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .take(120)
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "c_");
    }
    s
}

/// RFC 6901 escaping of one pointer segment.
pub fn escape_pointer(key: &str) -> String {
    if key.contains(['~', '/']) { key.replace('~', "~0").replace('/', "~1") } else { key.to_owned() }
}

impl DType {
    /// The Arrow type of this type.
    pub fn arrow(&self) -> DataType {
        match self {
            DType::Bool => DataType::Boolean,
            DType::Int => DataType::Int64,
            DType::Float => DataType::Float64,
            DType::Str | DType::Json => DataType::Utf8,
            DType::List { item } => DataType::List(Arc::new(Field::new("item", item.arrow(), true))),
            DType::Struct { fields } => DataType::Struct(struct_fields(fields)),
        }
    }

    /// Infers the type of a value; `None` for values that fix no type (null, [], {}).
    pub fn infer(v: &Node, depth: usize) -> Option<DType> {
        match v {
            Node::Null => None,
            Node::Bool(_) => Some(DType::Bool),
            Node::Int(_) => Some(DType::Int),
            Node::UInt(_) | Node::Number(_) => Some(DType::Json),
            Node::Float(_) => Some(DType::Float),
            Node::Str(_) => Some(DType::Str),
            Node::Array(items) => {
                if depth >= MAX_DEPTH {
                    return Some(DType::Json);
                }
                let mut item: Option<DType> = None;
                for e in items {
                    let Some(t) = DType::infer(e, depth + 1) else { continue };
                    item = Some(match item {
                        None => t,
                        Some(cur) => match cur.unify(&t) {
                            Some(u) => u,
                            None => return Some(DType::Json),
                        },
                    });
                }
                item.map(|item| DType::List { item: Box::new(item) })
            }
            Node::Object(members) => {
                if depth >= MAX_DEPTH {
                    return Some(DType::Json);
                }
                let fields: Vec<StructField> = members
                    .iter()
                    .filter_map(|(k, v)| {
                        DType::infer(v, depth + 1).map(|dtype| StructField { name: k.to_string(), dtype })
                    })
                    .collect();
                (!fields.is_empty()).then_some(DType::Struct { fields })
            }
        }
    }

    /// True when a value at `depth` adds nothing to this type: inferring it and merging the
    /// result the way [`Needs`] does would leave the type as it is. A quick check that
    /// allocates nothing; `false` only means "work it out".
    pub fn covers(&self, v: &Node, depth: usize) -> bool {
        match (self, v) {
            (_, Node::Null) | (DType::Json, _) => true,
            (DType::Bool, Node::Bool(_)) | (DType::Int, Node::Int(_)) | (DType::Str, Node::Str(_)) => true,
            (DType::Float, Node::Int(_) | Node::Float(_)) => true,
            (DType::List { .. } | DType::Struct { .. }, _) if depth >= MAX_DEPTH => false,
            (DType::List { item }, Node::Array(items)) => items.iter().all(|e| item.covers(e, depth + 1)),
            (DType::Struct { fields }, Node::Object(members)) => members.iter().all(|(k, v)| {
                matches!(v, Node::Null) || fields.iter().any(|f| f.name == *k && f.dtype.covers(v, depth + 1))
            }),
            _ => false,
        }
    }

    /// The common type of two inferred types, if they are compatible.
    pub fn unify(&self, other: &DType) -> Option<DType> {
        match (self, other) {
            (a, b) if a == b => Some(a.clone()),
            (DType::Int, DType::Float) | (DType::Float, DType::Int) => Some(DType::Float),
            (DType::Json, _) | (_, DType::Json) => Some(DType::Json),
            (DType::List { item: a }, DType::List { item: b }) => {
                Some(DType::List { item: Box::new(a.unify(b)?) })
            }
            (DType::Struct { .. }, DType::Struct { .. }) => {
                let mut merged = self.clone();
                merged.add_fields(other);
                Some(merged)
            }
            _ => None,
        }
    }

    /// Adds the struct fields `other` has and `self` lacks (recursively, through lists).
    /// Never changes an existing type. Returns true when something was added.
    /// True when a column of this type holds every value a column of `other` holds: the same
    /// type, with every struct field of `other` under the same name, in the same order.
    pub fn holds(&self, other: &DType) -> bool {
        match (self, other) {
            (DType::Struct { fields }, DType::Struct { fields: theirs }) => {
                let mut at = 0;
                theirs.iter().all(|f| match fields[at..].iter().position(|e| e.name == f.name) {
                    Some(i) if fields[at + i].dtype.holds(&f.dtype) => {
                        at += i + 1;
                        true
                    }
                    _ => false,
                })
            }
            (DType::List { item }, DType::List { item: theirs }) => item.holds(theirs),
            (a, b) => a == b,
        }
    }

    pub fn add_fields(&mut self, other: &DType) -> bool {
        match (self, other) {
            (DType::Struct { fields }, DType::Struct { fields: more }) => {
                let mut changed = false;
                for f in more {
                    if let Some(existing) = fields.iter_mut().find(|e| e.name == f.name) {
                        changed |= existing.dtype.add_fields(&f.dtype);
                    } else {
                        fields.push(f.clone());
                        changed = true;
                    }
                }
                changed
            }
            (DType::List { item }, DType::List { item: more }) => item.add_fields(more),
            _ => false,
        }
    }
}

/// Arrow fields of a struct type.
pub fn struct_fields(fields: &[StructField]) -> Fields {
    fields.iter().map(|f| Field::new(&f.name, f.dtype.arrow(), true)).collect()
}

/// Accumulates the types a batch of events needs, first-seen type first.
#[derive(Debug, Default)]
pub struct Needs {
    order: Vec<(Section, String, DType)>,
    /// Position in `order` by key, one map per section (looked up by `&str`, no allocation).
    meta: foldhash::HashMap<String, usize>,
    attributes: foldhash::HashMap<String, usize>,
}

impl Needs {
    /// Records the fields of one section of one event.
    pub fn observe(&mut self, section: Section, obj: &Members) {
        for (k, v) in obj {
            if section == Section::Meta && k == "created_at" {
                continue;
            }
            let index = match section {
                Section::Meta => &mut self.meta,
                Section::Attributes => &mut self.attributes,
            };
            if let Some(&i) = index.get(k.as_ref())
                && self.order[i].2.covers(v, 0)
            {
                continue;
            }
            let Some(t) = DType::infer(v, 0) else { continue };
            match index.get(k.as_ref()) {
                Some(&i) => {
                    if let Some(u) = self.order[i].2.unify(&t) {
                        // A Json column is only chosen when the first values disagree within
                        // one value (mixed arrays); across events the first type wins.
                        if !matches!(u, DType::Json) || matches!(self.order[i].2, DType::Json) {
                            self.order[i].2 = u;
                        }
                    }
                }
                None => {
                    index.insert(k.to_string(), self.order.len());
                    self.order.push((section, k.to_string(), t));
                }
            }
        }
    }

    /// The needs, borrowed.
    pub fn as_slice(&self) -> &[(Section, String, DType)] {
        &self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_nested_types() {
        let raw = br#"{"a": 1, "b": [1, 2.5], "c": {"d": "x", "e": null}, "f": [], "g": [1, "x"]}"#;
        let v = Node::parse(raw).unwrap();
        let t = DType::infer(&v, 0).unwrap();
        let DType::Struct { fields } = t else { panic!() };
        let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "g"]);
        assert_eq!(fields[1].dtype, DType::List { item: Box::new(DType::Float) });
        assert_eq!(fields[3].dtype, DType::Json);
    }

    /// The fast path of `Needs::observe` never skips a value that would change a type.
    #[test]
    fn covers_only_values_that_change_nothing() {
        let samples = [
            "null", "true", "1", "-7", "18446744073709551615", "2.5", "\"x\"", "[]", "[1,2]", "[1,2.5]", "[1,\"x\"]",
            "[null]", "[[1],[2]]", "{}", "{\"a\":1}", "{\"a\":1.5}", "{\"a\":\"x\"}", "{\"b\":true}",
            "{\"a\":1,\"b\":null}", "{\"a\":{\"c\":[1]}}", "[{\"a\":1},{\"b\":2}]", "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":1}}}}}",
        ];
        let nodes: Vec<Node> = samples.iter().map(|s| Node::parse(s.as_bytes()).unwrap()).collect();
        let mut checked = 0;
        for first in &nodes {
            for second in &nodes {
                let mut needs = Needs::default();
                needs.observe(Section::Attributes, &vec![(std::borrow::Cow::Borrowed("k"), first.clone())]);
                let Some((_, _, before)) = needs.as_slice().first().cloned() else { continue };
                if before.covers(second, 0) {
                    checked += 1;
                    // What inference and merging (the slow path) would make of it.
                    let t = DType::infer(second, 0);
                    if let (Some(t), Some(u)) = (t.as_ref(), t.as_ref().and_then(|t| before.unify(t))) {
                        let applied = !matches!(u, DType::Json) || matches!(before, DType::Json);
                        assert!(
                            !applied || u == before,
                            "{} then {}: covers, but {before:?} would become {u:?} ({t:?})",
                            first.to_json(),
                            second.to_json()
                        );
                    }
                }
            }
        }
        assert!(checked > 50, "only {checked} pairs exercised the fast path");
    }

    #[test]
    fn names_avoid_reserved_and_case_collisions() {
        let mut s = TypeSchema::empty("t");
        s.extend(
            &[
                (Section::Attributes, "type".into(), DType::Str),
                (Section::Attributes, "ID".into(), DType::Str),
                (Section::Attributes, "userId".into(), DType::Str),
                (Section::Attributes, "userid".into(), DType::Str),
                (Section::Meta, "source".into(), DType::Str),
                (Section::Attributes, "a b".into(), DType::Str),
            ],
            100,
        );
        let names: Vec<_> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["attr_type", "attr_ID", "userId", "attr_userid", "meta_source", "a_b"]);
    }

    #[test]
    fn extension_is_additive_only() {
        let mut s = TypeSchema::empty("t");
        s.extend(&[(Section::Attributes, "x".into(), DType::Int)], 100);
        assert!(!s.extend(&[(Section::Attributes, "x".into(), DType::Str)], 100));
        assert_eq!(s.columns[0].dtype, DType::Int);
        let st = |names: &[&str]| DType::Struct {
            fields: names.iter().map(|n| StructField { name: (*n).into(), dtype: DType::Int }).collect(),
        };
        s.extend(&[(Section::Attributes, "o".into(), st(&["a"]))], 100);
        assert!(s.extend(&[(Section::Attributes, "o".into(), st(&["b"]))], 100));
        assert_eq!(s.columns[1].dtype, st(&["a", "b"]));
    }
}
