//! Shredding: events (parsed as borrowed [`Node`] trees) into an Arrow record batch of a type's schema, and back.
//!
//! Lossless by construction: every value lands either in its typed column or, under its JSON
//! Pointer, in `_leftovers` (explicit nulls, values that conflict with their column's type,
//! keys outside `data.{id,type,attributes}` and `meta`, fields without a column). Reading a
//! row back rebuilds the event from the columns and then applies the leftovers.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::Field;
use foldhash::{HashMap, HashMapExt};
use serde_json::Value;

use crate::LakeError;
use crate::node::{Members, Node, member};
use crate::schema::{CREATED_AT, DType, ID, LEFTOVERS, Section, StructField, TypeSchema, escape_pointer, struct_fields};

/// Integers that a Float64 column stores exactly.
const MAX_EXACT_F64_INT: u64 = 1 << 53;

/// One event, parsed (borrowing from its line), with its required fields.
pub struct ParsedEvent<'a> {
    /// `data.id`.
    pub id: Cow<'a, str>,
    /// `meta.created_at`.
    pub created_at: i64,
    /// The whole event.
    pub root: Node<'a>,
}

impl<'a> ParsedEvent<'a> {
    /// Parses a line that passed the contract.
    pub fn parse(raw: &'a [u8]) -> Result<ParsedEvent<'a>, LakeError> {
        let root =
            Node::parse(raw).map_err(|e| LakeError::Internal(format!("a validated event does not parse: {e}")))?;
        let id = match root.get("data").and_then(|d| d.get("id")) {
            Some(Node::Str(id)) => id.clone(),
            _ => return Err(LakeError::Internal("a validated event has no data.id".into())),
        };
        let created_at = root
            .get("meta")
            .and_then(|m| m.get("created_at"))
            .and_then(Node::as_i64)
            .ok_or_else(|| LakeError::Internal("a validated event has no meta.created_at".into()))?;
        Ok(ParsedEvent { id, created_at, root })
    }

    /// The members of a section, if present.
    pub fn section(&self, section: Section) -> Option<&Members<'a>> {
        match section {
            Section::Meta => self.root.get("meta"),
            Section::Attributes => self.root.get("data").and_then(|d| d.get("attributes")),
        }
        .and_then(Node::as_object)
    }
}

/// Collects the leftovers of one row as a JSON object text.
struct Leftovers {
    text: String,
}

impl Leftovers {
    fn new() -> Self {
        Leftovers { text: String::new() }
    }
    fn add(&mut self, pointer: &str, v: &Node) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        Node::Str(Cow::Borrowed(pointer)).write_json(&mut self.text);
        self.text.push(':');
        v.write_json(&mut self.text);
    }
    /// Appends the row's leftovers (null when there are none) and starts the next row.
    fn finish_row(&mut self, column: &mut StringBuilder) {
        if self.text.is_empty() {
            column.append_null();
        } else {
            self.text.push('}');
            column.append_value(&self.text);
            self.text.clear();
        }
    }
}

/// Does a value fit a type without any leftover at its own place?
fn fits(t: &DType, v: &Node) -> bool {
    match (t, v) {
        (_, Node::Null) => true,
        (DType::Json, _) => true,
        (DType::Bool, Node::Bool(_)) => true,
        (DType::Int, n) if n.is_number() => {
            matches!(n, Node::Int(_)) || n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
        }
        (DType::Float, n) if n.is_number() => {
            matches!(n, Node::Float(_)) || n.as_i64().is_some_and(|i| i.unsigned_abs() <= MAX_EXACT_F64_INT)
        }
        (DType::Str, Node::Str(_)) => true,
        (DType::List { item }, Node::Array(items)) => items.iter().all(|e| fits(item, e)),
        (DType::Struct { .. }, Node::Object(_)) => true,
        _ => false,
    }
}

/// A column builder for one type.
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Json(StringBuilder),
    List { field: Arc<Field>, item: Box<Builder>, offsets: Vec<i32>, nulls: NullBufferBuilder },
    Struct { fields: Vec<StructField>, escaped: Vec<String>, children: Vec<Builder>, nulls: NullBufferBuilder },
}

