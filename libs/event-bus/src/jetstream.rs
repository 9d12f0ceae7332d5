//! The NATS JetStream bus, for production: one stream holding the platform's subjects,
//! pipelined deduplicating publishes that resolve on the server's ack, and durable pull
//! consumers with explicit (double) acks.
//!
//! Failure behaviour: the client is configured so that a dead server makes operations fail
//! within `publish_timeout_ms` (request and ack timeouts, a bounded in-flight window, and a
//! fast path that refuses a batch while the connection is down) instead of buffering
//! forever; `connect` to a server that is down fails within a few seconds. The client keeps
//! reconnecting in the background, so the same bus recovers when the server comes back.
//!
//! The stream uses `discard: new`, so when `max_bytes` (or the server's storage) is reached
//! publishes are refused ([`BusError::Full`]) rather than old, possibly unconsumed, events
//! being dropped; `max_age` still expires old events.
//!
//! Compression ([`crate::codec`]): by default each message is compressed with zstd by the
//! publisher (`compression`, `compression_level`; marked `Content-Encoding: zstd`) and
//! decoded, bounded by the server's `max_payload`, where a delivery is made, so handlers see
//! the event's JSON; a message without the header is read as it is. The stream's store is
//! also compressed by the server with S2 (`stream_compression`, NATS 2.10 or newer); an
//! existing stream whose setting differs is updated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::{self, consumer, context, stream};
use futures::StreamExt;
use event_contract::wire::{Subject, filter};
use futures::future::BoxFuture;

use crate::codec::{self, MessageCompression, StreamCompression};
use crate::delivery::{Acker, Delivery};
use crate::error::BusError;
use crate::subject::filter_problem;
use crate::{Bus, ConsumerSpec, ConsumerState, OutMessage, Publisher, StoredLetter, Subscriber};

/// Bytes of a message's `max_payload` kept for its headers (`NATS/1.0`, `Nats-Msg-Id` of at
/// most [`MAX_MSG_ID_BYTES`], framing): payloads sized to [`Publisher::max_payload`] fit.
pub const HEADER_ROOM: usize = 1024;
/// Longest `Nats-Msg-Id` sent (an event's is `<type>:<id>`, at most 385 bytes).
pub const MAX_MSG_ID_BYTES: usize = 512;

/// Settings of the JetStream bus (all fields have defaults when deserialized). Its `Debug`
/// shows the URL without credentials.
#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct JetStreamConfig {
    /// Server URL(s), comma-separated; default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Stream name; default `EVENTS`.
    pub stream: String,
    /// Subjects the stream stores; default the platform's
    /// ([`filter::stream_subjects`]: `raw-event.>`, `quarantine.>`, `dead-letter.>`,
    /// `replay.>`).
    pub subjects: Vec<String>,
    /// Retention: messages older than this are removed; default 3 days (72 h: a consumer may be
    /// down over a long weekend; the lake is the system of record beyond that; the cost model,
    /// docs/cost-model.toml, uses the same value).
    pub max_age_secs: u64,
    /// Stream size limit in bytes, -1 for unlimited (default). When reached, publishes fail
    /// with [`BusError::Full`].
    pub max_bytes: i64,
    /// The window within which a repeated `Nats-Msg-Id` is dropped; default 120 s.
    pub duplicate_window_secs: u64,
    /// Stream replicas (clustered JetStream); default 1.
    pub replicas: usize,
    /// Bound on waiting for a publish ack (and for API requests); default 5000 ms.
    pub publish_timeout_ms: u64,
    /// Max un-acked async publishes at once per bus; default 4096.
    pub max_in_flight: usize,
    /// Compression of each message by the publisher: `zstd` (default) or `none`. Consumers
    /// read both (and messages from before the change) whatever this says.
    pub compression: MessageCompression,
    /// zstd level when `compression` is `zstd`: 1 (fastest, default) to 19. Levels 1 and 3
    /// give the same size on events (within 1%), level 1 for ~20% less CPU
    /// (`scripts/bench-bus.sh`).
    pub compression_level: i32,
    /// The server's compression of the stream's store: `s2` (default) or `none`.
    pub stream_compression: StreamCompression,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_string(),
            stream: "EVENTS".to_string(),
            subjects: filter::stream_subjects(),
            max_age_secs: 3 * 24 * 3600,
            max_bytes: -1,
            duplicate_window_secs: 120,
            replicas: 1,
            publish_timeout_ms: 5000,
            max_in_flight: 4096,
            compression: MessageCompression::Zstd,
            compression_level: 1,
            stream_compression: StreamCompression::S2,
        }
    }
}

