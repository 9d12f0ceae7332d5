//! The platform's event bus behind one pair of traits, and the one way to consume it.
//!
//! Producers (the gateway) hold a [`Publisher`]; a [`Bus`] also creates durable consumers
//! ([`Bus::subscribe`] returns a [`Subscriber`]), which every service runs through the
//! [`consumer`] runtime (batching, retries, dead letters, draining, metrics). Two
//! implementations exist:
//!
//! - [`JetStreamBus`]: NATS JetStream, for production. A publish resolves only once the
//!   server has stored the message (JetStream publish ack); messages are deduplicated on
//!   [`OutMessage::id`] (`Nats-Msg-Id`; `<type>:<id>` for events, see [`OutMessage::event`])
//!   within the stream's duplicate window; durable pull
//!   consumers with explicit acks give at-least-once delivery shared between replicas.
//! - [`InProcessBus`]: a bounded in-memory bus with the same semantics (durable consumers,
//!   ack/nak/redelivery after `ack_wait`, dedup window, work sharing), for `eventctl dev` and
//!   the embedded defaults. Nothing survives the process.
//!
//! On JetStream, messages are compressed with zstd per message and the stream's store with
//! S2, both by default; consumers decode transparently and boundedly ([`codec`]).
//!
//! Both report backpressure as [`BusError::Full`] and an unreachable bus as
//! [`BusError::Unavailable`] so HTTP callers can answer 429/503 with `Retry-After`.

pub mod codec;
pub mod consumer;
mod dedup;
mod delivery;
mod error;
mod inprocess;
mod jetstream;
pub mod replay;
mod subject;
pub mod trace;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use futures::future::BoxFuture;

pub use codec::{MessageCompression, StreamCompression};
pub use consumer::{ConsumerConfig, ConsumerSpec};
pub use delivery::{Delivery, ack_all, ack_all_unconfirmed};
pub use error::BusError;
pub use inprocess::{InProcessBus, InProcessSubscriber};
pub use jetstream::{JetStreamBus, JetStreamConfig, JetStreamSubscriber, redact_url};
pub use replay::{ReplayReport, StoredLetter, replay};
pub use subject::subject_matches;
pub use trace::TraceParent;

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

impl OutMessage {
    /// A valid event: subject `raw-event.<type>`, dedup id `<type>:<id>`
    /// ([`dedup_id`](event_contract::wire::dedup_id)), so that an event sharing its id with
    /// an event of another type is not taken for a repeat.
    pub fn event(event_type: &str, id: &str, payload: bytes::Bytes) -> OutMessage {
        OutMessage {
            subject: event_contract::wire::Subject::event(event_type).to_string(),
            id: event_contract::wire::dedup_id(event_type, id),
            payload,
        }
    }
}

/// Publishing; a publish resolves only when the message is durable (JetStream ack).
pub trait Publisher: Send + Sync + 'static {
    /// Publishes all messages pipelined (not one round trip each) and waits for every ack;
    /// one result per message, in order. JetStream dedups on `id` (Nats-Msg-Id) within the
    /// stream's duplicate window; a duplicate ack counts as success.
    fn publish_batch(&self, msgs: Vec<OutMessage>) -> BoxFuture<'_, Vec<Result<(), BusError>>>;

    /// As [`Publisher::publish_batch`], every message carrying `trace` (the W3C
    /// `traceparent` of the request that publishes them) to the consumers, which handle them
    /// in a span naming its trace id ([`Delivery::trace`]).
    fn publish_batch_traced(&self, msgs: Vec<OutMessage>, trace: Option<TraceParent>) -> BoxFuture<'_, Vec<Result<(), BusError>>> {
        let _ = trace;
        self.publish_batch(msgs)
    }

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

    /// What the bus holds for this durable consumer (all its replicas): its lag, and what is
    /// delivered and not yet settled.
    fn state(&mut self) -> BoxFuture<'_, Result<ConsumerState, BusError>>;

    /// True once nothing new can arrive (the in-process bus after
    /// [`InProcessBus::close`]): a consumer then settles everything it holds, and `fetch`
    /// answers [`BusError::Closed`] once the durable is empty.
    fn is_closing(&self) -> bool {
        false
    }
}

/// A durable consumer's position in the bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerState {
    /// Messages stored for it and never delivered yet (its lag).
    pub pending: u64,
    /// Messages delivered and not yet acked or terminated (in a consumer's hands, or waiting
    /// for redelivery after a nak or an expired ack wait).
    pub ack_pending: u64,
}

/// A bus that can publish and create durable consumers: what services and `eventctl dev`
/// are assembled on, whichever bus it is.
pub trait Bus: Publisher {
    /// Creates (or reuses, updating its settings) the durable consumer `spec.name` on the
    /// spec's filter subjects and its replay subject, and returns a handle on it. On the
    /// in-process bus, messages are kept for the consumer from this call on.
    fn subscribe<'a>(&'a self, spec: &'a ConsumerSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>, BusError>>;

    /// The dead letters of `consumer` the bus keeps, published at or after `since_ms`,
    /// oldest first, at most `limit` (see [`replay`]).
    fn dead_letters<'a>(&'a self, consumer: &'a str, since_ms: i64, limit: usize) -> BoxFuture<'a, Result<Vec<StoredLetter>, BusError>>;

    /// Removes a dead letter (once replayed).
    fn forget_dead_letter<'a>(&'a self, consumer: &'a str, id: u64) -> BoxFuture<'a, Result<(), BusError>>;

    /// True when a message's position (`Delivery::seq`) means the same after this process
    /// restarts (JetStream stream sequences); false for the in-process bus, whose sequences
    /// start again at 1, so a consumer that stored positions starts from 0 again.
    fn positions_survive_restart(&self) -> bool {
        true
    }

    /// Makes the durable consumer `spec.name` deliver every message published at or after
    /// `since_ms` again (and everything later), whatever it acked before: a consumer whose
    /// state was rebuilt from elsewhere (the features' windows from the lake) takes over
    /// from there, recognising what it finds already applied. JetStream deletes the durable
    /// and creates it again with that start time (its unacked deliveries come back too). The
    /// in-process bus has nothing older than its consumers' subscriptions: nothing to do.
    fn rewind<'a>(&'a self, spec: &'a ConsumerSpec, since_ms: i64) -> BoxFuture<'a, Result<(), BusError>> {
        let _ = (spec, since_ms);
        Box::pin(async { Ok(()) })
    }
}