impl Builder {
    fn new(t: &DType, rows: usize) -> Builder {
        match t {
            DType::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            DType::Int => Builder::Int(Int64Builder::with_capacity(rows)),
            DType::Float => Builder::Float(Float64Builder::with_capacity(rows)),
            DType::Str => Builder::Str(StringBuilder::with_capacity(rows, rows * 8)),
            DType::Json => Builder::Json(StringBuilder::with_capacity(rows, rows * 8)),
            DType::List { item } => Builder::List {
                field: Arc::new(Field::new("item", item.arrow(), true)),
                item: Box::new(Builder::new(item, rows)),
                offsets: {
                    let mut o = Vec::with_capacity(rows + 1);
                    o.push(0);
                    o
                },
                nulls: NullBufferBuilder::new(rows),
            },
            DType::Struct { fields } => Builder::Struct {
                fields: fields.clone(),
                escaped: fields.iter().map(|f| escape_pointer(&f.name)).collect(),
                children: fields.iter().map(|f| Builder::new(&f.dtype, rows)).collect(),
                nulls: NullBufferBuilder::new(rows),
            },
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Str(b) | Builder::Json(b) => b.append_null(),
            Builder::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
            Builder::Struct { children, nulls, .. } => {
                for c in children {
                    c.append_null();
                }
                nulls.append_null();
            }
        }
    }

    /// Appends a value found at `ptr` (`None` when the key is absent). `in_list` elements
    /// keep JSON nulls as nulls; elsewhere a null is recorded in the leftovers so that an
    /// explicit null and an absent key read back differently.
    fn append(&mut self, v: Option<&Node>, ptr: &mut String, left: &mut Leftovers, in_list: bool) {
        let v = match v {
            None => return self.append_null(),
            Some(Node::Null) if !matches!(self, Builder::Json(_)) => {
                if !in_list {
                    left.add(ptr, &Node::Null);
                }
                return self.append_null();
            }
            Some(v) => v,
        };
        match self {
            Builder::Bool(b) => match v {
                Node::Bool(x) => b.append_value(*x),
                _ => conflict(self, ptr, v, left),
            },
            Builder::Int(b) => match v.as_i64().or_else(|| {
                v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
            }) {
                Some(x) if v.is_number() => b.append_value(x),
                _ => conflict(self, ptr, v, left),
            },
            Builder::Float(b) => match v.as_f64() {
                Some(x) if fits(&DType::Float, v) => b.append_value(x),
                _ => conflict(self, ptr, v, left),
            },
            Builder::Str(b) => match v {
                Node::Str(s) => b.append_value(s),
                _ => conflict(self, ptr, v, left),
            },
            Builder::Json(b) => b.append_value(v.to_json()),
            Builder::List { item, offsets, nulls, .. } => {
                let item_type_fits = match v {
                    Node::Array(items) => items.iter().all(|e| item.accepts(e)),
                    _ => false,
                };
                if !item_type_fits {
                    return conflict(self, ptr, v, left);
                }
                let Node::Array(items) = v else { return };
                let base = ptr.len();
                for (i, e) in items.iter().enumerate() {
                    ptr.push('/');
                    ptr.push_str(&i.to_string());
                    item.append(Some(e), ptr, left, true);
                    ptr.truncate(base);
                }
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + items.len() as i32);
                nulls.append_non_null();
            }
            Builder::Struct { fields, escaped, children, nulls } => {
                let Node::Object(obj) = v else { return conflict(self, ptr, v, left) };
                let base = ptr.len();
                for ((f, name), child) in fields.iter().zip(escaped.iter()).zip(children.iter_mut()) {
                    ptr.push('/');
                    ptr.push_str(name);
                    child.append(member(obj, &f.name), ptr, left, false);
                    ptr.truncate(base);
                }
                for (k, val) in obj {
                    if !fields.iter().any(|f| f.name == *k) {
                        ptr.push('/');
                        ptr.push_str(&escape_pointer(k));
                        left.add(ptr, val);
                        ptr.truncate(base);
                    }
                }
                nulls.append_non_null();
            }
        }
    }

    /// Does a value fit this builder's type without a leftover at its place?
    fn accepts(&self, v: &Node) -> bool {
        match self {
            Builder::Bool(_) => fits(&DType::Bool, v),
            Builder::Int(_) => fits(&DType::Int, v),
            Builder::Float(_) => fits(&DType::Float, v),
            Builder::Str(_) => fits(&DType::Str, v),
            Builder::Json(_) => true,
            Builder::List { item, .. } => match v {
                Node::Null => true,
                Node::Array(items) => items.iter().all(|e| item.accepts(e)),
                _ => false,
            },
            Builder::Struct { .. } => matches!(v, Node::Null | Node::Object(_)),
        }
    }

    fn finish(self) -> Result<ArrayRef, LakeError> {
        Ok(match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Float(mut b) => Arc::new(b.finish()),
            Builder::Str(mut b) | Builder::Json(mut b) => Arc::new(b.finish()),
            Builder::List { field, item, offsets, mut nulls } => {
                let values = item.finish()?;
                Arc::new(ListArray::try_new(field, OffsetBuffer::new(offsets.into()), values, nulls.finish())?)
            }
            Builder::Struct { fields, children, mut nulls, .. } => {
                let arrays = children.into_iter().map(Builder::finish).collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new(struct_fields(&fields), arrays, nulls.finish())?)
            }
        })
    }
}

