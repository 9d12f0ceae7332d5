//! The HTTP API: `POST /v1/events`, its errors, its limits, and the router with health,
//! metrics and the OpenAPI document.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
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

use service_kit::auth::{ApiKeys, AuthResult};
use service_kit::http::{InFlightLimit, limit_in_flight};
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
}

/// 202: the events were accepted (durable on the bus), with the ones that were rejected.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Events acknowledged by the bus.
    pub accepted: usize,
    /// Events refused by the contract (also quarantined), by position in the request.
    pub rejected: Vec<RejectedEvent>,
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

pub use service_kit::http::ErrorBody;

const REQUESTS_METRIC: &str = "gateway_requests_total";

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    service_kit::http::error_response(REQUESTS_METRIC, status, code, message)
}

fn retry_later(status: StatusCode, code: &str, message: impl Into<String>, secs: u64) -> Response {
    service_kit::http::with_retry_after(error(status, code, message), secs)
}

/// The router: the API, health and metrics, the OpenAPI document.
pub fn router(state: Arc<AppState>) -> Router {
    let ready_bus = state.publisher.clone();
    let ready: service_kit::health::ReadinessCheck = Arc::new(move || {
        let bus = ready_bus.clone();
        Box::pin(async move { if bus.is_ready().await { Ok(()) } else { Err("the bus does not answer".into()) } })
    });
    let api = Router::new()
        .route("/v1/events", post(post_events))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            InFlightLimit { permits: state.in_flight.clone(), retry_after_secs: state.retry_after_secs, metric: REQUESTS_METRIC },
            limit_in_flight,
        ))
        .with_state(state);
    api.route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .merge(service_kit::health::routes(ready))
        .layer(tower_http::trace::TraceLayer::new_for_http())
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
        (status = 202, description = "Every valid event is durable on the bus; invalid ones are listed and quarantined", body = Accepted),
        (status = 400, description = "The body cannot be read (corrupt compression, not JSON events, empty)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Revoked API key", body = ErrorBody),
        (status = 413, description = "Body larger than the limit (also after decompression)", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = ErrorBody),
        (status = 422, description = "Every event of the request was rejected (listed and quarantined)", body = Accepted),
        (status = 429, description = "The bus is full; retry after Retry-After seconds", body = ErrorBody),
        (status = 503, description = "Overloaded or the bus is unavailable; nothing unacknowledged was accepted; retry after Retry-After seconds", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn post_events(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match state.keys.check(text(header::AUTHORIZATION)) {
        AuthResult::Allowed => {}
        AuthResult::Unauthenticated => {
            return error(StatusCode::UNAUTHORIZED, "unauthenticated", "send Authorization: Bearer <API key>");
        }
        AuthResult::Revoked => return error(StatusCode::FORBIDDEN, "revoked_key", "this API key is revoked"),
    }
    let layout = match body::layout(text(header::CONTENT_TYPE)) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", e.to_string()),
    };
    let decoded = match body::decode(body, text(header::CONTENT_ENCODING), state.max_body_bytes) {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
        Err(e @ BodyError::UnsupportedEncoding(_)) => {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding", e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "unreadable_body", e.to_string()),
    };
    let events = match body::split(&decoded, layout) {
        Ok(ev) => ev,
        Err(e) => return error(StatusCode::BAD_REQUEST, "unreadable_body", e.to_string()),
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
    let mut rejected = Vec::new();
    for (index, raw) in events.iter().enumerate() {
        match validate(raw, &state.limits) {
            Ok(ev) => {
                messages.push(OutMessage::event(&ev.event_type, &ev.id, raw.clone()));
                origins.push(Some(index));
            }
            Err(r) => {
                metrics::counter!("gateway_events_rejected_total", "reason" => r.reason.code()).increment(1);
                messages.push(quarantine(index, r.reason, &r.detail, raw));
                origins.push(None);
                rejected.push(RejectedEvent { index, reason: r.reason.code().to_owned(), detail: r.detail });
            }
        }
    }

    let started = Instant::now();
    let results = state.publisher.publish_batch(messages).await;
    metrics::histogram!("gateway_publish_seconds").record(started.elapsed().as_secs_f64());
    let mut outcome = Published::default();
    outcome.read(&results, &origins);
    // Events the bus refuses for good (too large for it, say) are rejected and quarantined
    // like invalid ones: retrying them cannot help.
    let refused = std::mem::take(&mut outcome.refused);
    if outcome.transient.is_none() && !refused.is_empty() {
        let mut retry = Vec::with_capacity(refused.len());
        for (index, why) in &refused {
            let detail = format!("the bus refused the event: {why}");
            metrics::counter!("gateway_events_rejected_total", "reason" => Reason::RejectedByBus.code()).increment(1);
            if let Some(raw) = events.get(*index) {
                retry.push(quarantine(*index, Reason::RejectedByBus, &detail, raw));
            }
            rejected.push(RejectedEvent { index: *index, reason: Reason::RejectedByBus.code().to_owned(), detail });
        }
        rejected.sort_by_key(|r| r.index);
        let origins = vec![None; retry.len()];
        let results = state.publisher.publish_batch(retry).await;
        outcome.read(&results, &origins);
    }
    if let Some((full, why)) = outcome.transient {
        tracing::warn!(error = %why, "publish failed; the client will retry");
        let (status, code) = if full {
            (StatusCode::TOO_MANY_REQUESTS, "bus_full")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "bus_unavailable")
        };
        return retry_later(status, code, format!("events not durable, retry the request: {why}"), state.retry_after_secs);
    }
    let valid = outcome.accepted;
    metrics::counter!("gateway_events_accepted_total").increment(valid as u64);
    let status = if valid == 0 { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::ACCEPTED };
    metrics::counter!("gateway_requests_total", "status" => status.as_u16().to_string()).increment(1);
    (status, Json(Accepted { accepted: valid, rejected })).into_response()
}


