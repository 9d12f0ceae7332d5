//! The features service binary: configuration (defaults, `--config FILE`, `FEATURES_*`),
//! then the assembled service ([`Features`]: the Redis store, the updater on NATS JetStream,
//! HTTP and gRPC serving) until SIGTERM, which stops serving, writes what the updater holds
//! and acks it before exit. `--help` and `--version` answer without binding or connecting
//! anything.

use std::sync::Arc;

use anyhow::Context;
use event_bus::{Bus, JetStreamBus};
use features::FeaturesConfig;
use features::service::Features;
use service_kit::shutdown::Shutdown;

#[tokio::main]
async fn main() {
    let args = service_kit::cli::parse(
        "features",
        "Real-time sliding-window counters per product: consumes the bus into Redis, serves them over HTTP and gRPC.",
    );
    service_kit::exit_on_error("features", run(args).await);
}

async fn run(args: service_kit::cli::ServiceArgs) -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    let config: FeaturesConfig = args.load("FEATURES")?;
    let _ = service_kit::telemetry::prometheus();
    let bus: Option<Arc<dyn Bus>> = if config.updater {
        Some(Arc::new(JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?))
    } else {
        None
    };
    let features = Features::build(&config, bus).await?;
    let http = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let grpc = tokio::net::TcpListener::bind(&config.grpc_listen).await.with_context(|| format!("binding {}", config.grpc_listen))?;
    tracing::info!(http = %config.listen, grpc = %config.grpc_listen, "features serving");
    let (_stop, shutdown) = Shutdown::on_signal();
    let report = features.run(http, grpc, shutdown).await?;
    tracing::info!(?report, "written and acked; bye");
    Ok(())
}
