//! `openapi/event.schema.json` is generated from the code and agrees with the validator: on a
//! corpus of valid and invalid events (one or more per rejection reason JSON Schema can
//! express), a JSON Schema validator (Python's `jsonschema`, draft 2020-12) and
//! `event_contract::validate` give the same verdict; on the documented cases the schema
//! cannot express (lengths in bytes of non-ASCII text, `1.0` as an integer), the schema is
//! looser, never stricter.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use event_contract::{Limits, validate};
use serde_json::{Value, json};

fn base() -> Value {
    json!({"data": {"id": "e1", "type": "product_viewed", "attributes": {"user_id": "u1", "product_id": 42, "price": 12.5, "tags": ["a", {"k": null}]}},
           "meta": {"created_at": 1_795_392_000_000i64, "source": "ios"}})
}

/// `base()` changed by `f`.
fn with(f: impl FnOnce(&mut Value)) -> String {
    let mut v = base();
    f(&mut v);
    v.to_string()
}

fn corpus() -> Vec<(String, String, bool)> {
    let long = |n: usize| "k".repeat(n);
    let mut c: Vec<(&str, String)> = vec![
        ("valid", base().to_string()),
        ("extra keys anywhere", with(|v| {
            v["extra"] = json!(1);
            v["data"]["more"] = json!({"x": [1, 2]});
        })),
        ("a key of 256 bytes deep inside", with(|v| v["data"]["attributes"]["tags"][1] = json!({ long(256): {"y": [{ long(256): 1 }]} }))),
        ("key attributes as integers and other values", with(|v| {
            v["data"]["attributes"]["user_id"] = json!(7);
            v["data"]["attributes"]["owner_id"] = json!(true);
        })),
        ("created_at at both ends", with(|v| v["meta"]["created_at"] = json!(0))),
        ("created_at just below the bound", with(|v| v["meta"]["created_at"] = json!(4_102_444_799_999i64))),
        ("type with dashes and dots", with(|v| v["data"]["type"] = json!("app.search-results_shown.v2"))),
        ("an id of 256 bytes", with(|v| v["data"]["id"] = json!("i".repeat(256)))),
        ("not an object", "[1, 2]".to_owned()),
        ("a number", "42".to_owned()),
        ("no data", with(|v| v.as_object_mut().unwrap().remove("data").map(|_| ()).unwrap())),
        ("data not an object", with(|v| v["data"] = json!("x"))),
        ("no id", with(|v| v["data"].as_object_mut().unwrap().remove("id").map(|_| ()).unwrap())),
        ("empty id", with(|v| v["data"]["id"] = json!(""))),
        ("id of 257 bytes", with(|v| v["data"]["id"] = json!("i".repeat(257)))),
        ("id with a line feed", with(|v| v["data"]["id"] = json!("a\nb"))),
        ("id with a C1 control", with(|v| v["data"]["id"] = json!("a\u{85}b"))),
        ("id with DEL", with(|v| v["data"]["id"] = json!("a\u{7f}"))),
        ("id a number", with(|v| v["data"]["id"] = json!(5))),
        ("no type", with(|v| v["data"].as_object_mut().unwrap().remove("type").map(|_| ()).unwrap())),
        ("type with a trailing dot", with(|v| v["data"]["type"] = json!("a."))),
        ("type with two dots", with(|v| v["data"]["type"] = json!("a..b"))),
        ("type starting with a dot", with(|v| v["data"]["type"] = json!(".a"))),
        ("type starting with a dash", with(|v| v["data"]["type"] = json!("-a"))),
        ("type with a space", with(|v| v["data"]["type"] = json!("a b"))),
        ("type with a wildcard", with(|v| v["data"]["type"] = json!("a.*"))),
        ("type of 129 bytes", with(|v| v["data"]["type"] = json!("t".repeat(129)))),
        ("type a number", with(|v| v["data"]["type"] = json!(3))),
        ("no attributes", with(|v| v["data"].as_object_mut().unwrap().remove("attributes").map(|_| ()).unwrap())),
        ("attributes an array", with(|v| v["data"]["attributes"] = json!([]))),
        ("empty user_id", with(|v| v["data"]["attributes"]["user_id"] = json!(""))),
        ("product_id of 257 bytes", with(|v| v["data"]["attributes"]["product_id"] = json!("p".repeat(257)))),
        ("owner_id with a control", with(|v| v["data"]["attributes"]["owner_id"] = json!("o\u{1}"))),
        ("no meta", with(|v| v.as_object_mut().unwrap().remove("meta").map(|_| ()).unwrap())),
        ("meta a string", with(|v| v["meta"] = json!("m"))),
        ("no created_at", with(|v| v["meta"].as_object_mut().unwrap().remove("created_at").map(|_| ()).unwrap())),
        ("created_at a string", with(|v| v["meta"]["created_at"] = json!("2026-01-01"))),
        ("created_at with a fraction", with(|v| v["meta"]["created_at"] = json!(1.5))),
        ("created_at negative", with(|v| v["meta"]["created_at"] = json!(-1))),
        ("created_at at the bound", with(|v| v["meta"]["created_at"] = json!(4_102_444_800_000i64))),
        ("a top-level key of 257 bytes", with(|v| v[long(257)] = json!(1))),
        ("an attribute name of 257 bytes", with(|v| v["data"]["attributes"][long(257)] = json!(1))),
        ("a key of 257 bytes in a list in an attribute", with(|v| v["data"]["attributes"]["tags"][1] = json!({ long(257): 1 }))),
        ("a meta key of 257 bytes", with(|v| v["meta"][long(257)] = json!(1))),
    ];
    let mut out: Vec<(String, String, bool)> = c.drain(..).map(|(k, e)| (k.to_owned(), e, false)).collect();
    // The schema is looser here (documented): lengths count characters, not bytes; 1.0 is an
    // integer to JSON Schema.
    out.push(("an id of 200 two-byte characters (400 bytes)".into(), with(|v| v["data"]["id"] = json!("é".repeat(200))), true));
    out.push(("a user_id of 200 two-byte characters".into(), with(|v| v["data"]["attributes"]["user_id"] = json!("é".repeat(200))), true));
    out.push(("created_at written 1.0".into(), base().to_string().replace("1795392000000", "1795392000000.0"), true));
    out
}