fn conflict(b: &mut Builder, ptr: &str, v: &Node, left: &mut Leftovers) {
    left.add(ptr, v);
    b.append_null();
}

/// Encodes events (already sorted and deduplicated) into one batch of `schema`.
pub fn encode(schema: &TypeSchema, events: &[ParsedEvent]) -> Result<RecordBatch, LakeError> {
    let rows = events.len();
    let mut ids = StringBuilder::with_capacity(rows, rows * 24);
    let mut times = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut builders: Vec<Builder> = schema.columns.iter().map(|c| Builder::new(&c.dtype, rows)).collect();
    let mut leftovers = StringBuilder::new();
    let mut left = Leftovers::new();
    let mut ptr = String::with_capacity(64);
    let pointers: Vec<String> =
        schema.columns.iter().map(|c| format!("{}/{}", c.section.pointer(), escape_pointer(&c.key))).collect();
    // Column of each key, per section: one pass over an event's members finds every value.
    let mut meta_columns: HashMap<&str, usize> = HashMap::new();
    let mut attribute_columns: HashMap<&str, usize> = HashMap::new();
    for (i, c) in schema.columns.iter().enumerate() {
        match c.section {
            Section::Meta => meta_columns.insert(&c.key, i),
            Section::Attributes => attribute_columns.insert(&c.key, i),
        };
    }
    let mut slots: Vec<Option<&Node>> = vec![None; schema.columns.len()];

    for ev in events {
        ids.append_value(&ev.id);
        times.append_value(ev.created_at);
        slots.iter_mut().for_each(|s| *s = None);
        // One pass over the members: typed values to their slots, the rest to the leftovers.
        for (k, v) in ev.root.as_object().map(Vec::as_slice).unwrap_or_default() {
            match k.as_ref() {
                "meta" => {
                    for (mk, mv) in v.as_object().map(Vec::as_slice).unwrap_or_default() {
                        if mk == "created_at" {
                            continue;
                        }
                        match meta_columns.get(mk.as_ref()) {
                            Some(&i) => slots[i] = Some(mv),
                            None => left.add(&format!("{}/{}", Section::Meta.pointer(), escape_pointer(mk)), mv),
                        }
                    }
                }
                "data" => {
                    for (dk, dv) in v.as_object().map(Vec::as_slice).unwrap_or_default() {
                        match dk.as_ref() {
                            "id" | "type" => {}
                            "attributes" => {
                                for (ak, av) in dv.as_object().map(Vec::as_slice).unwrap_or_default() {
                                    match attribute_columns.get(ak.as_ref()) {
                                        Some(&i) => slots[i] = Some(av),
                                        None => {
                                            let pointer = format!("{}/{}", Section::Attributes.pointer(), escape_pointer(ak));
                                            left.add(&pointer, av)
                                        }
                                    }
                                }
                            }
                            _ => left.add(&format!("/data/{}", escape_pointer(dk)), dv),
                        }
                    }
                }
                _ => left.add(&format!("/{}", escape_pointer(k)), v),
            }
        }
        for ((b, p), slot) in builders.iter_mut().zip(&pointers).zip(&slots) {
            ptr.clear();
            ptr.push_str(p);
            b.append(*slot, &mut ptr, &mut left, false);
        }
        left.finish_row(&mut leftovers);
    }

    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.columns.len() + 3);
    arrays.push(Arc::new(ids.finish()));
    arrays.push(Arc::new(times.finish()));
    for b in builders {
        arrays.push(b.finish()?);
    }
    arrays.push(Arc::new(leftovers.finish()));
    Ok(RecordBatch::try_new(schema.arrow_schema(), arrays)?)
}

