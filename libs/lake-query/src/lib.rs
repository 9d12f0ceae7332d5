//! SQL over the Parquet lake with DataFusion: each event type a table, partitions pruned from
//! the query's type and time predicates without listing the whole lake, only the needed
//! columns read, every byte read counted; and daily KPIs defined as SQL files, computed here
//! or on a Ballista cluster of several machines.
//!
//! - [`session`]: a DataFusion session over a lake (local folder or S3);
//! - [`table`]: the tables (`<type>`, `lake.events`) and their pruned file listing;
//! - [`prune`]: time predicates -> the hours a query can touch;
//! - [`counting`]: the object store wrapper counting bytes read;
//! - [`output`]: results as a table, CSV, JSON or Parquet;
//! - [`kpi`]: the KPI definitions, runs and reports;
//! - [`cluster`] (feature `cluster`): the Ballista scheduler, executors and job submission;
//! - [`chart`]: the PNG chart of hourly volume by type.

pub mod chart;
#[cfg(feature = "cluster")]
pub mod cluster;
/// The read-counting store (in `event_lake`, whose history reader is counted the same way).
pub use event_lake::counting;
pub mod kpi;
pub mod log_cache;
pub mod output;
pub mod prune;
pub mod session;
pub mod table;

pub use counting::{ReadSnapshot, ReadStats};
pub use session::{LakeSession, SessionOptions};

/// Errors of queries and KPI jobs.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The lake could not be opened or read.
    #[error(transparent)]
    Lake(#[from] event_lake::LakeError),
    /// Planning or execution failed (bad SQL, unknown table, I/O while scanning).
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Encoding results failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Writing Parquet results failed.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What happened.
        source: std::io::Error,
    },
    /// A partial or report file is not what was expected.
    #[error("{0}")]
    Invalid(String),
    /// The cluster refused or failed a job, or could not be reached.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The chart could not be drawn.
    #[error("chart: {0}")]
    Chart(String),
}

impl QueryError {
    /// An I/O error on a file.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        QueryError::Io { path: path.as_ref().display().to_string(), source }
    }
}
