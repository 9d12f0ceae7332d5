//! The Parquet data lake: layout, per-type schemas, writers, quarantine, read-back and
//! compaction, over a local folder or S3 through `object_store`.
//!
//! Events are stored by type and event-time hour (`events/type=/date=/hour=`), each type with
//! its own typed, additively evolving schema; every stored event reads back as the JSON that
//! came in. Rejected lines are kept in `quarantine/` with their reason.
//!
//! Each event type is a Delta Lake table (see [`table`]): writers commit their files to the
//! table's log, and readers take the files of a snapshot from the log, never from a listing.

mod error;
pub mod buffer;
pub mod column_plan;
pub mod compact;
pub mod counting;
pub mod history;
pub mod history_compact;
pub mod layout;
pub mod node;
pub mod quarantine;
pub mod reader;
pub mod registry;
pub mod schema;
pub mod shred;
pub mod migrate;
pub mod table;
mod store;
pub mod writer;

pub use error::LakeError;
pub use layout::PartitionKey;
pub use quarantine::QuarantineRecord;
pub use schema::TypeSchema;
pub use store::LakeStore;
pub use table::AsOf;
pub use writer::{EncodedFile, Lake, Provenance, WriteOptions, WrittenFile};
