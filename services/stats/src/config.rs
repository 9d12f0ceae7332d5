//! Stats service configuration: defaults, an optional TOML file (`--config FILE`), then
//! `STATS_*` environment variables (nested with `__`). Secrets (`STATS_JWT_SECRET`, the
//! database and Redis URLs with passwords) come from the environment.

use event_bus::JetStreamConfig;
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

use crate::definitions::MetricDef;

/// Everything the stats service needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Address of the API (and `/healthz`, `/readyz`, `/metrics`).
    pub listen: String,
    /// `postgres://...` (production) or `sqlite://path?mode=rwc` (embedded).
    pub database_url: String,
    /// Postgres schema to use (tables, partitions and the migration table); default `public`.
    pub database_schema: String,
    /// Database connections.
    pub database_max_connections: u32,
    /// Apply `migrations/` at start (off when Kubernetes runs them as a Job).
    pub run_migrations: bool,
    /// `redis://...`; empty: an in-process cache (one replica, or embedded).
    pub redis_url: String,
    /// Prefix of every Redis key of this service.
    pub redis_prefix: String,
    /// Run the aggregator (bus -> database) in this process.
    pub aggregator: bool,
    /// Serve the HTTP API in this process.
    pub api: bool,
    /// The metrics counted (default: products contacted, favorites, views and conversations
    /// received, products sold).
    pub metrics: Vec<MetricDef>,
    /// Days kept; older daily partitions are dropped.
    pub retention_days: u32,
    /// Daily partitions created ahead of today.
    pub partitions_ahead_days: u32,
    /// Aggregator: durable consumer name. Each shard has its own.
    pub durable: String,
    /// Aggregator: subject filter.
    pub filter: String,
    /// Aggregator: deliveries fetched (and committed) at once.
    pub fetch_batch: usize,
    /// Aggregator: un-acked deliveries the bus lets it hold.
    pub max_ack_pending: i64,
    /// Aggregator: seconds the bus waits for an ack before redelivering.
    pub ack_wait_secs: u64,
    /// Aggregator: this instance's shard, in `0..shards` (users with hash % shards == shard).
    pub shard: u32,
    /// Aggregator: number of shards (instances), 1 = one aggregator counts every user.
    pub shards: u32,
    /// Cache: seconds today's counts are cached (they change as events arrive).
    pub cache_today_ttl_secs: u64,
    /// Cache: seconds the closed days of a window are cached (they change only on late
    /// events or a backfill, both of which invalidate).
    pub cache_closed_ttl_secs: u64,
    /// Cache: milliseconds a finished response stays in the process (in front of Redis);
    /// 0 disables this local layer.
    pub cache_local_ttl_ms: u64,
    /// Cache: entries the in-process layer holds.
    pub cache_local_capacity: u64,
    /// Disable the cache entirely (benchmarks of the database path).
    pub cache_disabled: bool,
    /// API: requests in flight at once; beyond, 503 with Retry-After.
    pub max_in_flight: usize,
    /// SHA-256 hashes of the service keys internal callers may use (any user).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub service_key_hashes: Vec<String>,
    /// Revoked service key hashes (403).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub revoked_key_hashes: Vec<String>,
    /// HS256 secret of the mobile JWTs (from `STATS_JWT_SECRET`).
    pub jwt_secret: String,
    /// The bus.
    pub bus: JetStreamConfig,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            listen: "0.0.0.0:8083".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/test".into(),
            database_schema: "public".into(),
            database_max_connections: 16,
            run_migrations: true,
            redis_url: String::new(),
            redis_prefix: "stats:".into(),
            aggregator: true,
            api: true,
            metrics: crate::definitions::default_metrics(),
            retention_days: 400,
            partitions_ahead_days: 3,
            durable: "stats-aggregator".into(),
            filter: event_contract::wire::filter::all_events(),
            fetch_batch: 5000,
            max_ack_pending: 20_000,
            ack_wait_secs: 30,
            shard: 0,
            shards: 1,
            cache_today_ttl_secs: 30,
            cache_closed_ttl_secs: 3600,
            cache_local_ttl_ms: 1000,
            cache_local_capacity: 100_000,
            cache_disabled: false,
            max_in_flight: 1024,
            service_key_hashes: Vec::new(),
            revoked_key_hashes: Vec::new(),
            jwt_secret: String::new(),
            bus: JetStreamConfig::default(),
        }
    }
}

impl Validate for StatsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::Value { field, reason: reason.to_owned() });
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 0.0.0.0:8083");
        }
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("sqlite:"))
        {
            return bad("database_url", "must be postgres://... or sqlite:...");
        }
        if self.database_schema.is_empty()
            || !self.database_schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad("database_schema", "must be a plain identifier ([A-Za-z0-9_])");
        }
        if !self.redis_url.is_empty() && !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return bad("redis_url", "must be redis://... (or empty for the in-process cache)");
        }
        crate::definitions::validate_metrics(&self.metrics)
            .map_err(|reason| ConfigError::Value { field: "metrics", reason })?;
        if self.retention_days < 91 {
            return bad("retention_days", "must be at least 91 (the API reads up to 90 days)");
        }
        if self.fetch_batch == 0 || self.max_ack_pending <= 0 || self.ack_wait_secs == 0 {
            return bad("fetch_batch", "fetch_batch, max_ack_pending and ack_wait_secs must be positive");
        }
        if self.shards == 0 || self.shard >= self.shards {
            return bad("shard", "must be in 0..shards (and shards >= 1)");
        }
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            return bad("jwt_secret", "STATS_JWT_SECRET must be at least 32 bytes");
        }
        if self.cache_today_ttl_secs == 0 || self.cache_closed_ttl_secs == 0 {
            return bad("cache_today_ttl_secs", "cache TTLs must be positive");
        }
        if self.max_in_flight == 0 || self.database_max_connections == 0 {
            return bad("max_in_flight", "max_in_flight and database_max_connections must be positive");
        }
        if self.api && self.jwt_secret.is_empty() && self.service_key_hashes.is_empty() {
            return bad("jwt_secret", "set STATS_JWT_SECRET (or service_key_hashes): nobody could call the API");
        }
        Ok(())
    }
}

impl StatsConfig {
    /// The bus's ack wait.
    pub fn ack_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ack_wait_secs)
    }

    /// Cache settings.
    pub fn cache_settings(&self) -> crate::cache::CacheSettings {
        crate::cache::CacheSettings {
            today_ttl: std::time::Duration::from_secs(self.cache_today_ttl_secs),
            closed_ttl: std::time::Duration::from_secs(self.cache_closed_ttl_secs),
            local_ttl: std::time::Duration::from_millis(self.cache_local_ttl_ms),
            local_capacity: self.cache_local_capacity,
            disabled: self.cache_disabled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_come_as_one_comma_separated_variable() {
        // How k8s passes them (a Secret value): one string.
        // SAFETY: a prefix no other test reads; set before loading, in this test only.
        unsafe {
            std::env::set_var("STATS_CFGTEST_SERVICE_KEY_HASHES", "aa, bb");
            std::env::set_var("STATS_CFGTEST_REVOKED_KEY_HASHES", "cc");
        }
        let cfg: StatsConfig = service_kit::config::load("STATS_CFGTEST", None).expect("config");
        assert_eq!(cfg.service_key_hashes, vec!["aa".to_owned(), "bb".to_owned()]);
        assert_eq!(cfg.revoked_key_hashes, vec!["cc".to_owned()]);
    }
}
