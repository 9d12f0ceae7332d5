//! The embedded default (`eventctl dev`): SQLite and the in-process cache, the aggregator on
//! an [`InProcessBus`] under its own durable name, the same API.

use std::sync::Arc;
use std::time::Duration;

use event_bus::InProcessBus;
use event_contract::wire::filter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aggregator::{Aggregator, AggregatorError, AggregatorOptions, AggregatorStats};
use crate::api::AppState;
use crate::auth::{Authenticator, JwtConfig};
use crate::cache::{CacheSettings, StatsCache};
use crate::definitions::{Extractor, default_metrics};
use crate::query::StatsReader;
use crate::store::{Store, StoreError};

/// Durable consumer of the embedded aggregator.
pub const EMBEDDED_DURABLE: &str = "stats-aggregator";

/// What the embedded stats need.
pub struct EmbeddedOptions {
    /// `sqlite://path` of the database file.
    pub database_url: String,
    /// How mobile JWTs are checked (`eventctl dev`: an HS256 secret for its sample token, and
    /// the identity provider's JWKS when given).
    pub jwt: JwtConfig,
    /// SHA-256 hashes of accepted service keys.
    pub service_key_hashes: Vec<String>,
}

/// The running embedded stats: the API state to serve, and the aggregator task.
pub struct Embedded {
    /// Serve it with [`crate::router`].
    pub state: Arc<AppState>,
    /// Ends when `stop` turns true.
    pub aggregator: JoinHandle<Result<AggregatorStats, AggregatorError>>,
}

/// Why the embedded stats could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Credentials.
    #[error("{0}")]
    Auth(String),
}

/// Opens the SQLite store, subscribes to the bus and starts the aggregator.
pub async fn start(opts: EmbeddedOptions, bus: &InProcessBus, stop: watch::Receiver<bool>) -> Result<Embedded, EmbeddedError> {
    let store = Store::open(&opts.database_url, "public", 4, true).await?;
    let settings = CacheSettings { closed_ttl: Duration::from_secs(60), ..CacheSettings::default() };
    let cache = Arc::new(StatsCache::in_process(settings));
    let metrics = default_metrics();
    let sub = bus.subscriber(EMBEDDED_DURABLE, &filter::all_events(), Duration::from_secs(60));
    let opts_agg = AggregatorOptions {
        consumer: EMBEDDED_DURABLE.into(),
        fetch_batch: 2000,
        startup_wait: Duration::ZERO,
        reset_position: true,
        retention_days: 400,
        ahead_days: 3,
    };
    let reader = StatsReader::new(store.clone(), cache.clone(), &metrics);
    let aggregator = Aggregator::new(store.clone(), cache.clone(), Extractor::new(metrics), opts_agg);
    let auth = Authenticator::new(&opts.service_key_hashes, &[], &opts.jwt).map_err(EmbeddedError::Auth)?;
    if let Err(e) = auth.load_keys().await {
        tracing::warn!(error = %e, "the identity provider's keys could not be fetched yet; retrying in the background");
    }
    auth.spawn_key_refresher(stop.clone());
    let task = tokio::spawn(aggregator.run(sub, stop));
    let state = AppState::new(reader, auth, 256, 1);
    Ok(Embedded { state, aggregator: task })
}
