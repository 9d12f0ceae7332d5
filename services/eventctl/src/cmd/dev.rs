//! `eventctl dev`: the platform in one process on embedded defaults. The gateway, the lake
//! writer, the timeline (SQLite), the stats (SQLite + in-process cache) and the features
//! (in-memory windows) run on one bounded in-process bus, each with its own durable consumer;
//! the lake is a local folder; no server is needed. It prints where each listens and the API
//! key to use; Ctrl-C flushes what is buffered and exits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use event_bus::InProcessBus;
use event_contract::Limits;
use event_contract::wire::filter;
use event_lake::{Lake, WriteOptions};
use gateway::auth::{ApiKeys, hash_key};
use gateway::{AppState, router};
use lake_writer::{EventWriter, QuarantineWriter};

/// Options of `eventctl dev`.
#[derive(Args, Clone)]
pub struct DevArgs {
    /// Lake root (local folder or s3://bucket/prefix).
    #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
    pub lake: String,
    /// Address of the gateway.
    #[arg(long, env = "EVENTCTL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// API key to accept (default: a random one, printed at start).
    #[arg(long, env = "EVENTCTL_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds an event may wait in a buffer before its partition is written.
    #[arg(long, default_value_t = 5)]
    pub max_age_secs: u64,
    /// Memory for buffered events.
    #[arg(long, default_value = "256MiB", value_parser = crate::size::parse)]
    pub memory: u64,
    /// Messages the in-process bus holds (beyond: 429 with Retry-After).
    #[arg(long, default_value_t = 100_000)]
    pub bus_capacity: usize,
    /// Address of the per-user event history API (timeline).
    #[arg(long, env = "EVENTCTL_TIMELINE_LISTEN", default_value = "127.0.0.1:8082")]
    pub timeline_listen: String,
    /// SQLite file of the timeline.
    #[arg(long, env = "EVENTCTL_TIMELINE_DB", default_value = "./dev-data/timeline.db")]
    pub timeline_db: std::path::PathBuf,
    /// Address of the per-user statistics API.
    #[arg(long, env = "EVENTCTL_STATS_LISTEN", default_value = "127.0.0.1:8083")]
    pub stats_listen: String,
    /// SQLite file of the per-user statistics.
    #[arg(long, env = "EVENTCTL_STATS_DB", default_value = "./dev-data/stats.db")]
    pub stats_db: std::path::PathBuf,
    /// The identity provider's JWKS URL: the stats API also accepts its RS256 / ES256 tokens.
    #[arg(long, env = "STATS_JWKS_URL")]
    pub stats_jwks_url: Option<String>,
    /// The identity provider's issuer URL (JWKS found by OpenID discovery; the expected `iss`).
    #[arg(long, env = "STATS_OIDC_ISSUER")]
    pub stats_oidc_issuer: Option<String>,
    /// The expected `iss` of the provider's tokens.
    #[arg(long, env = "STATS_JWT_ISSUER")]
    pub stats_jwt_issuer: Option<String>,
    /// Accepted audiences of the provider's tokens (the app's client id), comma-separated.
    #[arg(long, env = "STATS_JWT_AUDIENCE", value_delimiter = ',')]
    pub stats_jwt_audience: Vec<String>,
    /// The claim of the provider's tokens holding the user id.
    #[arg(long, env = "STATS_JWT_USER_CLAIM", default_value = "sub")]
    pub stats_jwt_user_claim: String,
    /// Address of the features service (HTTP `POST /v1/features`).
    #[arg(long, default_value = "127.0.0.1:8084")]
    pub features_listen: String,
    /// Address of the features service (gRPC `features.v1.Features`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub features_grpc_listen: String,
}

/// Runs until Ctrl-C / SIGTERM.
pub fn run(args: DevArgs) -> Result<i32> {
    service_kit::telemetry::init_logging("info");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(serve(args))?;
    Ok(0)
}

