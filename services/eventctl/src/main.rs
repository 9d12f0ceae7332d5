//! `eventctl`: one CLI for the event platform.
//!
//! - `ingest`: NDJSON files, folders, globs or stdin into the lake;
//! - `gen`: seeded synthetic events for demos and benchmarks;
//! - `cat`: events read back from the lake as NDJSON;
//! - `compact`: merge the small files of closed partitions and drop repeated events;
//! - `schema`: the per-type schemas held by the lake;
//! - `demo`: a generated sample ingested into a local lake;
//! - `dev`: the whole platform in one process on embedded defaults (gateway and lake writer
//!   on an in-process bus, the lake in a local folder).
//! - `timeline`: the per-user history table (`timeline init`);
//! - `stats`: per-user daily statistics (`stats backfill`);
//! - `query` / `kpi`: SQL and daily KPIs straight from the lake.

mod dev;
mod generator;
mod ingest;
mod input;
mod kpi_cmd;
mod size;
mod stats_cmd;
mod timeline_cmd;

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use event_contract::Limits;
use event_lake::compact::CompactOptions;
use event_lake::{Lake, WriteOptions};

#[derive(Parser)]
#[command(name = "eventctl", version, about = "The event platform's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct LakeArgs {
    /// Lake root: a local folder or s3://bucket/prefix (AWS_ENDPOINT_URL for an S3-compatible store).
    #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
    lake: String,
    /// Target size of data files after compaction.
    #[arg(long, env = "EVENTCTL_TARGET_FILE_SIZE", default_value = "128MiB", value_parser = size::parse)]
    target_file_size: u64,
}

impl LakeArgs {
    fn open(&self) -> Result<Arc<Lake>> {
        let options = WriteOptions { target_file_bytes: self.target_file_size, ..WriteOptions::default() };
        Ok(Arc::new(Lake::open(&self.lake, options).with_context(|| format!("opening the lake {}", self.lake))?))
    }
}

#[derive(Args, Clone)]
struct IngestArgs {
    /// Files, folders, globs, or - for stdin (the default). .gz and .zst are decoded.
    inputs: Vec<String>,
    #[command(flatten)]
    lake: LakeArgs,
    /// Memory budget of the run.
    #[arg(long, env = "EVENTCTL_MEMORY", default_value = "1GiB", value_parser = size::parse)]
    memory: u64,
    /// Largest accepted event.
    #[arg(long, env = "EVENTCTL_MAX_EVENT_SIZE", default_value = "1MiB", value_parser = size::parse)]
    max_event_size: u64,
    /// Smallest accepted meta.created_at (epoch ms, inclusive).
    #[arg(long, default_value_t = 0)]
    min_created_at: i64,
    /// Bound of meta.created_at (epoch ms, exclusive).
    #[arg(long, default_value_t = 4_102_444_800_000)]
    max_created_at: i64,
    /// Validation and flush threads (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Local folder for events buffered past half the memory budget (its files are unlinked
    /// at once). A tmpfs folder would hold them in RAM.
    #[arg(long, env = "EVENTCTL_SPILL_DIR", default_value = "/var/tmp")]
    spill_dir: std::path::PathBuf,
    /// Disk the spilled events may take; past it the partition with most on disk is written.
    #[arg(long, env = "EVENTCTL_SPILL_MAX", default_value = "16GiB", value_parser = size::parse)]
    spill_max: u64,
    /// Compress buffered events in memory instead of spilling them (about a fifth more CPU).
    #[arg(long)]
    no_spill: bool,
}

