//! Stats service configuration: defaults, an optional TOML file (`--config FILE`), then
//! `STATS_*` environment variables (nested with `__`). Secrets (`STATS_JWT_SECRET`, the
//! database and Redis URLs with passwords) come from the environment. Mobile sign-in:
//! `STATS_JWKS_URL` or `STATS_OIDC_ISSUER`, `STATS_JWT_ISSUER`, `STATS_JWT_AUDIENCE`.

use event_bus::{ConsumerConfig, JetStreamConfig};
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

use crate::auth::JwtConfig;
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
    /// Days kept; older daily partitions are dropped. Default 91: the API reads up to 90 days
    /// back from today (the cost model, docs/cost-model.toml, uses the same value).
    pub retention_days: u32,
    /// Daily partitions created ahead of today.
    pub partitions_ahead_days: u32,
    /// Aggregator: the bus consumer (durable `stats-aggregator`; with several shards each
    /// shard's durable is `<durable>-<shard>`). One transaction per batch.
    pub consumer: ConsumerConfig,
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
    /// Cache: longest wait for one Redis command, milliseconds; past it (or on a connection
    /// failure) Redis is considered down and the API serves from the database until it
    /// answers a PING again (checked every second).
    pub cache_redis_timeout_ms: u64,
    /// API: requests in flight at once; beyond, 503 with Retry-After.
    pub max_in_flight: usize,
    /// SHA-256 hashes of the service keys internal callers may use (any user).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub service_key_hashes: Vec<String>,
    /// Revoked service key hashes (403).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub revoked_key_hashes: Vec<String>,
    /// HS256 secret of tokens issued by `stats token` (from `STATS_JWT_SECRET`; tests and
    /// tools: identity providers sign with RS256 / ES256 keys, see `jwks_url`).
    pub jwt_secret: String,
    /// The identity provider's JWKS URL (RS256 / ES256 signing keys of the mobile tokens).
    pub jwks_url: String,
    /// The identity provider's issuer URL: the JWKS URL is discovered from
    /// `{issuer}/.well-known/openid-configuration`, and it is the expected `iss` unless
    /// `jwt_issuer` is set.
    pub oidc_issuer: String,
    /// The expected `iss` of the provider's tokens.
    pub jwt_issuer: String,
    /// Accepted audiences (the app's client id, or the API audience): a token's `aud`, or
    /// its `client_id` when it has no `aud` (Cognito access tokens).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub jwt_audience: Vec<String>,
    /// The claim of the provider's tokens holding the user id.
    pub jwt_user_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub jwt_leeway_secs: u64,
    /// The provider's keys are refreshed when older than this, seconds.
    pub jwks_cache_secs: u64,
    /// At most one key refresh per this many seconds for tokens naming an unknown key.
    pub jwks_min_refresh_secs: u64,
    /// Timeout of one request to the provider, seconds.
    pub jwks_timeout_secs: u64,
    /// The bus.
    pub bus: JetStreamConfig,
}

impl Default for StatsConfig {
    fn default() -> Self {
        let jwt = JwtConfig::default();
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
            retention_days: 91,
            partitions_ahead_days: 3,
            consumer: ConsumerConfig { batch_messages: 5000, ack_wait_secs: 30, ..ConsumerConfig::named("stats-aggregator") },
            shard: 0,
            shards: 1,
            cache_today_ttl_secs: 30,
            cache_closed_ttl_secs: 3600,
            cache_local_ttl_ms: 1000,
            cache_local_capacity: 100_000,
            cache_disabled: false,
            cache_redis_timeout_ms: 500,
            max_in_flight: 1024,
            service_key_hashes: Vec::new(),
            revoked_key_hashes: Vec::new(),
            jwt_secret: String::new(),
            jwks_url: String::new(),
            oidc_issuer: String::new(),
            jwt_issuer: String::new(),
            jwt_audience: Vec::new(),
            jwt_user_claim: jwt.user_claim,
            jwt_leeway_secs: jwt.leeway_secs,
            jwks_cache_secs: jwt.jwks_cache_secs,
            jwks_min_refresh_secs: jwt.jwks_min_refresh_secs,
            jwks_timeout_secs: jwt.jwks_timeout_secs,
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
        self.consumer.validate().map_err(|reason| ConfigError::Value { field: "consumer", reason })?;
        if self.consumer.concurrency != 1 {
            return bad("consumer", "consumer.concurrency must be 1: the aggregator commits its bus position batch after batch");
        }
        if self.shards == 0 || self.shard >= self.shards {
            return bad("shard", "must be in 0..shards (and shards >= 1)");
        }
        self.jwt().validate().map_err(|(field, reason)| ConfigError::Value { field, reason })?;
        if self.cache_today_ttl_secs == 0 || self.cache_closed_ttl_secs == 0 {
            return bad("cache_today_ttl_secs", "cache TTLs must be positive");
        }
        if self.cache_redis_timeout_ms == 0 || self.cache_redis_timeout_ms > 10_000 {
            return bad("cache_redis_timeout_ms", "must be from 1 to 10000");
        }
        if self.max_in_flight == 0 || self.database_max_connections == 0 {
            return bad("max_in_flight", "max_in_flight and database_max_connections must be positive");
        }
        if self.api && self.jwt_secret.is_empty() && !self.jwt().jwks_enabled() && self.service_key_hashes.is_empty() {
            return bad("jwks_url", "set STATS_JWKS_URL or STATS_OIDC_ISSUER (mobile tokens), or service_key_hashes: nobody could call the API");
        }
        Ok(())
    }
}

