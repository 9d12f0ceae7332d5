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
    /// Largest event (default 1 MiB).
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
            max_event_bytes: 1 << 20,
            min_created_at: 0,
            max_created_at: 4_102_444_800_000,
            max_in_flight_requests: 64,
            retry_after_secs: 1,
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
        if self.api_key_hashes.is_empty() {
            return bad("api_key_hashes", "no API key configured: set GATEWAY_API_KEY_HASHES to SHA-256 hex hashes");
        }
        for h in self.api_key_hashes.iter().chain(&self.revoked_key_hashes) {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("api_key_hashes", "each hash must be 64 hex characters (SHA-256)");
            }
        }
        Ok(())
    }
}
