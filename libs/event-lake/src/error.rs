//! Errors of the lake library.

/// What can go wrong reading or writing the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake URL is not one we can open.
    #[error("invalid lake location {url:?}: {reason}")]
    InvalidLocation {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The object store failed (network, permissions, missing bucket...).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed to build or read a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A file or schema in the lake is not what this library writes.
    #[error("corrupt lake content: {0}")]
    Corrupt(String),
    /// Two writers kept racing on a schema beyond the retry budget.
    #[error("schema of type {0:?} is contended: gave up after repeated conflicts")]
    SchemaContended(String),
    /// Files encoded with a staged schema cannot be committed: another writer committed one
    /// of its fields differently meanwhile (another column name or type).
    #[error("the schema of type {event_type:?} changed under this load: {detail}; run it again (tables that committed keep it, the rest is written anew)")]
    SchemaConflict {
        /// The type.
        event_type: String,
        /// Which field differs.
        detail: String,
    },
    /// Delta Lake: reading the log or committing to it failed.
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// Writers kept racing on a table's log beyond the retry budget.
    #[error("table of type {0:?} is contended: gave up after repeated commit conflicts")]
    CommitContended(String),
    /// Time travel to a version a table does not have yet.
    #[error("the table of type {event_type:?} has no version {asked}: its newest is {newest}")]
    NoSuchVersion {
        /// The type.
        event_type: String,
        /// The version asked for.
        asked: i64,
        /// The table's newest version.
        newest: i64,
    },
    /// Time travel to a version whose log entries were cleaned up.
    #[error("version {asked} of the table of type {event_type:?} cannot be read any more: {reason}")]
    VersionUnavailable {
        /// The type.
        event_type: String,
        /// The version asked for.
        asked: i64,
        /// What the log said.
        reason: String,
    },
    /// A bug: an invariant of the library does not hold.
    #[error("internal error: {0}")]
    Internal(String),
    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
