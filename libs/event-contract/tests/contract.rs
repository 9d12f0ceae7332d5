//! Every reason code of the contract, and the valid shapes it must accept.

use event_contract::{Limits, Reason, validate};

fn reason(line: &str) -> Reason {
    match validate(line.as_bytes(), &Limits::default()) {
        Ok(e) => panic!("expected a rejection for {line}, got {e:?}"),
        Err(r) => r.reason,
    }
}

const OK: &str = r#"{"data":{"id":"e1","type":"product_viewed","attributes":{"user_id":"u1"}},"meta":{"created_at":1700000000000}}"#;

#[test]
fn accepts_a_valid_event_and_borrows_its_fields() {
    let e = validate(OK.as_bytes(), &Limits::default()).expect("valid");
    assert_eq!(e.id, "e1");
    assert_eq!(e.event_type, "product_viewed");
    assert_eq!(e.created_at, 1_700_000_000_000);
    assert_eq!(e.raw, OK.as_bytes());
    assert!(matches!(e.id, std::borrow::Cow::Borrowed(_)));
}

#[test]
fn accepts_any_key_order_escapes_extra_keys_and_white_space() {
    let line = r#"  {"meta":{"source":"ios","created_at":0},"links":{"a":[1,2,{"b":null}]},"data":{"attributes":{},"type":"a.b-c_1","id":"\u0065\u00e9","relationships":{}}} "#;
    let e = validate(line.as_bytes(), &Limits::default()).expect("valid");
    assert_eq!(e.id, "eé");
    assert_eq!(e.event_type, "a.b-c_1");
    assert_eq!(e.created_at, 0);
}

