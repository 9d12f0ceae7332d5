//! The bus subjects of the platform, in one place: what each subject means, how it is
//! written, and how it is read back.
//!
//! | subject | carries | published by |
//! |---|---|---|
//! | `raw-event.<type>` | one valid event (the bytes as received) | the gateway |
//! | `quarantine.<source>` | a [`QuarantineMessage`](super::QuarantineMessage) of a rejected line | the gateway (`quarantine.gateway`) |
//! | `dead-letter.<consumer>` | a [`QuarantineMessage`](super::QuarantineMessage) (reason `consumer_failed`) of a message consumer `<consumer>` could not process | the consumer runtime |
//! | `replay.<consumer>.<type>` | one event re-published for consumer `<consumer>` only | `eventctl replay` |
//!
//! Bounds: `<type>` is a valid event type (`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$` with no
//! empty token, see [`crate::bounds`]; it may span several tokens: `raw-event.a.b`); `<consumer>` and `<source>` are names of 1 to
//! [`MAX_NAME_BYTES`] characters among `A-Z a-z 0-9 _ -` (one token). The longest subject is
//! therefore `replay.` + 64 + `.` + 128 = 200 bytes.

use std::borrow::Cow;
use std::fmt;

use crate::is_valid_type;

/// Prefix of event subjects (`raw-event.<type>`).
pub const EVENT_PREFIX: &str = "raw-event";
/// Prefix of quarantine subjects (`quarantine.<source>`).
pub const QUARANTINE_PREFIX: &str = "quarantine";
/// Prefix of dead-letter subjects (`dead-letter.<consumer>`).
pub const DEAD_LETTER_PREFIX: &str = "dead-letter";
/// Prefix of replay subjects (`replay.<consumer>.<type>`).
pub const REPLAY_PREFIX: &str = "replay";
/// Longest consumer or source name.
pub const MAX_NAME_BYTES: usize = 64;

/// True when `name` can be a consumer or source name: 1 to [`MAX_NAME_BYTES`] characters
/// among `A-Z a-z 0-9 _ -` (one subject token, a valid durable name).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One subject of the platform's bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject<'a> {
    /// `raw-event.<type>`: a valid event.
    Event(Cow<'a, str>),
    /// `quarantine.<source>`: a rejected line.
    Quarantine(Cow<'a, str>),
    /// `dead-letter.<consumer>`: a message the consumer could not process.
    DeadLetter(Cow<'a, str>),
    /// `replay.<consumer>.<type>`: an event re-published for one consumer.
    Replay {
        /// The only consumer that receives it.
        consumer: Cow<'a, str>,
        /// The event's type.
        event_type: Cow<'a, str>,
    },
}

/// Why a string is not a subject of the platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a platform subject: {0}")]
pub struct SubjectError(pub String);

impl<'a> Subject<'a> {
    /// `raw-event.<type>` of a valid event type (see [`is_valid_type`]).
    pub fn event(event_type: &'a str) -> Self {
        Subject::Event(Cow::Borrowed(event_type))
    }

    /// `dead-letter.<consumer>`.
    pub fn dead_letter(consumer: &'a str) -> Self {
        Subject::DeadLetter(Cow::Borrowed(consumer))
    }

    /// `replay.<consumer>.<type>`.
    pub fn replay(consumer: &'a str, event_type: &'a str) -> Self {
        Subject::Replay { consumer: Cow::Borrowed(consumer), event_type: Cow::Borrowed(event_type) }
    }

    /// Reads a subject, checking its names and type.
    pub fn parse(subject: &'a str) -> Result<Self, SubjectError> {
        let bad = || SubjectError(subject.chars().take(256).collect());
        let (prefix, rest) = subject.split_once('.').ok_or_else(bad)?;
        let name = |n: &'a str| if is_valid_name(n) { Ok(Cow::Borrowed(n)) } else { Err(bad()) };
        match prefix {
            EVENT_PREFIX if is_valid_type(rest) => Ok(Subject::Event(Cow::Borrowed(rest))),
            QUARANTINE_PREFIX => Ok(Subject::Quarantine(name(rest)?)),
            DEAD_LETTER_PREFIX => Ok(Subject::DeadLetter(name(rest)?)),
            REPLAY_PREFIX => {
                let (consumer, event_type) = rest.split_once('.').ok_or_else(bad)?;
                if !is_valid_type(event_type) {
                    return Err(bad());
                }
                Ok(Subject::Replay { consumer: name(consumer)?, event_type: Cow::Borrowed(event_type) })
            }
            _ => Err(bad()),
        }
    }

    /// The event type of an event or replay subject.
    pub fn event_type(&self) -> Option<&str> {
        match self {
            Subject::Event(t) | Subject::Replay { event_type: t, .. } => Some(t),
            Subject::Quarantine(_) | Subject::DeadLetter(_) => None,
        }
    }

    /// An owned copy.
    pub fn into_owned(self) -> Subject<'static> {
        match self {
            Subject::Event(t) => Subject::Event(Cow::Owned(t.into_owned())),
            Subject::Quarantine(s) => Subject::Quarantine(Cow::Owned(s.into_owned())),
            Subject::DeadLetter(c) => Subject::DeadLetter(Cow::Owned(c.into_owned())),
            Subject::Replay { consumer, event_type } => {
                Subject::Replay { consumer: Cow::Owned(consumer.into_owned()), event_type: Cow::Owned(event_type.into_owned()) }
            }
        }
    }
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Event(t) => write!(f, "{EVENT_PREFIX}.{t}"),
            Subject::Quarantine(s) => write!(f, "{QUARANTINE_PREFIX}.{s}"),
            Subject::DeadLetter(c) => write!(f, "{DEAD_LETTER_PREFIX}.{c}"),
            Subject::Replay { consumer, event_type } => write!(f, "{REPLAY_PREFIX}.{consumer}.{event_type}"),
        }
    }
}

