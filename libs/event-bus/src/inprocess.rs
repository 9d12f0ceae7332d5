//! The bounded in-process bus: the embedded default (`eventctl dev`), with JetStream's
//! semantics in memory.
//!
//! Each durable consumer has its own queue of un-acked messages (ready or delivered and
//! awaiting an ack). Publishing never blocks: a message that would take a matching durable
//! over `capacity_messages` un-acked messages or `capacity_bytes` payload bytes is refused
//! with [`BusError::Full`] (and stored nowhere). A delivery that is nak'ed, dropped unsettled
//! or not acked within `ack_wait` goes back to the front of the queue and is redelivered with
//! `redelivered = true`. Several subscribers with the same durable name take turns on one
//! queue. Ids are deduplicated within a bounded window, like JetStream's duplicate window.
//!
//! Unlike a JetStream stream, nothing is retained for durables that do not exist yet: a
//! message is delivered only to the durables registered when it is published.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Notify;

use event_contract::wire::{DEAD_LETTER_PREFIX, Subject};

use crate::dedup::DedupWindow;
use crate::delivery::{Acker, Delivery};
use crate::error::BusError;
use crate::subject::{filter_problem, publish_subject_problem, subject_matches};
use crate::replay::RETAINED_DEAD_LETTERS;
use crate::{Bus, ConsumerSpec, ConsumerState, OutMessage, Publisher, StoredLetter, Subscriber};

/// Default dedup window, as JetStream's default `duplicate_window`.
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Default bound on remembered ids.
const DEFAULT_DEDUP_MAX_IDS: usize = 100_000;

/// The bounded in-process bus. Cheap to clone (an `Arc` inside); all clones share one bus.
#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    capacity_messages: usize,
    capacity_bytes: usize,
    state: Mutex<State>,
}

struct State {
    durables: HashMap<String, Durable>,
    /// The last dead letters published, for replays (bounded).
    dead_letters: VecDeque<StoredLetter>,
    next_letter: u64,
    dedup: DedupWindow,
    /// Publishes refused, but for dead letters (the consumers' own output while they drain).
    closed: bool,
    /// Every publish refused.
    sealed: bool,
    next_token: u64,
}

struct Durable {
    filters: Vec<String>,
    ack_wait: Duration,
    /// Every un-acked message of this durable, by sequence.
    slots: HashMap<u64, Slot>,
    /// Sequences to deliver, oldest first (stale entries are skipped).
    ready: VecDeque<u64>,
    /// Ack deadlines of delivered messages.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Payload bytes of `slots`.
    bytes: usize,
    next_seq: u64,
    notify: Arc<Notify>,
}

struct Slot {
    subject: String,
    payload: bytes::Bytes,
    trace: Option<crate::TraceParent>,
    deliveries: u32,
    state: SlotState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Ready,
    Delivered { deadline: Instant, token: u64 },
}

impl Durable {
    fn new(filters: &[String], ack_wait: Duration) -> Self {
        Self {
            filters: filters.to_vec(),
            ack_wait,
            slots: HashMap::new(),
            ready: VecDeque::new(),
            deadlines: BTreeSet::new(),
            bytes: 0,
            next_seq: 0,
            notify: Arc::new(Notify::new()),
        }
    }

