//! Lake writer configuration: defaults, an optional TOML file, `LAKE_WRITER_*` environment.

use event_bus::JetStreamConfig;
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

/// Everything the lake writer needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Lake root: a local folder or `s3://bucket/prefix`.
    pub lake: String,
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub listen: String,
    /// Memory for buffered events (compressed), bytes.
    pub memory_bytes: usize,
    /// A partition is flushed once its oldest event waited this long.
    pub max_age_secs: u64,
    /// Deliveries fetched at once.
    pub fetch_batch: usize,
    /// Durable consumer name of events (replicas share it).
    pub durable: String,
    /// Subject filter of events.
    pub filter: String,
    /// Durable consumer name of quarantined events.
    pub quarantine_durable: String,
    /// Subject filter of quarantined events.
    pub quarantine_filter: String,
    /// Unacked deliveries the bus lets this consumer hold (bounds memory).
    pub max_ack_pending: i64,
    /// Seconds the bus waits for an ack before redelivering (default: 2 x max_age + 120;
    /// must exceed max_age, since events are acked only once their file is committed).
    pub ack_wait_secs: Option<u64>,
    /// Run compaction of closed partitions this often (0: never; or run `eventctl compact`).
    pub compact_every_secs: u64,
    /// The bus.
    pub bus: JetStreamConfig,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            lake: "./lake".into(),
            listen: "0.0.0.0:8081".into(),
            memory_bytes: 512 << 20,
            max_age_secs: 300,
            fetch_batch: 1000,
            durable: "lake-writer".into(),
            filter: event_contract::wire::filter::all_events(),
            quarantine_durable: "lake-writer-quarantine".into(),
            quarantine_filter: event_contract::wire::filter::all_quarantine(),
            max_ack_pending: 200_000,
            ack_wait_secs: None,
            compact_every_secs: 3600,
            bus: JetStreamConfig::default(),
        }
    }
}

impl WriterConfig {
    /// How long the bus waits for an ack before redelivering: longer than a buffered event
    /// can wait plus a flush.
    pub fn ack_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ack_wait_secs.unwrap_or(self.max_age_secs * 2 + 120))
    }
}

impl Validate for WriterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::Value { field, reason: reason.to_owned() });
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 0.0.0.0:8081");
        }
        if self.memory_bytes < (16 << 20) {
            return bad("memory_bytes", "must be at least 16 MiB");
        }
        if self.max_age_secs == 0 || self.fetch_batch == 0 || self.max_ack_pending <= 0 {
            return bad("max_age_secs", "max_age_secs, fetch_batch and max_ack_pending must be positive");
        }
        if self.ack_wait_secs.is_some_and(|a| a <= self.max_age_secs) {
            return bad("ack_wait_secs", "must exceed max_age_secs (events are acked after their file is committed)");
        }
        Ok(())
    }
}
