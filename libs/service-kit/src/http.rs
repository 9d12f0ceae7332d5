//! What every HTTP API of the platform answers the same way: one error type ([`ApiError`]:
//! one status per condition, one JSON shape `{"error": {"code", "message"}}`, `Retry-After`
//! on 429/503), the API key check (401/403, done before anything else so that requests
//! without a key cost nothing), the bound on requests in flight (503 beyond it, instead of a
//! queue), and the bearer security scheme of the OpenAPI documents.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// The conditions an API answers with an error, each with one HTTP status in every service
/// of the platform (the `code` of [`ApiError`] says more, the status never differs for the
/// same condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request cannot be read or a parameter is out of its bounds. Do not retry.
    InvalidRequest,
    /// 401: no credentials, or unknown / invalid / expired ones.
    Unauthenticated,
    /// 403: valid credentials that may not do this (a revoked key, another user's data).
    Forbidden,
    /// 408: the request, or its body, was not sent within its timeout (a slow client).
    Timeout,
    /// 413: the request exceeds a size limit (body bytes, also after decompression; items
    /// in one batch). Do not retry as is: split it.
    TooLarge,
    /// 415: an unsupported `Content-Type` or `Content-Encoding`.
    UnsupportedMediaType,
    /// 429 + `Retry-After`: the pipeline behind the API (the bus) is full, or the caller's
    /// key is over its rate limit; nothing of the request was accepted, retry it later.
    Backpressure,
    /// 503 + `Retry-After`: this instance has too many requests in flight; retry later.
    Overloaded,
    /// 503 + `Retry-After`: a dependency (the bus, a store, the identity provider) does not
    /// answer; retry later.
    Unavailable,
    /// 500: a bug or corrupt data; retrying will not help.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of the condition.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Backpressure => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error of any service: its condition (hence its status), a stable machine-readable
/// code, a message for people, and `Retry-After` for the conditions worth retrying. Answered
/// as [`ErrorBody`]: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The condition.
    pub kind: ErrorKind,
    /// Stable code (e.g. `unauthenticated`, `too_large`, `store_unavailable`).
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// `Retry-After` seconds (429 and 503).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error of `kind` with a specific code.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { kind, code, message: message.into(), retry_after_secs: None }
    }

    /// 400 with a specific code (`invalid_request`, `invalid_cursor`, `bad_days`...).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, code, message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, "unauthenticated", message)
    }

    /// 403 `revoked_key`.
    pub fn revoked_key() -> Self {
        Self::new(ErrorKind::Forbidden, "revoked_key", "this key is revoked")
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, "forbidden", message)
    }

    /// 408 with a specific code (`body_timeout`).
    pub fn timeout(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, code, message)
    }

    /// 413 with a specific code (`too_large` for a body, `too_many_ids`...).
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, code, message)
    }

    /// 415 with a specific code (`unsupported_media_type`, `unsupported_encoding`).
    pub fn unsupported_media_type(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedMediaType, code, message)
    }

    /// 429 `rate_limited` + `Retry-After`: this key sent more requests than its rate limit.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::new(ErrorKind::Backpressure, "rate_limited", "this key sent more requests than its rate limit; retry after Retry-After seconds")
            .retry_after(retry_after_secs)
    }

    /// 429 `bus_full` + `Retry-After`.
    pub fn backpressure(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(ErrorKind::Backpressure, "bus_full", message).retry_after(retry_after_secs)
    }

    /// 503 `overloaded` + `Retry-After`.
    pub fn overloaded(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(ErrorKind::Overloaded, "overloaded", message).retry_after(retry_after_secs)
    }

    /// 503 + `Retry-After` with a code naming what does not answer (`store_unavailable`,
    /// `bus_unavailable`...).
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(ErrorKind::Unavailable, code, message).retry_after(retry_after_secs)
    }

    /// 500 with a specific code.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, code, message)
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The answer, counted in the service's request counter (`metric`, label `status`).
    pub fn counted(self, metric: &'static str) -> Response {
        metrics::counter!(metric, "status" => self.status().as_u16().to_string()).increment(1);
        self.into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status().as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after_secs;
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let response = (status, Json(body)).into_response();
        match retry {
            Some(secs) => with_retry_after(response, secs),
            None => response,
        }
    }
}