    /// Puts the deliveries whose ack deadline passed back at the front of the queue.
    fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(slot) = self.slots.get_mut(&seq) {
                slot.state = SlotState::Ready;
                expired.push(seq);
            }
        }
        if !expired.is_empty() {
            tracing::debug!(
                count = expired.len(),
                "in-process bus: ack wait expired, redelivering"
            );
        }
        for seq in expired.into_iter().rev() {
            self.ready.push_front(seq);
        }
    }

    /// True when dead letters (still accepted by a closed bus) can reach this durable.
    fn takes_dead_letters(&self) -> bool {
        self.filters.iter().any(|f| f == ">" || f.starts_with("*.") || f.starts_with(DEAD_LETTER_PREFIX))
    }

    fn matches(&self, subject: &str) -> bool {
        self.filters.iter().any(|f| subject_matches(f, subject))
    }

    fn remove(&mut self, seq: u64) {
        if let Some(slot) = self.slots.remove(&seq) {
            if let SlotState::Delivered { deadline, .. } = slot.state {
                self.deadlines.remove(&(deadline, seq));
            }
            self.bytes = self.bytes.saturating_sub(slot.payload.len());
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can't leave the state half-updated in a way that
        // matters more than stopping the bus would, so recover from poisoning.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InProcessBus {
    /// Bounded: at most `capacity_messages` un-acked messages per durable consumer, and
    /// `capacity_bytes` payload bytes (per durable consumer; payloads are shared between
    /// durables, so that is also about the bus's payload memory).
    pub fn new(capacity_messages: usize, capacity_bytes: usize) -> Self {
        Self::with_dedup(
            capacity_messages,
            capacity_bytes,
            DEFAULT_DEDUP_WINDOW,
            DEFAULT_DEDUP_MAX_IDS,
        )
    }

    /// As [`InProcessBus::new`], with the dedup window (`window`, and at most `max_ids`
    /// remembered ids) given; the defaults are 2 minutes and 100,000 ids.
    pub fn with_dedup(
        capacity_messages: usize,
        capacity_bytes: usize,
        window: Duration,
        max_ids: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity_messages,
                capacity_bytes,
                state: Mutex::new(State {
                    durables: HashMap::new(),
                    dead_letters: VecDeque::new(),
                    next_letter: 0,
                    dedup: DedupWindow::new(window, max_ids),
                    closed: false,
                    sealed: false,
                    next_token: 0,
                }),
            }),
        }
    }

    /// Registers (or reuses) a durable consumer; messages published afterwards whose subject
    /// matches the NATS-style filter (`*` one token, `>` the rest) are delivered to it. Same
    /// semantics as JetStream: an un-acked delivery whose Delivery is dropped, nak'ed, or
    /// older than `ack_wait` is redelivered (redelivered=true); several subscribers with the
    /// same durable name share the work.
    ///
    /// Reusing a durable keeps its filter (a different one is logged and ignored) and takes
    /// the new `ack_wait` for later deliveries. An invalid filter matches nothing (logged).
    pub fn subscriber(&self, durable: &str, filter_subject: &str, ack_wait: Duration) -> InProcessSubscriber {
        self.subscriber_with(durable, &[filter_subject.to_owned()], ack_wait)
    }

    /// [`InProcessBus::subscriber`] with several filter subjects (a message matching any of
    /// them is delivered), as JetStream's `filter_subjects`.
    pub fn subscriber_with(&self, durable: &str, filters: &[String], ack_wait: Duration) -> InProcessSubscriber {
        for f in filters {
            if let Some(problem) = filter_problem(f) {
                tracing::warn!(durable, filter = %f, problem, "in-process bus: bad filter");
            }
        }
        let mut state = self.inner.lock();
        let entry = state.durables.entry(durable.to_string()).or_insert_with(|| {
            tracing::debug!(durable, ?filters, "in-process bus: new durable");
            Durable::new(filters, ack_wait)
        });
        if entry.filters != filters {
            tracing::warn!(
                durable,
                existing = ?entry.filters,
                requested = ?filters,
                "in-process bus: durable reused with other filters; keeping the existing ones"
            );
        }
        entry.ack_wait = ack_wait;
        InProcessSubscriber { inner: self.inner.clone(), durable: durable.to_string(), notify: entry.notify.clone() }
    }

    /// Closes the bus: publishes fail with [`BusError::Closed`], except dead letters
    /// (`dead-letter.>`, what consumers give up on while they drain); subscribers still
    /// receive what was accepted (and its redeliveries), then get `Closed` once their
    /// durable has no un-acked message left. A durable that takes dead letters gets `Closed`
    /// only after [`InProcessBus::seal`].
    pub fn close(&self) {
        self.shut(false);
        tracing::info!("in-process bus closed");
    }

    /// Refuses every publish, dead letters included (call it once the consumers that may
    /// dead-letter have drained): the durables that take dead letters then end too.
    pub fn seal(&self) {
        self.shut(true);
        tracing::info!("in-process bus sealed");
    }

    fn shut(&self, seal: bool) {
        let notifies: Vec<Arc<Notify>> = {
            let mut state = self.inner.lock();
            state.closed = true;
            state.sealed |= seal;
            state.durables.values().map(|d| d.notify.clone()).collect()
        };
        for n in notifies {
            n.notify_waiters();
        }
    }

    /// Un-acked messages (ready or delivered) of a durable, `None` if it does not exist.
    pub fn pending(&self, durable: &str) -> Option<usize> {
        self.inner
            .lock()
            .durables
            .get(durable)
            .map(|d| d.slots.len())
    }

    fn publish_locked(&self, state: &mut State, msg: OutMessage, trace: Option<crate::TraceParent>, now: Instant) -> PublishOutcome {
        if state.sealed || (state.closed && !is_dead_letter(&msg.subject)) {
            return PublishOutcome::Err(BusError::Closed);
        }
        if let Some(problem) = publish_subject_problem(&msg.subject) {
            return PublishOutcome::Err(BusError::Rejected(format!(
                "{problem}: {:?}",
                msg.subject
            )));
        }
        if !msg.id.is_empty() && state.dedup.contains(&msg.id, now) {
            return PublishOutcome::Duplicate;
        }
        let len = msg.payload.len();
        if len > self.inner.capacity_bytes {
            return PublishOutcome::Err(BusError::Rejected(format!(
                "payload of {len} bytes is larger than the bus capacity of {} bytes",
                self.inner.capacity_bytes
            )));
        }
        // All matching durables must have room, else the message is stored nowhere.
        let mut matching = 0usize;
        for (name, d) in &state.durables {
            if !d.matches(&msg.subject) {
                continue;
            }
            matching += 1;
            if d.slots.len() >= self.inner.capacity_messages {
                return PublishOutcome::Err(BusError::Full(format!(
                    "consumer {name:?} has {} un-acked messages (capacity {})",
                    d.slots.len(),
                    self.inner.capacity_messages
                )));
            }
            if d.bytes + len > self.inner.capacity_bytes {
                return PublishOutcome::Err(BusError::Full(format!(
                    "consumer {name:?} has {} un-acked payload bytes (capacity {})",
                    d.bytes, self.inner.capacity_bytes
                )));
            }
        }
        let mut touched = Vec::with_capacity(matching);
        for d in state.durables.values_mut() {
            if !d.matches(&msg.subject) {
                continue;
            }
            let seq = d.next_seq;
            d.next_seq += 1;
            d.slots.insert(
                seq,
                Slot {
                    subject: msg.subject.clone(),
                    payload: msg.payload.clone(),
                    trace,
                    deliveries: 0,
                    state: SlotState::Ready,
                },
            );
            d.ready.push_back(seq);
            d.bytes += len;
            touched.push(d.notify.clone());
        }
        if matching == 0 {
            tracing::trace!(subject = %msg.subject, "in-process bus: no consumer for subject");
        }
        if !msg.id.is_empty() {
            state.dedup.insert(&msg.id, now);
        }
        if is_dead_letter(&msg.subject) {
            state.next_letter += 1;
            let id = state.next_letter;
            state.dead_letters.push_back(StoredLetter { id, published_ms: now_ms(), payload: msg.payload.clone(), subject: msg.subject.clone() });
            while state.dead_letters.len() > RETAINED_DEAD_LETTERS {
                state.dead_letters.pop_front();
            }
        }
        PublishOutcome::Stored(touched)
    }
}

