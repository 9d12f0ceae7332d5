//! The lake writer: a durable consumer of `raw-event.>` that buffers events per partition
//! through the lake library and commits them as Parquet files, flushing a partition when it
//! is full, when the buffers are over budget, or when its oldest event has waited `max_age`
//! (default 5 minutes, so the lake is fresh). Messages are acked only after their file is
//! committed: a crash loses nothing (unacked messages come back; the repeats they cause are
//! removed by compaction). A second consumer writes `quarantine.>` to the quarantine dataset.
//! On shutdown everything buffered is flushed and acked.

pub mod config;
mod events;
mod quarantine;

pub use config::WriterConfig;
pub use events::{EventWriter, WriterStats};
pub use quarantine::QuarantineWriter;
