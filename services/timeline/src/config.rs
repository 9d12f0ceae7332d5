//! Timeline configuration: defaults, an optional TOML file, then `TIMELINE_*` environment
//! variables (nested with `__`, e.g. `TIMELINE_BUS__URL`, `TIMELINE_USER_PATHS__PRODUCT_SOLD`).
//! The DynamoDB region, credentials and endpoint come from the standard AWS environment
//! (`AWS_REGION`, `AWS_ACCESS_KEY_ID`..., `AWS_ENDPOINT_URL`). API keys are configured as
//! SHA-256 hashes, only from the environment (`TIMELINE_API_KEY_HASHES=hash1,hash2`).

use std::collections::BTreeMap;
use std::time::Duration;

use event_bus::{ConsumerConfig, JetStreamConfig};
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

use crate::item::ItemOptions;
use crate::user::UserPaths;

/// Where the items live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// DynamoDB (production).
    Dynamodb,
    /// A local SQLite file (embedded mode, tests).
    Sqlite,
}

/// Everything the timeline service needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimelineConfig {
    /// Address of the API (and `/healthz`, `/readyz`, `/metrics`).
    pub listen: String,
    /// `dynamodb` (default) or `sqlite`.
    pub backend: Backend,
    /// DynamoDB settings (table name, retries).
    pub dynamodb: DynamoConfig,
    /// SQLite file of the `sqlite` backend.
    pub sqlite_path: String,
    /// Lake root read by `include=payload` (local folder or `s3://bucket/prefix`).
    pub lake: String,
    /// How late an event reaches the lake at most, seconds: the API serves the lake's
    /// history table below `last build start - lateness` and the hot tier above (see
    /// `timeline::tiers`).
    pub history_lateness_secs: u64,
    /// How often the history table is built, seconds (the `timeline-history` CronJob's
    /// schedule; `eventctl dev --history-every-secs`).
    pub history_build_every_secs: u64,
    /// How long the history build may fall behind (failing, paused) before readers could
    /// see a gap, seconds: time for the on-call to mend it (default 2 days, a weekend).
    pub history_max_build_lag_secs: u64,
    /// JSON paths (dotted) naming the user, for types without their own entry.
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub default_user_paths: Vec<String>,
    /// Per event type: the JSON paths naming the user(s) (replaces the default list).
    #[serde(deserialize_with = "service_kit::config::string_list_map")]
    pub user_paths: BTreeMap<String, Vec<String>>,
    /// An item is kept within this many bytes (DynamoDB item size): the attributes are
    /// stored inline only when the item fits (1024 = one write request unit).
    pub item_budget_bytes: usize,
    /// Attributes at least this large are zstd-compressed when that makes them smaller.
    pub compress_min_bytes: usize,
    /// The bus consumer (durable `timeline`, on every event type; replicas share it).
    pub consumer: ConsumerConfig,
    /// Default `limit` of a page.
    pub default_limit: usize,
    /// Largest `limit` of a page.
    pub max_limit: usize,
    /// Largest `limit` with `include=payload` (each event is read from the lake).
    pub max_payload_limit: usize,
    /// Requests processed at once; more are answered 503 with Retry-After.
    pub max_in_flight_requests: usize,
    /// Retry-After seconds sent with 503.
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

/// DynamoDB settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoConfig {
    /// Table name.
    pub table: String,
    /// Endpoint override (default: `AWS_ENDPOINT_URL` or the AWS endpoint of the region).
    pub endpoint_url: Option<String>,
    /// Region override (default: the standard AWS chain, else us-east-1).
    pub region: Option<String>,
    /// Attempts of one BatchWriteItem chunk (throttling and unprocessed items), then the
    /// write fails and the deliveries are redelivered.
    pub max_write_attempts: u32,
    /// First backoff, milliseconds (doubles each attempt, full jitter).
    pub backoff_base_ms: u64,
    /// Largest backoff, milliseconds.
    pub backoff_max_ms: u64,
    /// BatchWriteItem calls in flight at once per write.
    pub write_concurrency: usize,
    /// Items a single API request may read (with a type filter DynamoDB reads items that
    /// it then filters out): past this, the page is returned short with a cursor.
    pub max_scanned_per_request: usize,
}

impl Default for DynamoConfig {
    fn default() -> Self {
        DynamoConfig {
            table: "timeline".into(),
            endpoint_url: None,
            region: None,
            max_write_attempts: 10,
            backoff_base_ms: 50,
            backoff_max_ms: 5_000,
            write_concurrency: 8,
            max_scanned_per_request: 20_000,
        }
    }
}

impl DynamoConfig {
    /// Backoff before attempt `attempt` (1-based retry count): full jitter over an
    /// exponentially growing bound.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = self.backoff_base_ms.saturating_mul(1u64 << attempt.min(20)).min(self.backoff_max_ms).max(1);
        Duration::from_millis(rand::random_range(0..=bound))
    }
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            listen: "0.0.0.0:8082".into(),
            backend: Backend::Dynamodb,
            dynamodb: DynamoConfig::default(),
            sqlite_path: "./timeline.db".into(),
            lake: "./lake".into(),
            history_lateness_secs: 3600,
            history_build_every_secs: 600,
            history_max_build_lag_secs: 2 * 86_400,
            default_user_paths: vec![crate::user::DEFAULT_USER_PATH.into()],
            user_paths: BTreeMap::new(),
            item_budget_bytes: 1024,
            compress_min_bytes: 128,
            consumer: ConsumerConfig { ack_wait_secs: 120, ..ConsumerConfig::named("timeline") },
            default_limit: 100,
            max_limit: 1000,
            max_payload_limit: 100,
            max_in_flight_requests: 64,
            retry_after_secs: 1,
            api_key_hashes: Vec::new(),
            revoked_key_hashes: Vec::new(),
            bus: JetStreamConfig::default(),
        }
    }
}

