//! Features service configuration: defaults, an optional TOML file, then `FEATURES_*`
//! environment variables (nested with `__`, e.g. `FEATURES_BUS__URL`). Counters (which event
//! types count as what) and windows (length and bucket size) are configuration.

use event_bus::{ConsumerConfig, ConsumerSpec, JetStreamConfig};
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

/// A counter: the event types it counts (each event of these types adds one for its
/// `attributes.product_id`, or for each product of a list, see `keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterSpec {
    /// Name used in columns (`<name>_<window>`), e.g. `impressions`.
    pub name: String,
    /// Event types (`data.type`) counted, e.g. `["product_viewed"]`.
    pub event_types: Vec<String>,
    /// Where the product id is, per event type of this counter (default
    /// [`DEFAULT_KEY_PATH`]). A path ending in `[*]` selects every item of a list: an event
    /// counts once for each distinct product it lists (`data.attributes.product_ids[*]`: one
    /// impression per product of a results page), at most [`MAX_LIST_IDS`] of them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keys: std::collections::BTreeMap<String, String>,
}

/// The product id of an event unless a counter says otherwise.
pub const DEFAULT_KEY_PATH: &str = "data.attributes.product_id";
/// Most products one event may list (more: the event is dead-lettered, it could never be
/// counted whole).
pub const MAX_LIST_IDS: usize = 1000;

/// A key path: a dotted path to an id, or (`[*]` at the end) to a list of ids.
pub fn parse_key_path(path: &str) -> Result<(event_contract::wire::FieldPath, bool), String> {
    let (dotted, list) = match path.strip_suffix("[*]") {
        Some(p) => (p, true),
        None => (path, false),
    };
    if dotted.contains(['[', ']', '*']) {
        return Err(format!("key path {path:?}: only a final [*] (every item of a list) is supported"));
    }
    Ok((event_contract::wire::FieldPath::parse(dotted)?, list))
}

/// A sliding window: its length and the bucket size that bounds its error at the old edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Name used in columns, e.g. `1h`.
    pub name: String,
    /// Length in seconds (a multiple of `bucket_secs`).
    pub length_secs: u64,
    /// Bucket size in seconds: the window counts whole buckets (see the README).
    pub bucket_secs: u64,
}

/// Where the windows live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Redis (production).
    Redis,
    /// In memory, in this process (`eventctl dev`; lost at exit).
    Memory,
}

/// Everything the features service needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// HTTP address (`POST /v1/features`, `/openapi.json`, health, metrics).
    pub listen: String,
    /// gRPC address (`features.v1.Features`).
    pub grpc_listen: String,
    /// `redis` (default) or `memory` (in this process, at most 1,000,000 products).
    pub backend: Backend,
    /// Redis URL (`redis://host:port/db`).
    pub redis_url: String,
    /// Prefix of every Redis key this service writes (several deployments can share a Redis).
    pub key_prefix: String,
    /// Counters.
    pub counters: Vec<CounterSpec>,
    /// Windows.
    pub windows: Vec<WindowSpec>,
    /// Run the updater (bus -> Redis) in this process.
    pub updater: bool,
    /// The updater's bus consumer (durable `features`, one filter subject per counted type,
    /// so the bus sends only those). A batch is written at the latest `batch_wait_ms` after
    /// its first event (the freshness, 150 ms) or at `batch_messages` events (the memory
    /// bound); the windows' expiry runs as often.
    pub consumer: ConsumerConfig,
    /// Expiry work per Redis call (products whose bucket leaves a window), bounds how long
    /// one call blocks Redis.
    pub expire_budget: usize,
    /// How long applied bus positions are remembered for exactly-once (a redelivery later
    /// than this after its first application would count twice), seconds.
    pub dedup_ttl_secs: u64,
    /// Largest batch of product ids per request.
    pub max_batch_ids: usize,
    /// Longest product id, bytes.
    pub max_id_bytes: usize,
    /// Reads in flight at once (HTTP + gRPC); more are answered 503 / RESOURCE_EXHAUSTED.
    pub max_in_flight_reads: usize,
    /// Retry-After seconds sent with 503.
    pub retry_after_secs: u64,
    /// Redis response timeout, milliseconds.
    pub redis_timeout_ms: u64,
    /// SHA-256 (hex) of the API keys readers send (`Authorization: Bearer <key>` over HTTP,
    /// `authorization: Bearer <key>` metadata over gRPC); only from the environment
    /// (`FEATURES_API_KEY_HASHES=hash1,hash2`). Required: the API answers 401 without a key.
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub api_key_hashes: Vec<String>,
    /// SHA-256 (hex) of revoked keys (403 / PERMISSION_DENIED).
    #[serde(deserialize_with = "service_kit::config::string_list")]
    pub revoked_key_hashes: Vec<String>,
    /// The bus.
    pub bus: JetStreamConfig,
    /// Rebuilding the windows from the lake ([`crate::backfill`]).
    pub backfill: BackfillConfig,
}

