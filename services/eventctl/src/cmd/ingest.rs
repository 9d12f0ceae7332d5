//! `eventctl ingest`: NDJSON files, folders, globs or stdin into the lake, with the
//! streaming engine of [`crate::ingest`]. Loading the same content twice is a no-op (exit 0,
//! the summary says `already_loaded`) unless `--force`.

use anyhow::{Context, Result, bail};
use clap::Args;
use event_contract::Limits;

use super::LakeArgs;
use crate::{ingest, input, size};

/// Options of `eventctl ingest`.
#[derive(Args, Clone)]
pub struct IngestArgs {
    /// Files, folders, globs, or - for stdin (the default). .gz and .zst are decoded.
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Memory budget of the run.
    #[arg(long, env = "EVENTCTL_MEMORY", default_value = "1GiB", value_parser = size::parse)]
    pub memory: u64,
    /// Largest accepted event.
    #[arg(long, env = "EVENTCTL_MAX_EVENT_SIZE", default_value = "1MiB", value_parser = size::parse)]
    pub max_event_size: u64,
    /// Smallest accepted meta.created_at (epoch ms, inclusive).
    #[arg(long, default_value_t = 0)]
    pub min_created_at: i64,
    /// Bound of meta.created_at (epoch ms, exclusive).
    #[arg(long, default_value_t = 4_102_444_800_000)]
    pub max_created_at: i64,
    /// Validation and flush threads (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Local folder for events buffered past half the memory budget (its files are unlinked
    /// at once). A tmpfs folder would hold them in RAM.
    #[arg(long, env = "EVENTCTL_SPILL_DIR", default_value = "/var/tmp")]
    pub spill_dir: std::path::PathBuf,
    /// Disk the spilled events may take; past it the partition with most on disk is written.
    #[arg(long, env = "EVENTCTL_SPILL_MAX", default_value = "16GiB", value_parser = size::parse)]
    pub spill_max: u64,
    /// Compress buffered events in memory instead of spilling them (about a fifth more CPU).
    #[arg(long)]
    pub no_spill: bool,
    /// Load the input even when the lake's load history says this content was loaded.
    #[arg(long)]
    pub force: bool,
}

/// Runs `eventctl ingest`; the exit code (2 when some input could not be read to its end).
pub fn run(args: IngestArgs) -> Result<i32> {
    let sources = input::expand(&args.inputs).map_err(anyhow::Error::msg)?;
    // Thousands of files, all committed at the end: one file-system sync before the commits
    // instead of an fsync per file (a local lake), and each table's schema committed with its
    // files (one commit per table, no table created by a load that fails).
    let lake = args.lake.open_with(event_lake::WriteOptions { defer_sync: true, stage_schemas: true, ..Default::default() })?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let opts = ingest::IngestOptions {
        memory_bytes: args.memory,
        limits: Limits {
            max_event_bytes: usize::try_from(args.max_event_size).context("--max-event-size")?,
            min_created_at: args.min_created_at,
            max_created_at: args.max_created_at,
        },
        workers,
        progress: !args.no_progress && !args.json,
        spill_dir: (!args.no_spill).then(|| args.spill_dir.clone()),
        spill_max_bytes: args.spill_max,
        force: args.force,
    };
    if opts.limits.min_created_at >= opts.limits.max_created_at {
        bail!("--min-created-at must be below --max-created-at");
    }
    let summary = ingest::run(lake, sources, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        ingest::print_human(&summary);
    }
    Ok(if summary.io_errors.is_empty() { 0 } else { 2 })
}
