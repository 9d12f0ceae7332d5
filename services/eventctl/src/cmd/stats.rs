//! `eventctl stats ...`: administration of the per-user daily statistics.
//!
//! - `backfill --date D`: recomputes one closed UTC day from the lake and replaces it in the
//!   statistics database atomically, then invalidates the cached statistics of its users.
//! - `migrate`: applies the Postgres migrations (what the Kubernetes Job runs).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use event_lake::{Lake, WriteOptions};
use stats::cache::{CacheSettings, StatsCache};
use stats::store::Store;

/// Subcommands of `eventctl stats`.
#[derive(Subcommand)]
pub enum StatsCommand {
    /// Recompute one day from the lake and replace it atomically.
    Backfill {
        /// The UTC day, YYYY-MM-DD, or `yesterday` (a closed day: before today).
        #[arg(long)]
        date: String,
        /// Lake root (local folder or s3://bucket/prefix).
        #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
        lake: String,
        #[command(flatten)]
        db: DbArgs,
        /// Redis of the stats service, to invalidate the cached statistics of the day's users.
        #[arg(long, env = "STATS_REDIS_URL")]
        redis_url: Option<String>,
        /// Key prefix of the stats service in Redis.
        #[arg(long, env = "STATS_REDIS_PREFIX", default_value = "stats:")]
        redis_prefix: String,
        /// The stats service's configuration file, for its `[[metrics]]` (default metrics
        /// otherwise).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the database migrations.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the statistics database is.
#[derive(Args)]
pub struct DbArgs {
    /// `postgres://...` or `sqlite://path` (eventctl dev's default file).
    #[arg(long, env = "STATS_DATABASE_URL", default_value = "sqlite://./dev-data/stats.db")]
    database_url: String,
    /// Postgres schema.
    #[arg(long, env = "STATS_DATABASE_SCHEMA", default_value = "public")]
    database_schema: String,
}

/// Runs one `stats` subcommand.
pub fn run(cmd: StatsCommand) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        match cmd {
            StatsCommand::Migrate { db } => {
                Store::open(&db.database_url, &db.database_schema, 1, true).await.context("applying the migrations")?;
                println!("migrations applied to {}", redact(&db.database_url));
                Ok(0)
            }
            StatsCommand::Backfill { date, lake, db, redis_url, redis_prefix, config, json } => {
                let day = if date == "yesterday" {
                    chrono::Utc::now().date_naive().pred_opt().context("no day before today")?
                } else {
                    chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").with_context(|| format!("--date {date:?} is neither YYYY-MM-DD nor yesterday"))?
                };
                if stats::definitions::day_number(day) >= stats::definitions::today() {
                    bail!("{date} is not a closed day: the live aggregator is still counting it (backfill days before today)");
                }
                let metrics = match &config {
                    Some(path) => stats::definitions::load_metrics_file(path).map_err(anyhow::Error::msg)?,
                    None => stats::default_metrics(),
                };
                if let Some(dir) = db.database_url.strip_prefix("sqlite://").and_then(|p| std::path::Path::new(p).parent())
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                let lake = Lake::open(&lake, WriteOptions::default()).with_context(|| format!("opening the lake {lake}"))?;
                let store = Store::open(&db.database_url, &db.database_schema, 4, true).await.context("opening the statistics database")?;
                let cache = match redis_url.filter(|u| !u.is_empty()) {
                    Some(url) => Some(StatsCache::redis(&url, &redis_prefix, CacheSettings::default()).await.context("the Redis URL")?),
                    None => None,
                };
                let extractor = stats::Extractor::new(metrics);
                let report = stats::backfill::backfill_day(&lake, &store, cache.as_ref(), &extractor, day).await?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "{}: {} files, {} events ({} repeated ids ignored), {} counted, {} rows written, {} users' cache invalidated",
                        report.date, report.files, report.events, report.duplicates, report.counted, report.rows, report.users_invalidated
                    );
                    if report.users_not_invalidated > 0 {
                        println!(
                            "Redis was unreachable: {} users' cached statistics could not be invalidated and refresh within the service's closed-day TTL",
                            report.users_not_invalidated
                        );
                    }
                    if report.capped > 0 {
                        println!("{} distinct values over their metric's max_distinct_per_day were not counted", report.capped);
                    }
                    if cache.is_none() {
                        println!("no --redis-url: cached statistics of that day expire with the service's closed-day TTL");
                    }
                }
                Ok(0)
            }
        }
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***@{}", &url[..s], &url[a + 1..]),
        _ => url.to_owned(),
    }
}