/// Rebuilds the events of a batch written with (a subset of) `schema`, as JSON values.
/// `event_type` is the partition's type (the files do not repeat it). A number that no f64
/// holds exactly becomes the nearest f64 here; [`decode_json`] keeps its digits.
pub fn decode(schema: &TypeSchema, event_type: &str, batch: &RecordBatch) -> Result<Vec<Value>, LakeError> {
    let mut out = Vec::with_capacity(batch.num_rows());
    decode_rows(schema, event_type, batch, |event| out.push(event.to_value()))?;
    Ok(out)
}

/// Rebuilds the events of a batch as JSON texts, every number with the digits it was
/// written with (what `eventctl cat` prints). Object members come sorted by key.
pub fn decode_json(schema: &TypeSchema, event_type: &str, batch: &RecordBatch) -> Result<Vec<String>, LakeError> {
    let mut out = Vec::with_capacity(batch.num_rows());
    decode_rows(schema, event_type, batch, |event| {
        let mut text = String::with_capacity(256);
        event.write_json(&mut text);
        out.push(text);
    })?;
    Ok(out)
}

/// Rebuilds each row of a batch as a [`Node`] tree (borrowing from the batch) and hands it
/// to `emit`.
fn decode_rows<'b>(
    schema: &'b TypeSchema,
    event_type: &'b str,
    batch: &'b RecordBatch,
    mut emit: impl FnMut(Node<'b>),
) -> Result<(), LakeError> {
    let ids = batch
        .column_by_name(ID)
        .and_then(|a| a.as_string_opt::<i32>())
        .ok_or_else(|| LakeError::Corrupt("no string column `id`".into()))?;
    let times = batch
        .column_by_name(CREATED_AT)
        .and_then(|a| a.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| LakeError::Corrupt("no timestamp column `created_at`".into()))?;
    let leftovers = batch.column_by_name(LEFTOVERS).and_then(|a| a.as_string_opt::<i32>());
    let columns: Vec<(&'b crate::schema::Column, &'b ArrayRef)> = schema
        .columns
        .iter()
        .filter_map(|c| batch.column_by_name(&c.name).map(|a| (c, a)))
        .collect();

    for row in 0..batch.num_rows() {
        let mut attributes: Members<'b> = Vec::new();
        let mut meta: Members<'b> = vec![(Cow::Borrowed("created_at"), Node::Int(times.value(row)))];
        for &(c, array) in &columns {
            if let Some(v) = to_node(&c.dtype, array.as_ref(), row)? {
                match c.section {
                    Section::Meta => meta.push((Cow::Borrowed(c.key.as_str()), v)),
                    Section::Attributes => attributes.push((Cow::Borrowed(c.key.as_str()), v)),
                }
            }
        }
        let data = vec![
            (Cow::Borrowed("id"), Node::Str(Cow::Borrowed(ids.value(row)))),
            (Cow::Borrowed("type"), Node::Str(Cow::Borrowed(event_type))),
            (Cow::Borrowed("attributes"), Node::Object(attributes)),
        ];
        let mut event = Node::Object(vec![(Cow::Borrowed("data"), Node::Object(data)), (Cow::Borrowed("meta"), Node::Object(meta))]);
        if let Some(left) = leftovers.filter(|l| l.is_valid(row)) {
            let map = Node::parse(left.value(row).as_bytes())
                .map_err(|e| LakeError::Corrupt(format!("`_leftovers` is not JSON: {e}")))?;
            let Node::Object(members) = map else {
                return Err(LakeError::Corrupt("`_leftovers` is not a JSON object".into()));
            };
            for (pointer, v) in members {
                set_pointer(&mut event, &pointer, v)?;
            }
        }
        event.sort_keys();
        emit(event);
    }
    Ok(())
}

