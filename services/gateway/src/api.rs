//! The HTTP API: `POST /v1/events`, its errors, its limits, and the router with health,
//! metrics and the OpenAPI document.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use event_bus::{BusError, OutMessage, Publisher};
use event_contract::wire::{QuarantineMessage, Subject};
use event_contract::{Limits, Reason, validate};
use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use service_kit::auth::ApiKeys;
use service_kit::http::{InFlightLimit, KeyCheck, limit_in_flight, require_api_key};
use crate::body::{self, BodyError};

/// Source name of the gateway's quarantine messages (subject `quarantine.gateway`).
pub const QUARANTINE_SOURCE: &str = "gateway";

/// What the handlers share.
pub struct AppState {
    /// The bus.
    pub publisher: Arc<dyn Publisher>,
    /// The contract's limits.
    pub limits: Limits,
    /// Accepted and revoked keys.
    pub keys: ApiKeys,
    /// Largest body, before and after decoding.
    pub max_body_bytes: usize,
    /// Retry-After for 429/503.
    pub retry_after_secs: u64,
    /// Requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// Time and size bounds of one request.
    pub protection: Protection,
}

/// The bounds that keep one request (or a slow or hostile client) from holding the gateway:
/// see [`crate::GatewayConfig`] for each.
#[derive(Debug, Clone)]
pub struct Protection {
    /// Time to send the whole body (408 beyond).
    pub body_timeout: Duration,
    /// Time for the whole request (408 beyond).
    pub request_timeout: Duration,
    /// Most events in one request (413 beyond).
    pub max_events_per_request: usize,
    /// Rejections listed in full in an answer; the others are only counted.
    pub max_rejection_details: usize,
    /// Rejected lines quarantined one by one; the others go into one summary record.
    pub max_quarantined_per_request: usize,
    /// Requests each API key may send (429 beyond); `None`: unlimited.
    pub rate: Option<Arc<service_kit::rate::KeyRateLimit>>,
}

impl Default for Protection {
    fn default() -> Self {
        Protection {
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_events_per_request: 100_000,
            max_rejection_details: 100,
            max_quarantined_per_request: 1000,
            rate: None,
        }
    }
}

/// 202: the events were accepted (durable on the bus), with the ones that were rejected.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Events acknowledged by the bus.
    pub accepted: usize,
    /// Events refused (also quarantined), by position in the request: the first
    /// `max_rejection_details` of them (default 100).
    pub rejected: Vec<RejectedEvent>,
    /// How many events were refused in all (more than `rejected` lists past the bound).
    pub rejected_total: usize,
    /// Every refused event counted by reason code.
    pub rejected_by_reason: BTreeMap<String, usize>,
}

/// One refused event.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedEvent {
    /// Position in the request (0-based; the line for NDJSON, blank lines not counted).
    pub index: usize,
    /// Reason code (see the README's table).
    pub reason: String,
    /// What exactly is wrong.
    pub detail: String,
}

/// The rejections of one request: the first ones in full, all counted by reason.
struct Rejections {
    listed: Vec<RejectedEvent>,
    max_listed: usize,
    total: usize,
    by_reason: BTreeMap<String, usize>,
}

impl Rejections {
    fn new(max_listed: usize) -> Self {
        Rejections { listed: Vec::new(), max_listed, total: 0, by_reason: BTreeMap::new() }
    }

    fn add(&mut self, index: usize, reason: Reason, detail: impl FnOnce() -> String) {
        metrics::counter!("gateway_events_rejected_total", "reason" => reason.code()).increment(1);
        self.total += 1;
        *self.by_reason.entry(reason.code().to_owned()).or_default() += 1;
        if self.listed.len() < self.max_listed {
            self.listed.push(RejectedEvent { index, reason: reason.code().to_owned(), detail: detail() });
        }
    }

    fn into_answer(mut self, accepted: usize) -> Accepted {
        self.listed.sort_by_key(|r| r.index);
        Accepted { accepted, rejected: self.listed, rejected_total: self.total, rejected_by_reason: self.by_reason }
    }
}

/// The quarantine messages of one request: the first ones in full, the rest in one summary.
struct Quarantined {
    room: usize,
    omitted: BTreeMap<&'static str, usize>,
    first_omitted: Option<(usize, Bytes)>,
}

pub use service_kit::http::{ApiError, ErrorBody};

const REQUESTS_METRIC: &str = "gateway_requests_total";

fn error(e: ApiError) -> Response {
    e.counted(REQUESTS_METRIC)
}

