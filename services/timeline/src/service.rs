//! The timeline assembled from its configuration on the bus it is given: the store of the
//! configured backend (DynamoDB, or SQLite with its expiry purge), the lake for
//! `include=payload`, the consumer, and the API. The binary runs it on NATS JetStream,
//! `eventctl dev` on the in-process bus, the same way.

use std::sync::Arc;
use std::time::Duration;

use event_bus::consumer::{Consumer, Counters, Report};
use event_bus::{Bus, BusError};
use event_contract::wire::filter;
use event_lake::{Lake, LakeError, WriteOptions};
use service_kit::auth::ApiKeys;
use service_kit::config::{ConfigError, Validate};
use service_kit::shutdown::{Shutdown, stopped};
use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::config::{Backend, TimelineConfig};
use crate::consumer::{TimelineCounters, TimelineHandler, handlers};
#[cfg(feature = "dynamodb")]
use crate::dynamo::DynamoStore;
use crate::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// How often expired rows of the SQLite store are deleted (DynamoDB's TTL does it there).
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Why the timeline could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The SQLite file could not be opened.
    #[error("opening the timeline store {path}: {source}")]
    Store {
        /// The file.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// `backend = "dynamodb"` in a build without the `dynamodb` feature.
    #[error(
        "the dynamodb backend is not in this build: rebuild with the `dynamodb` feature of timeline (`aws` for eventctl), or set backend = \"sqlite\""
    )]
    DynamodbNotBuilt,
    /// The lake could not be opened.
    #[error("opening the lake: {0}")]
    Lake(#[from] LakeError),
    /// The consumer could not be created.
    #[error("creating the bus consumer: {0}")]
    Bus(#[from] BusError),
}

/// The assembled timeline, ready to run.
pub struct Timeline {
    state: Arc<AppState>,
    consumer: Consumer,
    handlers: Vec<TimelineHandler>,
    counters: Arc<TimelineCounters>,
    sqlite: Option<SqliteStore>,
}

impl Timeline {
    /// The cold tier this timeline serves (to refresh its seam after a build in-process).
    pub fn cold(&self) -> Option<Arc<crate::tiers::ColdTier>> {
        self.state.cold.clone()
    }

    /// Opens the store and the lake and creates the consumer on `bus` (messages are kept for
    /// it from now on).
    pub async fn build(config: &TimelineConfig, bus: Arc<dyn Bus>) -> Result<Timeline, BuildError> {
        config.validate()?;
        let items = Arc::new(config.item_options()?);
        let (store, sqlite): (Arc<dyn Store>, Option<SqliteStore>) = match config.backend {
            #[cfg(feature = "dynamodb")]
            Backend::Dynamodb => (Arc::new(DynamoStore::connect(&config.dynamodb).await), None),
            #[cfg(not(feature = "dynamodb"))]
            Backend::Dynamodb => return Err(BuildError::DynamodbNotBuilt),
            Backend::Sqlite => {
                let s = SqliteStore::open(&config.sqlite_path)
                    .await
                    .map_err(|source| BuildError::Store { path: config.sqlite_path.clone(), source })?;
                (Arc::new(s.clone()), Some(s))
            }
        };
        let lake = Arc::new(Lake::open(&config.lake, WriteOptions::default())?);
        let consumer = Consumer::subscribe(bus, config.consumer.spec(vec![filter::all_events()])).await?;
        let (handlers, counters) = handlers(store.clone(), items, config.consumer.concurrency);
        let state = Arc::new(AppState {
            store,
            lake: Some(lake.clone()),
            keys: ApiKeys::new(&config.api_key_hashes, &config.revoked_key_hashes),
            limits: config.limits(),
            retry_after_secs: config.retry_after_secs,
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight_requests)),
            cold: Some(Arc::new(crate::tiers::ColdTier::new(lake.clone(), (config.history_lateness_secs as i64).saturating_mul(1000)))),
        });
        Ok(Timeline { state, consumer, handlers, counters, sqlite })
    }

    /// The consumer's counters and the handler's.
    pub fn counters(&self) -> (Arc<Counters>, Arc<TimelineCounters>) {
        (self.consumer.counters(), self.counters.clone())
    }

    /// Serves the API on `listener` and runs the consumer until `shutdown`; returns what the
    /// consumer did once both have stopped.
    pub async fn run(self, listener: TcpListener, shutdown: Shutdown) -> std::io::Result<Report> {
        let Timeline { state, consumer, handlers, sqlite, .. } = self;
        let consumer = tokio::spawn(consumer.run(handlers, shutdown.consume.clone()));
        if let Some(sqlite) = sqlite {
            let stop = shutdown.serve.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = sqlite.purge_expired(chrono::Utc::now().timestamp()).await {
                        tracing::warn!(error = %e, "purging expired timeline rows failed");
                    }
                    tokio::select! { _ = tokio::time::sleep(PURGE_EVERY) => {}, _ = stopped(stop.clone()) => return }
                }
            });
        }
        service_kit::serve::http(listener, router(state), shutdown.serve).await?;
        let report = consumer.await.map_err(std::io::Error::other)?;
        Ok(report)
    }
}