impl TimelineConfig {
    /// The hot tier's window, seconds: an item expires this long after its event time. The
    /// hot tier only bridges the time until the history table holds an event: the seam is at
    /// most `every + lateness` behind now while the build keeps its schedule, and the margin
    /// `max_build_lag` covers a build that fails for that long. (Defaults: 1 h + 10 min + 2
    /// days = 2 days 1 h 10 min.)
    pub fn hot_window_secs(&self) -> i64 {
        let secs = self.history_lateness_secs.saturating_add(self.history_build_every_secs).saturating_add(self.history_max_build_lag_secs);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }

    /// How items are built from events.
    pub fn item_options(&self) -> Result<ItemOptions, ConfigError> {
        let paths = UserPaths::new(&self.default_user_paths, &self.user_paths)
            .map_err(|reason| ConfigError::Value { field: "user_paths", reason })?;
        Ok(ItemOptions {
            paths,
            hot_window_secs: self.hot_window_secs(),
            item_budget_bytes: self.item_budget_bytes,
            compress_min_bytes: self.compress_min_bytes,
        })
    }

    /// Page limits of the API.
    pub fn limits(&self) -> crate::api::PageLimits {
        crate::api::PageLimits {
            default_limit: self.default_limit,
            max_limit: self.max_limit,
            max_payload_limit: self.max_payload_limit,
        }
    }
}

impl Validate for TimelineConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::Value { field, reason: reason.to_owned() });
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 0.0.0.0:8082");
        }
        self.item_options()?;
        if self.history_lateness_secs == 0 || self.history_build_every_secs == 0 {
            return bad("history_lateness_secs", "history_lateness_secs and history_build_every_secs must be positive");
        }
        if self.hot_window_secs() > 366 * 86_400 {
            return bad("history_max_build_lag_secs", "the hot window (lateness + build period + max build lag) must stay within a year");
        }
        if self.item_budget_bytes < 256 || self.item_budget_bytes > 400 * 1024 {
            return bad("item_budget_bytes", "must be between 256 and 409600 (DynamoDB's item limit)");
        }
        self.consumer.validate().map_err(|reason| ConfigError::Value { field: "consumer", reason })?;
        if self.default_limit == 0 || self.default_limit > self.max_limit || self.max_limit > 10_000 {
            return bad("default_limit", "need 0 < default_limit <= max_limit <= 10000");
        }
        if self.max_payload_limit == 0 || self.max_in_flight_requests == 0 {
            return bad("max_payload_limit", "max_payload_limit and max_in_flight_requests must be positive");
        }
        let d = &self.dynamodb;
        if d.table.len() < 3 || d.table.len() > 255 || !d.table.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            return bad("dynamodb.table", "3-255 characters among a-z A-Z 0-9 _ - .");
        }
        if d.max_write_attempts == 0 || d.write_concurrency == 0 || d.backoff_base_ms == 0 || d.backoff_max_ms < d.backoff_base_ms {
            return bad("dynamodb.max_write_attempts", "attempts, concurrency and backoffs must be positive (max >= base)");
        }
        service_kit::auth::check_key_hashes(&self.api_key_hashes, &self.revoked_key_hashes, "TIMELINE_API_KEY_HASHES")
            .map_err(|reason| ConfigError::Value { field: "api_key_hashes", reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_contract::wire::FieldPath;

    #[test]
    fn toml_per_type_paths_and_comma_lists_load_and_validate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("timeline.toml");
        let hash = "a".repeat(64);
        std::fs::write(
            &path,
            format!(
                "api_key_hashes = \"{hash}\"\nhistory_max_build_lag_secs = 86400\n[user_paths]\nproduct_sold = \"data.attributes.user_id, data.attributes.owner_id\"\nuser_signed_up = [\"data.attributes.user_id\"]\n"
            ),
        )
        .expect("write");
        let cfg: TimelineConfig = service_kit::config::load("TIMELINE_CONFIG_TEST_UNSET", Some(&path)).expect("load");
        assert_eq!(cfg.api_key_hashes, vec![hash]);
        assert_eq!(cfg.user_paths["product_sold"], vec!["data.attributes.user_id", "data.attributes.owner_id"]);
        let opts = cfg.item_options().expect("options");
        assert_eq!(opts.hot_window_secs, 3600 + 600 + 86_400, "lateness + build period + max lag");
        assert_eq!(opts.paths.for_type("product_sold").len(), 2);
        assert_eq!(opts.paths.for_type("other").iter().map(FieldPath::as_str).collect::<Vec<_>>(), ["data.attributes.user_id"]);

        let no_key = TimelineConfig::default();
        assert!(no_key.validate().is_err_and(|e| e.to_string().contains("TIMELINE_API_KEY_HASHES")));
        let bad_path = TimelineConfig { api_key_hashes: vec!["b".repeat(64)], default_user_paths: vec!["data..x".into()], ..TimelineConfig::default() };
        assert!(bad_path.validate().is_err());
    }
}
