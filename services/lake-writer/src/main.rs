//! The lake writer binary: configuration (defaults, `--config FILE`, `LAKE_WRITER_*`), the
//! event and quarantine consumers on NATS JetStream, health and metrics, scheduled
//! compaction of closed partitions, and a SIGTERM that flushes and acks before exit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use event_bus::JetStreamBus;
use event_lake::compact::CompactOptions;
use event_lake::{Lake, WriteOptions};
use lake_writer::{EventWriter, QuarantineWriter, WriterConfig};

#[tokio::main]
async fn main() {
    service_kit::exit_on_error("lake-writer", run().await);
}

async fn run() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    let file = service_kit::config::file_from_args();
    let config: WriterConfig = service_kit::config::load("LAKE_WRITER", file.as_deref())?;
    let _ = service_kit::telemetry::prometheus();
    let lake = Arc::new(Lake::open(&config.lake, WriteOptions::default()).context("opening the lake")?);
    let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
    let events = bus.subscriber(&config.durable, &config.filter, config.ack_wait(), config.max_ack_pending).await?;
    let quarantine = bus.subscriber(&config.quarantine_durable, &config.quarantine_filter, config.ack_wait(), 100_000).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = EventWriter::new(lake.clone(), config.memory_bytes, Duration::from_secs(config.max_age_secs), config.fetch_batch);
    let events_task = tokio::spawn(writer.run(events, stop_rx.clone()));
    let q = QuarantineWriter::new(lake.clone(), Duration::from_secs(60), 10_000);
    let quarantine_task = tokio::spawn(q.run(quarantine, stop_rx.clone()));
    if config.compact_every_secs > 0 {
        let lake = lake.clone();
        let every = Duration::from_secs(config.compact_every_secs);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.changed() => return }
                match lake.compact(&CompactOptions::default(), chrono::Utc::now().timestamp_millis()).await {
                    Ok(r) => tracing::info!(?r, "scheduled compaction"),
                    Err(e) => tracing::error!(error = %e, "scheduled compaction failed"),
                }
            }
        });
    }

    let ready_bus = bus.clone();
    let ready: service_kit::health::ReadinessCheck = Arc::new(move || {
        let bus = ready_bus.clone();
        Box::pin(async move {
            use event_bus::Publisher;
            if bus.is_ready().await { Ok(()) } else { Err("the bus does not answer".into()) }
        })
    });
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let server = axum::serve(listener, service_kit::health::routes(ready)).with_graceful_shutdown(async move {
        service_kit::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    server.await?;
    let stats = events_task.await?;
    quarantine_task.await?;
    tracing::info!(?stats, "flushed and acked; bye");
    Ok(())
}
