//! `eventctl compact`: merges the small files of closed partitions, drops repeated events
//! and sorts by time.

use anyhow::Result;
use clap::Args;
use event_lake::compact::CompactOptions;

use super::{LakeArgs, runtime};
use crate::size;

/// Options of `eventctl compact`.
#[derive(Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Only this event type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// A partition is closed once its hour ended this many minutes ago.
    #[arg(long, default_value_t = 60)]
    pub grace_minutes: i64,
    /// Memory for one merge.
    #[arg(long, default_value = "512MiB", value_parser = size::parse)]
    pub memory: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `eventctl compact`.
pub fn run(args: CompactArgs) -> Result<i32> {
    let CompactArgs { lake, event_type, grace_minutes, memory, json } = args;
    let lake = lake.open()?;
    let opts = CompactOptions {
        event_type,
        grace_ms: grace_minutes * 60_000,
        memory_bytes: memory,
        ..CompactOptions::default()
    };
    let report = runtime(Some(2))?.block_on(lake.compact(&opts, chrono::Utc::now().timestamp_millis()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "compacted {} of {} closed partitions: {} files -> {}, {} rows -> {} ({} repeats dropped), {} -> {} bytes",
            report.partitions_compacted,
            report.partitions_seen,
            report.files_in,
            report.files_out,
            report.rows_in,
            report.rows_out,
            report.duplicates_dropped,
            report.bytes_in,
            report.bytes_out
        );
    }
    Ok(0)
}
