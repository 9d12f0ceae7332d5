//! The embedded mode (`eventctl dev`): the updater on an in-process bus (its own durable
//! consumers, one per counted event type) into in-memory windows with the same semantics as
//! Redis, served over HTTP and gRPC, stopped by the caller's stop signal (the updater writes
//! what it aggregated first).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use event_bus::InProcessBus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::SystemClock;
use crate::grpc::FeaturesGrpc;
use crate::query::FeatureReader;
use crate::store::{MemoryStore, WindowStore};
use crate::updater::{Source, Updater, UpdaterOptions};
use crate::{FeaturesConfig, Layout};

/// Products the in-memory windows hold at most (beyond: new products are not counted until
/// old ones leave the windows).
pub const MAX_PRODUCTS: usize = 1_000_000;

/// The running embedded service.
pub struct Embedded {
    /// Where HTTP listens.
    pub http: SocketAddr,
    /// Where gRPC listens.
    pub grpc: SocketAddr,
    /// Ends once `stop` turned true and everything is written.
    pub task: JoinHandle<()>,
}

/// Binds both addresses, starts the updater on `bus` and the servers; everything stops when
/// `stop` turns true.
pub async fn start(bus: &InProcessBus, http: &str, grpc: &str, stop: watch::Receiver<bool>) -> Result<Embedded, std::io::Error> {
    let config = FeaturesConfig::default();
    let layout = Layout::new(&config.counters, &config.windows);
    let store: Arc<dyn WindowStore> = Arc::new(MemoryStore::new(layout.clone(), MAX_PRODUCTS, config.expire_budget));
    let http_listener = tokio::net::TcpListener::bind(http).await?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc).await?;
    let (http_addr, grpc_addr) = (http_listener.local_addr()?, grpc_listener.local_addr()?);

    let ack_wait = Duration::from_secs(config.ack_wait_secs);
    let sources = layout
        .event_types()
        .into_iter()
        .map(|t| {
            let durable = format!("{}-{t}", config.durable_prefix);
            let sub = bus.subscriber(&durable, &event_contract::wire::filter::events_of(&t), ack_wait);
            // In-process positions count per durable.
            Source { name: durable, subscriber: Box::new(sub) }
        })
        .collect();
    let updater = Updater::new(layout.clone(), store.clone(), Arc::new(SystemClock), UpdaterOptions::from_config(&config));
    let reader = Arc::new(FeatureReader::new(store, layout, config.max_batch_ids, config.max_id_bytes, config.max_in_flight_reads, config.retry_after_secs));
    let updater_task = tokio::spawn(updater.run(sources, stop.clone()));
    let mut http_stop = stop.clone();
    let http_task = tokio::spawn(
        axum::serve(crate::grpc::http_listener(http_listener), crate::api::router(reader.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    let mut grpc_stop = stop;
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FeaturesGrpc::server(reader))
            .serve_with_incoming_shutdown(crate::grpc::incoming(grpc_listener), async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            }),
    );
    let task = tokio::spawn(async move {
        if let Ok(Err(e)) = http_task.await {
            tracing::error!(error = %e, "features HTTP server failed");
        }
        if let Ok(Err(e)) = grpc_task.await {
            tracing::error!(error = %e, "features gRPC server failed");
        }
        let _ = updater_task.await;
    });
    Ok(Embedded { http: http_addr, grpc: grpc_addr, task })
}
