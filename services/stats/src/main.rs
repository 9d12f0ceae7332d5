//! The stats binary: configuration (defaults, `--config FILE`, `STATS_*`), then the
//! assembled service ([`StatsService`]: the aggregator on NATS JetStream, the API, health and
//! metrics) until SIGTERM, which finishes the batch in hand and stops; a fatal aggregator
//! error stops it with an error (the orchestrator restarts it).
//!
//! `stats` serves; `stats migrate` applies the migrations and exits (the Kubernetes Job);
//! `stats token USER [TTL_SECS]` prints an HS256 JWT for USER signed with `STATS_JWT_SECRET`.

use std::sync::Arc;

use anyhow::{Context, bail};
use event_bus::{Bus, JetStreamBus};
use service_kit::shutdown::Shutdown;
use stats::service::StatsService;
use stats::{StatsConfig, Store};

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
    let bus: Option<Arc<dyn Bus>> = if config.aggregator {
        Some(Arc::new(JetStreamBus::connect(&config.bus).await.context("connecting to NATS JetStream")?))
    } else {
        None
    };
    let service = StatsService::build(&config, bus).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, aggregator = config.aggregator, api = config.api, "stats serving");
    let (_stop, shutdown) = Shutdown::on_signal();
    let report = service.run(listener, shutdown).await?;
    tracing::info!(?report, "aggregator finished its batch; bye");
    Ok(())
}