/// When the updater rebuilds the windows from the lake by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackfillConfig {
    /// The lake (a local folder or `s3://bucket/prefix`); empty: no rebuild.
    pub lake: String,
    /// Rebuild when the updater starts on an empty store (a new Redis, or one that lost its
    /// data), before it consumes the bus.
    pub on_empty: bool,
    /// The handover margin, seconds: the updater takes over from the messages published
    /// this long before the rebuild started (must exceed the lake writer's latency; see
    /// [`crate::backfill`]).
    pub margin_secs: u64,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig { lake: String::new(), on_empty: true, margin_secs: 900 }
    }
}

impl FeaturesConfig {
    /// How to reach the windows in Redis (the service, and `eventctl features backfill`).
    pub fn redis_options(&self, read_connections: usize) -> crate::store::RedisStoreOptions {
        crate::store::RedisStoreOptions {
            url: self.redis_url.clone(),
            prefix: self.key_prefix.clone(),
            dedup_ttl_secs: self.dedup_ttl_secs,
            expire_budget: self.expire_budget,
            timeout: std::time::Duration::from_millis(self.redis_timeout_ms),
            read_connections,
        }
    }

    /// The updater's consumer: one filter subject per counted event type, batches cut at the
    /// freshness interval, the expiry on the same tick; acks without waiting for the server
    /// (a lost ack only brings a message back, and its redelivery is recognised as counted).
    pub fn consumer_spec(&self, layout: &crate::Layout) -> ConsumerSpec {
        let filters = layout.event_types().iter().map(|t| event_contract::wire::filter::events_of(t)).collect();
        let mut spec = self.consumer.spec(filters);
        spec.tick = spec.batch_wait;
        spec.confirm_acks = false;
        spec
    }
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            listen: "0.0.0.0:8084".into(),
            grpc_listen: "0.0.0.0:50051".into(),
            backend: Backend::Redis,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "features:".into(),
            counters: default_counters(),
            windows: default_windows(),
            updater: true,
            consumer: ConsumerConfig {
                batch_messages: 50_000,
                batch_bytes: 64 << 20,
                batch_wait_ms: 150,
                max_ack_pending: 100_000,
                ack_wait_secs: 30,
                ..ConsumerConfig::named("features")
            },
            expire_budget: 5000,
            dedup_ttl_secs: 86_400,
            max_batch_ids: 1000,
            max_id_bytes: event_contract::bounds::MAX_KEY_BYTES,
            max_in_flight_reads: 256,
            retry_after_secs: 1,
            redis_timeout_ms: 2000,
            api_key_hashes: Vec::new(),
            revoked_key_hashes: Vec::new(),
            bus: JetStreamConfig::default(),
            backfill: BackfillConfig::default(),
        }
    }
}

/// `product_viewed` (its product) and `search_results_shown` (each product of
/// `attributes.product_ids`) -> impressions, `product_liked`/`product_favorited` -> likes,
/// `conversation_started` -> conversations.
pub fn default_counters() -> Vec<CounterSpec> {
    let c = |name: &str, types: &[&str]| CounterSpec {
        name: name.into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        keys: Default::default(),
    };
    let mut impressions = c("impressions", &["product_viewed", "search_results_shown"]);
    impressions.keys.insert("search_results_shown".into(), "data.attributes.product_ids[*]".into());
    vec![impressions, c("likes", &["product_liked", "product_favorited"]), c("conversations", &["conversation_started"])]
}

