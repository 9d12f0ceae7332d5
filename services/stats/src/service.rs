//! The stats service assembled from its configuration: the store (Postgres, or SQLite), the
//! cache (Redis, or in-process), the aggregator on the bus it is given (when
//! `aggregator = true`), and the API (when `api = true`, else health and metrics only). The
//! binary runs it on NATS JetStream, `eventctl dev` on the in-process bus, the same way.

use std::sync::Arc;

use event_bus::consumer::{Consumer, Report};
use event_bus::{Bus, BusError};
use service_kit::config::{ConfigError, Validate};
use service_kit::shutdown::{Shutdown, either};
use tokio::net::TcpListener;

use crate::aggregator::{Aggregator, AggregatorError, AggregatorOptions, Fatal};
use crate::api::{AppState, router};
use crate::auth::Authenticator;
use crate::cache::{CacheError, StatsCache};
use crate::config::StatsConfig;
use crate::definitions::Extractor;
use crate::query::StatsReader;
use crate::store::{Store, StoreError};

/// Why the stats service could not be assembled or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database.
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
    /// Redis.
    #[error("connecting to Redis: {0}")]
    Cache(#[from] CacheError),
    /// The bus consumer could not be created.
    #[error("creating the bus consumer: {0}")]
    Bus(#[from] BusError),
    /// The aggregator could not start or stopped on a fatal error.
    #[error("the aggregator failed: {0}")]
    Aggregator(#[from] AggregatorError),
    /// No bus was given to a configuration that runs the aggregator.
    #[error("the aggregator needs a bus")]
    NoBus,
}

/// The assembled stats service, ready to run.
pub struct StatsService {
    state: Arc<AppState>,
    api: bool,
    store: Store,
    aggregator: Option<(Consumer, Aggregator)>,
    fatal: Fatal,
    fatal_stop: tokio::sync::watch::Receiver<bool>,
}

impl StatsService {
    /// Opens the store and the cache; with `aggregator = true`, creates its consumer on
    /// `bus` and takes its lock (waiting while another aggregator of the same consumer runs).
    pub async fn build(config: &StatsConfig, bus: Option<Arc<dyn Bus>>) -> Result<StatsService, ServiceError> {
        config.validate()?;
        let store = Store::open(&config.database_url, &config.database_schema, config.database_max_connections, config.run_migrations).await?;
        let cache = Arc::new(if config.redis_url.is_empty() {
            StatsCache::in_process(config.cache_settings())
        } else {
            StatsCache::redis(&config.redis_url, &config.redis_prefix, config.cache_settings()).await?
        });
        let (fatal, fatal_stop) = Fatal::new();
        let aggregator = if config.aggregator {
            let bus = bus.ok_or(ServiceError::NoBus)?;
            let spec = config.consumer_spec();
            let opts = AggregatorOptions {
                consumer: spec.name.clone(),
                reset_position: !bus.positions_survive_restart(),
                retention_days: config.retention_days,
                ahead_days: config.partitions_ahead_days,
            };
            let consumer = Consumer::subscribe(bus, spec).await?;
            let extractor = Extractor::sharded(config.metrics.clone(), config.shard, config.shards);
            let aggregator = Aggregator::start(store.clone(), cache.clone(), extractor, opts, fatal.clone()).await?;
            Some((consumer, aggregator))
        } else {
            None
        };
        let auth = Authenticator::new(&config.service_key_hashes, &config.revoked_key_hashes, &config.jwt())
            .map_err(|reason| ConfigError::Value { field: "jwt", reason })?;
        if config.api
            && let Err(e) = auth.load_keys().await
        {
            tracing::error!(error = %e, "the identity provider's keys could not be fetched; tokens it signs are refused until they are (retried in the background)");
        }
        let state = AppState::new(StatsReader::new(store.clone(), cache, &config.metrics), auth, config.max_in_flight, 1);
        Ok(StatsService { state, api: config.api, store, aggregator, fatal, fatal_stop })
    }

    /// The router: the API (or, without it, health and metrics only).
    pub fn router(&self) -> axum::Router {
        if self.api {
            return router(self.state.clone());
        }
        let store = self.store.clone();
        service_kit::health::routes(Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
        }))
    }

    /// Serves on `listener` and runs the aggregator until `shutdown` (or a fatal aggregator
    /// error, which stops both and is returned).
    pub async fn run(self, listener: TcpListener, shutdown: Shutdown) -> Result<Option<Report>, ServiceError> {
        let app = self.router();
        if self.api {
            self.state.auth.spawn_key_refresher(shutdown.serve.clone());
        }
        let StatsService { aggregator, fatal, fatal_stop, .. } = self;
        let consume = either(shutdown.consume.clone(), fatal_stop.clone());
        let serve = either(shutdown.serve.clone(), fatal_stop);
        let task = aggregator.map(|(consumer, aggregator)| tokio::spawn(consumer.run(vec![aggregator], consume)));
        if let Err(e) = service_kit::serve::http(listener, app, serve).await {
            tracing::error!(error = %e, "stats server failed");
        }
        let report = match task {
            Some(t) => Some(t.await.map_err(|e| ServiceError::Aggregator(AggregatorError::LockLost(e.to_string())))?),
            None => None,
        };
        match fatal.take() {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }
}
