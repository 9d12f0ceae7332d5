//! `eventctl dev`: the platform in one process on embedded defaults. The gateway, the lake
//! writer, the timeline (SQLite), the stats (SQLite + in-process cache) and the features
//! (in-memory windows) run on one bounded in-process bus, each with its own durable consumer
//! and each through the same assembly as its own binary; the lake is a local folder; no
//! server is needed. It prints where each listens and the API key to use.
//!
//! Ctrl-C (or SIGTERM) loses nothing that was answered 202: the gateway stops accepting and
//! finishes its requests in flight; the bus is closed; every consumer (lake writer,
//! timeline, stats, features) drains what the bus holds for it, writes it and acks it, and
//! ends when the bus says its durable is empty; then the bus is sealed and the quarantine
//! consumer (which takes the dead letters the others may produce while they drain) drains
//! and ends; the summary is printed and the exit code is 0. The drain is bounded
//! (`--drain-timeout-secs`, or a second Ctrl-C): past it, what is left is logged, the
//! consumers stop where they are, and the exit code is 1.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use event_bus::{Bus, InProcessBus};
use gateway::auth::hash_key;
use gateway::router;
use lake_writer::{LakeWriterConfig, LakeWriterService};
use service_kit::shutdown::Shutdown;

/// How long the consumers may take to finish once told to stop (after a drain that timed out).
const STOP_GRACE: Duration = Duration::from_secs(30);

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
    /// How often the lake's per-user history table (the timeline's cold tier) is built.
    #[arg(long, default_value_t = 60)]
    pub history_every_secs: u64,
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
    /// Seconds the consumers may take, after Ctrl-C, to drain what the bus holds.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout_secs: u64,
}

