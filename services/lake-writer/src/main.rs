//! The lake writer binary: loads its configuration (defaults, `--config FILE`,
//! `LAKE_WRITER_*` environment), connects to NATS JetStream and runs the assembled service
//! ([`LakeWriterService`]) until SIGTERM: every buffered event is written and acked before
//! exit.

use std::sync::Arc;

use anyhow::Context;
use event_bus::JetStreamBus;
use lake_writer::{LakeWriterConfig, LakeWriterService};
use service_kit::shutdown::Shutdown;

#[tokio::main]
async fn main() {
    service_kit::exit_on_error("lake-writer", run().await);
}

async fn run() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    let file = service_kit::config::file_from_args();
    let config: LakeWriterConfig = service_kit::config::load("LAKE_WRITER", file.as_deref())?;
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
