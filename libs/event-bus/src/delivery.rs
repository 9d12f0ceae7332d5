//! One delivered message and its acknowledgement handle, whichever bus it came from.

use std::fmt;

use futures::StreamExt;

use crate::error::BusError;
use crate::inprocess::InProcessAck;

/// A message delivered to a durable consumer. It must be settled with [`Delivery::ack`] (done)
/// or [`Delivery::nak`] (redeliver soon); a delivery that is dropped unsettled, or not acked
/// within the consumer's `ack_wait`, is redelivered with `redelivered == true`.
pub struct Delivery {
    /// The subject the message was published to.
    pub subject: String,
    /// The message body.
    pub payload: bytes::Bytes,
    /// True when this message was delivered before (not acked in time, nak'ed or dropped).
    pub redelivered: bool,
    /// The message's position: the JetStream stream sequence (in-process: its sequence in the
    /// durable). Increases with publish order; a redelivery carries the same value, so a
    /// consumer that stores the last position it applied can skip what it already counted.
    pub seq: u64,
    /// How many times the bus has delivered this message, this delivery included (1 the
    /// first time). Grows when a delivery is nak'ed, dropped or not acked within `ack_wait`.
    pub delivered: u32,
    /// The W3C trace context the message was published with, if any.
    pub trace: Option<crate::TraceParent>,
    /// Why the payload could not be decoded (see [`Delivery::undecodable`]).
    undecodable: Option<String>,
    acker: Acker,
}

pub(crate) enum Acker {
    JetStream(async_nats::jetstream::message::Acker),
    InProcess(InProcessAck),
}

impl Delivery {
    /// Every delivery of either bus is made here (the one place where a codec applied at
    /// publish would be undone).
    pub(crate) fn new(subject: String, payload: bytes::Bytes, delivered: u32, seq: u64, acker: Acker) -> Self {
        let delivered = delivered.max(1);
        Self { subject, payload, redelivered: delivered > 1, seq, delivered, trace: None, undecodable: None, acker }
    }

    /// The delivery with the trace context it was published with.
    pub(crate) fn with_trace(mut self, trace: Option<crate::TraceParent>) -> Self {
        self.trace = trace;
        self
    }

    /// Undoes the publisher's compression (`encoding`: the message's `Content-Encoding`
    /// header), never inflating past `max` bytes. A message that cannot be decoded keeps its
    /// bytes as stored and is marked [`Delivery::undecodable`].
    pub(crate) fn decoded(mut self, encoding: Option<&str>, max: usize) -> Self {
        if encoding.is_none() {
            return self;
        }
        match crate::codec::decode(encoding, self.payload.clone(), max) {
            Ok(payload) => self.payload = payload,
            Err(e) => self.undecodable = Some(e.to_string()),
        }
        self
    }

    /// Why this message could not be decoded (it inflates past the bus's largest message, is
    /// not valid zstd, or has an unknown encoding); `payload` then holds its bytes as
    /// stored. The [`consumer`](crate::consumer) runtime dead-letters such a message without
    /// handing it to the handler.
    pub fn undecodable(&self) -> Option<&str> {
        self.undecodable.as_deref()
    }

    /// Acknowledges the message: it is never delivered again. On JetStream this is a double
    /// ack (the server confirms it), so once it returns `Ok` the message is settled.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.acker {
            Acker::JetStream(acker) => acker
                .double_ack_with(async_nats::jetstream::AckKind::Ack)
                .await
                .map_err(|e| BusError::Unavailable(format!("ack failed: {e}"))),
            Acker::InProcess(ack) => ack.ack(),
        }
    }

    /// Acknowledges the message without waiting for the server's confirmation (a single
    /// publish, no round trip). For consumers that recognise redeliveries themselves: an ack
    /// lost on the way only means the message comes back after `ack_wait`. In-process it is
    /// the same as [`Delivery::ack`].
    pub async fn ack_unconfirmed(self) -> Result<(), BusError> {
        match self.acker {
            Acker::JetStream(acker) => acker
                .ack()
                .await
                .map_err(|e| BusError::Unavailable(format!("ack failed: {e}"))),
            Acker::InProcess(ack) => ack.ack(),
        }
    }

    /// Negative acknowledgement: the message is redelivered soon (to any consumer replica).
    pub async fn nak(self) -> Result<(), BusError> {
        match self.acker {
            Acker::JetStream(acker) => acker
                .ack_with(async_nats::jetstream::AckKind::Nak(None))
                .await
                .map_err(|e| BusError::Unavailable(format!("nak failed: {e}"))),
            Acker::InProcess(ack) => ack.nak(),
        }
    }

    /// Negative acknowledgement with a delay: the message is redelivered after `delay` (to any
    /// consumer replica), not at once.
    pub async fn nak_after(self, delay: std::time::Duration) -> Result<(), BusError> {
        match self.acker {
            Acker::JetStream(acker) => acker
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| BusError::Unavailable(format!("nak failed: {e}"))),
            Acker::InProcess(ack) => ack.nak_after(delay),
        }
    }

    /// Terminates the message: it is never delivered again, whatever the consumer's
    /// `max_deliver` (JetStream `+TERM`). For a message given up on, after it was kept
    /// elsewhere (a dead letter). Confirmed by the server, as [`Delivery::ack`].
    pub async fn term(self) -> Result<(), BusError> {
        match self.acker {
            Acker::JetStream(acker) => acker
                .double_ack_with(async_nats::jetstream::AckKind::Term)
                .await
                .map_err(|e| BusError::Unavailable(format!("term failed: {e}"))),
            Acker::InProcess(ack) => ack.ack(),
        }
    }

    /// Tells the bus the message is still being worked on: extends its ack deadline by the
    /// consumer's `ack_wait`.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        match &self.acker {
            Acker::JetStream(acker) => acker
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| BusError::Unavailable(format!("in-progress ack failed: {e}"))),
            Acker::InProcess(ack) => ack.in_progress(),
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("payload_len", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .field("seq", &self.seq)
            .field("delivered", &self.delivered)
            .field("undecodable", &self.undecodable)
            .finish_non_exhaustive()
    }
}

/// Acks many deliveries concurrently (JetStream double acks are one round trip each, so
/// acking a fetched batch one by one would be slow); one result per delivery, in order.
pub async fn ack_all(deliveries: Vec<Delivery>) -> Vec<Result<(), BusError>> {
    const CONCURRENCY: usize = 256;
    futures::stream::iter(deliveries)
        .map(Delivery::ack)
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// [`Delivery::ack_unconfirmed`] for many deliveries, in order; one result per delivery.
pub async fn ack_all_unconfirmed(deliveries: Vec<Delivery>) -> Vec<Result<(), BusError>> {
    let mut results = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        results.push(d.ack_unconfirmed().await);
    }
    results
}