/// Runs until Ctrl-C / SIGTERM; 0 once everything accepted is written, 1 when the drain
/// timed out.
pub fn run(args: DevArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: DevArgs) -> Result<i32> {
    let _ = service_kit::telemetry::prometheus();
    let bus = InProcessBus::new(args.bus_capacity, 256 << 20);
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    // Servers stop on `serve`; consumers end when the bus is drained, or on `consume` when
    // the drain takes too long.
    let (serve_tx, serve_rx) = tokio::sync::watch::channel(false);
    let (consume_tx, consume_rx) = tokio::sync::watch::channel(false);
    let shutdown = Shutdown { serve: serve_rx.clone(), consume: consume_rx };
    // The lake writer first: its quarantine consumer takes every dead letter, so it must
    // exist before any other consumer runs.
    let max_age = args.max_age_secs.max(1);
    let lw_defaults = LakeWriterConfig::default();
    let lw_config = LakeWriterConfig {
        lake: args.lake.clone(),
        memory_bytes: usize::try_from(args.memory).unwrap_or(usize::MAX),
        max_age_secs: max_age,
        compact_every_secs: 0,
        events: event_bus::ConsumerConfig { ack_wait_secs: max_age * 2 + 60, ..lw_defaults.events.clone() },
        quarantine: event_bus::ConsumerConfig { ack_wait_secs: max_age * 2 + 60, ..lw_defaults.quarantine.clone() },
        quarantine_max_age_secs: max_age,
        ..lw_defaults
    };
    let lake_writer = LakeWriterService::build(&lw_config, shared.clone()).await.with_context(|| format!("starting the lake writer on {}", args.lake))?;
    let lake_url = lake_writer.lake().root.url.clone();
    let history_lake = lake_writer.lake();
    let lake_writer = lake_writer.start(None, shutdown.clone());
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
    let stats_service = stats::StatsService::build(&stats_config, Some(shared.clone())).await.context("starting the statistics")?;
    let stats_listener = tokio::net::TcpListener::bind(&args.stats_listen).await.with_context(|| format!("binding {}", args.stats_listen))?;
    let stats_addr = stats_listener.local_addr()?;
    let stats_task = tokio::spawn(stats_service.run(stats_listener, shutdown.clone()));
    let sample_token = stats::auth::issue_token(&stats_secret, "u1", 24 * 3600).unwrap_or_default();
    let features_config = features::FeaturesConfig {
        backend: features::Backend::Memory,
        listen: args.features_listen.clone(),
        grpc_listen: args.features_grpc_listen.clone(),
        api_key_hashes: vec![hash_key(&key)],
        // The windows are rebuilt from the lake before the features API answers.
        backfill: features::config::BackfillConfig { lake: args.lake.clone(), ..Default::default() },
        ..features::FeaturesConfig::default()
    };
    let features_service = features::Features::build(&features_config, Some(shared.clone())).await.context("starting the features service")?;
    let features_http = tokio::net::TcpListener::bind(&args.features_listen).await.with_context(|| format!("binding {}", args.features_listen))?;
    let features_grpc = tokio::net::TcpListener::bind(&args.features_grpc_listen).await.with_context(|| format!("binding {}", args.features_grpc_listen))?;
    let (features_http_addr, features_grpc_addr) = (features_http.local_addr()?, features_grpc.local_addr()?);
    let features_task = tokio::spawn(features_service.run(features_http, features_grpc, shutdown.clone()));
    // The timeline: SQLite, its consumer on its own durable, the API key as its bearer token.
    let timeline_config = timeline::TimelineConfig {
        listen: args.timeline_listen.clone(),
        backend: timeline::Backend::Sqlite,
        sqlite_path: args.timeline_db.display().to_string(),
        lake: args.lake.clone(),
        api_key_hashes: vec![hash_key(&key)],
        history_build_every_secs: args.history_every_secs.max(1),
        ..timeline::TimelineConfig::default()
    };
    let timeline = timeline::Timeline::build(&timeline_config, shared.clone()).await.context("starting the timeline")?;
    let timeline_listener = tokio::net::TcpListener::bind(&args.timeline_listen).await.with_context(|| format!("binding {}", args.timeline_listen))?;
    let timeline_addr = timeline_listener.local_addr()?;
    // The lake's per-user history table, built every `--history-every-secs` as a CronJob does
    // in production: events leave the hot tier for the cold one without a reader noticing.
    let history_task = {
        let lake = history_lake.clone();
        let cold = timeline.cold();
        let paths = timeline::user::UserPaths::new(&timeline_config.default_user_paths, &timeline_config.user_paths).map_err(|e| anyhow::anyhow!("the timeline's user paths: {e}"))?;
        let every = Duration::from_secs(args.history_every_secs.max(1));
        let mut stop = shutdown.consume.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                match timeline::history::build(&lake, &paths, &Default::default()).await {
                    Ok(r) if r.commits > 0 => tracing::info!(events = r.events, rows = r.rows, "history table built"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "building the history table failed; trying again later"),
                }
                if let Some(c) = &cold {
                    c.refresh().await;
                }
            }
        })
    };
    let timeline_task = tokio::spawn(timeline.run(timeline_listener, shutdown.clone()));

    // The gateway with its production defaults (the same assembly as its binary), the key
    // printed below, on the in-process bus.
    let gateway_config = gateway::GatewayConfig { listen: args.listen.clone(), api_key_hashes: vec![hash_key(&key)], ..gateway::GatewayConfig::default() };
    let state = Arc::new(gateway_config.app_state(Arc::new(bus.clone())));
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let gateway = tokio::spawn(service_kit::serve::http(listener, router(state), serve_rx));
    println!("eventctl dev: the platform on embedded defaults");
    println!("  gateway    http://{addr}/v1/events   (OpenAPI at /openapi.json, health at /healthz /readyz, metrics at /metrics)");
    println!("  API key    {key}");
    println!("  lake       {lake_url}");
    println!("  timeline   http://{}/v1/users/{{user_id}}/events   (SQLite {}; the API key above is its bearer token)", timeline_addr, args.timeline_db.display());
    println!("  stats      http://{stats_addr}/v1/users/{{user_id}}/stats?days=7   (SQLite {}; the API key above is a service key)", args.stats_db.display());
    println!("  features   http://{}/v1/features   gRPC {} (features.v1.Features; in-memory windows; the API key above is its bearer token)", features_http_addr, features_grpc_addr);
    println!("  send       eventctl gen -n 1000 | curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/x-ndjson' --data-binary @- http://{addr}/v1/events");
    println!("  read       curl -s -H 'Authorization: Bearer {sample_token}' http://{stats_addr}/v1/users/u1/stats   (a 24 h HS256 JWT of user u1)");
    match &provider {
        Some(p) => println!("  sign-in    the stats API also accepts the identity provider's RS256 / ES256 tokens ({p})"),
        None => println!("  sign-in    for your identity provider's tokens set STATS_JWKS_URL (or STATS_OIDC_ISSUER), STATS_JWT_ISSUER and STATS_JWT_AUDIENCE"),
    }
    println!("  events are in the lake within {max_age}s; Ctrl-C writes everything accepted and stops");

    // 1. The gateway (and every API) stops accepting and finishes its requests in flight.
    service_kit::shutdown::signal().await;
    let _ = serve_tx.send(true);
    match gateway.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the gateway failed"),
        Err(e) => tracing::error!(error = %e, "the gateway task failed"),
    }
    // 2. Nothing new comes in; every consumer drains what the bus holds for it.
    bus.close();
    let durables = [
        lw_config.events.durable.clone(),
        timeline_config.consumer.durable.clone(),
        stats_config.consumer_spec().name,
        features_config.consumer.durable.clone(),
    ];
    let lake_writer::Running { events: events_task, quarantine: quarantine_task, server: lake_server, counters: lake_counters } = lake_writer;
    let mut drain = tokio::spawn(async move { (events_task.await, timeline_task.await, stats_task.await, features_task.await) });
    let timeout = Duration::from_secs(args.drain_timeout_secs);
    let mut complete = true;
    let drained = tokio::select! {
        r = &mut drain => Some(r),
        () = tokio::time::sleep(timeout) => None,
        () = service_kit::shutdown::signal() => None,
    };
    let drained = match drained {
        Some(r) => r,
        None => {
            complete = log_left(&bus, &durables, "the drain was cut short") == 0;
            let _ = consume_tx.send(true);
            match tokio::time::timeout(STOP_GRACE, &mut drain).await {
                Ok(r) => r,
                Err(_) => {
                    drain.abort();
                    anyhow::bail!("the consumers did not stop within {STOP_GRACE:?}");
                }
            }
        }
    };
    if complete {
        // A consumer that failed ended without draining its durable.
        complete = log_left(&bus, &durables, "a consumer ended early") == 0;
    }
    // A build in progress is left uncommitted (the next run writes it again).
    history_task.abort();
    let (events, timeline_report, stats_report, features_report) = drained.context("the drain task failed")?;
    let events = events.context("the lake writer's consumer failed")?;
    match timeline_report {
        Ok(Ok(report)) => tracing::info!(?report, "timeline stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "the timeline failed"),
        Err(e) => tracing::error!(error = %e, "the timeline task failed"),
    }
    match stats_report {
        Ok(Ok(report)) => tracing::info!(?report, "statistics aggregator stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "statistics aggregator failed"),
        Err(e) => tracing::error!(error = %e, "the statistics task failed"),
    }
    match features_report {
        Ok(Ok(report)) => tracing::info!(?report, "features updater stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "the features service failed"),
        Err(e) => tracing::error!(error = %e, "the features task failed"),
    }
    // 3. No consumer but the quarantine's can dead-letter any more: seal the bus; the
    //    quarantine consumer writes what it holds and ends.
    bus.seal();
    let mut quarantine_task = quarantine_task;
    let quarantine = match tokio::time::timeout(timeout.max(STOP_GRACE), &mut quarantine_task).await {
        Ok(r) => r.context("the quarantine consumer failed")?,
        Err(_) => {
            complete &= log_left(&bus, std::slice::from_ref(&lw_config.quarantine.durable), "the quarantine drain timed out") == 0;
            let _ = consume_tx.send(true);
            match tokio::time::timeout(STOP_GRACE, &mut quarantine_task).await {
                Ok(r) => r.context("the quarantine consumer failed")?,
                Err(_) => {
                    quarantine_task.abort();
                    anyhow::bail!("the quarantine consumer did not stop within {STOP_GRACE:?}");
                }
            }
        }
    };
    if let Ok(Err(e)) = lake_server.await {
        tracing::error!(error = %e, "the lake writer's server failed");
    }
    let report = lake_counters.report(events, quarantine);
    let w = report.writer;
    println!(
        "stopped: {} events received, {} rows in {} files; {} quarantine records ({} invalid events, {} dead letters)",
        w.received,
        w.rows_written,
        w.files_written,
        report.quarantined + w.invalid,
        w.invalid,
        report.dead_letters
    );
    if !complete {
        eprintln!("eventctl dev: stopped before every consumer drained the bus (see the log for what was left)");
        return Ok(1);
    }
    Ok(0)
}

/// Logs the un-acked messages each durable still has; returns their total.
fn log_left(bus: &InProcessBus, durables: &[String], why: &str) -> usize {
    let mut total = 0;
    for d in durables {
        let left = bus.pending(d).unwrap_or(0);
        if left > 0 {
            tracing::warn!(consumer = %d, left, "{why}: messages not written");
            total += left;
        }
    }
    total
}