#[test]
fn the_checked_in_schema_is_generated_from_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/event.schema.json");
    let current = event_contract::schema::pretty_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).expect("write openapi/event.schema.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "openapi/event.schema.json is stale: run `UPDATE_OPENAPI=1 cargo test --workspace --test schema` and commit it"
    );
}

#[test]
fn the_schema_and_the_validator_agree_on_a_corpus() {
    let python = std::env::var("EVENTPLAT_PYTHON")
        .unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh (it installs jsonschema)"));
    let corpus = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let schema_path = dir.path().join("event.schema.json");
    std::fs::write(&schema_path, event_contract::schema::pretty_json()).expect("write schema");
    let mut lines = String::new();
    for (name, event, looser) in &corpus {
        let valid = validate(event.as_bytes(), &Limits::default()).is_ok();
        lines.push_str(&json!({"name": name, "event": event, "valid": valid, "looser": looser}).to_string());
        lines.push('\n');
    }
    let corpus_path = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus_path, lines).expect("write corpus");
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
bad = []
n = 0
for line in open(sys.argv[2]):
    case = json.loads(line)
    n += 1
    ok = v.is_valid(json.loads(case["event"]))
    if case["looser"]:
        if not ok or case["valid"]:
            bad.append(f"{case['name']}: schema {ok}, validator {case['valid']} (expected: schema looser)")
    elif ok != case["valid"]:
        bad.append(f"{case['name']}: schema {ok}, validator {case['valid']}")
print(json.dumps({"cases": n, "disagreements": bad}))
"#;
    let out = Command::new(python).args(["-c", script]).arg(&schema_path).arg(&corpus_path).output().expect("run python");
    assert!(out.status.success(), "jsonschema failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["cases"].as_u64(), Some(corpus.len() as u64));
    assert_eq!(report["disagreements"], json!([]), "{report}");
    // The corpus covers both verdicts.
    let valid = corpus.iter().filter(|(_, e, _)| validate(e.as_bytes(), &Limits::default()).is_ok()).count();
    assert!(valid >= 7 && valid < corpus.len() - 20, "{valid} valid of {}", corpus.len());
}
