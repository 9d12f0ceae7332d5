//! The timeline inside `eventctl dev`: the SQLite store, a consumer on the in-process bus,
//! and the API on its own address, all stopped by the caller's stop signal (the consumer
//! finishes and acks the batch it is writing; the server drains its requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use event_bus::Subscriber;
use event_lake::Lake;
use service_kit::auth::ApiKeys;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{AppState, PageLimits, router};
use crate::consumer::{ConsumerStats, TimelineConsumer};
use crate::item::ItemOptions;
use crate::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// How often expired rows are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// What the embedded timeline needs.
pub struct EmbeddedOptions {
    /// Address of the API.
    pub listen: String,
    /// The SQLite file.
    pub sqlite_path: String,
    /// The lake, for `include=payload`.
    pub lake: Arc<Lake>,
    /// Accepted keys.
    pub keys: ApiKeys,
    /// How items are built.
    pub items: ItemOptions,
}

/// A running embedded timeline.
pub struct EmbeddedTimeline {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The consumer's counters, updated after each batch.
    pub progress: watch::Receiver<ConsumerStats>,
    /// The consumer; resolves with its counters after the stop signal.
    pub consumer: JoinHandle<ConsumerStats>,
    /// The server; resolves once it has drained after the stop signal.
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Why the embedded timeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The SQLite file could not be opened.
    #[error("opening the timeline store {path}: {source}")]
    Store {
        /// The file.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// The address could not be bound.
    #[error("binding the timeline API to {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens the store, binds the API, and starts the consumer on `subscriber` (registered on
/// the bus by the caller before anything is published).
pub async fn start(opts: EmbeddedOptions, subscriber: impl Subscriber, stop: watch::Receiver<bool>) -> Result<EmbeddedTimeline, EmbeddedError> {
    let sqlite = SqliteStore::open(&opts.sqlite_path).await.map_err(|source| EmbeddedError::Store { path: opts.sqlite_path.clone(), source })?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let bind = |source| EmbeddedError::Bind { addr: opts.listen.clone(), source };
    let listener = tokio::net::TcpListener::bind(&opts.listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let consumer = TimelineConsumer::new(store.clone(), Arc::new(opts.items), 500);
    let progress = consumer.progress();
    let consumer = tokio::spawn(consumer.run(subscriber, stop.clone()));
    let mut purge_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = sqlite.purge_expired(chrono::Utc::now().timestamp()).await {
                tracing::warn!(error = %e, "purging expired timeline rows failed");
            }
            tokio::select! { _ = tokio::time::sleep(PURGE_EVERY) => {}, _ = purge_stop.changed() => return }
        }
    });
    let state = Arc::new(AppState {
        store,
        lake: Some(opts.lake),
        keys: opts.keys,
        limits: PageLimits::default(),
        retry_after_secs: 1,
        in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
    });
    let mut server_stop = stop;
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    Ok(EmbeddedTimeline { addr, progress, consumer, server })
}