impl std::fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("subjects", &self.subjects)
            .field("max_age_secs", &self.max_age_secs)
            .field("max_bytes", &self.max_bytes)
            .field("duplicate_window_secs", &self.duplicate_window_secs)
            .field("replicas", &self.replicas)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("compression", &self.compression)
            .field("compression_level", &self.compression_level)
            .field("stream_compression", &self.stream_compression)
            .finish()
    }
}

/// A batch's payloads of at least this many bytes are compressed on a blocking thread.
const BLOCKING_COMPRESS_BYTES: usize = 64 * 1024;

/// A message ready to publish: its payload compressed or not.
struct Encoded {
    msg: OutMessage,
    zstd: bool,
}

/// The JetStream bus. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    timeout: Duration,
    max_in_flight: usize,
    /// The zstd level when messages are compressed.
    zstd_level: Option<i32>,
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("stream", &self.stream)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("zstd_level", &self.zstd_level)
            .finish_non_exhaustive()
    }
}

impl JetStreamBus {
    /// Connects and creates or updates the stream idempotently (get_or_create then update
    /// config if it differs).
    pub async fn connect(cfg: &JetStreamConfig) -> Result<Self, BusError> {
        validate(cfg)?;
        let timeout = Duration::from_millis(cfg.publish_timeout_ms);
        let connect_timeout = timeout.min(Duration::from_secs(5));
        let urls: Vec<String> = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        let options = async_nats::ConnectOptions::new()
            .name("event-bus")
            .connection_timeout(connect_timeout)
            // Bounds JetStream API requests (stream/consumer info, fetch set-up).
            .request_timeout(Some(timeout))
            // Keep reconnecting forever in the background once connected; publishes fail
            // fast meanwhile (see `publish_batch`).
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        // Not `retry_on_initial_connect`: a server that is down must be reported now.
        let client = match tokio::time::timeout(
            connect_timeout + Duration::from_secs(1),
            options.connect(urls),
        )
        .await
        {
            Err(_) => {
                return Err(BusError::Unavailable(format!(
                    "connecting to NATS at {} timed out after {:?}",
                    cfg.url, connect_timeout
                )));
            }
            Ok(Err(e)) => return Err(map_connect_error(&cfg.url, e)),
            Ok(Ok(client)) => client,
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .max_ack_inflight(cfg.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let bus = Self {
            client,
            js,
            stream: cfg.stream.clone(),
            timeout,
            max_in_flight: cfg.max_in_flight,
            zstd_level: (cfg.compression == MessageCompression::Zstd).then_some(cfg.compression_level),
        };
        bus.ensure_stream(cfg).await?;
        tracing::info!(url = %redact_url(&cfg.url), stream = %cfg.stream, subjects = ?cfg.subjects, "JetStream bus ready");
        Ok(bus)
    }

    async fn ensure_stream(&self, cfg: &JetStreamConfig) -> Result<(), BusError> {
        let desired = stream::Config {
            name: cfg.stream.clone(),
            subjects: cfg.subjects.clone(),
            max_age: Duration::from_secs(cfg.max_age_secs),
            max_bytes: normalize_limit(cfg.max_bytes),
            max_messages: -1,
            duplicate_window: Duration::from_secs(cfg.duplicate_window_secs),
            num_replicas: cfg.replicas.max(1),
            discard: stream::DiscardPolicy::New,
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            compression: Some(match cfg.stream_compression {
                StreamCompression::S2 => stream::Compression::S2,
                StreamCompression::None => stream::Compression::None,
            }),
            ..Default::default()
        };
        let stream = self
            .js
            .get_or_create_stream(desired.clone())
            .await
            .map_err(|e| map_stream_error("creating the stream", e))?;
        let current = &stream.cached_info().config;
        if !same_managed_fields(current, &desired) {
            // Keep what the server (or an operator) set beyond the fields we manage.
            let mut updated = current.clone();
            updated.subjects = desired.subjects.clone();
            updated.max_age = desired.max_age;
            updated.max_bytes = desired.max_bytes;
            updated.duplicate_window = desired.duplicate_window;
            updated.num_replicas = desired.num_replicas;
            updated.discard = desired.discard;
            updated.compression = desired.compression.clone();
            self.js
                .update_stream(&updated)
                .await
                .map_err(|e| map_stream_error("updating the stream", e))?;
            tracing::info!(stream = %cfg.stream, "updated the stream configuration");
        }
        Ok(())
    }

    /// A durable pull consumer (created or reused idempotently) on one filter subject,
    /// explicit ack, `ack_wait`, `max_ack_pending` (bounded memory), `max_deliver` unlimited
    /// (the [`consumer`](crate::consumer) runtime decides when to give up on a message).
    ///
    /// An existing consumer whose filters, ack wait or max ack pending differ is updated (an
    /// update the server refuses is `Rejected`).
    pub async fn subscriber(
        &self,
        durable: &str,
        filter_subject: &str,
        ack_wait: Duration,
        max_ack_pending: i64,
    ) -> Result<JetStreamSubscriber, BusError> {
        self.durable(durable, &[filter_subject.to_owned()], ack_wait, max_ack_pending).await
    }

    /// [`JetStreamBus::subscriber`] on several filter subjects (NATS 2.10 or newer).
    pub async fn durable(
        &self,
        durable: &str,
        filters: &[String],
        ack_wait: Duration,
        max_ack_pending: i64,
    ) -> Result<JetStreamSubscriber, BusError> {
        if !event_contract::wire::is_valid_name(durable) {
            return Err(BusError::Rejected(format!(
                "invalid durable name {durable:?}: 1-64 characters among A-Z a-z 0-9 _ -"
            )));
        }
        if filters.is_empty() {
            return Err(BusError::Rejected(format!("consumer {durable:?} has no filter subject")));
        }
        for f in filters {
            if let Some(problem) = filter_problem(f) {
                return Err(BusError::Rejected(format!("{problem}: {f:?}")));
            }
        }
        // One filter goes in `filter_subject` (what servers before 2.10 understand).
        let (filter_subject, filter_subjects) = match filters {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        let desired = consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            filter_subject,
            filter_subjects,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            max_ack_pending,
            max_deliver: -1,
            ..Default::default()
        };
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| BusError::Rejected(format!("stream {:?}: {e}", self.stream)))?;
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(durable, desired.clone())
            .await
            .map_err(|e| map_consumer_error(durable, e))?;
        let current = &consumer.cached_info().config;
        let same_filters = {
            let mut a: Vec<&String> = std::iter::once(&current.filter_subject).chain(&current.filter_subjects).filter(|f| !f.is_empty()).collect();
            let mut b: Vec<&String> = filters.iter().collect();
            a.sort();
            b.sort();
            a == b
        };
        let differs = !same_filters
            || current.ack_policy != desired.ack_policy
            || current.ack_wait != desired.ack_wait
            || current.max_ack_pending != desired.max_ack_pending
            || current.max_deliver != desired.max_deliver;
        if differs {
            tracing::info!(durable, ?filters, "updating the durable consumer configuration");
            consumer = stream.create_consumer(desired).await.map_err(|e| match map_consumer_error(durable, e) {
                BusError::Unavailable(m) => BusError::Unavailable(m),
                other => BusError::Rejected(format!("updating consumer {durable:?}: {other}")),
            })?;
        }
        tracing::debug!(durable, ?filters, stream = %self.stream, "JetStream subscriber ready");
        let max_message = self.client.server_info().max_payload;
        Ok(JetStreamSubscriber { client: self.client.clone(), consumer, timeout: self.timeout, max_message })
    }

    /// Publishes one message and waits for its ack.
    /// Compresses the messages of a batch (when `compression` is `zstd`): on a blocking
    /// thread when there is enough to compress to stall the runtime (about 60 µs per 10 KB
    /// event). Compression must not change what the bus accepts: a message larger than
    /// [`Publisher::max_payload`] is refused here, as the server would refuse it uncompressed
    /// (a consumer could not decode it).
    async fn encode(&self, msgs: Vec<OutMessage>) -> Vec<Result<Encoded, BusError>> {
        let Some(level) = self.zstd_level else {
            return msgs.into_iter().map(|m| Ok(Encoded { msg: m, zstd: false })).collect();
        };
        // What callers are told fits (`max_payload`: the server's limit less room for the
        // headers), not the server's raw limit.
        let max = Publisher::max_payload(self);
        let encode_all = move |msgs: Vec<OutMessage>| -> Vec<Result<Encoded, BusError>> {
            msgs.into_iter()
                .map(|mut m| {
                    if max > 0 && m.payload.len() > max {
                        return Err(BusError::Rejected(format!(
                            "message of {} bytes exceeds the bus's max payload of {max} bytes",
                            m.payload.len()
                        )));
                    }
                    Ok(match codec::compress(&m.payload, level) {
                        Some(z) => {
                            m.payload = bytes::Bytes::from(z);
                            Encoded { msg: m, zstd: true }
                        }
                        None => Encoded { msg: m, zstd: false },
                    })
                })
                .collect()
        };
        let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
        if bytes < BLOCKING_COMPRESS_BYTES {
            return encode_all(msgs);
        }
        let n = msgs.len();
        match tokio::task::spawn_blocking(move || encode_all(msgs)).await {
            Ok(encoded) => encoded,
            Err(e) => (0..n).map(|_| Err(BusError::Unavailable(format!("compressing the batch failed: {e}")))).collect(),
        }
    }

    async fn publish_one(&self, encoded: Result<Encoded, BusError>, trace: Option<crate::TraceParent>, abort: &AtomicBool) -> Result<(), BusError> {
        let Encoded { msg, zstd } = encoded?;
        if abort.load(Ordering::Relaxed) {
            return Err(BusError::Unavailable(
                "not sent: the bus failed earlier in this batch".to_string(),
            ));
        }
        // A header value with CR or LF would split the message's header block: refuse it
        // here whatever the caller checked (the contract bounds event ids).
        if msg.id.chars().any(char::is_control) || msg.id.len() > MAX_MSG_ID_BYTES {
            return Err(BusError::Rejected(format!(
                "message id refused: more than {MAX_MSG_ID_BYTES} bytes or a control character"
            )));
        }
        let mut publish = jetstream::message::PublishMessage::build().payload(msg.payload);
        if zstd {
            publish = publish.header(codec::CONTENT_ENCODING, codec::ZSTD);
        }
        if !msg.id.is_empty() {
            publish = publish.message_id(&msg.id);
        }
        if let Some(t) = trace {
            publish = publish.header(crate::trace::TRACEPARENT, t.to_string().as_str());
        }
        // Waiting for an in-flight permit and for room in the client's command channel is
        // bounded too: both stall when the server is gone.
        let ack =
            match tokio::time::timeout(self.timeout, self.js.send_publish(msg.subject, publish))
                .await
            {
                Err(_) => Err(BusError::Unavailable(format!(
                    "publish not sent within {:?}",
                    self.timeout
                ))),
                Ok(Err(e)) => Err(map_publish_error(e)),
                Ok(Ok(ack_future)) => ack_future.await.map_err(map_publish_error),
            };
        match ack {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::trace!(id = %msg.id, "duplicate publish (already stored)");
                }
                Ok(())
            }
            Err(e) => {
                if matches!(e, BusError::Unavailable(_)) {
                    abort.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

impl Publisher for JetStreamBus {
    fn publish_batch(&self, msgs: Vec<OutMessage>) -> BoxFuture<'_, Vec<Result<(), BusError>>> {
        self.publish_batch_traced(msgs, None)
    }

    fn publish_batch_traced(&self, msgs: Vec<OutMessage>, trace: Option<crate::TraceParent>) -> BoxFuture<'_, Vec<Result<(), BusError>>> {
        Box::pin(async move {
            let total = msgs.len();
            if total == 0 {
                return Vec::new();
            }
            let state = self.client.connection_state();
            if state != ConnectionState::Connected {
                tracing::warn!(total, ?state, "publish refused: not connected to NATS");
                return (0..total)
                    .map(|_| {
                        Err(BusError::Unavailable(format!(
                            "not connected to NATS ({state:?})"
                        )))
                    })
                    .collect();
            }
            let msgs = self.encode(msgs).await;
            let abort = AtomicBool::new(false);
            // All publishes are issued without waiting for earlier acks; the window is
            // bounded by `max_in_flight` (here per batch, and across batches by the
            // context's in-flight semaphore).
            let results: Vec<Result<(), BusError>> = futures::stream::iter(msgs)
                .map(|m| self.publish_one(m, trace, &abort))
                .buffered(self.max_in_flight.min(total))
                .collect()
                .await;
            let failed = results.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                let first = results.iter().find_map(|r| r.as_ref().err());
                tracing::warn!(total, failed, first_error = ?first.map(ToString::to_string), "JetStream publish failures");
            } else {
                tracing::trace!(total, "JetStream batch published");
            }
            results
        })
    }

    /// The server's `max_payload` less [`HEADER_ROOM`]: the limit counts the headers too.
    fn max_payload(&self) -> usize {
        self.client.server_info().max_payload.saturating_sub(HEADER_ROOM)
    }

    fn is_ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if self.client.connection_state() != ConnectionState::Connected {
                return false;
            }
            let probe = self.js.get_stream(&self.stream);
            match tokio::time::timeout(self.timeout.min(Duration::from_secs(2)), probe).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "readiness: stream info failed");
                    false
                }
                Err(_) => {
                    tracing::debug!("readiness: stream info timed out");
                    false
                }
            }
        })
    }
}

