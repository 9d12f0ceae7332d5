//! The stats binary: configuration (defaults, `--config FILE`, `STATS_*`), then the
//! assembled service ([`StatsService`]: the aggregator on NATS JetStream, the API, health and
//! metrics) until SIGTERM, which finishes the batch in hand and stops; a fatal aggregator
//! error stops it with an error (the orchestrator restarts it).
//!
//! `stats` (or `stats serve`) serves; `stats migrate` applies the migrations and exits (the
//! Kubernetes Job); `stats token USER [TTL_SECS]` prints an HS256 JWT for USER signed with
//! `STATS_JWT_SECRET`; `--help` and `--version` answer without binding or connecting anything.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use event_bus::{Bus, JetStreamBus};
use service_kit::shutdown::Shutdown;
use stats::service::StatsService;
use stats::{StatsConfig, Store};

/// Per-user daily statistics: aggregates the bus into Postgres, serves them over HTTP.
#[derive(Parser)]
#[command(name = "stats", version)]
struct Cli {
    #[command(flatten)]
    service: service_kit::cli::ServiceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the aggregator and the API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print an HS256 JWT for USER signed with `STATS_JWT_SECRET`.
    Token {
        /// The user the token names.
        user: String,
        /// Lifetime in seconds.
        #[arg(default_value_t = 3600)]
        ttl_secs: u64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    service_kit::exit_on_error("stats", run(cli).await);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    service_kit::telemetry::init_logging("info");
    if let Some(Command::Token { user, ttl_secs }) = &cli.command {
        let secret = std::env::var("STATS_JWT_SECRET").context("STATS_JWT_SECRET is not set")?;
        println!("{}", stats::auth::issue_token(&secret, user, *ttl_secs).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let config: StatsConfig = cli.service.load("STATS")?;
    if let Some(Command::Migrate) = cli.command {
        Store::open(&config.database_url, &config.database_schema, 1, true).await.context("applying the migrations")?;
        println!("migrations applied");
        return Ok(());
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