#[test]
fn rejects_each_reason() {
    let cases: &[(&str, Reason)] = &[
        ("", Reason::EmptyLine),
        ("   \t", Reason::EmptyLine),
        ("{\"data\":", Reason::InvalidJson),
        (r#"{"data":{"id":"a","type":"t","attributes":{"x":NaN}},"meta":{"created_at":1}}"#, Reason::InvalidJson),
        (r#"{"data":{"id":"a","type":"t","attributes":{"x":Infinity}},"meta":{"created_at":1}}"#, Reason::InvalidJson),
        (r#"{"data":{"id":"a","type":"t","attributes":{"x":"\ud800"}},"meta":{"created_at":1}}"#, Reason::InvalidJson),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":1}} {}"#, Reason::TrailingData),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":1}}x"#, Reason::TrailingData),
        ("[1,2]", Reason::NotAnObject),
        ("42", Reason::NotAnObject),
        ("\"x\"", Reason::NotAnObject),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"data":{},"meta":{"created_at":1}}"#, Reason::DuplicateKey),
        (r#"{"data":{"id":"a","id":"b","type":"t","attributes":{}},"meta":{"created_at":1}}"#, Reason::DuplicateKey),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":1,"created_at":2}}"#, Reason::DuplicateKey),
        (r#"{"data":{"id":"a","type":"t","attributes":{"k":1,"\u006b":2}},"meta":{"created_at":1}}"#, Reason::DuplicateKey),
        (r#"{"data":{"id":"a","type":"t","attributes":{"n":[{"q":1,"q":1}]}},"meta":{"created_at":1}}"#, Reason::DuplicateKey),
        (r#"{"meta":{"created_at":1}}"#, Reason::MissingData),
        (r#"{"data":[],"meta":{"created_at":1}}"#, Reason::DataNotObject),
        (r#"{"data":{"type":"t","attributes":{}},"meta":{"created_at":1}}"#, Reason::MissingId),
        (r#"{"data":{"id":"","type":"t","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidId),
        (r#"{"data":{"id":7,"type":"t","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidId),
        (r#"{"data":{"id":"a","attributes":{}},"meta":{"created_at":1}}"#, Reason::MissingType),
        (r#"{"data":{"id":"a","type":"../etc","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":"a/b","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":".hidden","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":"a=b","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":"","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":5,"attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":"a.","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a","type":"a..b","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidType),
        (r#"{"data":{"id":"a\r\nX-Evil: 1","type":"t","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidId),
        (r#"{"data":{"id":"a\u0000","type":"t","attributes":{}},"meta":{"created_at":1}}"#, Reason::InvalidId),
        (r#"{"data":{"id":"a","type":"t","attributes":{"user_id":""}},"meta":{"created_at":1}}"#, Reason::InvalidKey),
        (r#"{"data":{"id":"a","type":"t","attributes":{"product_id":"p\n"}},"meta":{"created_at":1}}"#, Reason::InvalidKey),
        (r#"{"data":{"id":"a","type":"t"},"meta":{"created_at":1}}"#, Reason::MissingAttributes),
        (r#"{"data":{"id":"a","type":"t","attributes":[1]},"meta":{"created_at":1}}"#, Reason::AttributesNotObject),
        (r#"{"data":{"id":"a","type":"t","attributes":null},"meta":{"created_at":1}}"#, Reason::AttributesNotObject),
        (r#"{"data":{"id":"a","type":"t","attributes":{}}}"#, Reason::MissingMeta),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":"x"}"#, Reason::MetaNotObject),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{}}"#, Reason::MissingCreatedAt),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":1.5}}"#, Reason::InvalidCreatedAt),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":1.0}}"#, Reason::InvalidCreatedAt),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":17e11}}"#, Reason::InvalidCreatedAt),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":"1700000000000"}}"#, Reason::InvalidCreatedAt),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":-1}}"#, Reason::CreatedAtOutOfRange),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":4102444800000}}"#, Reason::CreatedAtOutOfRange),
        (r#"{"data":{"id":"a","type":"t","attributes":{}},"meta":{"created_at":99999999999999999999999}}"#, Reason::InvalidCreatedAt),
    ];
    for (line, want) in cases {
        assert_eq!(reason(line), *want, "line {line}");
    }
}

#[test]
fn rejects_invalid_utf8_and_too_large() {
    let mut bad = OK.as_bytes().to_vec();
    bad[20] = 0xff;
    assert_eq!(validate(&bad, &Limits::default()).unwrap_err().reason, Reason::InvalidUtf8);
    let limits = Limits { max_event_bytes: 50, ..Limits::default() };
    assert_eq!(validate(OK.as_bytes(), &limits).unwrap_err().reason, Reason::TooLarge);
}

#[test]
fn bounds_are_configurable() {
    let limits = Limits { min_created_at: 1_800_000_000_000, ..Limits::default() };
    assert_eq!(validate(OK.as_bytes(), &limits).unwrap_err().reason, Reason::CreatedAtOutOfRange);
}

#[test]
fn syntax_errors_win_over_semantic_ones() {
    // Missing data AND broken JSON: the JSON error is reported.
    assert_eq!(reason(r#"{"meta":{"created_at":1}"#), Reason::InvalidJson);
    // Duplicate key AND trailing garbage: trailing data is reported.
    assert_eq!(reason(r#"{"a":1,"a":2} x"#), Reason::TrailingData);
}

#[test]
fn duplicate_key_detail_names_the_place() {
    let r = validate(
        br#"{"data":{"id":"a","type":"t","attributes":{"o":{"k/x":1,"k/x":2}}},"meta":{"created_at":1}}"#,
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(r.reason, Reason::DuplicateKey);
    assert!(r.detail.contains("/data/attributes/o"), "{}", r.detail);
}

#[test]
fn duplicates_are_found_in_objects_of_any_size() {
    // Small objects keep their keys on the stack, large ones in a hash set: a repeated key is
    // found on either side of the switch, and distinct keys are never taken for repeats.
    for n in [1usize, 15, 16, 17, 40] {
        let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
        let line = |attrs: &str| format!(r#"{{"data":{{"id":"a","type":"t","attributes":{{{attrs}}}}},"meta":{{"created_at":1}}}}"#);
        assert!(validate(line(&keys.join(",")).as_bytes(), &Limits::default()).is_ok(), "{n} distinct keys");
        for repeat in [0, n / 2, n - 1] {
            let attrs = format!("{},\"k{repeat}\":0", keys.join(","));
            let r = validate(line(&attrs).as_bytes(), &Limits::default()).unwrap_err();
            assert_eq!(r.reason, Reason::DuplicateKey, "{n} keys, k{repeat} repeated");
        }
    }
}

#[test]
fn codes_round_trip_and_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for r in Reason::ALL {
        assert!(seen.insert(r.code()));
        assert_eq!(Reason::from_code(r.code()), Some(r));
        assert!(!r.description().is_empty());
    }
}

#[test]
fn ids_keys_and_field_names_are_bounded_to_fit_every_store() {
    use event_contract::bounds::{MAX_FIELD_NAME_BYTES, MAX_ID_BYTES, MAX_KEY_BYTES};
    let with_id = |id: &str| format!(r#"{{"data":{{"id":"{id}","type":"t","attributes":{{}}}},"meta":{{"created_at":1}}}}"#);
    assert!(validate(with_id(&"i".repeat(MAX_ID_BYTES)).as_bytes(), &Limits::default()).is_ok());
    assert_eq!(reason(&with_id(&"i".repeat(MAX_ID_BYTES + 1))), Reason::InvalidId);
    // A multi-byte id is counted in bytes.
    assert_eq!(reason(&with_id(&"é".repeat(MAX_ID_BYTES / 2 + 1))), Reason::InvalidId);

    let with_key = |k: &str| format!(r#"{{"data":{{"id":"a","type":"t","attributes":{{"n":{{"{k}":1}}}}}},"meta":{{"created_at":1}}}}"#);
    assert!(validate(with_key(&"k".repeat(MAX_FIELD_NAME_BYTES)).as_bytes(), &Limits::default()).is_ok());
    assert_eq!(reason(&with_key(&"k".repeat(MAX_FIELD_NAME_BYTES + 1))), Reason::FieldNameTooLong);

    for attr in ["user_id", "product_id", "owner_id"] {
        let with = |v: &str| format!(r#"{{"data":{{"id":"a","type":"t","attributes":{{"{attr}":"{v}"}}}},"meta":{{"created_at":1}}}}"#);
        assert!(validate(with(&"u".repeat(MAX_KEY_BYTES)).as_bytes(), &Limits::default()).is_ok());
        assert_eq!(reason(&with(&"u".repeat(MAX_KEY_BYTES + 1))), Reason::InvalidKey, "{attr}");
    }
    // Integers are keys too, and always within bounds; other attributes are not keys.
    let int_key = r#"{"data":{"id":"a","type":"t","attributes":{"user_id":123456789012,"name":""}},"meta":{"created_at":1}}"#;
    assert!(validate(int_key.as_bytes(), &Limits::default()).is_ok());
}

#[test]
fn every_accepted_type_is_a_valid_subject() {
    use event_contract::wire::Subject;
    for t in ["a", "a.b", "a-b.c_d", "_", "A9"] {
        let line = format!(r#"{{"data":{{"id":"a","type":"{t}","attributes":{{}}}},"meta":{{"created_at":1}}}}"#);
        let e = validate(line.as_bytes(), &Limits::default()).expect(t);
        let subject = Subject::event(&e.event_type).to_string();
        assert!(subject.split('.').all(|token| !token.is_empty()), "{subject}");
        assert_eq!(Subject::parse(&subject).expect("parses").event_type(), Some(t));
    }
}

/// A generated input: bytes drawn from an alphabet that reaches every branch of the
/// validator (structure, escapes, control characters, dots, long runs).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failure is reproducible from its seed.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[test]
fn generated_inputs_never_panic_and_every_accepted_one_fits_every_store() {
    use event_contract::bounds::{MAX_ID_BYTES, MAX_TYPE_BYTES};
    use event_contract::wire::{Subject, dedup_id};
    let types = ["t", "a.b", "a.", "a..b", ".a", "-a", "a-b", "a b", "a*", "a>", "é", "_x.y_z", "", "a\\u0000", "a.b.c.d"];
    let ids = ["e1", "", "a\\r\\nb", "\\u0007", "é", "x:y", "\\ud83d\\ude00", "a\\u2028b"];
    let pads = ["", "x", "\\u0000", "\\n", "é"];
    let mut g = Gen(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for case in 0..20_000 {
        let event_type = format!("{}{}", g.pick(&types), g.pick(&types)).repeat(1 + (g.next() % 4) as usize * (g.next() % 40) as usize);
        let id = format!("{}{}", g.pick(&ids), g.pick(&pads).repeat((g.next() % 300) as usize));
        let key = g.pick(&["user_id", "product_id", "owner_id", "other"]);
        let value = g.pick(&pads).repeat((g.next() % 300) as usize);
        let line = format!(r#"{{"data":{{"id":"{id}","type":"{event_type}","attributes":{{"{key}":"{value}"}}}},"meta":{{"created_at":{case}}}}}"#);
        let mut bytes = line.into_bytes();
        // Some inputs are also damaged at a random byte.
        if g.next() % 5 == 0 {
            let at = (g.next() % bytes.len() as u64) as usize;
            bytes[at] = (g.next() & 0xff) as u8;
        }
        match validate(&bytes, &Limits::default()) {
            Ok(e) => {
                accepted += 1;
                assert!(!e.id.is_empty() && e.id.len() <= MAX_ID_BYTES && !e.id.chars().any(char::is_control), "case {case}: id {:?}", e.id);
                assert!(e.event_type.len() <= MAX_TYPE_BYTES, "case {case}");
                let subject = Subject::event(&e.event_type).to_string();
                assert_eq!(Subject::parse(&subject).ok().and_then(|s| s.event_type().map(str::to_owned)).as_deref(), Some(&*e.event_type), "case {case}");
                assert!(subject.split('.').all(|t| !t.is_empty()), "case {case}: {subject}");
                let dedup = dedup_id(&e.event_type, &e.id);
                assert!(dedup.len() <= MAX_TYPE_BYTES + 1 + MAX_ID_BYTES && !dedup.chars().any(char::is_control));
            }
            Err(r) => assert_eq!(Reason::from_code(r.reason.code()), Some(r.reason), "case {case}: classified"),
        }
    }
    assert!(accepted > 100 && accepted < 19_000, "the generator reaches both sides: {accepted} accepted");
}