/// Separates the type from the id in [`dedup_id`]; never part of a valid type.
pub const DEDUP_SEPARATOR: char = ':';

/// The bus's deduplication id of an event (JetStream's `Nats-Msg-Id`, the in-process bus's
/// dedup key): `<type>:<id>`. It covers the type as well as the id, so two events that share
/// an id but not a type are both stored; a valid type holds no `:`, so the pair is read back
/// unambiguously. With the contract's bounds it is at most 385 bytes without control
/// characters (a valid header value).
pub fn dedup_id(event_type: &str, id: &str) -> String {
    let mut out = String::with_capacity(event_type.len() + 1 + id.len());
    out.push_str(event_type);
    out.push(DEDUP_SEPARATOR);
    out.push_str(id);
    out
}

/// The event type of a subject that carries one event (`raw-event.<type>` or
/// `replay.<consumer>.<type>`), without checking the type: the cheap pre-check consumers do
/// on every delivery before parsing its payload.
pub fn event_type_of(subject: &str) -> Option<&str> {
    if let Some(t) = subject.strip_prefix(EVENT_PREFIX).and_then(|r| r.strip_prefix('.')) {
        return Some(t);
    }
    let rest = subject.strip_prefix(REPLAY_PREFIX)?.strip_prefix('.')?;
    rest.split_once('.').map(|(_, t)| t)
}

/// Filters (NATS wildcards) of the subjects.
pub mod filter {
    use super::{DEAD_LETTER_PREFIX, EVENT_PREFIX, QUARANTINE_PREFIX, REPLAY_PREFIX};

    /// Every event: `raw-event.>`.
    pub fn all_events() -> String {
        format!("{EVENT_PREFIX}.>")
    }

    /// The events of one type: `raw-event.<type>`.
    pub fn events_of(event_type: &str) -> String {
        format!("{EVENT_PREFIX}.{event_type}")
    }

    /// Every quarantined line: `quarantine.>`.
    pub fn all_quarantine() -> String {
        format!("{QUARANTINE_PREFIX}.>")
    }

    /// Every dead letter: `dead-letter.>`.
    pub fn all_dead_letters() -> String {
        format!("{DEAD_LETTER_PREFIX}.>")
    }

    /// The replays of one consumer: `replay.<consumer>.>`.
    pub fn replays_of(consumer: &str) -> String {
        format!("{REPLAY_PREFIX}.{consumer}.>")
    }

    /// Every replay: `replay.>`.
    pub fn all_replays() -> String {
        format!("{REPLAY_PREFIX}.>")
    }

    /// What the platform's stream stores: events, quarantine, dead letters and replays.
    pub fn stream_subjects() -> Vec<String> {
        vec![all_events(), all_quarantine(), all_dead_letters(), all_replays()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        for s in ["raw-event.product_viewed", "raw-event.a.b-c", "quarantine.gateway", "dead-letter.timeline", "replay.stats-aggregator.a.b"] {
            let parsed = Subject::parse(s).expect(s);
            assert_eq!(parsed.to_string(), s);
        }
        assert_eq!(Subject::parse("replay.timeline.x").expect("replay").event_type(), Some("x"));
        assert_eq!(Subject::parse("raw-event.x").expect("event").event_type(), Some("x"));
        for bad in ["raw-event.", "raw-event.a.", "raw-event.a..b", "replay.c.a..b", "raw-event.*", "dead-letter.a.b", "dead-letter.", "replay.c", "other.x", "x", "replay.c.bad type"] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
        assert!(Subject::parse(&format!("dead-letter.{}", "a".repeat(65))).is_err());
        assert_eq!(event_type_of("raw-event.a.b"), Some("a.b"));
        assert_eq!(event_type_of("replay.c.t"), Some("t"));
        assert_eq!(event_type_of("quarantine.gateway"), None);
        assert_eq!(dedup_id("a.b", "x:y"), "a.b:x:y");
        // A valid type holds no separator: the first one ends the type.
        assert_eq!(dedup_id("a.b", "c:d").split_once(DEDUP_SEPARATOR), Some(("a.b", "c:d")));
        assert_eq!(filter::stream_subjects(), vec!["raw-event.>", "quarantine.>", "dead-letter.>", "replay.>"]);
    }
}
