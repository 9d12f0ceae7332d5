//! Reason codes: why a line is not a valid event. Each code is stable (it is stored in the
//! quarantine and returned by the gateway) and documented in the README.

use std::fmt;

/// Why a line was rejected. `code()` is the stable string stored in the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The line is longer than the configured maximum event size.
    TooLarge,
    /// The line is empty or only white space.
    EmptyLine,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is not strict JSON (syntax error, NaN/Infinity, bad escape, too deep).
    InvalidJson,
    /// Something other than white space follows the JSON value.
    TrailingData,
    /// The JSON value is not an object.
    NotAnObject,
    /// An object of the event has the same key twice.
    DuplicateKey,
    /// There is no `data` key.
    MissingData,
    /// `data` is not an object.
    DataNotObject,
    /// There is no `data.id`.
    MissingId,
    /// `data.id` is not a string of 1 to 256 bytes without control characters.
    InvalidId,
    /// There is no `data.type`.
    MissingType,
    /// `data.type` is not a string matching `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$` made of
    /// non-empty `.`-separated tokens (it must map to a bus subject).
    InvalidType,
    /// An object key of the event is longer than 256 bytes.
    FieldNameTooLong,
    /// `data.attributes.user_id`, `product_id` or `owner_id` is a string that is empty, longer
    /// than 256 bytes or holds a control character.
    InvalidKey,
    /// There is no `data.attributes`.
    MissingAttributes,
    /// `data.attributes` is not an object.
    AttributesNotObject,
    /// There is no `meta` key.
    MissingMeta,
    /// `meta` is not an object.
    MetaNotObject,
    /// There is no `meta.created_at`.
    MissingCreatedAt,
    /// `meta.created_at` is not a JSON integer (a fraction, an exponent, a string...).
    InvalidCreatedAt,
    /// `meta.created_at` is outside the configured bounds.
    CreatedAtOutOfRange,
    /// A valid event the bus refused for good (larger than its largest message, say): the
    /// gateway answers it as a rejection instead of asking for a retry that cannot succeed.
    RejectedByBus,
    /// A quarantine record standing for the rejected lines of one request past the number the
    /// gateway quarantines one by one: its detail counts them by reason, its raw bytes are the
    /// first of them.
    TooManyRejections,
    /// A valid event that a consumer of the bus could not process (a dead letter: the
    /// detail names the error, the source the consumer); `eventctl replay` sends it again.
    ConsumerFailed,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 25] = [
        Reason::TooLarge,
        Reason::EmptyLine,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::TrailingData,
        Reason::NotAnObject,
        Reason::DuplicateKey,
        Reason::MissingData,
        Reason::DataNotObject,
        Reason::MissingId,
        Reason::InvalidId,
        Reason::MissingType,
        Reason::InvalidType,
        Reason::FieldNameTooLong,
        Reason::InvalidKey,
        Reason::MissingAttributes,
        Reason::AttributesNotObject,
        Reason::MissingMeta,
        Reason::MetaNotObject,
        Reason::MissingCreatedAt,
        Reason::InvalidCreatedAt,
        Reason::CreatedAtOutOfRange,
        Reason::RejectedByBus,
        Reason::TooManyRejections,
        Reason::ConsumerFailed,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::EmptyLine => "empty_line",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::TrailingData => "trailing_data",
            Reason::NotAnObject => "not_an_object",
            Reason::DuplicateKey => "duplicate_key",
            Reason::MissingData => "missing_data",
            Reason::DataNotObject => "data_not_object",
            Reason::MissingId => "missing_id",
            Reason::InvalidId => "invalid_id",
            Reason::MissingType => "missing_type",
            Reason::InvalidType => "invalid_type",
            Reason::FieldNameTooLong => "field_name_too_long",
            Reason::InvalidKey => "invalid_key",
            Reason::MissingAttributes => "missing_attributes",
            Reason::AttributesNotObject => "attributes_not_object",
            Reason::MissingMeta => "missing_meta",
            Reason::MetaNotObject => "meta_not_object",
            Reason::MissingCreatedAt => "missing_created_at",
            Reason::InvalidCreatedAt => "invalid_created_at",
            Reason::CreatedAtOutOfRange => "created_at_out_of_range",
            Reason::RejectedByBus => "rejected_by_bus",
            Reason::TooManyRejections => "too_many_rejections",
            Reason::ConsumerFailed => "consumer_failed",
        }
    }

    /// The reason for a code, if it is one.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// One sentence for users: what is wrong and what to fix.
    pub fn description(self) -> &'static str {
        match self {
            Reason::TooLarge => "the event is larger than the maximum event size (default 1 MiB)",
            Reason::EmptyLine => "the line is empty or white space only",
            Reason::InvalidUtf8 => "the bytes are not valid UTF-8",
            Reason::InvalidJson => {
                "not strict JSON: syntax error, NaN/Infinity, invalid escape, or nested too deep"
            }
            Reason::TrailingData => "more than one JSON value, or garbage after the value",
            Reason::NotAnObject => "the event is not a JSON object",
            Reason::DuplicateKey => "an object in the event has the same key twice",
            Reason::MissingData => "the event has no `data` object",
            Reason::DataNotObject => "`data` is not an object",
            Reason::MissingId => "`data.id` is missing",
            Reason::InvalidId => "`data.id` is not a string of 1 to 256 bytes without control characters",
            Reason::MissingType => "`data.type` is missing",
            Reason::InvalidType => {
                "`data.type` is not a string matching ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ with non-empty dot-separated tokens"
            }
            Reason::FieldNameTooLong => "an object key of the event is longer than 256 bytes",
            Reason::InvalidKey => {
                "`data.attributes.user_id`, `product_id` or `owner_id` is empty, longer than 256 bytes or holds a control character"
            }
            Reason::MissingAttributes => "`data.attributes` is missing",
            Reason::AttributesNotObject => "`data.attributes` is not an object",
            Reason::MissingMeta => "the event has no `meta` object",
            Reason::MetaNotObject => "`meta` is not an object",
            Reason::MissingCreatedAt => "`meta.created_at` is missing",
            Reason::InvalidCreatedAt => {
                "`meta.created_at` is not a JSON integer (no fraction, no exponent, not a string)"
            }
            Reason::CreatedAtOutOfRange => {
                "`meta.created_at` is outside the accepted range of epoch milliseconds"
            }
            Reason::RejectedByBus => {
                "the bus refused the valid event for good (for example larger than its largest message); sending it again cannot succeed"
            }
            Reason::TooManyRejections => {
                "stands for the rejected lines of one request past the number quarantined one by one; the detail counts them by reason"
            }
            Reason::ConsumerFailed => {
                "a consumer of the bus could not process the event (its error is the detail); `eventctl replay` sends it again once fixed"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
