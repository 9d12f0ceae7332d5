//! The one way services consume the bus: a durable consumer ([`Consumer::subscribe`], on
//! any [`Bus`](crate::Bus)) run by one driver ([`Consumer::run`]) around the service's
//! [`Handler`].
//!
//! What the runtime does, so that no consumer writes it again:
//! - **Batches** by count, bytes and time (`batch_messages`, `batch_bytes`, `batch_wait`),
//!   handled by `concurrency` workers (one handler each), bounded: one batch waits per
//!   worker, the bus holds at most `max_ack_pending` deliveries for the consumer.
//! - **Acks after the handler commits**; a handler may also keep messages (buffered) and
//!   settle them later ([`Outcome::deferred`], [`Settled`]).
//! - **Transient failures** (a store that is down or throttling) are retried in place with a
//!   doubling backoff up to `retry_max`, for as long as it takes: the deliveries are kept
//!   alive, nothing overtakes them (a nak with a delay would let later messages pass, which
//!   breaks a high-water mark), and their delivery count does not grow, so a dependency
//!   that is unavailable never turns a message into a dead letter. A deferring handler
//!   keeps what it could not write and writes it again (the runtime keeps those deliveries
//!   alive too), or gives it back with [`Settled::Retry`] (a nak with a backoff).
//! - **Poison messages**: a batch that fails permanently is split in halves, in order, until
//!   the message that fails on its own is found; it is published to
//!   `dead-letter.<consumer>` (a [`QuarantineMessage`](event_contract::wire::QuarantineMessage),
//!   reason `consumer_failed`, the consumer's name and error) and then terminated (JetStream
//!   `+TERM`), and the others go through. A handler that panics fails its batch
//!   permanently. A message the bus delivered more than `max_deliver` times without it
//!   being settled (it crashed, hung or was killed with the consumer) is handled alone, and
//!   dead-lettered beyond `2 x max_deliver` deliveries, only while the handler's store
//!   answers ([`Handler::ready`]): delivery counts alone never dead-letter while the store
//!   is down.
//! - **Order** for handlers that keep a high-water mark of bus positions
//!   ([`ConsumerSpec::ordered`]): one batch at a time, in stream order, and only when no
//!   delivery of the durable is outside this process.
//! - **Stopping**: on `stop`, fetched messages not handed over are nak'ed, the workers
//!   finish their batch, write what they deferred and ack it; on a closing in-process bus
//!   the consumer drains everything the bus holds for it first.
//! - **Metrics**, labelled `consumer`: `bus_consumer_pending_messages` (lag),
//!   `bus_consumer_ack_pending_messages`, `bus_consumer_received_total`,
//!   `bus_consumer_redeliveries_total`, `bus_consumer_acked_total`,
//!   `bus_consumer_retries_total`, `bus_consumer_dead_letters_total`, and the histogram
//!   `bus_consumer_handler_seconds`.
//!
//! Replays: the durable also consumes `replay.<consumer>.>`, where `eventctl replay`
//! re-publishes the consumer's dead letters, so a replayed message reaches that consumer only.

mod config;
mod dead_letter;
mod driver;
mod handler;
mod split;
mod worker;

pub use config::{ConsumerConfig, ConsumerSpec};
pub use dead_letter::dead_letter_id;
pub use driver::{Consumer, Counters, Report};
pub use handler::{ErrorKind, Handler, HandlerError, Outcome, Settled};
pub use split::{Split, split_failures};
