//! Gateway configuration: defaults, an optional TOML file, then `GATEWAY_*` environment
//! variables (nested with `__`, e.g. `GATEWAY_BUS__URL`). API keys are configured as SHA-256
//! hashes, and only from the environment (`GATEWAY_API_KEY_HASHES=hash1,hash2`).

use event_bus::JetStreamConfig;
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

/// Everything the gateway needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body, compressed or not, in bytes (default 10 MiB).
    pub max_body_bytes: usize,
    /// Largest event (default 1 MiB). This and the bounds of `meta.created_at` are the
    /// contract's limits: the lake writer must be given the same (`LAKE_WRITER_MAX_EVENT_BYTES`
    /// ...; k8s/ sets both from one ConfigMap, `eventplat-contract`).
    pub max_event_bytes: usize,
    /// Smallest accepted `meta.created_at` (epoch ms).
    pub min_created_at: i64,
    /// Bound of `meta.created_at` (epoch ms, exclusive).
    pub max_created_at: i64,
    /// Requests processed at once; more are answered 503 with Retry-After. Memory is bounded
    /// by about this times (max_body_bytes x 3).
    pub max_in_flight_requests: usize,
    /// Retry-After seconds sent with 429 and 503.
    pub retry_after_secs: u64,
    /// Seconds a client has to send a whole request body; slower bodies are answered 408.
    pub body_timeout_secs: u64,
    /// Seconds a whole request may take (reading, validating, publishing); beyond, 408.
    pub request_timeout_secs: u64,
    /// Most events (lines, array items) in one request; more are answered 413 before any is
    /// validated (default 100000).
    pub max_events_per_request: usize,
    /// Rejections listed in full in an answer (default 100); the others are counted by reason.
    pub max_rejection_details: usize,
    /// Rejected lines quarantined one by one per request (default 1000); the others go into
    /// one summary record (reason `too_many_rejections`).
    pub max_quarantined_per_request: usize,
    /// Requests each API key may send, per gateway instance: `per_sec` on average with bursts
    /// of `burst` (`GATEWAY_RATE_LIMIT__PER_SEC`, `GATEWAY_RATE_LIMIT__BURST`; `per_sec = 0`:
    /// unlimited). Beyond: 429 `rate_limited` with `Retry-After`, before the body is read.
    /// Default 10,000 a second, bursts of 20,000: far above what one instance serves in
    /// batches, a bound on a leaked key sending one event a request.
    pub rate_limit: service_kit::rate::RateLimitConfig,
    /// SHA-256 (hex) of the accepted API keys.
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub api_key_hashes: Vec<String>,
    /// SHA-256 (hex) of revoked API keys (answered 403).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub revoked_key_hashes: Vec<String>,
    /// The bus.
    pub bus: JetStreamConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 10 << 20,
            max_event_bytes: event_contract::Limits::default().max_event_bytes,
            min_created_at: event_contract::Limits::default().min_created_at,
            max_created_at: event_contract::Limits::default().max_created_at,
            max_in_flight_requests: 64,
            retry_after_secs: 1,
            body_timeout_secs: 30,
            request_timeout_secs: 60,
            max_events_per_request: 100_000,
            max_rejection_details: 100,
            max_quarantined_per_request: 1000,
            rate_limit: service_kit::rate::RateLimitConfig::new(10_000, 20_000),
            api_key_hashes: Vec::new(),
            revoked_key_hashes: Vec::new(),
            bus: JetStreamConfig::default(),
        }
    }
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::Value { field, reason: reason.to_owned() });
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 0.0.0.0:8080");
        }
        if self.max_body_bytes == 0 || self.max_event_bytes == 0 {
            return bad("max_body_bytes", "sizes must be positive");
        }
        if self.min_created_at >= self.max_created_at {
            return bad("min_created_at", "must be below max_created_at");
        }
        if self.max_in_flight_requests == 0 {
            return bad("max_in_flight_requests", "must be positive");
        }
        if self.body_timeout_secs == 0 || self.request_timeout_secs < self.body_timeout_secs {
            return bad("request_timeout_secs", "timeouts must be positive, the request's at least the body's");
        }
        if self.max_events_per_request == 0 || self.max_quarantined_per_request == 0 {
            return bad("max_events_per_request", "must be positive (and max_quarantined_per_request too)");
        }
        self.rate_limit.check().map_err(|reason| ConfigError::Value { field: "rate_limit", reason })?;
        service_kit::auth::check_key_hashes(&self.api_key_hashes, &self.revoked_key_hashes, "GATEWAY_API_KEY_HASHES")
            .map_err(|reason| ConfigError::Value { field: "api_key_hashes", reason })
    }
}

impl GatewayConfig {
    /// The gateway's state, publishing to `publisher`: the one assembly of the gateway, used
    /// by its binary (JetStream) and by `eventctl dev` (the in-process bus).
    pub fn app_state(&self, publisher: std::sync::Arc<dyn event_bus::Publisher>) -> crate::api::AppState {
        crate::api::AppState {
            publisher,
            limits: event_contract::Limits {
                max_event_bytes: self.max_event_bytes,
                min_created_at: self.min_created_at,
                max_created_at: self.max_created_at,
            },
            keys: service_kit::auth::ApiKeys::new(&self.api_key_hashes, &self.revoked_key_hashes),
            max_body_bytes: self.max_body_bytes,
            retry_after_secs: self.retry_after_secs,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_in_flight_requests)),
            protection: self.protection(),
        }
    }

    /// The request bounds of [`crate::api::AppState`].
    pub fn protection(&self) -> crate::api::Protection {
        crate::api::Protection {
            body_timeout: std::time::Duration::from_secs(self.body_timeout_secs),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            max_events_per_request: self.max_events_per_request,
            max_rejection_details: self.max_rejection_details,
            max_quarantined_per_request: self.max_quarantined_per_request,
            rate: self.rate_limit.limiter().map(std::sync::Arc::new),
        }
    }
}
