//! The lake writer binary: loads its configuration (defaults, `--config FILE`,
//! `LAKE_WRITER_*` environment), connects to NATS JetStream and runs the assembled service
//! ([`LakeWriterService`]) until SIGTERM: every buffered event is written and acked before
//! exit. `--help` and `--version` answer without binding or connecting anything.

use std::sync::Arc;

use anyhow::Context;
use event_bus::JetStreamBus;
use lake_writer::{LakeWriterConfig, LakeWriterService};
use service_kit::shutdown::Shutdown;

#[tokio::main]
async fn main() {
    let args = service_kit::cli::parse(
        "lake-writer",
        "Bus -> lake: consumes every event type into Parquet files of the lake (one table per type, partitioned by event date and hour), and the quarantine and dead letters into the lake's quarantine.",
    );
    service_kit::exit_on_error("lake-writer", run(args).await);
}

async fn run(args: service_kit::cli::ServiceArgs) -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    let config: LakeWriterConfig = args.load("LAKE_WRITER")?;
    let _ = service_kit::telemetry::prometheus();
    let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
    let service = LakeWriterService::build(&config, Arc::new(bus)).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, lake = %config.lake, "lake writer listening");
    let (_stop, shutdown) = Shutdown::on_signal();
    let report = service.run(Some(listener), shutdown).await?;
    tracing::info!(?report, "written and acked; bye");
    Ok(())
}
