//! What every HTTP API of the platform answers the same way: the JSON error body, `Retry-After`
//! on 429/503, the API key check (401/403, done before anything else so that requests without
//! a key cost nothing), the bound on requests in flight (503 beyond it, instead of a queue),
//! and the bearer security scheme of the OpenAPI documents.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable error code.
    pub error: String,
    /// For people.
    pub message: String,
}

/// An error answer, counted in the service's request counter (`metric`, label `status`).
pub fn error_response(metric: &'static str, status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    metrics::counter!(metric, "status" => status.as_u16().to_string()).increment(1);
    (status, Json(ErrorBody { error: code.to_owned(), message: message.into() })).into_response()
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
        Err(_) => with_retry_after(
            error_response(limit.metric, StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight; retry later"),
            limit.retry_after_secs,
        ),
    }
}

/// The API keys a route requires, for [`require_api_key`].
#[derive(Clone)]
pub struct KeyCheck {
    /// Accepted and revoked keys.
    pub keys: Arc<crate::auth::ApiKeys>,
    /// The service's request counter.
    pub metric: &'static str,
}

/// Middleware (`axum::middleware::from_fn_with_state(check, require_api_key)`): a request
/// without a valid `Authorization: Bearer <key>` is answered 401 (403 for a revoked key)
/// from its headers alone, before its body is read and before it takes a permit of
/// [`limit_in_flight`] (layer this one outside it).
pub async fn require_api_key(State(check): State<KeyCheck>, req: Request, next: Next) -> Response {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match check.keys.check(authorization) {
        crate::auth::AuthResult::Allowed => next.run(req).await,
        crate::auth::AuthResult::Unauthenticated => {
            error_response(check.metric, StatusCode::UNAUTHORIZED, "unauthenticated", "send Authorization: Bearer <API key>")
        }
        crate::auth::AuthResult::Revoked => error_response(check.metric, StatusCode::FORBIDDEN, "revoked_key", "this API key is revoked"),
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
