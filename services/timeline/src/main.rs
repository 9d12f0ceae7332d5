//! The timeline binary: loads its configuration (defaults, `--config FILE`, `TIMELINE_*`
//! environment), connects to NATS JetStream and runs the assembled service ([`Timeline`])
//! until SIGTERM: the API drains its requests, the consumer finishes and acks the batch it
//! is writing. `timeline --print-openapi` prints the OpenAPI document; `timeline --init`
//! creates the DynamoDB table first (as `eventctl timeline init`).

use std::sync::Arc;

use anyhow::Context;
use event_bus::JetStreamBus;
use service_kit::shutdown::Shutdown;
use timeline::{Timeline, TimelineConfig};

#[tokio::main]
async fn main() {
    service_kit::exit_on_error("timeline", run().await);
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--print-openapi") {
        print!("{}", timeline::openapi::pretty_json());
        return Ok(());
    }
    service_kit::telemetry::init_logging("info");
    let file = service_kit::config::file_from_args();
    let config: TimelineConfig = service_kit::config::load("TIMELINE", file.as_deref())?;
    let _ = service_kit::telemetry::prometheus();
    init_table(&config, &args).await?;
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
async fn init_table(config: &TimelineConfig, args: &[String]) -> anyhow::Result<()> {
    if config.backend == timeline::Backend::Dynamodb && args.iter().any(|a| a == "--init") {
        let d = timeline::DynamoStore::connect(&config.dynamodb).await;
        let r = d.init().await?;
        tracing::info!(table = d.table(), created = r.created, ttl_enabled = r.ttl_enabled, "table ready");
    }
    Ok(())
}

/// Without the `dynamodb` feature there is no table to create (`Timeline::build` refuses the
/// DynamoDB backend).
#[cfg(not(feature = "dynamodb"))]
async fn init_table(_config: &TimelineConfig, _args: &[String]) -> anyhow::Result<()> {
    Ok(())
}
