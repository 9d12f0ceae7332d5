//! What a consumer plugs into the runtime: a [`Handler`] that processes batches of
//! deliveries and says, per batch, what became of them.

use futures::future::BoxFuture;

use crate::Delivery;

/// Whether a failure can go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store or another dependency failed or did not answer: the same batch is retried
    /// (never dead-lettered while the dependency is down).
    Transient,
    /// Something in the batch can never be processed (the store refused its data): the
    /// runtime splits the batch to find the message(s) that fail on their own and
    /// dead-letters those; the others go through.
    Permanent,
}

/// A failed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Transient or permanent.
    pub kind: ErrorKind,
    /// What failed, for logs and dead letters.
    pub message: String,
}

impl HandlerError {
    /// A failure that may go away (a dependency down, a timeout).
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError { kind: ErrorKind::Transient, message: message.into() }
    }

    /// A failure that will happen again with the same data.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError { kind: ErrorKind::Permanent, message: message.into() }
    }

    /// True for [`ErrorKind::Permanent`].
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }
}

/// What a handler did with a batch it did not fail as a whole.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Messages of the batch that can never be processed (their index in the batch, why):
    /// dead-lettered. Everything else is committed, or deferred.
    pub rejected: Vec<(usize, String)>,
    /// The handler keeps the batch's other messages (buffered, written later): they are
    /// acked when a later [`Settled::Committed`] names them. Their payload is released.
    pub deferred: bool,
    /// Messages of earlier deferred batches settled meanwhile.
    pub settled: Vec<Settled>,
}

impl Outcome {
    /// Every message of the batch committed.
    pub fn done() -> Self {
        Outcome::default()
    }
}

/// What became of deferred messages, named by their bus position (`Delivery::seq`).
#[derive(Debug)]
pub enum Settled {
    /// Written: acked.
    Committed(Vec<u64>),
    /// Given back to the bus: redelivered after a backoff (a nak with a delay; each one
    /// counts as a delivery). A handler whose store fails should rather keep the messages
    /// and write them again later: the runtime keeps deferred messages alive.
    Retry {
        /// The messages.
        seqs: Vec<u64>,
        /// Why.
        error: String,
    },
    /// Can never be written: dead-lettered with these bytes (the handler has them; the
    /// runtime released the payload when the message was deferred).
    Poison {
        /// The message.
        seq: u64,
        /// Its payload.
        raw: bytes::Bytes,
        /// Why.
        error: String,
    },
}

/// A consumer's processing: one instance per concurrent batch (`ConsumerSpec::concurrency`).
pub trait Handler: Send + 'static {
    /// Processes a batch (in delivery order; stream order for an ordered consumer). `Ok` means
    /// every message not rejected is committed (or deferred); an `Err` fails the batch as a
    /// whole: retried when transient, split when permanent. Called again with the same
    /// messages after a failure, so it must be idempotent.
    fn handle<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<Outcome, HandlerError>>;

    /// Called every `ConsumerSpec::tick` and when the consumer stops or the bus drains
    /// (`flush_all`): a handler that defers writes what is due (everything with `flush_all`)
    /// and reports what it settled; others may do periodic work.
    fn tick(&mut self, flush_all: bool) -> BoxFuture<'_, Vec<Settled>> {
        let _ = flush_all;
        Box::pin(async { Vec::new() })
    }

    /// True when the handler's store answers. A message is dead-lettered for its delivery
    /// count only when this is true.
    fn ready(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}