/// The router: the API, health and metrics, the OpenAPI document.
///
/// Layers of `POST /v1/events`, outermost first: the API key (from the headers alone, so a
/// request without a key never takes a permit), the bound on requests in flight, the whole
/// request's timeout (408), the body's deadline (408), the body size limit (413).
pub fn router(state: Arc<AppState>) -> Router {
    let ready_bus = state.publisher.clone();
    let ready: service_kit::health::ReadinessCheck = Arc::new(move || {
        let bus = ready_bus.clone();
        Box::pin(async move { if bus.is_ready().await { Ok(()) } else { Err("the bus does not answer".into()) } })
    });
    let protection = state.protection.clone();
    let api = Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyDeadlineLayer::new(protection.body_timeout))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, protection.request_timeout))
        .layer(middleware::from_fn_with_state(
            InFlightLimit { permits: state.in_flight.clone(), retry_after_secs: state.retry_after_secs, metric: REQUESTS_METRIC },
            limit_in_flight,
        ))
        .layer(middleware::from_fn_with_state(KeyCheck { keys: Arc::new(state.keys.clone()), rate: protection.rate.clone(), metric: REQUESTS_METRIC }, require_api_key))
        .with_state(state);
    api.route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .merge(service_kit::health::routes(ready))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// True when reading the body failed on the body deadline.