impl Bus for JetStreamBus {
    fn subscribe<'a>(&'a self, spec: &'a ConsumerSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>, BusError>> {
        Box::pin(async move {
            let sub = self
                .durable(&spec.name, &spec.filter_subjects(), spec.ack_wait, spec.max_ack_pending)
                .await?;
            Ok(Box::new(sub) as Box<dyn Subscriber>)
        })
    }

    fn rewind<'a>(&'a self, spec: &'a ConsumerSpec, since_ms: i64) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let start_time = async_nats::datetime::from_nanos(i128::from(since_ms.max(0)) * 1_000_000)
                .map_err(|e| BusError::Rejected(format!("rewind to {since_ms}: {e}")))?;
            let stream = self
                .js
                .get_stream_no_info(&self.stream)
                .await
                .map_err(|e| BusError::Unavailable(format!("stream {:?}: {e}", self.stream)))?;
            if let Err(e) = stream.delete_consumer(&spec.name).await {
                // A durable that does not exist yet is fine; anything else is not.
                if stream.get_consumer::<consumer::pull::Config>(&spec.name).await.is_ok() {
                    return Err(BusError::Unavailable(format!("deleting consumer {:?} to rewind it: {e}", spec.name)));
                }
            }
            let filters = spec.filter_subjects();
            let (filter_subject, filter_subjects) = match filters.as_slice() {
                [one] => (one.clone(), Vec::new()),
                many => (String::new(), many.to_vec()),
            };
            stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(spec.name.clone()),
                    filter_subject,
                    filter_subjects,
                    deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: spec.ack_wait,
                    max_ack_pending: spec.max_ack_pending,
                    max_deliver: -1,
                    ..Default::default()
                })
                .await
                .map_err(|e| map_consumer_error(&spec.name, e))?;
            tracing::info!(consumer = %spec.name, since_ms, "consumer rewound");
            Ok(())
        })
    }

    /// Reads `dead-letter.<consumer>` from the stream with an ephemeral consumer (no acks),
    /// from `since_ms`, up to the stream's last message when it starts.
    fn dead_letters<'a>(&'a self, consumer: &'a str, since_ms: i64, limit: usize) -> BoxFuture<'a, Result<Vec<StoredLetter>, BusError>> {
        Box::pin(async move {
            let unavailable = |what: &str, e: &dyn std::fmt::Display| BusError::Unavailable(format!("{what}: {e}"));
            let mut stream = self.js.get_stream(&self.stream).await.map_err(|e| unavailable("stream", &e))?;
            let last = stream.info().await.map_err(|e| unavailable("stream info", &e))?.state.last_sequence;
            let deliver_policy = if since_ms <= 0 {
                consumer::DeliverPolicy::All
            } else {
                let start_time = async_nats::datetime::from_nanos(i128::from(since_ms) * 1_000_000)
                    .map_err(|e| BusError::Rejected(format!("since: {e}")))?;
                consumer::DeliverPolicy::ByStartTime { start_time }
            };
            let reader: consumer::PullConsumer = stream
                .create_consumer(consumer::pull::Config {
                    filter_subject: Subject::dead_letter(consumer).to_string(),
                    deliver_policy,
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable("reading the dead letters", &e))?;
            let mut out: Vec<StoredLetter> = Vec::new();
            while out.len() < limit {
                let mut batch = reader
                    .fetch()
                    .max_messages((limit - out.len()).min(500))
                    .expires(Duration::from_millis(500))
                    .messages()
                    .await
                    .map_err(|e| unavailable("fetching dead letters", &e))?;
                let before = out.len();
                while let Some(msg) = batch.next().await {
                    let msg = msg.map_err(|e| unavailable("fetching dead letters", &e))?;
                    let Ok(info) = msg.info() else { continue };
                    let (id, published_ms) = (info.stream_sequence, (info.published.unix_timestamp_nanos() / 1_000_000) as i64);
                    if id > last {
                        break;
                    }
                    let payload = match codec::decode(content_encoding(msg.headers.as_ref()), msg.payload.clone(), self.client.server_info().max_payload) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(id, error = %e, "a dead letter cannot be decoded; kept as stored");
                            msg.payload.clone()
                        }
                    };
                    out.push(StoredLetter { id, published_ms, subject: msg.subject.to_string(), payload });
                }
                if out.len() == before || out.last().is_some_and(|l| l.id >= last) {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn forget_dead_letter<'a>(&'a self, _consumer: &'a str, id: u64) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let stream = self.js.get_stream_no_info(&self.stream).await.map_err(|e| BusError::Unavailable(format!("stream: {e}")))?;
            stream.delete_message(id).await.map_err(|e| BusError::Unavailable(format!("deleting dead letter {id}: {e}")))?;
            Ok(())
        })
    }
}