impl StatsConfig {
    /// How JWTs are checked.
    pub fn jwt(&self) -> JwtConfig {
        JwtConfig {
            secret: self.jwt_secret.clone(),
            jwks_url: self.jwks_url.clone(),
            oidc_issuer: self.oidc_issuer.clone(),
            issuer: self.jwt_issuer.clone(),
            audiences: self.jwt_audience.clone(),
            user_claim: self.jwt_user_claim.clone(),
            leeway_secs: self.jwt_leeway_secs,
            jwks_cache_secs: self.jwks_cache_secs,
            jwks_min_refresh_secs: self.jwks_min_refresh_secs,
            jwks_timeout_secs: self.jwks_timeout_secs,
        }
    }

    /// The aggregator's consumer: this shard's durable, run in stream order.
    pub fn consumer_spec(&self) -> event_bus::ConsumerSpec {
        let mut consumer = self.consumer.clone();
        if self.shards > 1 {
            consumer.durable = format!("{}-{}", consumer.durable, self.shard);
        }
        // Only the types a metric counts: the aggregator reads a few percent of the bus's
        // bytes, not all of them (each byte a consumer reads may cross an availability zone).
        let types: std::collections::BTreeSet<&str> = self.metrics.iter().flat_map(|m| m.event_types.iter().map(String::as_str)).collect();
        let mut spec = consumer.spec(types.into_iter().map(event_contract::wire::filter::events_of).collect());
        spec.ordered = true;
        spec
    }

    /// Cache settings.
    pub fn cache_settings(&self) -> crate::cache::CacheSettings {
        crate::cache::CacheSettings {
            today_ttl: std::time::Duration::from_secs(self.cache_today_ttl_secs),
            closed_ttl: std::time::Duration::from_secs(self.cache_closed_ttl_secs),
            local_ttl: std::time::Duration::from_millis(self.cache_local_ttl_ms),
            local_capacity: self.cache_local_capacity,
            disabled: self.cache_disabled,
            redis_timeout: std::time::Duration::from_millis(self.cache_redis_timeout_ms),
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

    #[test]
    fn sign_in_settings_come_from_the_environment() {
        // SAFETY: a prefix no other test reads; set before loading, in this test only.
        unsafe {
            std::env::set_var("STATS_CFGJWT_JWKS_URL", "https://idp.example/.well-known/jwks.json");
            std::env::set_var("STATS_CFGJWT_JWT_ISSUER", "https://idp.example/");
            std::env::set_var("STATS_CFGJWT_JWT_AUDIENCE", "ios-app,android-app");
            std::env::set_var("STATS_CFGJWT_JWT_LEEWAY_SECS", "5");
            std::env::set_var("STATS_CFGJWT_SERVICE_KEY_HASHES", "aa");
        }
        let cfg: StatsConfig = service_kit::config::load("STATS_CFGJWT", None).expect("config");
        let jwt = cfg.jwt();
        assert!(jwt.jwks_enabled());
        assert_eq!(jwt.expected_issuer(), "https://idp.example/");
        assert_eq!(jwt.audiences, vec!["ios-app".to_owned(), "android-app".to_owned()]);
        assert_eq!((jwt.leeway_secs, jwt.user_claim.as_str()), (5, "sub"));
    }

    #[test]
    fn provider_tokens_need_an_issuer_and_an_audience() {
        let base = StatsConfig { jwks_url: "https://idp.example/keys".into(), service_key_hashes: vec!["aa".into()], ..StatsConfig::default() };
        let err = |c: &StatsConfig| c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&base).contains("STATS_JWT_ISSUER"), "{}", err(&base));
        let with_iss = StatsConfig { jwt_issuer: "https://idp.example".into(), ..base.clone() };
        assert!(err(&with_iss).contains("STATS_JWT_AUDIENCE"), "{}", err(&with_iss));
        let ok = StatsConfig { jwt_audience: vec!["app".into()], ..with_iss.clone() };
        assert!(ok.validate().is_ok());
        // Discovery: the issuer URL is the expected iss.
        let oidc = StatsConfig { oidc_issuer: "https://idp.example".into(), jwt_audience: vec!["app".into()], service_key_hashes: vec!["aa".into()], ..StatsConfig::default() };
        assert!(oidc.validate().is_ok());
        assert_eq!(oidc.jwt().expected_issuer(), "https://idp.example");
        let bad_url = StatsConfig { jwks_url: "ftp://x".into(), ..ok };
        assert!(err(&bad_url).contains("jwks_url"));
        let orphan = StatsConfig { jwt_audience: vec!["app".into()], service_key_hashes: vec!["aa".into()], ..StatsConfig::default() };
        assert!(err(&orphan).contains("STATS_JWKS_URL"));
    }
}
