//! `eventctl`: one CLI for the event platform. Each subcommand is a module of [`cmd`]:
//!
//! - `ingest`: NDJSON files, folders, globs or stdin into the lake;
//! - `gen`: seeded synthetic events for demos and benchmarks;
//! - `cat`: events read back from the lake as NDJSON;
//! - `compact`: merge the small files of closed partitions and drop repeated events;
//! - `vacuum`: delete the files the tables removed (or never committed) past a retention;
//! - `schema`: the per-type schemas held by the lake;
//! - `demo`: a generated sample ingested into a local lake;
//! - `dev`: the whole platform in one process on embedded defaults;
//! - `timeline`: the lake's per-user history table (`timeline backfill`) and the DynamoDB
//!   table (`timeline init`);
//! - `catalog`: the lake's Delta tables registered in the AWS Glue Data Catalog for Athena
//!   (`catalog sync`);
//! - `stats`: per-user daily statistics (`stats backfill`, `stats migrate`);
//! - `features`: the features' windows rebuilt from the lake (`features backfill`) and
//!   point-in-time training values (`features export`);
//! - `query` / `kpi`: SQL and daily KPIs straight from the lake.
//!
//! `query` and `kpi` need the `query` feature (DataFusion), `catalog` and `timeline init` the `aws`
//! feature (the AWS SDK); both are default. Built without one, its subcommands answer which feature to enable.

mod cmd;
mod generator;
mod ingest;
mod input;
mod size;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "eventctl", version, about = "The event platform's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest NDJSON into the lake.
    Ingest(cmd::ingest::IngestArgs),
    /// Generate synthetic events as NDJSON.
    Gen(cmd::generate::GenArgs),
    /// Print events of the lake as NDJSON (as they came in).
    Cat(cmd::cat::CatArgs),
    /// Compact closed partitions: fewer, larger files; repeated events dropped.
    Compact(cmd::compact::CompactArgs),
    /// Delete files removed from the tables (or never committed) longer ago than a retention.
    Vacuum(cmd::vacuum::VacuumArgs),
    /// Operations on the whole lake (migrate the folder layout to Delta tables).
    #[command(subcommand)]
    Lake(cmd::lake::LakeCommand),
    /// Print the schema of one type, or list the types.
    Schema(cmd::schema::SchemaArgs),
    /// The whole platform in one process: gateway + lake writer on an in-process bus, local lake.
    Dev(cmd::dev::DevArgs),
    /// The per-user event history: the lake's history table (backfill), the DynamoDB table (init).
    #[command(subcommand)]
    Timeline(cmd::timeline::TimelineCommand),
    /// The lake's Delta tables in the AWS Glue Data Catalog (for Athena).
    #[cfg(feature = "aws")]
    #[command(subcommand)]
    Catalog(cmd::catalog::CatalogCommand),
    /// The lake's Delta tables in the AWS Glue Data Catalog; not in this build: needs the `aws` feature.
    #[cfg(not(feature = "aws"))]
    Catalog(cmd::NotBuilt),
    /// Per-user daily statistics.
    #[command(subcommand)]
    Stats(cmd::stats::StatsCommand),
    /// The features' windows from the lake: rebuild (backfill), point-in-time training export.
    #[command(subcommand)]
    Features(cmd::features::FeaturesCommand),
    /// SQL over the lake: each event type a table.
    #[cfg(feature = "query")]
    Query(cmd::query::QueryArgs),
    /// SQL over the lake; not in this build: needs the `query` feature.
    #[cfg(not(feature = "query"))]
    Query(cmd::NotBuilt),
    /// Daily KPIs from the lake, here or on the KPI cluster (--cluster).
    #[cfg(feature = "query")]
    Kpi(cmd::kpi::KpiArgs),
    /// Daily KPIs from the lake; not in this build: needs the `query` feature.
    #[cfg(not(feature = "query"))]
    Kpi(cmd::NotBuilt),
    /// The KPI cluster (Apache DataFusion Ballista): a scheduler and executors.
    #[cfg(feature = "cluster")]
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// The KPI cluster; not in this build: needs the `cluster` feature.
    #[cfg(not(feature = "cluster"))]
    Cluster(cmd::NotBuilt),
    /// Generate a sample and ingest it into a local lake.
    Demo(cmd::demo::DemoArgs),
    /// Re-publish a consumer's dead letters to it, once the cause is fixed (NATS JetStream).
    Replay(cmd::replay::ReplayArgs),
}

fn main() {
    let cli = Cli::parse();
    // One logging setup for every subcommand (`RUST_LOG`, `LOG_FORMAT=json`): `dev` runs the
    // services and logs what they do; the one-shot commands only warnings.
    let default_filter = if matches!(cli.command, Command::Dev(_)) { "info" } else { "warn" };
    service_kit::telemetry::init_logging(default_filter);
    let code = match run(cli) {
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
        Command::Ingest(args) => cmd::ingest::run(args),
        Command::Gen(args) => cmd::generate::run(args),
        Command::Cat(args) => cmd::cat::run(args),
        Command::Compact(args) => cmd::compact::run(args),
        Command::Vacuum(args) => cmd::vacuum::run(args),
        Command::Lake(command) => cmd::lake::run(command),
        Command::Schema(args) => cmd::schema::run(args),
        Command::Dev(args) => cmd::dev::run(args),
        Command::Timeline(c) => cmd::timeline::run(c),
        #[cfg(feature = "aws")]
        Command::Catalog(c) => cmd::catalog::run(c),
        #[cfg(not(feature = "aws"))]
        Command::Catalog(_) => cmd::not_built("catalog", "aws"),
        Command::Stats(c) => cmd::stats::run(c),
        Command::Features(c) => cmd::features::run(c),
        #[cfg(feature = "query")]
        Command::Query(args) => cmd::query::run(args),
        #[cfg(not(feature = "query"))]
        Command::Query(_) => cmd::not_built("query", "query"),
        #[cfg(feature = "query")]
        Command::Kpi(args) => cmd::kpi::run(args),
        #[cfg(not(feature = "query"))]
        Command::Kpi(_) => cmd::not_built("kpi", "query"),
        #[cfg(feature = "cluster")]
        Command::Cluster(c) => cmd::cluster::run(c),
        #[cfg(not(feature = "cluster"))]
        Command::Cluster(_) => cmd::not_built("cluster", "cluster"),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Replay(args) => cmd::replay::run(args),
    }
}