/// The value of one cell, `None` when null.
fn to_node<'b>(t: &DType, array: &'b dyn Array, row: usize) -> Result<Option<Node<'b>>, LakeError> {
    if array.is_null(row) {
        return Ok(None);
    }
    let bad = || LakeError::Corrupt(format!("column type {:?} does not match {t:?}", array.data_type()));
    Ok(Some(match t {
        DType::Bool => Node::Bool(array.as_boolean_opt().ok_or_else(bad)?.value(row)),
        DType::Int => Node::Int(array.as_primitive_opt::<Int64Type>().ok_or_else(bad)?.value(row)),
        DType::Float => {
            let f = array.as_primitive_opt::<Float64Type>().ok_or_else(bad)?.value(row);
            if f.is_finite() { Node::Float(f) } else { Node::Null }
        }
        DType::Str => Node::Str(Cow::Borrowed(array.as_string_opt::<i32>().ok_or_else(bad)?.value(row))),
        DType::Json => {
            let text = array.as_string_opt::<i32>().ok_or_else(bad)?.value(row);
            Node::parse(text.as_bytes()).map_err(|e| LakeError::Corrupt(format!("bad JSON cell: {e}")))?
        }
        DType::List { item } => {
            let list = array.as_list_opt::<i32>().ok_or_else(bad)?;
            let offsets = list.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            let values: &'b dyn Array = list.values().as_ref();
            let mut items = Vec::with_capacity(end - start);
            for i in start..end {
                items.push(to_node(item, values, i)?.unwrap_or(Node::Null));
            }
            Node::Array(items)
        }
        DType::Struct { fields } => {
            let st = array.as_struct_opt().ok_or_else(bad)?;
            let mut members = Vec::new();
            for f in fields {
                if let Some(child) = st.column_by_name(&f.name)
                    && let Some(v) = to_node(&f.dtype, child.as_ref(), row)?
                {
                    members.push((Cow::Owned(f.name.clone()), v));
                }
            }
            Node::Object(members)
        }
    }))
}

/// Sets the value at an RFC 6901 pointer, creating missing object members on the way.
fn set_pointer<'b>(root: &mut Node<'b>, pointer: &str, v: Node<'b>) -> Result<(), LakeError> {
    let segments: Vec<String> =
        pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    let Some((last, parents)) = segments.split_last() else {
        return Err(LakeError::Corrupt(format!("leftover pointer {pointer:?} is empty")));
    };
    let missing = || LakeError::Corrupt(format!("leftover pointer {pointer:?} misses an array item"));
    let mut cur = root;
    for seg in parents {
        cur = match cur {
            Node::Object(members) => {
                let i = match members.iter().position(|(k, _)| k == seg) {
                    Some(i) => i,
                    None => {
                        members.push((Cow::Owned(seg.clone()), Node::Object(Vec::new())));
                        members.len() - 1
                    }
                };
                &mut members[i].1
            }
            Node::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)).ok_or_else(missing)?,
            _ => return Err(LakeError::Corrupt(format!("leftover pointer {pointer:?} crosses a scalar"))),
        };
    }
    match cur {
        Node::Object(members) => match members.iter_mut().find(|(k, _)| k == last) {
            Some((_, slot)) => *slot = v,
            None => members.push((Cow::Owned(last.clone()), v)),
        },
        Node::Array(items) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < items.len()).ok_or_else(missing)?;
            items[i] = v;
        }
        _ => return Err(LakeError::Corrupt(format!("leftover pointer {pointer:?} crosses a scalar"))),
    }
    Ok(())
}

/// The equality the lake's read-back keeps: JSON values equal with numbers compared by
/// value (`1 == 1.0`), as JSON Schema defines it; object key order does not matter.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}
