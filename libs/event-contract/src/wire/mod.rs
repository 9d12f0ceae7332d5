//! The wire contract: what travels on the bus between the gateway, the consumers and
//! `eventctl`, in one place.
//!
//! - [`Subject`]: the subjects (`raw-event.<type>`, `quarantine.<source>`,
//!   `dead-letter.<consumer>`, `replay.<consumer>.<type>`), written and read back, and the
//!   dedup id of an event ([`dedup_id`]: type and id);
//! - [`QuarantineMessage`]: a rejected line or a dead letter, with its reason, bounded to fit
//!   the bus's largest payload;
//! - [`EventView`]: an event read without a DOM or a copy: its id, type and time borrowed,
//!   its attributes and meta fields found on demand.

mod quarantine;
mod subject;
mod view;

pub use quarantine::{DecodeError, MAX_DETAIL_BYTES, MAX_META_BYTES, MAX_SOURCE_BYTES, QuarantineMessage, truncate};
pub use subject::{
    DEDUP_SEPARATOR, dedup_id, DEAD_LETTER_PREFIX, EVENT_PREFIX, MAX_NAME_BYTES, QUARANTINE_PREFIX, REPLAY_PREFIX, Subject, SubjectError, event_type_of, filter,
    is_valid_name,
};
pub use view::{EventView, FieldPath, ViewError, find_key, id_text};
