//! `eventctl timeline ...`: administration of the per-user history store. `init` creates
//! the DynamoDB table (partition key `pk`, sort key `sk`, on-demand billing) and enables
//! TTL on `ttl`, idempotently: running it again changes nothing. `backfill` builds the
//! lake's per-user history table (`history/`) from the per-type tables, up to their newest
//! versions, with the timeline's user paths (`--config FILE`, `TIMELINE_*`); it goes on
//! from where the previous build stopped, then compacts the table (`--no-compact`: not).
//! `compact` compacts it alone, or one shard of its buckets (`--shard I/N`), so that the
//! compaction of a large lake runs in several jobs at once.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Subcommands of `eventctl timeline`.
#[derive(Subcommand)]
pub enum TimelineCommand {
    /// Create the DynamoDB table (keys, TTL) if it does not exist (needs the `aws` feature).
    Init(InitArgs),
    /// Compact the lake's history table only, or one shard of its buckets (`--shard I/N`).
    Compact(CompactArgs),
    /// Build the lake's per-user history table from the per-type tables (incremental).
    Backfill(BackfillArgs),
}

/// Options of `eventctl timeline backfill`.
#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub lake: super::LakeArgs,
    /// Timeline configuration file (its user paths); `TIMELINE_*` variables apply too.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Do not compact the history table after the build.
    #[arg(long)]
    pub no_compact: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `eventctl timeline compact`.
#[derive(Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub lake: super::LakeArgs,
    /// Only the buckets `b` with `b % N == I` (`I/N`, e.g. `3/8`): N jobs compact disjoint
    /// partitions at once. In a Kubernetes indexed Job: `--shard $(JOB_COMPLETION_INDEX)/N`.
    #[arg(long, value_parser = parse_shard, conflicts_with = "shards")]
    pub shard: Option<(u32, u32)>,
    /// N shards, this one's index from `JOB_COMPLETION_INDEX` (set in the pods of a
    /// Kubernetes indexed Job): `--shards N` is `--shard $JOB_COMPLETION_INDEX/N`.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `I/N` with `I < N`, `N` at most the history's buckets.
fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected I/N, e.g. 3/8"))?;
    let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| format!("{i:?}: not a number"))?, n.trim().parse().map_err(|_| format!("{n:?}: not a number"))?);
    if n == 0 || i >= n || n > event_lake::history::USER_BUCKETS {
        return Err(format!("{s}: need 0 <= I < N <= {}", event_lake::history::USER_BUCKETS));
    }
    Ok((i, n))
}

/// Options of `eventctl timeline init`.
#[derive(Args)]
pub struct InitArgs {
    /// Table name (as the service's `TIMELINE_DYNAMODB__TABLE`).
    #[arg(long, env = "TIMELINE_DYNAMODB__TABLE", default_value = "timeline")]
    pub table: String,
    /// DynamoDB endpoint (a DynamoDB-compatible server); default: the region's AWS endpoint.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Region; default: the standard AWS chain (AWS_REGION, profile), else us-east-1.
    #[arg(long)]
    pub region: Option<String>,
}

/// Runs one `timeline` subcommand.
pub fn run(cmd: TimelineCommand) -> Result<i32> {
    match cmd {
        #[cfg(feature = "aws")]
        TimelineCommand::Init(args) => init(args),
        #[cfg(not(feature = "aws"))]
        TimelineCommand::Init(_) => super::not_built("timeline init", "aws"),
        TimelineCommand::Backfill(args) => backfill(args),
        TimelineCommand::Compact(args) => compact(args),
    }
}

fn backfill(args: BackfillArgs) -> Result<i32> {
    let config: timeline::TimelineConfig = service_kit::config::load_unchecked("TIMELINE", args.config.as_deref()).context("the timeline configuration")?;
    let users = timeline::user::UserPaths::new(&config.default_user_paths, &config.user_paths).map_err(|e| anyhow::anyhow!("the timeline's user paths: {e}"))?;
    let lake = args.lake.open()?;
    let rt = super::runtime(None)?;
    let mut options = timeline::history::BuildOptions::default();
    if args.no_compact {
        options.compact = None;
    }
    let report = rt.block_on(timeline::history::build(&lake, &users, &options)).context("building the history table")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "history: {} events of {} types ({} without a user) -> {} rows in {} files, {} commits, in {:.1} s ({:.0} events/s)",
            report.events,
            report.types,
            report.without_user,
            report.rows,
            report.files_written,
            report.commits,
            report.seconds,
            report.events as f64 / report.seconds.max(1e-9)
        );
        if let Some(c) = &report.compaction {
            print_compaction(c);
        }
    }
    Ok(0)
}

fn compact(args: CompactArgs) -> Result<i32> {
    let lake = args.lake.open()?;
    let rt = super::runtime(None)?;
    let shard = match (args.shard, args.shards) {
        (Some(s), _) => Some(s),
        (None, Some(n)) => {
            let index = std::env::var("JOB_COMPLETION_INDEX").context("--shards N takes this shard's index from JOB_COMPLETION_INDEX (a Kubernetes indexed Job); elsewhere use --shard I/N")?;
            Some(parse_shard(&format!("{index}/{n}")).map_err(|e| anyhow::anyhow!("--shards {n} with JOB_COMPLETION_INDEX={index}: {e}"))?)
        }
        (None, None) => None,
    };
    let options = event_lake::history_compact::HistoryCompactOptions { shard, ..Default::default() };
    let c = rt.block_on(lake.compact_history(&options, chrono::Utc::now().timestamp_millis())).context("compacting the history table")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print_compaction(&c);
    }
    Ok(0)
}

fn print_compaction(c: &event_lake::history_compact::HistoryCompactReport) {
    println!(
        "compaction: {} partitions, {} merges of {} files ({} MB) into {} files ({} MB), {} rows, in {:.1} s",
        c.partitions_seen,
        c.merges,
        c.files_in,
        c.bytes_in >> 20,
        c.files_out,
        c.bytes_out >> 20,
        c.rows,
        c.seconds
    );
}

#[cfg(feature = "aws")]
fn init(args: InitArgs) -> Result<i32> {
    use timeline::{DynamoConfig, DynamoStore};
    let cfg = DynamoConfig { table: args.table, endpoint_url: args.endpoint_url, region: args.region, ..DynamoConfig::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let report = rt.block_on(async {
        let store = DynamoStore::connect(&cfg).await;
        store.init().await
    });
    let report = report.with_context(|| format!("initialising table {}", cfg.table))?;
    let table = if report.created { "created" } else { "already existed" };
    let ttl = if report.ttl_enabled { "TTL enabled on `ttl`" } else { "TTL already enabled" };
    println!("timeline table {}: {table}; {ttl}", cfg.table);
    Ok(0)
}