#[derive(Args)]
struct GenArgs {
    /// Number of lines.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    events: u64,
    /// Output file (.gz / .zst compress), or - for stdout.
    #[arg(long, short = 'o', default_value = "-")]
    out: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct event types.
    #[arg(long, default_value_t = 300)]
    types: usize,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 1_000_000)]
    products: u64,
    /// Approximate size of a valid line.
    #[arg(long, default_value = "1KiB", value_parser = size::parse)]
    size: u64,
    /// Fraction of invalid lines.
    #[arg(long, default_value_t = 0.0)]
    bad_ratio: f64,
    /// Start of event time (RFC 3339 or epoch ms); default 2026-11-23T00:00:00Z.
    #[arg(long)]
    start: Option<String>,
    /// Hours of event time covered.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// No schema evolution or type conflicts.
    #[arg(long)]
    no_evolve: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest NDJSON into the lake.
    Ingest(IngestArgs),
    /// Generate synthetic events as NDJSON.
    Gen(GenArgs),
    /// Print events of the lake as NDJSON (as they came in).
    Cat {
        #[command(flatten)]
        lake: LakeArgs,
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only this date (YYYY-MM-DD).
        #[arg(long)]
        date: Option<String>,
        /// Only this hour (0-23).
        #[arg(long)]
        hour: Option<u32>,
    },
    /// Compact closed partitions: fewer, larger files; repeated events dropped.
    Compact {
        #[command(flatten)]
        lake: LakeArgs,
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// A partition is closed once its hour ended this many minutes ago.
        #[arg(long, default_value_t = 60)]
        grace_minutes: i64,
        /// Memory for one merge.
        #[arg(long, default_value = "512MiB", value_parser = size::parse)]
        memory: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the schema of one type, or list the types.
    Schema {
        #[command(flatten)]
        lake: LakeArgs,
        /// The event type.
        event_type: Option<String>,
    },
    /// The whole platform in one process: gateway + lake writer on an in-process bus, local lake.
    Dev(dev::DevArgs),
    /// The per-user event history (DynamoDB table).
    #[command(subcommand)]
    Timeline(timeline_cmd::TimelineCommand),
    /// Per-user daily statistics.
    #[command(subcommand)]
    Stats(stats_cmd::StatsCommand),
    /// SQL over the lake: each event type a table.
    Query(kpi_cmd::QueryArgs),
    /// Daily KPIs from the lake (shards and merge for several machines).
    Kpi(kpi_cmd::KpiArgs),
    /// Generate a sample and ingest it into a local lake.
    Demo {
        #[command(flatten)]
        lake: LakeArgs,
        /// Events to generate.
        #[arg(long, short = 'n', default_value_t = 200_000)]
        events: u64,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("eventctl: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Ingest(args) => ingest(args),
        Command::Dev(args) => dev::run(args),
        Command::Timeline(cmd) => timeline_cmd::run(cmd),
        Command::Stats(cmd) => stats_cmd::run(cmd),
        Command::Query(args) => kpi_cmd::query(args),
        Command::Kpi(args) => kpi_cmd::kpi(args),
        Command::Gen(args) => generate(args),
        Command::Cat { lake, event_type, date, hour } => cat(&lake, event_type, date, hour),
        Command::Compact { lake, event_type, grace_minutes, memory, json } => {
            let lake = lake.open()?;
            let opts = CompactOptions {
                event_type,
                grace_ms: grace_minutes * 60_000,
                memory_bytes: memory,
                ..CompactOptions::default()
            };
            let report = runtime()?.block_on(lake.compact(&opts, chrono::Utc::now().timestamp_millis()))?;
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
        Command::Schema { lake, event_type } => {
            let lake = lake.open()?;
            let rt = runtime()?;
            match event_type {
                Some(t) => println!("{}", serde_json::to_string_pretty(&*rt.block_on(lake.registry.load(&t))?)?),
                None => {
                    for t in rt.block_on(lake.registry.types())? {
                        println!("{t}");
                    }
                }
            }
            Ok(0)
        }
        Command::Demo { lake, events } => {
            let dir = std::env::temp_dir().join(format!("eventctl-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let sample = dir.join("sample.ndjson.zst");
            let opts = generator::GenOptions { events, bad_ratio: 0.01, ..generator::GenOptions::default() };
            let file = std::fs::File::create(&sample)?;
            let mut enc = zstd::Encoder::new(file, 3)?.auto_finish();
            let g = generator::generate(&opts, &mut enc)?;
            drop(enc);
            eprintln!("generated {} events ({} invalid) into {}", g.lines, g.invalid, sample.display());
            let code = ingest(IngestArgs {
                inputs: vec![sample.display().to_string()],
                lake: lake.clone(),
                memory: 1 << 30,
                max_event_size: 1 << 20,
                min_created_at: 0,
                max_created_at: 4_102_444_800_000,
                workers: None,
                json: false,
                no_progress: false,
                spill_dir: dir.clone(),
                spill_max: 16 << 30,
                no_spill: false,
            })?;
            let _ = std::fs::remove_dir_all(&dir);
            println!("\nread it back:   eventctl cat --lake {} --type product_viewed | head", lake.lake);
            println!(
                "query it:       duckdb -c \"SELECT type, count(*) FROM read_parquet('{}/events/*/*/*/*.parquet', hive_partitioning=true, union_by_name=true) GROUP BY 1 ORDER BY 2 DESC LIMIT 10\"",
                lake.lake.trim_end_matches('/')
            );
            Ok(code)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")
}

fn ingest(args: IngestArgs) -> Result<i32> {
    let sources = input::expand(&args.inputs).map_err(anyhow::Error::msg)?;
    let lake = args.lake.open()?;
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

fn generate(args: GenArgs) -> Result<i32> {
    let start_ms = match &args.start {
        None => generator::GenOptions::default().start_ms,
        Some(s) => match s.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => chrono::DateTime::parse_from_rfc3339(s)
                .with_context(|| format!("--start {s:?} is neither epoch ms nor RFC 3339"))?
                .timestamp_millis(),
        },
    };
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        bail!("--bad-ratio must be within [0, 1]");
    }
    let opts = generator::GenOptions {
        events: args.events,
        seed: args.seed,
        types: args.types,
        users: args.users,
        products: args.products,
        event_size: usize::try_from(args.size).context("--size")?,
        bad_ratio: args.bad_ratio,
        start_ms,
        span_ms: args.hours * 3_600_000,
        evolve: !args.no_evolve,
    };
    let summary = if args.out == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let s = generator::generate(&opts, &mut out)?;
        out.flush()?;
        s
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out))?;
        let mut buf = std::io::BufWriter::with_capacity(1 << 20, file);
        
        if args.out.ends_with(".zst") {
            let mut enc = zstd::Encoder::new(buf, 3)?;
            let s = generator::generate(&opts, &mut enc)?;
            enc.finish()?.flush()?;
            s
        } else if args.out.ends_with(".gz") {
            let mut enc = flate2::write::GzEncoder::new(buf, flate2::Compression::fast());
            let s = generator::generate(&opts, &mut enc)?;
            enc.finish()?.flush()?;
            s
        } else {
            let s = generator::generate(&opts, &mut buf)?;
            buf.flush()?;
            s
        }
    };
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(0)
}

fn cat(args: &LakeArgs, event_type: Option<String>, date: Option<String>, hour: Option<u32>) -> Result<i32> {
    let lake = args.open()?;
    let rt = runtime()?;
    let files = rt.block_on(lake.list_data_files(event_type.as_deref()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for f in files {
        let (d, h) = event_lake::layout::date_hour(f.partition.hour);
        if date.as_ref().is_some_and(|want| *want != d) || hour.is_some_and(|want| want != h) {
            continue;
        }
        for ev in rt.block_on(lake.read_events(&f))? {
            serde_json::to_writer(&mut out, &ev)?;
            if let Err(e) = out.write_all(b"\n") {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(0);
                }
                return Err(e.into());
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}
