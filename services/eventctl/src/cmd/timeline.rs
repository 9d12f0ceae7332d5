//! `eventctl timeline ...`: administration of the per-user history store. `init` creates
//! the DynamoDB table (partition key `pk`, sort key `sk`, on-demand billing) and enables
//! TTL on `ttl`, idempotently: running it again changes nothing.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use timeline::{DynamoConfig, DynamoStore};

/// Subcommands of `eventctl timeline`.
#[derive(Subcommand)]
pub enum TimelineCommand {
    /// Create the DynamoDB table (keys, TTL) if it does not exist.
    Init(InitArgs),
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
        TimelineCommand::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> Result<i32> {
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
