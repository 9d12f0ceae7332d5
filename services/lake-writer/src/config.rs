//! Lake writer configuration: defaults, an optional TOML file, then `LAKE_WRITER_*`
//! environment variables (nested with `__`: `LAKE_WRITER_EVENTS__BATCH_MESSAGES`,
//! `LAKE_WRITER_QUARANTINE__DURABLE`, `LAKE_WRITER_BUS__URL`). Its two consumers take the
//! settings every service's consumers share ([`ConsumerConfig`]).

use event_bus::{ConsumerConfig, JetStreamConfig};
use serde::{Deserialize, Serialize};
use service_kit::config::{ConfigError, Validate};

/// Everything the lake writer needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeWriterConfig {
    /// Lake root: a local folder or `s3://bucket/prefix`.
    pub lake: String,
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub listen: String,
    /// Memory for buffered events (compressed), bytes.
    pub memory_bytes: usize,
    /// A partition is written once its oldest event waited this long.
    pub max_age_secs: u64,
    /// Run compaction of closed partitions this often (0: never; or run `eventctl compact`).
    pub compact_every_secs: u64,
    /// The consumer of events (`raw-event.>`; durable `lake-writer`, replicas share it). Its
    /// `ack_wait_secs` must exceed `max_age_secs`: events are acked once their file is
    /// committed (default 2 x 300 + 120 s).
    pub events: ConsumerConfig,
    /// The consumer of the quarantine (`quarantine.>`, the gateway's rejected lines, and
    /// `dead-letter.>`, what consumers gave up on; durable `lake-writer-quarantine`).
    pub quarantine: ConsumerConfig,
    /// A quarantine file is written at the latest this many seconds after its first record.
    pub quarantine_max_age_secs: u64,
    /// Records per quarantine file at most.
    pub quarantine_max_records: usize,
    /// Largest event, in bytes; this and the bounds of `meta.created_at` must be the
    /// gateway's (`GATEWAY_MAX_EVENT_BYTES`, ...): the writer checks every event against the
    /// same contract, and an event the gateway accepted but the writer refuses is
    /// dead-lettered (default: the contract's, 1 MiB).
    pub max_event_bytes: usize,
    /// Smallest accepted `meta.created_at` (epoch ms, default 0).
    pub min_created_at: i64,
    /// Bound of `meta.created_at` (epoch ms, exclusive; default 2100-01-01).
    pub max_created_at: i64,
    /// The bus.
    pub bus: JetStreamConfig,
}

impl Default for LakeWriterConfig {
    fn default() -> Self {
        LakeWriterConfig {
            lake: "./lake".into(),
            listen: "0.0.0.0:8081".into(),
            memory_bytes: 512 << 20,
            max_age_secs: 300,
            compact_every_secs: 3600,
            events: ConsumerConfig {
                batch_messages: 1000,
                max_ack_pending: 200_000,
                ack_wait_secs: 2 * 300 + 120,
                ..ConsumerConfig::named("lake-writer")
            },
            quarantine: ConsumerConfig {
                batch_messages: 500,
                max_ack_pending: 100_000,
                ack_wait_secs: 2 * 60 + 120,
                ..ConsumerConfig::named("lake-writer-quarantine")
            },
            quarantine_max_age_secs: 60,
            quarantine_max_records: 10_000,
            max_event_bytes: event_contract::Limits::default().max_event_bytes,
            min_created_at: event_contract::Limits::default().min_created_at,
            max_created_at: event_contract::Limits::default().max_created_at,
            bus: JetStreamConfig::default(),
        }
    }
}

impl LakeWriterConfig {
    /// The contract's limits events are checked against (the gateway's).
    pub fn limits(&self) -> event_contract::Limits {
        event_contract::Limits { max_event_bytes: self.max_event_bytes, min_created_at: self.min_created_at, max_created_at: self.max_created_at }
    }

    /// The events consumer's spec: every event type.
    pub fn events_spec(&self) -> event_bus::ConsumerSpec {
        let mut spec = self.events.spec(vec![event_contract::wire::filter::all_events()]);
        spec.tick = spec.tick.min(std::time::Duration::from_secs(self.max_age_secs.max(1)));
        spec
    }

    /// The quarantine consumer's spec: the gateway's rejected lines and every dead letter.
    pub fn quarantine_spec(&self) -> event_bus::ConsumerSpec {
        use event_contract::wire::filter;
        self.quarantine.spec(vec![filter::all_quarantine(), filter::all_dead_letters()])
    }
}

impl Validate for LakeWriterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError::Value { field, reason: reason.to_owned() });
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen", "must be an address like 0.0.0.0:8081");
        }
        if self.memory_bytes < (16 << 20) {
            return bad("memory_bytes", "must be at least 16 MiB");
        }
        if self.max_age_secs == 0 || self.quarantine_max_age_secs == 0 || self.quarantine_max_records == 0 {
            return bad("max_age_secs", "max_age_secs, quarantine_max_age_secs and quarantine_max_records must be positive");
        }
        self.events.validate().map_err(|reason| ConfigError::Value { field: "events", reason })?;
        self.quarantine.validate().map_err(|reason| ConfigError::Value { field: "quarantine", reason })?;
        if self.max_event_bytes == 0 || self.min_created_at >= self.max_created_at {
            return bad("max_event_bytes", "max_event_bytes must be positive and min_created_at below max_created_at (use the gateway's values)");
        }
        if self.events.durable == self.quarantine.durable {
            return bad("quarantine", "quarantine.durable must differ from events.durable");
        }
        if self.events.ack_wait_secs <= self.max_age_secs {
            return bad(
                "events",
                "events.ack_wait_secs (LAKE_WRITER_EVENTS__ACK_WAIT_SECS) must exceed max_age_secs: events are acked after their file is committed (2 x max_age_secs + 120 is advised)",
            );
        }
        if self.quarantine.ack_wait_secs <= self.quarantine_max_age_secs {
            return bad("quarantine", "quarantine.ack_wait_secs must exceed quarantine_max_age_secs");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_the_quarantine_takes_dead_letters() {
        let c = LakeWriterConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.events_spec().filter_subjects(), vec!["raw-event.>", "replay.lake-writer.>"]);
        assert_eq!(
            c.quarantine_spec().filter_subjects(),
            vec!["quarantine.>", "dead-letter.>", "replay.lake-writer-quarantine.>"]
        );
        let short = LakeWriterConfig { max_age_secs: 900, ..c.clone() };
        assert!(short.validate().is_err(), "an ack wait shorter than the max age is refused");
        let same = LakeWriterConfig { quarantine: ConsumerConfig::named("lake-writer"), ..c };
        assert!(same.validate().is_err());
    }
}