/// A durable pull consumer on the JetStream bus.
pub struct JetStreamSubscriber {
    client: async_nats::Client,
    consumer: consumer::PullConsumer,
    timeout: Duration,
    /// The bound on a decoded message (the server's `max_payload`).
    max_message: usize,
}

impl Subscriber for JetStreamSubscriber {
    fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, BusError>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let start = tokio::time::Instant::now();
            // The server answers within `wait`; the margin covers the round trip.
            let deadline = start + wait + self.timeout;
            let mut request = self.consumer.fetch().max_messages(max);
            if !wait.is_zero() {
                // With `no_wait` (what fetch sends) and `expires`, the server returns as soon
                // as it has any message, and waits up to `expires` for the first.
                request = request.expires(wait);
            }
            let mut batch = match tokio::time::timeout_at(deadline, request.messages()).await {
                Err(_) => {
                    return Err(BusError::Unavailable(
                        "pull request not sent in time".to_string(),
                    ));
                }
                Ok(Err(e)) => return Err(BusError::Unavailable(format!("pull request: {e}"))),
                Ok(Ok(batch)) => batch,
            };
            let mut out = Vec::with_capacity(max.min(1024));
            loop {
                match tokio::time::timeout_at(deadline, batch.next()).await {
                    Err(_) => {
                        if out.is_empty()
                            && self.client.connection_state() != ConnectionState::Connected
                        {
                            return Err(BusError::Unavailable(
                                "no answer to the pull request: not connected to NATS".to_string(),
                            ));
                        }
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Ok(msg))) => out.push(to_delivery(msg, self.max_message)),
                    Ok(Some(Err(e))) => {
                        let text = e.to_string();
                        if !out.is_empty() {
                            tracing::debug!(error = %text, "pull ended early");
                            break;
                        }
                        if text.contains("409") && !text.contains("Consumer Deleted") {
                            // e.g. max ack pending reached: nothing can be delivered now.
                            tracing::debug!(error = %text, "nothing deliverable now");
                            tokio::time::sleep_until(start + wait).await;
                            return Ok(Vec::new());
                        }
                        return Err(BusError::Unavailable(format!("pull failed: {text}")));
                    }
                }
            }
            Ok(out)
        })
    }

    fn state(&mut self) -> BoxFuture<'_, Result<ConsumerState, BusError>> {
        Box::pin(async move {
            let info = tokio::time::timeout(self.timeout, self.consumer.info())
                .await
                .map_err(|_| BusError::Unavailable("consumer info timed out".into()))?
                .map_err(|e| BusError::Unavailable(format!("consumer info: {e}")))?;
            Ok(ConsumerState { pending: info.num_pending, ack_pending: info.num_ack_pending as u64 })
        })
    }
}