enum PublishOutcome {
    Stored(Vec<Arc<Notify>>),
    Duplicate,
    Err(BusError),
}

impl Publisher for InProcessBus {
    fn publish_batch(&self, msgs: Vec<OutMessage>) -> BoxFuture<'_, Vec<Result<(), BusError>>> {
        self.publish_batch_traced(msgs, None)
    }

    fn publish_batch_traced(&self, msgs: Vec<OutMessage>, trace: Option<crate::TraceParent>) -> BoxFuture<'_, Vec<Result<(), BusError>>> {
        Box::pin(async move {
            let total = msgs.len();
            let mut results = Vec::with_capacity(total);
            let mut to_notify: Vec<Arc<Notify>> = Vec::new();
            let (mut full, mut duplicates) = (0usize, 0usize);
            {
                let mut state = self.inner.lock();
                let now = Instant::now();
                for msg in msgs {
                    match self.publish_locked(&mut state, msg, trace, now) {
                        PublishOutcome::Stored(notifies) => {
                            for n in notifies {
                                if !to_notify.iter().any(|x| Arc::ptr_eq(x, &n)) {
                                    to_notify.push(n);
                                }
                            }
                            results.push(Ok(()));
                        }
                        PublishOutcome::Duplicate => {
                            duplicates += 1;
                            results.push(Ok(()));
                        }
                        PublishOutcome::Err(e) => {
                            if matches!(e, BusError::Full(_)) {
                                full += 1;
                            }
                            results.push(Err(e));
                        }
                    }
                }
            }
            for n in to_notify {
                n.notify_waiters();
            }
            if full > 0 {
                tracing::debug!(total, full, "in-process bus full: refused messages");
            }
            tracing::trace!(total, duplicates, "in-process bus: published batch");
            results
        })
    }

    fn is_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { !self.inner.lock().closed })
    }

    fn max_payload(&self) -> usize {
        self.inner.capacity_bytes
    }
}

