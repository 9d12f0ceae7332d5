//! What may travel: the bounds every part of an event must respect so that each store and
//! wire format downstream can hold it, in one place. The gateway, `eventctl ingest` and the
//! lake writer check events with [`crate::validate`], which applies these bounds; services
//! that read keys out of events (the timeline's user, the features' product) size their keys
//! and cursors from the constants here.
//!
//! | part | bound | reason code when broken | why |
//! |---|---|---|---|
//! | `data.type` | 1 to [`MAX_TYPE_BYTES`] bytes of `A-Z a-z 0-9 _ . -`, first `A-Z a-z 0-9 _`, `.`-separated tokens none empty (`a.`, `a..b`, `.a` refused) | `invalid_type` | it becomes a bus subject (`raw-event.<type>`: NATS refuses empty tokens) and a lake path segment |
//! | `data.id` | 1 to [`MAX_ID_BYTES`] bytes, no control character (U+0000-U+001F, U+007F-U+009F) | `invalid_id` | it goes into the `Nats-Msg-Id` header (CR/LF would split it) and into the timeline's DynamoDB sort key (`<13 digits>#<id>`, at most 270 of DynamoDB's 1,024 bytes) and cursor |
//! | field names (every object key, at any depth) | at most [`MAX_FIELD_NAME_BYTES`] bytes | `field_name_too_long` | they become Parquet column names and JSON Pointers in `_leftovers` |
//! | `data.attributes.{user_id, product_id, owner_id}` when a string | 1 to [`MAX_KEY_BYTES`] bytes, no control character | `invalid_key` | they are DynamoDB partition keys, Redis keys and stats keys; an integer is always within bounds |
//!
//! The longest bus subject is `replay.` + 64 + `.` + [`MAX_TYPE_BYTES`] = 200 bytes; the bus
//! dedup id ([`crate::wire::dedup_id`]) is at most `MAX_TYPE_BYTES + 1 + MAX_ID_BYTES` = 385
//! bytes of printable characters.

/// Longest `data.type`, in bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Longest `data.id`, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest object key anywhere in an event, in bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 256;
/// Longest user, product or owner key (`data.attributes.{user_id,product_id,owner_id}`), in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The attributes that name a user, a product or an owner, checked against [`MAX_KEY_BYTES`].
pub const KEY_ATTRIBUTES: [&str; 3] = ["user_id", "product_id", "owner_id"];

/// True when `t` is a valid event type: 1 to [`MAX_TYPE_BYTES`] bytes among
/// `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`, made of `.`-separated tokens none of
/// which is empty (so `raw-event.<type>` is a valid NATS subject).
pub fn is_valid_type(t: &str) -> bool {
    type_problem(t).is_none()
}

/// What is wrong with a type, for the rejection's detail; `None` when it is valid.
pub fn type_problem(t: &str) -> Option<&'static str> {
    let b = t.as_bytes();
    let Some(first) = b.first() else { return Some("is empty") };
    if b.len() > MAX_TYPE_BYTES {
        return Some("is longer than 128 bytes");
    }
    if !(first.is_ascii_alphanumeric() || *first == b'_') {
        return Some("must start with A-Z, a-z, 0-9 or _");
    }
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')) {
        return Some("may only hold A-Z, a-z, 0-9, _, . and -");
    }
    if t.split('.').any(str::is_empty) {
        return Some("has an empty token (a trailing dot or two dots in a row): it must map to a bus subject");
    }
    None
}

/// The problem of a type (for details).
pub(crate) fn describe_type_problem(t: &str) -> &'static str {
    type_problem(t).unwrap_or("is valid")
}

/// True for the characters refused in ids and keys: C0 controls, DEL and C1 controls.
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// What is wrong with a `data.id`, if anything.
pub fn id_problem(id: &str) -> Option<String> {
    text_problem(id, MAX_ID_BYTES)
}

/// What is wrong with a user, product or owner key, if anything.
pub fn key_problem(key: &str) -> Option<String> {
    text_problem(key, MAX_KEY_BYTES)
}

fn text_problem(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".to_owned());
    }
    if s.len() > max {
        return Some(format!("is {} bytes, the limit is {max}", s.len()));
    }
    s.char_indices()
        .find(|(_, c)| is_control(*c))
        .map(|(at, c)| format!("holds the control character U+{:04X} at byte {at}", u32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_subjects() {
        for ok in ["a", "a.b", "a.b-c_1", "_x", "0", "a-", "a.-b"] {
            assert!(is_valid_type(ok), "{ok}");
        }
        for bad in ["", "a.", "a..b", ".a", "-a", "a b", "a*", "a>", "a.>", &"a".repeat(129)] {
            assert!(!is_valid_type(bad), "{bad}");
        }
        assert!(is_valid_type(&"a".repeat(128)));
    }

    #[test]
    fn ids_and_keys() {
        assert_eq!(id_problem("e1"), None);
        assert_eq!(id_problem(&"x".repeat(MAX_ID_BYTES)), None);
        assert!(id_problem(&"x".repeat(MAX_ID_BYTES + 1)).is_some());
        for bad in ["a\r\nb", "a\n", "\0", "a\u{7f}", "a\u{85}", ""] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(id_problem("é ü 漢 \u{2028}"), None);
        assert!(key_problem(&"u".repeat(MAX_KEY_BYTES + 1)).is_some());
    }
}
