//! How a consumer runs: [`ConsumerConfig`] (what services read from their configuration,
//! the same fields and names in every service) and [`ConsumerSpec`] (what the runtime
//! runs: the configuration plus the filter subjects and the consumer's own needs).

use std::time::Duration;

use event_contract::wire::{filter, is_valid_name};
use serde::{Deserialize, Serialize};

/// A consumer's settings, as every service configures them (`<SERVICE>_CONSUMER__<FIELD>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Durable consumer name: replicas share it; its dead letters go to
    /// `dead-letter.<durable>` and its replays come on `replay.<durable>.>`.
    pub durable: String,
    /// Messages handed to the handler at once (one store write each).
    pub batch_messages: usize,
    /// Payload bytes handed to the handler at once.
    pub batch_bytes: usize,
    /// A batch is handed over at the latest this many ms after its first message.
    pub batch_wait_ms: u64,
    /// Batches handled at once (a consumer that keeps a bus position handles one).
    pub concurrency: usize,
    /// Deliveries the bus lets this consumer hold un-acked (bounds its memory).
    pub max_ack_pending: i64,
    /// Seconds the bus waits for an ack before it redelivers.
    pub ack_wait_secs: u64,
    /// A message the bus delivered more than this many times without it being settled (it
    /// crashed, hung or was killed with the consumer) is handled on its own; beyond twice
    /// this, it is dead-lettered, only while the handler's store answers.
    pub max_deliver: u32,
    /// First wait before retrying after a transient error, ms (doubles each attempt).
    pub retry_initial_ms: u64,
    /// Longest wait between retries, ms.
    pub retry_max_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            durable: String::new(),
            batch_messages: 500,
            batch_bytes: 8 << 20,
            batch_wait_ms: 200,
            concurrency: 1,
            max_ack_pending: 20_000,
            ack_wait_secs: 60,
            max_deliver: 5,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
        }
    }
}

impl ConsumerConfig {
    /// The settings with another durable name (services' defaults).
    pub fn named(durable: &str) -> Self {
        ConsumerConfig { durable: durable.to_owned(), ..ConsumerConfig::default() }
    }

    /// Checks bounds; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_name(&self.durable) {
            return Err(format!("consumer.durable {:?}: 1-64 characters among A-Z a-z 0-9 _ -", self.durable));
        }
        if self.batch_messages == 0 || self.batch_bytes == 0 || self.concurrency == 0 || self.max_deliver == 0 {
            return Err("consumer.batch_messages, batch_bytes, concurrency and max_deliver must be positive".into());
        }
        if self.max_ack_pending <= 0 || self.ack_wait_secs == 0 {
            return Err("consumer.max_ack_pending and ack_wait_secs must be positive".into());
        }
        if self.max_ack_pending < (self.batch_messages * self.concurrency) as i64 {
            return Err("consumer.max_ack_pending must hold at least batch_messages x concurrency deliveries".into());
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err("consumer.retry_initial_ms must be positive and at most retry_max_ms".into());
        }
        Ok(())
    }

    /// The spec the runtime runs, on `filters` (the replay subject is added).
    pub fn spec(&self, filters: Vec<String>) -> ConsumerSpec {
        ConsumerSpec {
            name: self.durable.clone(),
            filters,
            ack_wait: Duration::from_secs(self.ack_wait_secs),
            max_ack_pending: self.max_ack_pending,
            batch_messages: self.batch_messages,
            batch_bytes: self.batch_bytes,
            batch_wait: Duration::from_millis(self.batch_wait_ms),
            concurrency: self.concurrency,
            max_deliver: self.max_deliver,
            retry_initial: Duration::from_millis(self.retry_initial_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            ordered: false,
            confirm_acks: true,
            tick: Duration::from_millis(500),
        }
    }
}

/// What the runtime runs: the durable consumer, its batches, its retry and dead-letter
/// rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable name (see [`ConsumerConfig::durable`]).
    pub name: String,
    /// Subjects consumed (the replay subject `replay.<name>.>` is added to them).
    pub filters: Vec<String>,
    /// How long the bus waits for an ack before it redelivers.
    pub ack_wait: Duration,
    /// Deliveries the bus lets the consumer hold.
    pub max_ack_pending: i64,
    /// Messages per batch.
    pub batch_messages: usize,
    /// Payload bytes per batch.
    pub batch_bytes: usize,
    /// Longest wait between a batch's first message and its hand-over.
    pub batch_wait: Duration,
    /// Batches handled at once: one handler each (`run` takes that many handlers).
    pub concurrency: usize,
    /// See [`ConsumerConfig::max_deliver`].
    pub max_deliver: u32,
    /// First retry delay of a transient failure.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// The handler keeps a high-water mark of bus positions (it skips what is at or below
    /// the last position it committed): batches go out one at a time, in stream order, and
    /// only when no delivery of this consumer is outside this process (a delivery lost on
    /// the way, a previous instance's un-acked ones) so that no message can arrive after a
    /// later one was committed.
    pub ordered: bool,
    /// Acks wait for the server's confirmation (else one publish each, no round trip: for
    /// handlers that recognise a redelivery of what they committed).
    pub confirm_acks: bool,
    /// How often the handler's [`tick`](super::Handler::tick) runs.
    pub tick: Duration,
}

impl ConsumerSpec {
    /// The filter subjects of the durable consumer: the spec's, and its replay subject.
    pub fn filter_subjects(&self) -> Vec<String> {
        let mut f = self.filters.clone();
        f.push(filter::replays_of(&self.name));
        f
    }

    /// The delay before retry number `attempt` (1-based): doubling, bounded.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.retry_initial.saturating_mul(factor).min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_backoff_doubles_to_its_bound() {
        assert!(ConsumerConfig::default().validate().is_err(), "no durable name");
        let c = ConsumerConfig::named("timeline");
        assert!(c.validate().is_ok());
        let s = c.spec(vec![filter::all_events()]);
        assert_eq!(s.filter_subjects(), vec!["raw-event.>", "replay.timeline.>"]);
        assert_eq!(s.backoff(1), Duration::from_millis(100));
        assert_eq!(s.backoff(3), Duration::from_millis(400));
        assert_eq!(s.backoff(30), Duration::from_secs(5));
        assert!(ConsumerConfig { max_ack_pending: 10, ..c.clone() }.validate().is_err());
        assert!(ConsumerConfig { durable: "a.b".into(), ..c }.validate().is_err());
    }
}
