//! The gateway binary: loads its configuration (defaults, `--config FILE`, `GATEWAY_*`
//! environment), connects to NATS JetStream, serves until SIGTERM, then drains in-flight
//! requests. `gateway --print-openapi` prints the OpenAPI document; `--help` and
//! `--version` answer without binding or connecting anything.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use event_bus::JetStreamBus;
use gateway::{GatewayConfig, router};

/// The ingest gateway: validates events over HTTP, quarantines bad ones, publishes valid ones
/// durably to NATS JetStream.
#[derive(Parser)]
#[command(name = "gateway", version)]
struct Cli {
    #[command(flatten)]
    service: service_kit::cli::ServiceArgs,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    service_kit::exit_on_error("gateway", run(cli).await);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.print_openapi {
        print!("{}", gateway::openapi::pretty_json());
        return Ok(());
    }
    service_kit::telemetry::init_logging("info");
    let config: GatewayConfig = cli.service.load("GATEWAY")?;
    let _ = service_kit::telemetry::prometheus();
    let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
    let state = Arc::new(config.app_state(Arc::new(bus)));
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, "gateway listening");
    let (_stop, shutdown) = service_kit::shutdown::Shutdown::on_signal();
    service_kit::serve::http(listener, router(state), shutdown.serve).await?;
    Ok(())
}
