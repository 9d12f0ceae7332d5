//! The event contract: what makes a line of input a valid event, shared by `eventctl ingest`
//! and the HTTP gateway so both accept and reject exactly the same events.
//!
//! A valid event is one strict JSON object (at most `max_event_bytes`, UTF-8, no duplicate
//! keys in any object, nothing after the value) with `data.id` a string of 1 to 256 bytes
//! without control characters, `data.type` a string matching
//! `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$` without empty `.`-separated tokens, `data.attributes`
//! an object and `meta.created_at` an integer of epoch milliseconds within
//! `[min_created_at, max_created_at)`; field names and the user, product and owner keys are
//! bounded too ([`bounds`] has every bound and why). Every failure has a [`Reason`] with a
//! stable code.
//!
//! [`schema`] is the same contract as a JSON Schema (`openapi/event.schema.json`).
//!
//! [`wire`] is the rest of the contract between the services: the bus subjects, the
//! quarantine and dead-letter messages, and the zero-copy view consumers read events with.

pub mod bounds;
mod reason;
pub mod schema;
mod validate;
pub mod wire;

pub use reason::Reason;
pub use bounds::is_valid_type;
pub use validate::{Event, validate};

/// Checks that `bytes` are UTF-8 and views them as a `str`.
///
/// A SIMD check (several times std's speed on the mostly-ASCII text of events) decides; only
/// invalid input is checked again by std, for the position of the first bad byte.
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes),
    }
}

/// Configurable bounds of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted event, in bytes (default 1 MiB).
    pub max_event_bytes: usize,
    /// Smallest accepted `meta.created_at` (inclusive, default 0).
    pub min_created_at: i64,
    /// Bound of `meta.created_at` (exclusive, default 4102444800000 = 2100-01-01).
    pub max_created_at: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_event_bytes: 1 << 20, min_created_at: 0, max_created_at: 4_102_444_800_000 }
    }
}

/// Why a line was rejected: a stable reason code and a human detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The stable reason.
    pub reason: Reason,
    /// What exactly was wrong, for people.
    pub detail: String,
}

impl Rejection {
    /// A rejection with its detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection { reason, detail: detail.into() }
    }
}
