//! The timeline binary: loads its configuration (defaults, `--config FILE`, `TIMELINE_*`
//! environment), connects to NATS JetStream and runs the assembled service ([`Timeline`])
//! until SIGTERM: the API drains its requests, the consumer finishes and acks the batch it
//! is writing. `timeline --print-openapi` prints the OpenAPI document; `timeline --init`
//! creates the DynamoDB table first (as `eventctl timeline init`); `--help` and `--version`
//! answer without binding or connecting anything.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use event_bus::JetStreamBus;
use service_kit::shutdown::Shutdown;
use timeline::{Timeline, TimelineConfig};

/// Per-user event history: consumes the bus into DynamoDB (or SQLite), serves it over HTTP.
#[derive(Parser)]
#[command(name = "timeline", version)]
struct Cli {
    #[command(flatten)]
    service: service_kit::cli::ServiceArgs,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
    /// Create the DynamoDB table (and its TTL) before serving.
    #[arg(long)]
    init: bool,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    service_kit::exit_on_error("timeline", run(cli).await);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.print_openapi {
        print!("{}", timeline::openapi::pretty_json());
        return Ok(());
    }
    service_kit::telemetry::init_logging("info");
    let config: TimelineConfig = cli.service.load("TIMELINE")?;
    let _ = service_kit::telemetry::prometheus();
    init_table(&config, cli.init).await?;
    let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
    let timeline = Timeline::build(&config, Arc::new(bus)).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, backend = ?config.backend, "timeline listening");
    let (_stop, shutdown) = Shutdown::on_signal();
    let report = timeline.run(listener, shutdown).await?;
    tracing::info!(?report, "written and acked; bye");
    Ok(())
}

/// `--init` with the DynamoDB backend: creates the table (and its TTL) if missing.
#[cfg(feature = "dynamodb")]
async fn init_table(config: &TimelineConfig, init: bool) -> anyhow::Result<()> {
    if config.backend == timeline::Backend::Dynamodb && init {
        let d = timeline::DynamoStore::connect(&config.dynamodb).await;
        let r = d.init().await?;
        tracing::info!(table = d.table(), created = r.created, ttl_enabled = r.ttl_enabled, "table ready");
    }
    Ok(())
}

/// Without the `dynamodb` feature there is no table to create (`Timeline::build` refuses the
/// DynamoDB backend).
#[cfg(not(feature = "dynamodb"))]
async fn init_table(_config: &TimelineConfig, _init: bool) -> anyhow::Result<()> {
    Ok(())
}