fn is_dead_letter(subject: &str) -> bool {
    subject.strip_prefix(DEAD_LETTER_PREFIX).is_some_and(|r| r.starts_with('.'))
}

impl Bus for InProcessBus {
    fn subscribe<'a>(&'a self, spec: &'a ConsumerSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>, BusError>> {
        Box::pin(async move {
            if !event_contract::wire::is_valid_name(&spec.name) {
                return Err(BusError::Rejected(format!("invalid durable name {:?}", spec.name)));
            }
            Ok(Box::new(self.subscriber_with(&spec.name, &spec.filter_subjects(), spec.ack_wait)) as Box<dyn Subscriber>)
        })
    }

    fn dead_letters<'a>(&'a self, consumer: &'a str, since_ms: i64, limit: usize) -> BoxFuture<'a, Result<Vec<StoredLetter>, BusError>> {
        Box::pin(async move {
            let subject = Subject::dead_letter(consumer).to_string();
            let state = self.inner.lock();
            Ok(state.dead_letters.iter().filter(|l| l.subject == subject && l.published_ms >= since_ms).take(limit).cloned().collect())
        })
    }

    fn forget_dead_letter<'a>(&'a self, _consumer: &'a str, id: u64) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.inner.lock().dead_letters.retain(|l| l.id != id);
            Ok(())
        })
    }

    fn positions_survive_restart(&self) -> bool {
        false
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// A handle on a durable consumer of the [`InProcessBus`].
pub struct InProcessSubscriber {
    inner: Arc<Inner>,
    durable: String,
    notify: Arc<Notify>,
}

impl InProcessSubscriber {
    /// Takes up to `max` ready messages, or tells when the next ack deadline is.
    fn try_take(&self, max: usize) -> Result<Taken, BusError> {
        let mut state = self.inner.lock();
        let now = Instant::now();
        let State {
            durables,
            closed,
            sealed,
            next_token,
            ..
        } = &mut *state;
        let Some(d) = durables.get_mut(&self.durable) else {
            return Err(BusError::Closed);
        };
        d.expire(now);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seq) = d.ready.pop_front() else {
                break;
            };
            let Some(slot) = d.slots.get_mut(&seq) else {
                continue; // acked meanwhile
            };
            if slot.state != SlotState::Ready {
                continue;
            }
            *next_token += 1;
            let token = *next_token;
            let deadline = now + d.ack_wait;
            slot.state = SlotState::Delivered { deadline, token };
            slot.deliveries += 1;
            d.deadlines.insert((deadline, seq));
            out.push(
                Delivery::new(
                    slot.subject.clone(),
                    slot.payload.clone(),
                    slot.deliveries,
                    seq + 1,
                    Acker::InProcess(InProcessAck {
                        inner: self.inner.clone(),
                        durable: self.durable.clone(),
                        seq,
                        token,
                        settled: false,
                    }),
                )
                .with_trace(slot.trace),
            );
        }
        if !out.is_empty() {
            return Ok(Taken::Some(out));
        }
        if *closed && d.slots.is_empty() && (*sealed || !d.takes_dead_letters()) {
            return Err(BusError::Closed);
        }
        Ok(Taken::None {
            next_deadline: d.deadlines.first().map(|(t, _)| *t),
        })
    }
}

