//! The platform's event bus behind one pair of traits.
//!
//! Producers (the gateway) hold a [`Publisher`]; consumers (the lake writer) hold a
//! [`Subscriber`] obtained from a durable consumer. Two implementations exist:
//!
//! - [`JetStreamBus`]: NATS JetStream, for production. A publish resolves only once the
//!   server has stored the message (JetStream publish ack); messages are deduplicated on
//!   [`OutMessage::id`] (`Nats-Msg-Id`) within the stream's duplicate window; durable pull
//!   consumers with explicit acks give at-least-once delivery shared between replicas.
//! - [`InProcessBus`]: a bounded in-memory bus with the same semantics (durable consumers,
//!   ack/nak/redelivery after `ack_wait`, dedup window, work sharing), for `eventctl dev` and
//!   the embedded defaults. Nothing survives the process.
//!
//! Both report backpressure as [`BusError::Full`] and an unreachable bus as
//! [`BusError::Unavailable`] so HTTP callers can answer 429/503 with `Retry-After`.

mod dedup;
mod delivery;
mod error;
mod inprocess;
mod jetstream;
mod subject;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use futures::future::BoxFuture;

pub use delivery::{Delivery, ack_all, ack_all_unconfirmed};
pub use error::BusError;
pub use inprocess::{InProcessBus, InProcessSubscriber};
pub use jetstream::{JetStreamBus, JetStreamConfig, JetStreamSubscriber};
pub use subject::subject_matches;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// The subject, e.g. `raw-event.<type>` or `quarantine.<reason>`. No wildcards.
    pub subject: String,
    /// The deduplication id (`Nats-Msg-Id`): a message published again with the same id
    /// within the duplicate window is stored once. Empty means "no dedup".
    pub id: String,
    /// The message body.
    pub payload: bytes::Bytes,
}

/// Publishing; a publish resolves only when the message is durable (JetStream ack).
pub trait Publisher: Send + Sync + 'static {
    /// Publishes all messages pipelined (not one round trip each) and waits for every ack;
    /// one result per message, in order. JetStream dedups on `id` (Nats-Msg-Id) within the
    /// stream's duplicate window; a duplicate ack counts as success.
    fn publish_batch(&self, msgs: Vec<OutMessage>) -> BoxFuture<'_, Vec<Result<(), BusError>>>;

    /// True when the bus answers (for /readyz).
    fn is_ready(&self) -> BoxFuture<'_, bool>;

    /// The largest payload a message may have (JetStream: the server's `max_payload`, 1 MiB
    /// by default; in-process: the bus's byte capacity). Messages built to fit the bus (a
    /// [`QuarantineMessage`](event_contract::wire::QuarantineMessage)) are cut to it.
    fn max_payload(&self) -> usize;
}

/// A durable consumer: several replicas with the same durable name share the work.
pub trait Subscriber: Send + 'static {
    /// Up to `max` deliveries; waits at most `wait` when none is available (returns empty
    /// then).
    fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, BusError>>;
}
