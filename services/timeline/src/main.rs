//! The timeline binary: loads its configuration (defaults, `--config FILE`, `TIMELINE_*`
//! environment), opens the store (DynamoDB, or SQLite), consumes the bus (NATS JetStream)
//! into it and serves the API until SIGTERM, then finishes and acks the batch being written
//! and drains requests. `timeline --print-openapi` prints the OpenAPI document;
//! `timeline --init` creates the DynamoDB table (as `eventctl timeline init`).

use std::sync::Arc;

use anyhow::Context;
use event_bus::JetStreamBus;
use event_lake::{Lake, WriteOptions};
use service_kit::auth::ApiKeys;
use timeline::{AppState, Backend, DynamoStore, SqliteStore, Store, TimelineConfig, TimelineConsumer, router};

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
    let items = Arc::new(config.item_options()?);
    let _ = service_kit::telemetry::prometheus();
    let store: Arc<dyn Store> = match config.backend {
        Backend::Dynamodb => {
            let d = DynamoStore::connect(&config.dynamodb).await;
            if args.iter().any(|a| a == "--init") {
                let r = d.init().await?;
                tracing::info!(table = d.table(), created = r.created, ttl_enabled = r.ttl_enabled, "table ready");
            }
            Arc::new(d)
        }
        Backend::Sqlite => Arc::new(SqliteStore::open(&config.sqlite_path).await.with_context(|| format!("opening {}", config.sqlite_path))?),
    };
    let lake = Arc::new(Lake::open(&config.lake, WriteOptions::default()).context("opening the lake")?);
    let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
    let sub = bus
        .subscriber(&config.durable, &config.filter, std::time::Duration::from_secs(config.ack_wait_secs), config.max_ack_pending)
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(TimelineConsumer::new(store.clone(), items, config.fetch_batch).run(sub, stop_rx));

    let state = Arc::new(AppState {
        store,
        lake: Some(lake),
        keys: ApiKeys::new(&config.api_key_hashes, &config.revoked_key_hashes),
        limits: config.limits(),
        retry_after_secs: config.retry_after_secs,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight_requests)),
    });
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, backend = ?config.backend, "timeline listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            service_kit::shutdown::signal().await;
            let _ = stop_tx.send(true);
        })
        .await?;
    let stats = consumer.await?;
    tracing::info!(?stats, "written and acked; bye");
    Ok(())
}
