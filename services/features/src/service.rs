//! The features service assembled from its configuration: the windows' store (Redis, or in
//! memory), the read function behind HTTP and gRPC, and the updater on the bus it is given
//! (when `updater = true`). The binary runs it on NATS JetStream, `eventctl dev` on the
//! in-process bus, the same way.

use std::sync::Arc;

use event_bus::consumer::{Consumer, Report};
use event_bus::{Bus, BusError};
use service_kit::config::{ConfigError, Validate};
use service_kit::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::clock::SystemClock;
use crate::config::{Backend, FeaturesConfig};
use crate::query::FeatureReader;
use crate::store::{MemoryStore, RedisStore, StoreError, WindowStore};
use crate::updater::{Updater, UpdaterStats};
use crate::Layout;

/// Products the in-memory windows hold at most (beyond: new products are not counted until
/// old ones leave the windows).
pub const MAX_MEMORY_PRODUCTS: usize = 1_000_000;

/// Why the features service could not be assembled or run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis.
    #[error("connecting to Redis: {0}")]
    Store(#[from] StoreError),
    /// The bus consumer could not be created.
    #[error("creating the bus consumer: {0}")]
    Bus(#[from] BusError),
    /// No bus was given to a configuration that runs the updater.
    #[error("the updater needs a bus")]
    NoBus,
    /// A server failed.
    #[error("serving: {0}")]
    Serve(String),
    /// The rebuild from the lake failed.
    #[error("rebuilding the windows from the lake: {0}")]
    Backfill(#[from] crate::backfill::BackfillError),
}

/// Before the updater consumes: rebuilds the windows from the lake when the store is empty
/// (and `backfill.on_empty` with a lake), then takes over a finished rebuild (this one, or
/// one `eventctl features backfill` wrote) by rewinding the consumer to its handover instant.
async fn take_over(
    config: &FeaturesConfig,
    layout: &Layout,
    store: &dyn WindowStore,
    bus: &dyn Bus,
    spec: &event_bus::ConsumerSpec,
    source: &str,
) -> Result<(), ServiceError> {
    if !config.backfill.lake.is_empty() && config.backfill.on_empty && store.is_empty().await? {
        let lake = event_lake::Lake::open(&config.backfill.lake, event_lake::WriteOptions::default()).map_err(crate::backfill::BackfillError::from)?;
        let options = crate::backfill::BackfillOptions {
            margin_ms: (config.backfill.margin_secs as i64).saturating_mul(1000),
            source: bus.positions_survive_restart().then(|| source.to_owned()),
            reset: false,
            max_id_bytes: config.max_id_bytes,
        };
        let now = crate::clock::Clock::now_ms(&SystemClock);
        let report = crate::backfill::backfill(&lake, layout, store, now, &options).await?;
        tracing::info!(events = report.handover.events, hits = report.handover.hits, marked = report.handover.marked, seconds = report.seconds, "windows rebuilt from the lake");
    }
    if let Some(mut h) = crate::backfill::pending_handover(store).await? {
        bus.rewind(spec, h.from_ms).await?;
        h.rewound = true;
        store.set_handover(&h).await?;
        tracing::info!(from_ms = h.from_ms, "took over from the rebuild: consumer rewound");
    }
    Ok(())
}

/// The assembled features service, ready to run.
pub struct Features {
    reader: Arc<FeatureReader>,
    access: crate::api::Access,
    updater: Option<(Consumer, Updater)>,
}

impl Features {
    /// Opens the store; with `updater = true`, creates the updater's consumer on `bus`.
    pub async fn build(config: &FeaturesConfig, bus: Option<Arc<dyn Bus>>) -> Result<Features, ServiceError> {
        config.validate()?;
        let layout = Layout::new(&config.counters, &config.windows);
        let store: Arc<dyn WindowStore> = match config.backend {
            Backend::Memory => Arc::new(MemoryStore::new(layout.clone(), MAX_MEMORY_PRODUCTS, config.expire_budget)),
            Backend::Redis => Arc::new(RedisStore::connect(layout.clone(), config.redis_options(4)).await?),
        };
        let updater = if config.updater {
            let bus = bus.ok_or(ServiceError::NoBus)?;
            let spec = config.consumer_spec(&layout);
            // Positions under one name must be comparable: JetStream stream sequences are the
            // stream's; the in-process bus numbers each durable on its own.
            let source = if bus.positions_survive_restart() { config.bus.stream.clone() } else { spec.name.clone() };
            take_over(config, &layout, &*store, &*bus, &spec, &source).await?;
            let consumer = Consumer::subscribe(bus, spec).await?;
            Some((consumer, Updater::new(layout.clone(), store.clone(), Arc::new(SystemClock), source, config.max_id_bytes)))
        } else {
            None
        };
        let reader = Arc::new(FeatureReader::new(
            store,
            layout,
            config.max_batch_ids,
            config.max_id_bytes,
            config.max_in_flight_reads,
            config.retry_after_secs,
        ));
        let access = crate::api::Access::Keys(Arc::new(service_kit::auth::ApiKeys::new(&config.api_key_hashes, &config.revoked_key_hashes)));
        Ok(Features { reader, access, updater })
    }

    /// The updater's counters (when it runs here).
    pub fn updater_stats(&self) -> Option<Arc<UpdaterStats>> {
        self.updater.as_ref().map(|(_, u)| u.stats())
    }

    /// Serves HTTP on `http` and gRPC on `grpc`, runs the updater, until `shutdown`.
    pub async fn run(self, http: TcpListener, grpc: TcpListener, shutdown: Shutdown) -> Result<Option<Report>, ServiceError> {
        let Features { reader, access, updater } = self;
        let updater = updater.map(|(consumer, u)| tokio::spawn(consumer.run(vec![u], shutdown.consume.clone())));
        let grpc = tokio::spawn(crate::grpc::serve(reader.clone(), access.clone(), grpc, shutdown.serve.clone()));
        let http_result = service_kit::serve::http(http, crate::api::router(reader, access), shutdown.serve).await;
        let grpc_result = grpc.await.map_err(|e| ServiceError::Serve(e.to_string()))?;
        let report = match updater {
            Some(t) => Some(t.await.map_err(|e| ServiceError::Serve(e.to_string()))?),
            None => None,
        };
        http_result.map_err(|e| ServiceError::Serve(format!("HTTP: {e}")))?;
        grpc_result.map_err(|e| ServiceError::Serve(format!("gRPC: {e}")))?;
        Ok(report)
    }
}
