//! The contract as a JSON Schema (draft 2020-12), generated from the same bounds the
//! validator applies ([`crate::bounds`], [`crate::Limits`]): checked in as
//! `openapi/event.schema.json` and used as the gateway's OpenAPI request body, so producers can
//! check events before sending them and API tools (schemathesis, code generators) know them.
//!
//! JSON Schema sees parsed JSON, so a few rules of the validator are only described, not
//! expressed: the event's size in bytes (`max_event_bytes`), lengths in bytes (the schema's
//! `maxLength` counts characters: the same for ASCII, looser for other text), duplicate keys,
//! integers written with a fraction or an exponent (`1.0` is refused as `created_at`) and
//! invalid UTF-8. The schema never refuses an event the validator accepts; a test checks both
//! on a corpus.

use serde_json::{Value, json};

use crate::Limits;
use crate::bounds::{KEY_ATTRIBUTES, MAX_FIELD_NAME_BYTES, MAX_ID_BYTES, MAX_KEY_BYTES, MAX_TYPE_BYTES};

/// `$id` of the standalone document.
pub const SCHEMA_ID: &str = "https://eventplat.dev/schemas/event.schema.json";

/// Text without control characters (U+0000-U+001F, U+007F-U+009F).
const NO_CONTROL: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// `data.type`: `.`-separated non-empty tokens of `A-Z a-z 0-9 _ -`, the first starting with
/// a letter, digit or `_`.
pub const TYPE_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$";

/// Any JSON value whose object keys, at any depth, are within the field-name bound.
pub fn value_schema(value_ref: &str) -> Value {
    json!({
        "description": format!("Any JSON value; object keys at most {MAX_FIELD_NAME_BYTES} bytes at any depth."),
        "propertyNames": {"maxLength": MAX_FIELD_NAME_BYTES},
        "additionalProperties": {"$ref": value_ref},
        "items": {"$ref": value_ref},
    })
}

/// The schema of one event; `value_ref` points at [`value_schema`] (`#/$defs/value` in the
/// standalone document, a component in an OpenAPI document).
pub fn event_schema(limits: &Limits, value_ref: &str) -> Value {
    let names = json!({"maxLength": MAX_FIELD_NAME_BYTES});
    let key = json!({
        "$ref": value_ref,
        "description": format!("When a string: 1 to {MAX_KEY_BYTES} bytes, no control character (an integer is always within bounds)."),
        "minLength": 1,
        "maxLength": MAX_KEY_BYTES,
        "pattern": NO_CONTROL,
    });
    let keys: serde_json::Map<String, Value> = KEY_ATTRIBUTES.iter().map(|k| ((*k).to_owned(), key.clone())).collect();
    json!({
        "title": "Event",
        "description": format!(
            "One domain event. Also checked, and not expressible here: at most {} bytes of UTF-8 JSON, no duplicate key in any object, integers without fraction or exponent (`1.0` is refused as `meta.created_at`), lengths counted in bytes (`maxLength` counts characters: the same for ASCII).",
            limits.max_event_bytes
        ),
        "type": "object",
        "required": ["data", "meta"],
        "propertyNames": names.clone(),
        "additionalProperties": {"$ref": value_ref},
        "properties": {
            "data": {
                "type": "object",
                "required": ["id", "type", "attributes"],
                "propertyNames": names.clone(),
                "additionalProperties": {"$ref": value_ref},
                "properties": {
                    "id": {
                        "type": "string",
                        "description": format!("Unique id of the event: 1 to {MAX_ID_BYTES} bytes, no control character."),
                        "minLength": 1,
                        "maxLength": MAX_ID_BYTES,
                        "pattern": NO_CONTROL,
                    },
                    "type": {
                        "type": "string",
                        "description": format!("The event type, a bus subject's tail and a lake table: 1 to {MAX_TYPE_BYTES} bytes."),
                        "minLength": 1,
                        "maxLength": MAX_TYPE_BYTES,
                        "pattern": TYPE_PATTERN,
                    },
                    "attributes": {
                        "type": "object",
                        "description": "The type's fields. user_id, product_id and owner_id name the user, product and owner the event is about.",
                        "propertyNames": names.clone(),
                        "additionalProperties": {"$ref": value_ref},
                        "properties": keys,
                    },
                },
            },
            "meta": {
                "type": "object",
                "required": ["created_at"],
                "propertyNames": names.clone(),
                "additionalProperties": {"$ref": value_ref},
                "properties": {
                    "created_at": {
                        "type": "integer",
                        "description": "Event time, epoch milliseconds.",
                        "minimum": limits.min_created_at,
                        "exclusiveMaximum": limits.max_created_at,
                    },
                },
            },
        },
    })
}

/// The standalone JSON Schema document of an event (`openapi/event.schema.json`).
pub fn document(limits: &Limits) -> Value {
    let mut schema = event_schema(limits, "#/$defs/value");
    if let Value::Object(m) = &mut schema {
        let mut doc = serde_json::Map::new();
        doc.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        doc.insert("$id".into(), json!(SCHEMA_ID));
        doc.extend(std::mem::take(m));
        doc.insert("$defs".into(), json!({"value": value_schema("#/$defs/value")}));
        return Value::Object(doc);
    }
    schema
}

/// The standalone document as the checked-in text (with the contract's default limits).
pub fn pretty_json() -> String {
    serde_json::to_string_pretty(&document(&Limits::default())).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_pattern_is_the_validators_rule() {
        let re_like = |t: &str| {
            // TYPE_PATTERN by hand: tokens split on '.', each non-empty of [A-Za-z0-9_-], the
            // first not starting with '-'.
            let tokens: Vec<&str> = t.split('.').collect();
            tokens.iter().all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                && !t.starts_with('-')
        };
        for t in ["a", "a.b", "a-b", "_x", "a.-b", "0", "a.", "a..b", ".a", "-a", "a b", "", "é"] {
            assert_eq!(re_like(t) && t.len() <= MAX_TYPE_BYTES, crate::is_valid_type(t), "{t:?}");
        }
    }

    #[test]
    fn the_document_is_a_2020_12_schema_with_its_defs() {
        let d = document(&Limits::default());
        assert_eq!(d["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(d["$defs"]["value"]["items"]["$ref"], "#/$defs/value");
        assert_eq!(d["properties"]["meta"]["properties"]["created_at"]["exclusiveMaximum"], 4_102_444_800_000i64);
        assert_eq!(d["required"], json!(["data", "meta"]));
    }
}
