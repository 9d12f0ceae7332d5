//! `eventctl timeline ...`: administration of the per-user history store. `init` creates
//! the DynamoDB table (partition key `pk`, sort key `sk`, on-demand billing) and enables
//! TTL on `ttl`, idempotently: running it again changes nothing. `backfill` builds the
//! lake's per-user history table (`history/`) from the per-type tables, up to their newest
//! versions, with the timeline's user paths (`--config FILE`, `TIMELINE_*`); it goes on
//! from where the previous build stopped, then compacts the table (`--no-compact`: not).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// Subcommands of `eventctl timeline`.
#[derive(Subcommand)]
pub enum TimelineCommand {
    /// Create the DynamoDB table (keys, TTL) if it does not exist (needs the `aws` feature).
    Init(InitArgs),
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
            println!(
                "compaction: {} merges of {} files ({} MB) into {} files ({} MB), {} rows, in {:.1} s",
                c.merges,
                c.files_in,
                c.bytes_in >> 20,
                c.files_out,
                c.bytes_out >> 20,
                c.rows,
                c.seconds
            );
        }
    }
    Ok(0)
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