/// 1h in 1-minute buckets, 1d and 7d in 1-hour buckets.
pub fn default_windows() -> Vec<WindowSpec> {
    let w = |name: &str, length_secs, bucket_secs| WindowSpec { name: name.into(), length_secs, bucket_secs };
    vec![w("1h", 3600, 60), w("1d", 86_400, 3600), w("7d", 7 * 86_400, 3600)]
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl FeaturesConfig {
    /// The counters and windows alone (what the lake commands, `eventctl features backfill`
    /// and `export`, need; the service checks them with the rest).
    pub fn validate_layout(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Value { field, reason });
        if self.counters.is_empty() || self.windows.is_empty() {
            return bad("counters", "at least one counter and one window are needed".into());
        }
        let mut seen_types = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for c in &self.counters {
            if !name_ok(&c.name) || !names.insert(c.name.clone()) {
                return bad("counters", format!("counter name {:?} must be unique, 1-32 of [A-Za-z0-9_]", c.name));
            }
            if c.event_types.is_empty() {
                return bad("counters", format!("counter {:?} counts no event type", c.name));
            }
            for t in &c.event_types {
                if t.is_empty() || t.contains(['.', '*', '>', ' ']) || !seen_types.insert(t.clone()) {
                    return bad("counters", format!("event type {t:?} is invalid or mapped twice"));
                }
            }
            for (t, path) in &c.keys {
                if !c.event_types.contains(t) {
                    return bad("counters", format!("counter {:?}: a key path for {t:?}, which it does not count", c.name));
                }
                parse_key_path(path).map_err(|reason| ConfigError::Value { field: "counters", reason })?;
            }
        }
        names.clear();
        for w in &self.windows {
            if !name_ok(&w.name) || !names.insert(w.name.clone()) {
                return bad("windows", format!("window name {:?} must be unique, 1-32 of [A-Za-z0-9_]", w.name));
            }
            if w.bucket_secs == 0 || w.length_secs == 0 || w.length_secs % w.bucket_secs != 0 {
                return bad("windows", format!("window {:?}: length_secs must be a positive multiple of bucket_secs", w.name));
            }
            if w.length_secs / w.bucket_secs > 10_000 {
                return bad("windows", format!("window {:?}: at most 10,000 buckets", w.name));
            }
        }
        if self.key_prefix.is_empty() {
            return bad("key_prefix", "key_prefix must not be empty".into());
        }
        Ok(())
    }
}

impl Validate for FeaturesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: String| Err(ConfigError::Value { field, reason });
        for (field, addr) in [("listen", &self.listen), ("grpc_listen", &self.grpc_listen)] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(field, format!("{addr:?} must be an address like 0.0.0.0:8084"));
            }
        }
        if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
            return bad("redis_url", format!("{e}"));
        }
        self.validate_layout()?;
        if let Err(reason) = service_kit::auth::check_key_hashes(&self.api_key_hashes, &self.revoked_key_hashes, "FEATURES_API_KEY_HASHES") {
            return bad("api_key_hashes", reason);
        }
        if self.key_prefix.is_empty() || self.expire_budget == 0 {
            return bad("key_prefix", "key_prefix must not be empty, expire_budget must be positive".into());
        }
        self.consumer.validate().map_err(|reason| ConfigError::Value { field: "consumer", reason })?;
        if self.consumer.batch_wait_ms == 0 || self.consumer.batch_wait_ms > 60_000 {
            return bad("consumer", "consumer.batch_wait_ms (the freshness) must be in 1..=60000".into());
        }
        if self.consumer.ack_wait_secs * 1000 <= self.consumer.batch_wait_ms * 2 {
            return bad("consumer", "consumer.ack_wait_secs must exceed two batch waits".into());
        }
        if self.max_batch_ids == 0 || self.max_batch_ids > 10_000 || self.max_id_bytes == 0 {
            return bad("max_batch_ids", "must be in 1..=10000 (and max_id_bytes positive)".into());
        }
        if self.max_in_flight_reads == 0 || self.redis_timeout_ms == 0 {
            return bad("max_in_flight_reads", "max_in_flight_reads and redis_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_keys(t: &str, path: &str) -> FeaturesConfig {
        let mut c = FeaturesConfig { api_key_hashes: vec!["a".repeat(64)], ..FeaturesConfig::default() };
        c.counters[0].keys.insert(t.into(), path.into());
        c
    }

    #[test]
    fn key_paths_are_checked_at_start() {
        assert!(FeaturesConfig { api_key_hashes: vec!["a".repeat(64)], ..FeaturesConfig::default() }.validate().is_ok());
        assert!(with_keys("product_viewed", "data.attributes.items[*]").validate().is_ok());
        let err = |c: FeaturesConfig| c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(with_keys("product_viewed", "data.attributes.items[*].id")).contains("only a final [*]"));
        assert!(err(with_keys("product_viewed", "data..x")).contains("invalid JSON path"));
        assert!(err(with_keys("product_liked", "data.attributes.product_id")).contains("does not count"));
        assert!(err(FeaturesConfig::default()).contains("FEATURES_API_KEY_HASHES"), "an API key is required");
    }
}