async fn serve(args: DevArgs) -> Result<()> {
    let _ = service_kit::telemetry::prometheus();
    let lake = Arc::new(Lake::open(&args.lake, WriteOptions::default()).with_context(|| format!("opening the lake {}", args.lake))?);
    let bus = InProcessBus::new(args.bus_capacity, 256 << 20);
    let ack_wait = Duration::from_secs(args.max_age_secs * 2 + 60);
    let events = bus.subscriber("lake-writer", &filter::all_events(), ack_wait);
    let quarantine = bus.subscriber("lake-writer-quarantine", &filter::all_quarantine(), ack_wait);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Per-user statistics: SQLite + in-process cache, its aggregator on its own durable.
    let key = args.api_key.clone().unwrap_or_else(|| format!("dev-{}", uuid::Uuid::new_v4().simple()));
    let stats_secret = std::env::var("STATS_JWT_SECRET").unwrap_or_else(|_| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
    if let Some(dir) = args.stats_db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stats_config = stats::StatsConfig {
        listen: args.stats_listen.clone(),
        database_url: format!("sqlite://{}", args.stats_db.display()),
        jwt_secret: stats_secret.clone(),
        jwks_url: args.stats_jwks_url.clone().unwrap_or_default(),
        oidc_issuer: args.stats_oidc_issuer.clone().unwrap_or_default(),
        jwt_issuer: args.stats_jwt_issuer.clone().unwrap_or_default(),
        jwt_audience: args.stats_jwt_audience.iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect(),
        jwt_user_claim: args.stats_jwt_user_claim.clone(),
        service_key_hashes: vec![hash_key(&key)],
        cache_closed_ttl_secs: 60,
        consumer: event_bus::ConsumerConfig { batch_messages: 2000, ..stats::StatsConfig::default().consumer },
        ..stats::StatsConfig::default()
    };
    let jwt = stats_config.jwt();
    let provider = jwt.jwks_enabled().then(|| {
        let source = if jwt.jwks_url.is_empty() { format!("discovered from {}", jwt.oidc_issuer) } else { jwt.jwks_url.clone() };
        format!("{source}, iss {}, aud {}", jwt.expected_issuer(), jwt.audiences.join(","))
    });
    let stats_service = stats::StatsService::build(&stats_config, Some(Arc::new(bus.clone()))).await.context("starting the statistics")?;
    let stats_listener = tokio::net::TcpListener::bind(&args.stats_listen).await.with_context(|| format!("binding {}", args.stats_listen))?;
    let stats_addr = stats_listener.local_addr()?;
    let stats_task = tokio::spawn(stats_service.run(stats_listener, service_kit::shutdown::Shutdown::on(stop_rx.clone())));
    let sample_token = stats::auth::issue_token(&stats_secret, "u1", 24 * 3600).unwrap_or_default();
    let max_age = Duration::from_secs(args.max_age_secs.max(1));
    let writer = EventWriter::new(lake.clone(), usize::try_from(args.memory).unwrap_or(usize::MAX), max_age, 1000);
    let events_task = tokio::spawn(writer.run(events, stop_rx.clone()));
    let features_config = features::FeaturesConfig {
        backend: features::Backend::Memory,
        listen: args.features_listen.clone(),
        grpc_listen: args.features_grpc_listen.clone(),
        ..features::FeaturesConfig::default()
    };
    let features_service = features::Features::build(&features_config, Some(Arc::new(bus.clone()))).await.context("starting the features service")?;
    let features_http = tokio::net::TcpListener::bind(&args.features_listen).await.with_context(|| format!("binding {}", args.features_listen))?;
    let features_grpc = tokio::net::TcpListener::bind(&args.features_grpc_listen).await.with_context(|| format!("binding {}", args.features_grpc_listen))?;
    let (features_http_addr, features_grpc_addr) = (features_http.local_addr()?, features_grpc.local_addr()?);
    let features_task = tokio::spawn(features_service.run(features_http, features_grpc, service_kit::shutdown::Shutdown::on(stop_rx.clone())));
    let quarantine_task = tokio::spawn(QuarantineWriter::new(lake.clone(), max_age, 10_000).run(quarantine, stop_rx));

    let state = Arc::new(AppState {
        publisher: Arc::new(bus.clone()),
        limits: Limits::default(),
        keys: ApiKeys::new(&[hash_key(&key)], &[]),
        max_body_bytes: 10 << 20,
        retry_after_secs: 1,
        in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
        protection: gateway::api::Protection::default(),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The timeline: SQLite, its consumer on its own durable, the API key as its bearer token.
    let timeline_config = timeline::TimelineConfig {
        listen: args.timeline_listen.clone(),
        backend: timeline::Backend::Sqlite,
        sqlite_path: args.timeline_db.display().to_string(),
        lake: args.lake.clone(),
        api_key_hashes: vec![hash_key(&key)],
        ..timeline::TimelineConfig::default()
    };
    let timeline = timeline::Timeline::build(&timeline_config, Arc::new(bus.clone())).await.context("starting the timeline")?;
    let timeline_listener = tokio::net::TcpListener::bind(&args.timeline_listen).await.with_context(|| format!("binding {}", args.timeline_listen))?;
    let timeline_addr = timeline_listener.local_addr()?;
    let timeline_task = tokio::spawn(timeline.run(timeline_listener, service_kit::shutdown::Shutdown::on(stop_tx.subscribe())));
    println!("eventctl dev: the platform on embedded defaults");
    println!("  gateway    http://{addr}/v1/events   (OpenAPI at /openapi.json, health at /healthz /readyz, metrics at /metrics)");
    println!("  API key    {key}");
    println!("  lake       {}", lake.root.url);
    println!("  timeline   http://{}/v1/users/{{user_id}}/events   (SQLite {}; the API key above is its bearer token)", timeline_addr, args.timeline_db.display());
    println!("  stats      http://{stats_addr}/v1/users/{{user_id}}/stats?days=7   (SQLite {}; the API key above is a service key)", args.stats_db.display());
    println!("  features   http://{}/v1/features   gRPC {} (features.v1.Features; in-memory windows)", features_http_addr, features_grpc_addr);
    println!("  send       eventctl gen -n 1000 | curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/x-ndjson' --data-binary @- http://{addr}/v1/events");
    println!("  read       curl -s -H 'Authorization: Bearer {sample_token}' http://{stats_addr}/v1/users/u1/stats   (a 24 h HS256 JWT of user u1)");
    match &provider {
        Some(p) => println!("  sign-in    the stats API also accepts the identity provider's RS256 / ES256 tokens ({p})"),
        None => println!("  sign-in    for your identity provider's tokens set STATS_JWKS_URL (or STATS_OIDC_ISSUER), STATS_JWT_ISSUER and STATS_JWT_AUDIENCE"),
    }
    println!("  events are in the lake within {}s; Ctrl-C flushes and stops", args.max_age_secs);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            service_kit::shutdown::signal().await;
            let _ = stop_tx.send(true);
        })
        .await?;
    let stats = events_task.await?;
    quarantine_task.await?;
    let timeline_report = timeline_task.await??;
    tracing::info!(report = ?timeline_report, "timeline stopped");
    match stats_task.await? {
        Ok(report) => tracing::info!(?report, "statistics aggregator stopped"),
        Err(e) => tracing::error!(error = %e, "statistics aggregator failed"),
    }
    if let Err(e) = features_task.await? {
        tracing::error!(error = %e, "the features service failed");
    }
    println!("stopped: {} events received, {} rows in {} files", stats.received, stats.rows_written, stats.files_written);
    Ok(())
}