/// The JSON body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// For people.
    pub message: String,
}

/// Adds `Retry-After: secs` (for 429 and 503 answers).
pub fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The bound on requests processed at once, for [`limit_in_flight`].
#[derive(Clone)]
pub struct InFlightLimit {
    /// One permit per request in flight.
    pub permits: Arc<Semaphore>,
    /// `Retry-After` of the 503 answered beyond the bound.
    pub retry_after_secs: u64,
    /// The service's request counter.
    pub metric: &'static str,
}

/// Middleware (`axum::middleware::from_fn_with_state(limit, limit_in_flight)`): a request
/// beyond the bound is answered 503 with `Retry-After` at once, so memory stays bounded and
/// clients back off instead of piling up.
pub async fn limit_in_flight(State(limit): State<InFlightLimit>, req: Request, next: Next) -> Response {
    match limit.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::overloaded("too many requests in flight; retry later", limit.retry_after_secs).counted(limit.metric),
    }
}

/// The API keys a route requires, for [`require_api_key`].
#[derive(Clone)]
pub struct KeyCheck {
    /// Accepted and revoked keys.
    pub keys: Arc<crate::auth::ApiKeys>,
    /// Requests each key may send (none: unlimited).
    pub rate: Option<Arc<crate::rate::KeyRateLimit>>,
    /// The service's request counter.
    pub metric: &'static str,
}

/// Middleware (`axum::middleware::from_fn_with_state(check, require_api_key)`): a request
/// without a valid `Authorization: Bearer <key>` is answered 401 (403 for a revoked key)
/// from its headers alone, before its body is read and before it takes a permit of
/// [`limit_in_flight`] (layer this one outside it). A key over its rate limit is answered
/// 429 `rate_limited` with `Retry-After`, also before its body is read.
pub async fn require_api_key(State(check): State<KeyCheck>, req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match check.keys.check_key(authorization) {
        (crate::auth::AuthResult::Allowed, key) => {
            if let (Some(rate), Some(key)) = (&check.rate, key)
                && let Err(wait) = rate.check(&key)
            {
                return ApiError::rate_limited(wait).counted(check.metric);
            }
            next.run(req).await
        }
        (crate::auth::AuthResult::Unauthenticated, _) => ApiError::unauthenticated("send Authorization: Bearer <API key>").counted(check.metric),
        (crate::auth::AuthResult::Revoked, _) => ApiError::revoked_key().counted(check.metric),
    }
}

/// The OpenAPI security scheme `Authorization: Bearer <token>`, under `name`.
pub struct BearerScheme {
    /// The scheme's name in the document.
    pub name: &'static str,
    /// What the token is.
    pub description: Option<&'static str>,
}

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = self.description.map(str::to_owned);
        components.add_security_scheme(self.name, SecurityScheme::Http(http));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ApiError) -> (u16, Option<String>, serde_json::Value) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let retry = r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap_or_default();
        (status, retry, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn one_shape_and_one_status_per_condition() {
        let (status, retry, body) = answer(ApiError::too_large("too_many_ids", "1001 ids, at most 1000")).await;
        assert_eq!((status, retry), (413, None));
        assert_eq!(body, serde_json::json!({"error": {"code": "too_many_ids", "message": "1001 ids, at most 1000"}}));
        let (status, retry, body) = answer(ApiError::unavailable("store_unavailable", "Redis does not answer", 2)).await;
        assert_eq!((status, retry.as_deref(), body["error"]["code"].as_str()), (503, Some("2"), Some("store_unavailable")));
        assert_eq!(answer(ApiError::overloaded("busy", 1)).await.0, 503);
        assert_eq!(answer(ApiError::backpressure("full", 1)).await.1.as_deref(), Some("1"));
        assert_eq!(answer(ApiError::revoked_key()).await.0, 403);
        assert_eq!(answer(ApiError::unauthenticated("no key")).await.0, 401);
        assert_eq!(answer(ApiError::invalid("bad_days", "days")).await.0, 400);
        assert_eq!(answer(ApiError::unsupported_media_type("unsupported_encoding", "br")).await.0, 415);
        assert_eq!(answer(ApiError::internal("corrupt_item", "x")).await.0, 500);
    }
}