enum Taken {
    Some(Vec<Delivery>),
    None { next_deadline: Option<Instant> },
}

impl Subscriber for InProcessSubscriber {
    fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, BusError>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let end = Instant::now() + wait;
            loop {
                // Register for wake-ups before looking, so a publish between the look and
                // the wait is not missed.
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let next_deadline = match self.try_take(max)? {
                    Taken::Some(out) => return Ok(out),
                    Taken::None { next_deadline } => next_deadline,
                };
                let now = Instant::now();
                if now >= end {
                    return Ok(Vec::new());
                }
                let wake = next_deadline.map_or(end, |d| d.min(end));
                let _ =
                    tokio::time::timeout_at(tokio::time::Instant::from_std(wake), notified).await;
            }
        })
    }

    fn state(&mut self) -> BoxFuture<'_, Result<ConsumerState, BusError>> {
        Box::pin(async move {
            let state = self.inner.lock();
            let d = state.durables.get(&self.durable).ok_or(BusError::Closed)?;
            let pending = d.slots.values().filter(|s| s.deliveries == 0).count() as u64;
            Ok(ConsumerState { pending, ack_pending: d.slots.len() as u64 - pending })
        })
    }

    fn is_closing(&self) -> bool {
        self.inner.lock().closed
    }
}

/// The ack handle of an in-process delivery; an unsettled one naks on drop.
pub(crate) struct InProcessAck {
    inner: Arc<Inner>,
    durable: String,
    seq: u64,
    token: u64,
    settled: bool,
}

impl InProcessAck {
    pub(crate) fn ack(mut self) -> Result<(), BusError> {
        self.settled = true;
        let mut state = self.inner.lock();
        if let Some(d) = state.durables.get_mut(&self.durable) {
            // Even a late ack (after a redelivery) settles the message: it was processed.
            d.remove(self.seq);
        }
        Ok(())
    }

    pub(crate) fn nak(mut self) -> Result<(), BusError> {
        self.settled = true;
        self.requeue();
        Ok(())
    }

    /// Redelivers after `delay`: the delivery stays out until then, as after an ack wait.
    pub(crate) fn nak_after(mut self, delay: Duration) -> Result<(), BusError> {
        self.settled = true;
        let mut state = self.inner.lock();
        let Some(d) = state.durables.get_mut(&self.durable) else {
            return Ok(());
        };
        let Some(slot) = d.slots.get_mut(&self.seq) else {
            return Ok(());
        };
        let SlotState::Delivered { deadline, token } = slot.state else {
            return Ok(());
        };
        if token != self.token {
            return Ok(());
        }
        let new_deadline = Instant::now() + delay;
        slot.state = SlotState::Delivered { deadline: new_deadline, token };
        d.deadlines.remove(&(deadline, self.seq));
        d.deadlines.insert((new_deadline, self.seq));
        Ok(())
    }

