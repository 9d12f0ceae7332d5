//! The features service binary: configuration (defaults, `--config FILE`, `FEATURES_*`),
//! the Redis store, the updater on NATS JetStream (one durable consumer per counted event
//! type), HTTP and gRPC serving, and a SIGTERM that stops serving, writes what the updater
//! aggregated and acks it before exit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use event_bus::JetStreamBus;
use features::clock::SystemClock;
use features::grpc::FeaturesGrpc;
use features::query::FeatureReader;
use features::updater::{Source, Updater, UpdaterOptions};
use features::{FeaturesConfig, Layout, RedisStore, RedisStoreOptions, WindowStore};

#[tokio::main]
async fn main() {
    service_kit::exit_on_error("features", run().await);
}

async fn run() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    let file = service_kit::config::file_from_args();
    let config: FeaturesConfig = service_kit::config::load("FEATURES", file.as_deref())?;
    let _ = service_kit::telemetry::prometheus();
    let layout = Layout::new(&config.counters, &config.windows);
    let store = RedisStore::connect(
        layout.clone(),
        RedisStoreOptions {
            url: config.redis_url.clone(),
            prefix: config.key_prefix.clone(),
            dedup_ttl_secs: config.dedup_ttl_secs,
            expire_budget: config.expire_budget,
            timeout: Duration::from_millis(config.redis_timeout_ms),
            read_connections: 4,
        },
    )
    .await
    .with_context(|| format!("connecting to Redis at {}", config.redis_url))?;
    let store: Arc<dyn WindowStore> = Arc::new(store);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let updater_task = if config.updater {
        let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
        let mut sources = Vec::new();
        for t in layout.event_types() {
            let durable = format!("{}-{t}", config.durable_prefix);
            let sub = bus
                .subscriber(&durable, &event_contract::wire::filter::events_of(&t), Duration::from_secs(config.ack_wait_secs), config.max_ack_pending)
                .await
                .with_context(|| format!("creating the consumer {durable}"))?;
            // Stream sequences are comparable across the stream's consumers.
            sources.push(Source { name: config.bus.stream.clone(), subscriber: Box::new(sub) });
        }
        let updater = Updater::new(layout.clone(), store.clone(), Arc::new(SystemClock), UpdaterOptions::from_config(&config));
        Some(tokio::spawn(updater.run(sources, stop_rx.clone())))
    } else {
        None
    };

    let reader = Arc::new(FeatureReader::new(
        store.clone(),
        layout,
        config.max_batch_ids,
        config.max_id_bytes,
        config.max_in_flight_reads,
        config.retry_after_secs,
    ));
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let grpc_addr: std::net::SocketAddr = config.grpc_listen.parse().context("grpc_listen")?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr).await.with_context(|| format!("binding {grpc_addr}"))?;
    tracing::info!(http = %config.listen, grpc = %grpc_addr, "features serving");

    let mut grpc_stop = stop_rx.clone();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FeaturesGrpc::server(reader.clone()))
            .serve_with_incoming_shutdown(features::grpc::incoming(grpc_listener), async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            }),
    );
    axum::serve(features::grpc::http_listener(listener), features::api::router(reader))
        .with_graceful_shutdown(async move {
            service_kit::shutdown::signal().await;
            let _ = stop_tx.send(true);
        })
        .await?;
    grpc.await?.context("gRPC server")?;
    if let Some(t) = updater_task {
        t.await?;
    }
    tracing::info!("written and acked; bye");
    Ok(())
}
