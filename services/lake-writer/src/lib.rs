//! The lake writer: a durable consumer of `raw-event.>` that buffers events per partition
//! through the lake library and commits them as Parquet files, writing a partition when it is
//! full, when the buffers are over budget, or when its oldest event has waited `max_age`
//! (default 5 minutes, so the lake is fresh). Messages are acked only after their file is
//! committed: a crash loses nothing (unacked messages come back; the repeats they cause are
//! removed by compaction). A second consumer writes `quarantine.>` and every consumer's dead
//! letters (`dead-letter.>`) to the quarantine dataset. Both run on the shared consumer
//! runtime ([`event_bus::consumer`]); [`LakeWriterService`] assembles them, for the binary
//! (NATS JetStream) and for `eventctl dev` (the in-process bus). On shutdown everything
//! buffered is written and acked.

pub mod config;
mod events;
mod quarantine;
mod service;

pub use config::LakeWriterConfig;
pub use events::{EventWriter, WriterCounters, WriterStats};
pub use quarantine::{QuarantineCounters, QuarantineWriter};
pub use service::{BuildError, LakeWriterCounters, LakeWriterReport, LakeWriterService, Running};