    pub(crate) fn in_progress(&self) -> Result<(), BusError> {
        let mut state = self.inner.lock();
        let Some(d) = state.durables.get_mut(&self.durable) else {
            return Ok(());
        };
        let ack_wait = d.ack_wait;
        let Some(slot) = d.slots.get_mut(&self.seq) else {
            return Ok(()); // acked meanwhile
        };
        let SlotState::Delivered { deadline, token } = slot.state else {
            return Ok(()); // expired and waiting for redelivery: too late to extend
        };
        if token != self.token {
            return Ok(()); // redelivered meanwhile: the other delivery owns the deadline
        }
        let new_deadline = Instant::now() + ack_wait;
        slot.state = SlotState::Delivered {
            deadline: new_deadline,
            token,
        };
        d.deadlines.remove(&(deadline, self.seq));
        d.deadlines.insert((new_deadline, self.seq));
        Ok(())
    }

    /// Puts the message back at the front of the queue if this is still its current delivery.
    fn requeue(&self) {
        let notify = {
            let mut state = self.inner.lock();
            let Some(d) = state.durables.get_mut(&self.durable) else {
                return;
            };
            let Some(slot) = d.slots.get_mut(&self.seq) else {
                return;
            };
            let SlotState::Delivered { deadline, token } = slot.state else {
                return;
            };
            if token != self.token {
                return;
            }
            slot.state = SlotState::Ready;
            d.deadlines.remove(&(deadline, self.seq));
            d.ready.push_front(self.seq);
            d.notify.clone()
        };
        notify.notify_waiters();
    }
}

impl Drop for InProcessAck {
    fn drop(&mut self) {
        if !self.settled {
            self.requeue();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, id: &str) -> OutMessage {
        OutMessage {
            subject: subject.to_string(),
            id: id.to_string(),
            payload: bytes::Bytes::from_static(b"x"),
        }
    }

    #[tokio::test]
    async fn dedup_and_drop_redelivery() {
        let bus = InProcessBus::new(10, 1024);
        let mut sub = bus.subscriber("d", "a.>", Duration::from_secs(30));
        let r = bus
            .publish_batch(vec![msg("a.b", "1"), msg("a.b", "1"), msg("a.c", "2")])
            .await;
        assert!(r.iter().all(Result::is_ok));
        assert_eq!(bus.pending("d"), Some(2));
        let got = sub.fetch(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2);
        drop(got);
        let again = sub.fetch(10, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|d| d.redelivered));
        for d in again {
            d.ack().await.unwrap();
        }
        assert_eq!(bus.pending("d"), Some(0));
    }

    #[tokio::test]
    async fn close_drains_then_closed() {
        let bus = InProcessBus::new(10, 1024);
        let mut sub = bus.subscriber("d", "x", Duration::from_secs(30));
        let mut all = bus.subscriber("all", ">", Duration::from_secs(30));
        assert!(bus.publish_batch(vec![msg("x", "")]).await[0].is_ok());
        bus.close();
        assert!(matches!(
            bus.publish_batch(vec![msg("x", "")]).await[0],
            Err(BusError::Closed)
        ));
        assert!(!bus.is_ready().await);
        for s in [&mut sub, &mut all] {
            let got = s.fetch(10, Duration::ZERO).await.unwrap();
            assert_eq!(got.len(), 1);
            for d in got {
                d.ack().await.unwrap();
            }
        }
        assert!(matches!(
            sub.fetch(10, Duration::from_millis(10)).await,
            Err(BusError::Closed)
        ));
        // Dead letters are still accepted until the bus is sealed, so a durable that takes
        // them ends only then.
        assert!(bus.publish_batch(vec![msg("dead-letter.c", "")]).await[0].is_ok());
        let got = all.fetch(10, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1);
        for d in got {
            d.ack().await.unwrap();
        }
        assert!(all.fetch(10, Duration::from_millis(10)).await.unwrap().is_empty());
        bus.seal();
        assert!(bus.publish_batch(vec![msg("dead-letter.c", "")]).await[0].is_err());
        assert!(matches!(
            all.fetch(10, Duration::from_millis(10)).await,
            Err(BusError::Closed)
        ));
    }

}