fn is_body_timeout(rejection: &BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Ingest events.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(
        description = "One event (a JSON object), a JSON array of events (`application/json`), or one event per line (`application/x-ndjson`). `Content-Encoding: gzip` or `zstd` accepted.",
        content(
            (String = "application/json"),
            (String = "application/x-ndjson")
        )
    ),
    responses(
        (status = 202, description = "Every valid event is durable on the bus; invalid ones are listed (the first 100 in full, all counted by reason) and quarantined", body = Accepted),
        (status = 400, description = "The body cannot be read (corrupt compression, not JSON events, empty)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Revoked API key", body = ErrorBody),
        (status = 408, description = "The body or the whole request took longer than its timeout", body = ErrorBody),
        (status = 413, description = "Body larger than the limit (also after decompression), or more events than a request may hold", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = ErrorBody),
        (status = 422, description = "Every event of the request was rejected (listed and quarantined)", body = Accepted),
        (status = 429, description = "The bus is full; retry after Retry-After seconds", body = ErrorBody),
        (status = 503, description = "Overloaded or the bus is unavailable; nothing unacknowledged was accepted; retry after Retry-After seconds", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn post_events(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    // The API key was checked by `require_api_key` before the permit was taken.
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let body = match body {
        Ok(b) => b,
        Err(e) if is_body_timeout(&e) => {
            return error(ApiError::timeout("body_timeout", format!("the body was not sent within {:?}", state.protection.body_timeout)));
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(ApiError::too_large("too_large", format!("the body is larger than {} bytes", state.max_body_bytes)));
        }
        Err(e) => return error(ApiError::invalid("unreadable_body", e.body_text())),
    };
    let layout = match body::layout(text(header::CONTENT_TYPE)) {
        Ok(l) => l,
        Err(e) => return error(ApiError::unsupported_media_type("unsupported_media_type", e.to_string())),
    };
    let decoded = match body::decode(body, text(header::CONTENT_ENCODING), state.max_body_bytes) {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => return error(ApiError::too_large("too_large", e.to_string())),
        Err(e @ BodyError::UnsupportedEncoding(_)) => return error(ApiError::unsupported_media_type("unsupported_encoding", e.to_string())),
        Err(e) => return error(ApiError::invalid("unreadable_body", e.to_string())),
    };
    let events = match body::split(&decoded, layout, state.protection.max_events_per_request) {
        Ok(ev) => ev,
        Err(e @ BodyError::TooManyEvents(_)) => return error(ApiError::too_large("too_many_events", e.to_string())),
        Err(e) => return error(ApiError::invalid("unreadable_body", e.to_string())),
    };

    let received_at = chrono::Utc::now().timestamp_millis();
    let max_payload = state.publisher.max_payload();
    let quarantine = |index: usize, reason: Reason, detail: &str, raw: &Bytes| OutMessage {
        subject: Subject::Quarantine(Cow::Borrowed(QUARANTINE_SOURCE)).to_string(),
        id: uuid::Uuid::now_v7().to_string(),
        payload: Bytes::from(
            QuarantineMessage {
                reason,
                detail: Cow::Borrowed(detail),
                source: Cow::Borrowed(QUARANTINE_SOURCE),
                index: index as u64,
                received_at,
                subject: None,
                raw_len: raw.len() as u64,
                raw: Cow::Borrowed(raw),
            }
            .encode(max_payload),
        ),
    };
    let mut messages = Vec::with_capacity(events.len());
    // What each message is: the index of a valid event, or None for a quarantine message.
    let mut origins = Vec::with_capacity(events.len());
    let mut rejections = Rejections::new(state.protection.max_rejection_details);
    let mut quarantined = Quarantined { room: state.protection.max_quarantined_per_request, omitted: BTreeMap::new(), first_omitted: None };
    for (index, raw) in events.iter().enumerate() {
        match validate(raw, &state.limits) {
            Ok(ev) => {
                messages.push(OutMessage::event(&ev.event_type, &ev.id, raw.clone()));
                origins.push(Some(index));
            }
            Err(r) => {
                if quarantined.take(index, r.reason, raw) {
                    messages.push(quarantine(index, r.reason, &r.detail, raw));
                    origins.push(None);
                }
                rejections.add(index, r.reason, || r.detail);
            }
        }
    }

    // A W3C `traceparent` of the request goes with its messages into the consumers' spans
    // (an invalid one is ignored, as the specification asks).
    let trace = text(header::HeaderName::from_static(event_bus::trace::TRACEPARENT)).and_then(event_bus::TraceParent::parse);
    if let Some(t) = &trace {
        tracing::debug!(trace_id = %t.trace_id_hex(), messages = messages.len(), "publishing with the request's trace context");
    }
    let started = Instant::now();
    let results = state.publisher.publish_batch_traced(messages, trace).await;
    metrics::histogram!("gateway_publish_seconds").record(started.elapsed().as_secs_f64());
    let mut outcome = Published::default();
    outcome.read(&results, &origins);
    // Events the bus refuses for good (too large for it, say) are rejected and quarantined
    // like invalid ones: retrying them cannot help.
    let refused = std::mem::take(&mut outcome.refused);
    if outcome.transient.is_none() {
        let mut second = Vec::new();
        for (index, why) in &refused {
            let detail = format!("the bus refused the event: {why}");
            if let Some(raw) = events.get(*index)
                && quarantined.take(*index, Reason::RejectedByBus, raw)
            {
                second.push(quarantine(*index, Reason::RejectedByBus, &detail, raw));
            }
            rejections.add(*index, Reason::RejectedByBus, || detail);
        }
        if let Some(summary) = quarantined.summary() {
            second.push(quarantine(summary.index, Reason::TooManyRejections, &summary.detail, &summary.raw));
        }
        if !second.is_empty() {
            let origins = vec![None; second.len()];
            let results = state.publisher.publish_batch(second).await;
            outcome.read(&results, &origins);
        }
    }
    if let Some((full, why)) = outcome.transient {
        tracing::warn!(error = %why, "publish failed; the client will retry");
        let (retry, message) = (state.retry_after_secs, format!("events not durable, retry the request: {why}"));
        return error(if full { ApiError::backpressure(message, retry) } else { ApiError::unavailable("bus_unavailable", message, retry) });
    }
    let valid = outcome.accepted;
    metrics::counter!("gateway_events_accepted_total").increment(valid as u64);
    let status = if valid == 0 { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::ACCEPTED };
    metrics::counter!("gateway_requests_total", "status" => status.as_u16().to_string()).increment(1);
    (status, Json(rejections.into_answer(valid))).into_response()
}

/// The record that stands for the rejected lines not quarantined one by one.
struct Summary {
    index: usize,
    detail: String,
    raw: Bytes,
}

impl Quarantined {
    /// True when the rejected line gets its own quarantine message; otherwise it is counted
    /// for the summary.
    fn take(&mut self, index: usize, reason: Reason, raw: &Bytes) -> bool {
        if self.room > 0 {
            self.room -= 1;
            return true;
        }
        *self.omitted.entry(reason.code()).or_default() += 1;
        self.first_omitted.get_or_insert_with(|| (index, raw.clone()));
        false
    }

    /// The summary of the omitted lines, if any (its raw bytes are the first omitted line).
    fn summary(&mut self) -> Option<Summary> {
        let (index, raw) = self.first_omitted.take()?;
        let total: usize = self.omitted.values().sum();
        let counts: Vec<String> = self.omitted.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let detail = format!(
            "{total} more rejected lines of this request, from index {index}, are not quarantined one by one (by reason: {}); the raw bytes are the first of them",
            counts.join(", ")
        );
        Some(Summary { index, detail, raw })
    }
}

/// What the bus made of a request's messages.
#[derive(Default)]
struct Published {
    /// Valid events the bus acknowledged.
    accepted: usize,
    /// Valid events the bus refused for good, by index in the request, with why.
    refused: Vec<(usize, String)>,
    /// The first transient failure (and whether it was backpressure): the request is retried.
    transient: Option<(bool, String)>,
}

impl Published {
    fn read(&mut self, results: &[Result<(), BusError>], origins: &[Option<usize>]) {
        for (r, origin) in results.iter().zip(origins) {
            match (r, origin) {
                (Ok(()), Some(_)) => self.accepted += 1,
                (Ok(()), None) => {}
                (Err(BusError::Rejected(why)), Some(index)) => self.refused.push((*index, why.clone())),
                (Err(BusError::Rejected(why)), None) => {
                    // The rejection is in the answer; only its copy in the quarantine is lost.
                    metrics::counter!("gateway_quarantine_refused_total").increment(1);
                    tracing::error!(error = %why, "the bus refused a quarantine message");
                }
                (Err(BusError::Full(why)), _) => {
                    let first = self.transient.get_or_insert_with(|| (true, why.clone()));
                    first.0 = true;
                }
                (Err(e), _) => {
                    self.transient.get_or_insert_with(|| (false, e.to_string()));
                }
            }
        }
    }
}