fn to_delivery(msg: jetstream::Message, max_message: usize) -> Delivery {
    let (delivered, seq) = msg
        .info()
        .map(|i| (u32::try_from(i.delivered).unwrap_or(u32::MAX), i.stream_sequence))
        .unwrap_or((1, 0));
    let (message, acker) = msg.split();
    let encoding = content_encoding(message.headers.as_ref());
    let trace = message.headers.as_ref().and_then(|h| h.get(crate::trace::TRACEPARENT)).and_then(|v| crate::TraceParent::parse(v.as_str()));
    Delivery::new(message.subject.to_string(), message.payload, delivered, seq, Acker::JetStream(acker))
        .decoded(encoding, max_message)
        .with_trace(trace)
}

/// The `Content-Encoding` header of a message, if any.
fn content_encoding(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers?.get(codec::CONTENT_ENCODING).map(async_nats::HeaderValue::as_str)
}

fn validate(cfg: &JetStreamConfig) -> Result<(), BusError> {
    let bad = |m: String| {
        Err(BusError::Rejected(format!(
            "invalid bus configuration: {m}"
        )))
    };
    if cfg.url.trim().is_empty() {
        return bad("empty url".to_string());
    }
    if cfg.stream.is_empty()
        || cfg
            .stream
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
    {
        return bad(format!("invalid stream name {:?}", cfg.stream));
    }
    if cfg.subjects.is_empty() {
        return bad("no subjects".to_string());
    }
    for s in &cfg.subjects {
        if let Some(problem) = filter_problem(s) {
            return bad(format!("{problem}: {s:?}"));
        }
    }
    if cfg.publish_timeout_ms == 0 {
        return bad("publish_timeout_ms must be > 0".to_string());
    }
    if cfg.max_in_flight == 0 {
        return bad("max_in_flight must be > 0".to_string());
    }
    if cfg.compression == MessageCompression::Zstd && !(1..=19).contains(&cfg.compression_level) {
        return bad(format!("compression_level must be 1 to 19, not {}", cfg.compression_level));
    }
    Ok(())
}

