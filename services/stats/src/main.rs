//! The stats binary: configuration (defaults, `--config FILE`, `STATS_*`), the aggregator on
//! NATS JetStream, the API, health and metrics; SIGTERM finishes the batch in hand and stops.
//!
//! `stats` serves; `stats migrate` applies the migrations and exits (the Kubernetes Job);
//! `stats token USER [TTL_SECS]` prints an HS256 JWT for USER signed with `STATS_JWT_SECRET`.

use std::sync::Arc;

use anyhow::{Context, bail};
use event_bus::JetStreamBus;
use stats::aggregator::{Aggregator, AggregatorOptions};
use stats::auth::Authenticator;
use stats::cache::StatsCache;
use stats::{AppState, Extractor, StatsConfig, StatsReader, Store, router};

#[tokio::main]
async fn main() {
    service_kit::exit_on_error("stats", run().await);
}

async fn run() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["token", user, rest @ ..] = args.as_slice() {
        let secret = std::env::var("STATS_JWT_SECRET").context("STATS_JWT_SECRET is not set")?;
        let ttl: u64 = rest.first().map(|s| s.parse()).transpose().context("TTL_SECS must be a number")?.unwrap_or(3600);
        println!("{}", stats::auth::issue_token(&secret, user, ttl).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let file = service_kit::config::file_from_args();
    let config: StatsConfig = service_kit::config::load("STATS", file.as_deref())?;
    if let ["migrate"] = args.as_slice() {
        Store::open(&config.database_url, &config.database_schema, 1, true).await.context("applying the migrations")?;
        println!("migrations applied");
        return Ok(());
    }
    if !args.is_empty() && args != ["serve"] {
        bail!("unknown command {:?}: use serve (default), migrate, or token USER [TTL_SECS]", args.join(" "));
    }
    let _ = service_kit::telemetry::prometheus();
    let store = Store::open(&config.database_url, &config.database_schema, config.database_max_connections, config.run_migrations)
        .await
        .context("opening the database")?;
    let cache = Arc::new(if config.redis_url.is_empty() {
        StatsCache::in_process(config.cache_settings())
    } else {
        StatsCache::redis(&config.redis_url, &config.redis_prefix, config.cache_settings()).await.context("the Redis URL")?
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let aggregator_task = if config.aggregator {
        let bus = JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?;
        let sub = bus.subscriber(&config.durable, &config.filter, config.ack_wait(), config.max_ack_pending).await?;
        let opts = AggregatorOptions {
            consumer: config.durable.clone(),
            fetch_batch: config.fetch_batch,
            // One ack wait plus a margin for the server's redelivery timer.
            startup_wait: config.ack_wait() + (config.ack_wait() / 2).max(std::time::Duration::from_secs(1)),
            reset_position: false,
            retention_days: config.retention_days,
            ahead_days: config.partitions_ahead_days,
        };
        let extractor = Extractor::sharded(config.metrics.clone(), config.shard, config.shards);
        let aggregator = Aggregator::new(store.clone(), cache.clone(), extractor, opts);
        let stop_on_failure = stop_tx.clone();
        Some(tokio::spawn(async move {
            let r = aggregator.run(sub, stop_rx.clone()).await;
            // A fatal aggregator error stops the whole process (the orchestrator restarts it).
            let _ = stop_on_failure.send(true);
            r
        }))
    } else {
        None
    };

    let auth = Authenticator::new(&config.service_key_hashes, &config.revoked_key_hashes, &config.jwt())
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    if config.api {
        if let Err(e) = auth.load_keys().await {
            tracing::error!(error = %e, "the identity provider's keys could not be fetched; not ready until they are");
        }
        auth.spawn_key_refresher(stop_tx.subscribe());
    }
    let state = AppState::new(StatsReader::new(store, cache, &config.metrics), auth, config.max_in_flight, 1);
    let app = if config.api {
        router(state)
    } else {
        let reader = state.reader.clone();
        service_kit::health::routes(Arc::new(move || {
            let reader = reader.clone();
            Box::pin(async move { reader.store().ping().await.map_err(|e| e.to_string()) })
        }))
    };
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, aggregator = config.aggregator, api = config.api, "stats serving");
    let mut stopped = stop_tx.subscribe();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = service_kit::shutdown::signal() => {},
                _ = stopped.wait_for(|s| *s) => {},
            }
            let _ = stop_tx.send(true);
        })
        .await?;
    if let Some(task) = aggregator_task {
        let stats = task.await?.context("the aggregator failed")?;
        tracing::info!(?stats, "aggregator finished its batch; bye");
    }
    Ok(())
}
