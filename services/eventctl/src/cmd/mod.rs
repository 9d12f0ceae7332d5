//! The subcommands of `eventctl`, one module each, and what several of them share: the lake
//! options, the runtime, sizes and broken pipes. `query` and `kpi` exist with the crate's
//! `query` feature, `cluster` with `cluster`, `catalog` (and `timeline init`) with `aws`; without
//! them [`NotBuilt`] stands in their place.

pub mod cat;
#[cfg(feature = "aws")]
pub mod catalog;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod compact;
pub mod vacuum;
pub mod demo;
pub mod dev;
pub mod features;
pub mod generate;
pub mod ingest;
#[cfg(feature = "query")]
pub mod kpi;
pub mod lake;
#[cfg(feature = "query")]
pub mod query;
pub mod replay;
pub mod schema;
pub mod stats;
pub mod timeline;

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use event_lake::{Lake, WriteOptions};

use crate::size;

/// Where the lake is, for every subcommand that opens it.
#[derive(Args, Clone)]
pub struct LakeArgs {
    /// Lake root: a local folder or s3://bucket/prefix (AWS_ENDPOINT_URL for an S3-compatible store).
    #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
    pub lake: String,
    /// Target size of data files after compaction.
    #[arg(long, env = "EVENTCTL_TARGET_FILE_SIZE", default_value = "128MiB", value_parser = size::parse)]
    pub target_file_size: u64,
}

impl LakeArgs {
    /// Opens the lake with these options.
    pub fn open(&self) -> Result<Arc<Lake>> {
        self.open_with(WriteOptions::default())
    }

    /// Opens the lake with these options over `base` (the other write options).
    pub fn open_with(&self, base: WriteOptions) -> Result<Arc<Lake>> {
        let options = WriteOptions { target_file_bytes: self.target_file_size, ..base };
        Ok(Arc::new(Lake::open(&self.lake, options).with_context(|| format!("opening the lake {}", self.lake))?))
    }
}

/// The arguments of a subcommand left out of this build by a cargo feature: anything is
/// accepted, and [`not_built`] says which feature brings the subcommand back.
#[cfg_attr(all(feature = "query", feature = "aws", feature = "cluster"), allow(dead_code))]
#[derive(Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// The error of a subcommand that is not in this build.
#[cfg_attr(all(feature = "query", feature = "aws", feature = "cluster"), allow(dead_code))]
pub fn not_built(command: &str, feature: &str) -> Result<i32> {
    anyhow::bail!(
        "`eventctl {command}` is not in this build: it needs the `{feature}` feature of eventctl \
         (on by default; from the repository: cargo run --release -p eventctl --features {feature} -- {command} ...)"
    )
}

/// A multi-threaded runtime with `threads` workers (default: one per core).
pub fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build().context("starting the runtime")
}

/// Bytes as MiB with one decimal, for people.
#[cfg_attr(not(feature = "query"), allow(dead_code))] // used by query and kpi only
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// True when an error is a closed stdout (`eventctl ... | head`): not a failure.
#[cfg_attr(not(feature = "query"), allow(dead_code))] // used by query and kpi only
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
        || e.to_string().contains("Broken pipe")
}