/// The server stores "unlimited" as -1.
fn normalize_limit(v: i64) -> i64 {
    if v <= 0 { -1 } else { v }
}

fn same_managed_fields(current: &stream::Config, desired: &stream::Config) -> bool {
    let mut a = current.subjects.clone();
    let mut b = desired.subjects.clone();
    a.sort();
    b.sort();
    a == b
        && current.max_age == desired.max_age
        && normalize_limit(current.max_bytes) == desired.max_bytes
        && current.duplicate_window == desired.duplicate_window
        && current.num_replicas.max(1) == desired.num_replicas
        && current.discard == desired.discard
        && current.compression.clone().unwrap_or(stream::Compression::None) == desired.compression.clone().unwrap_or(stream::Compression::None)
}

/// The URL(s) with any credentials (`user:password@`, `token@`) replaced by `***`, for
/// logs and error messages.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let (scheme, rest) = match url.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, url),
            };
            let host_end = rest.find('/').unwrap_or(rest.len());
            let rest = match rest[..host_end].rfind('@') {
                Some(at) => format!("***{}", &rest[at..]),
                None => rest.to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn map_connect_error(url: &str, e: async_nats::ConnectError) -> BusError {
    use async_nats::ConnectErrorKind as K;
    let url = redact_url(url);
    match e.kind() {
        K::ServerParse => BusError::Rejected(format!("invalid NATS url {url:?}: {e}")),
        _ => BusError::Unavailable(format!("cannot connect to NATS at {url}: {e}")),
    }
}

fn map_stream_error(what: &str, e: context::CreateStreamError) -> BusError {
    use context::CreateStreamErrorKind as K;
    let text = format!("{what}: {e}");
    match e.kind() {
        K::JetStreamUnavailable | K::TimedOut | K::Response | K::ResponseParse => {
            BusError::Unavailable(text)
        }
        K::JetStream(js) if js.code() == 503 => BusError::Unavailable(text),
        _ => BusError::Rejected(text),
    }
}

fn map_consumer_error(durable: &str, e: jetstream::stream::ConsumerError) -> BusError {
    use jetstream::stream::ConsumerErrorKind as K;
    let text = format!("consumer {durable:?}: {e}");
    match e.kind() {
        K::TimedOut | K::Request => BusError::Unavailable(text),
        K::JetStream(js) if js.code() == 503 => BusError::Unavailable(text),
        K::JetStream(js) if js.code() == 404 => BusError::Unavailable(text), // stream gone
        _ => BusError::Rejected(text),
    }
}

fn map_publish_error(e: context::PublishError) -> BusError {
    use context::PublishErrorKind as K;
    let text = e.to_string();
    // A subject the client refuses (an empty token, white space) is refused every time.
    if std::error::Error::source(&e).is_some_and(|s| s.is::<async_nats::SubjectError>()) {
        return BusError::Rejected(format!("invalid subject: {text}"));
    }
    match e.kind() {
        K::TimedOut | K::BrokenPipe | K::StreamNotFound => BusError::Unavailable(text),
        K::MaxAckPending => BusError::Full(text),
        K::MaxPayloadExceeded | K::WrongLastMessageId | K::WrongLastSequence => {
            BusError::Rejected(text)
        }
        _ => {
            let js = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .cloned();
            match js {
                Some(js) => classify_jetstream_error(&js, text),
                // Client-side failures (closed channel, ...): the connection is the problem.
                None => BusError::Unavailable(text),
            }
        }
    }
}

/// Server-side publish errors: limits are backpressure, message-specific ones permanent.
fn classify_jetstream_error(js: &jetstream::Error, text: String) -> BusError {
    use jetstream::ErrorCode as C;
    let code = js.error_code();
    if code == C::STREAM_MESSAGE_EXCEEDS_MAXIMUM || code == C::STREAM_HEADER_EXCEEDS_MAXIMUM {
        return BusError::Rejected(text);
    }
    if code == C::STREAM_STORE_FAILED
        || code == C::STORAGE_RESOURCES_EXCEEDED
        || code == C::MEMORY_RESOURCES_EXCEEDED
        || code == C::ACCOUNT_RESOURCES_EXCEEDED
        || code == C::INSUFFICIENT_RESOURCES
        || code == C::STREAM_LIMITS
    {
        return BusError::Full(text);
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("maximum") || lower.contains("exceeded") || lower.contains("insufficient") {
        return BusError::Full(text);
    }
    if js.code() == 503 {
        return BusError::Unavailable(text);
    }
    BusError::Rejected(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(redact_url("nats://alice:s3cret@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redact_url("nats://tok@a:1, tls://b:2"), "nats://***@a:1, tls://b:2");
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("u:p@host:4222"), "***@host:4222");
    }

    #[test]
    fn config_defaults_and_partial_deserialization() {
        let cfg: JetStreamConfig =
            serde_json::from_str(r#"{"url":"nats://10.0.0.1:4222","max_bytes":1000}"#).unwrap();
        assert_eq!(cfg.url, "nats://10.0.0.1:4222");
        assert_eq!(cfg.stream, "EVENTS");
        assert_eq!(cfg.subjects, vec!["raw-event.>", "quarantine.>", "dead-letter.>", "replay.>"]);
        assert_eq!(cfg.max_age_secs, 259_200);
        assert_eq!(cfg.max_bytes, 1000);
        assert_eq!(cfg.duplicate_window_secs, 120);
        assert_eq!(cfg.replicas, 1);
        assert_eq!(cfg.publish_timeout_ms, 5000);
        assert_eq!(cfg.max_in_flight, 4096);
        assert_eq!((cfg.compression, cfg.compression_level, cfg.stream_compression), (MessageCompression::Zstd, 1, StreamCompression::S2));
        let off: JetStreamConfig = serde_json::from_str(r#"{"compression":"none","stream_compression":"none"}"#).unwrap();
        assert_eq!((off.compression, off.stream_compression), (MessageCompression::None, StreamCompression::None));
        assert!(validate(&cfg).is_ok());
        let bad = JetStreamConfig {
            stream: "a.b".into(),
            ..Default::default()
        };
        assert!(matches!(validate(&bad), Err(BusError::Rejected(_))));
    }
}
