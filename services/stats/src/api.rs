//! The HTTP API: `GET /v1/users/{user_id}/stats?days=N`, with auth, conditional requests
//! (ETag / 304), `Cache-Control: private`, a bound on requests in flight, health, metrics
//! and the OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::auth::{AuthError, Authenticator, Caller};
use crate::query::{DEFAULT_DAYS, MAX_DAYS, StatsReader};

/// What the handlers share.
pub struct AppState {
    /// Reads statistics through the cache.
    pub reader: StatsReader,
    /// Checks credentials.
    pub auth: Authenticator,
    /// Requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// Retry-After of 503 answers.
    pub retry_after_secs: u64,
    /// `Cache-Control` of answers.
    pub cache_control: HeaderValue,
}

impl AppState {
    /// The state, with the `Cache-Control` value computed once.
    pub fn new(reader: StatsReader, auth: Authenticator, max_in_flight: usize, retry_after_secs: u64) -> Arc<AppState> {
        let max_age = reader.cache().settings().today_ttl.as_secs();
        let cache_control = HeaderValue::from_str(&format!("private, max-age={max_age}")).unwrap_or(HeaderValue::from_static("private"));
        Arc::new(AppState { reader, auth, in_flight: Arc::new(Semaphore::new(max_in_flight)), retry_after_secs, cache_control })
    }
}

impl AppState {
    /// For `/readyz`: not ready without the database or without any key to check provider
    /// tokens; degraded (still ready) when the cache is unreachable or the keys cannot be
    /// refreshed.
    pub async fn status(&self) -> Result<Option<String>, String> {
        self.reader.store().ping().await.map_err(|e| format!("database: {e}"))?;
        let mut degraded = Vec::new();
        if let Some(why) = self.reader.cache().degraded() {
            degraded.push(why);
        }
        if let Some(why) = self.auth.status()? {
            degraded.push(why);
        }
        Ok((!degraded.is_empty()).then(|| degraded.join("; ")))
    }
}

pub use service_kit::http::{ApiError, ErrorBody};

const REQUESTS_METRIC: &str = "stats_requests_total";

fn error(e: ApiError) -> Response {
    e.counted(REQUESTS_METRIC)
}

/// The router: the API, health and metrics, the OpenAPI document.
pub fn router(state: Arc<AppState>) -> Router {
    let ready_state = state.clone();
    let ready: service_kit::health::StatusCheck = Arc::new(move || {
        let state = ready_state.clone();
        Box::pin(async move { state.status().await })
    });
    let api = Router::new()
        .route("/v1/users/{user_id}/stats", get(user_stats))
        .layer(middleware::from_fn_with_state(
            service_kit::http::InFlightLimit { permits: state.in_flight.clone(), retry_after_secs: state.retry_after_secs, metric: REQUESTS_METRIC },
            service_kit::http::limit_in_flight,
        ))
        .with_state(state);
    api.route("/openapi.json", get(|| async { Json(crate::openapi::document()) })).merge(service_kit::health::routes_with_status(ready))
}

/// Parses `days` from the query string: absent -> 7, else an integer in 1..=90.
fn parse_days(query: Option<&str>) -> Result<u16, String> {
    let mut days = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "days" {
            days = Some(v);
        }
    }
    let Some(v) = days else { return Ok(DEFAULT_DAYS) };
    match v.parse::<i64>() {
        Ok(n) if (1..=i64::from(MAX_DAYS)).contains(&n) => Ok(n as u16),
        _ => Err(format!("days must be an integer from 1 to {MAX_DAYS} (got {v:?})")),
    }
}

/// A user's daily statistics.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/stats",
    tag = "stats",
    params(
        ("user_id" = String, Path, description = "The user"),
        ("days" = Option<u16>, Query, description = "Days in the window, today included: 1 to 90 (default 7)", minimum = 1, maximum = 90),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a response the client holds: 304 if unchanged"),
    ),
    responses(
        (status = 200, description = "Totals and per-day series (UTC days, zeros filled) of each metric; `Cache-Control: private`, `ETag`", body = crate::query::UserStats),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, description = "days is not an integer from 1 to 90", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired JWT (bad signature, unknown signing key, wrong issuer or audience, not yet valid) / unknown service key", body = ErrorBody),
        (status = 403, description = "The JWT names another user, or the service key is revoked", body = ErrorBody),
        (status = 503, description = "Overloaded, the database is unavailable, or the identity provider's keys cannot be fetched to check this token; retry after Retry-After seconds", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn user_stats(State(state): State<Arc<AppState>>, Path(user_id): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match state.auth.check(text(header::AUTHORIZATION)).await {
        Ok(Caller::Service) => {}
        Ok(Caller::User(sub)) if sub == user_id => {}
        Ok(Caller::User(_)) => return error(ApiError::forbidden("a client may read only its own statistics")),
        Err(AuthError::Revoked) => return error(ApiError::revoked_key()),
        Err(AuthError::Unauthenticated(m)) => return error(ApiError::unauthenticated(m)),
        Err(AuthError::Unavailable(m)) => return error(ApiError::unavailable("identity_provider_unavailable", m, state.retry_after_secs)),
    }
    let days = match parse_days(query.as_deref()) {
        Ok(d) => d,
        Err(m) => return error(ApiError::invalid("bad_days", m)),
    };
    if user_id.is_empty() || user_id.len() > 256 {
        return error(ApiError::invalid("bad_user", "user_id must be 1 to 256 bytes"));
    }
    let today = crate::definitions::today();
    let rendered = match state.reader.user_stats(&user_id, days, today).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "statistics unavailable");
            return error(ApiError::unavailable("store_unavailable", "statistics are unavailable; retry later", state.retry_after_secs));
        }
    };
    let cache_control = state.cache_control.clone();
    let etag = rendered.etag_header.clone();
    let not_modified = text(header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').map(str::trim).any(|t| t == rendered.etag || t == "*" || t.strip_prefix("W/") == Some(&rendered.etag)));
    if not_modified {
        metrics::counter!("stats_requests_total", "status" => "304").increment(1);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)]).into_response();
    }
    metrics::counter!("stats_requests_total", "status" => "200").increment(1);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json")), (header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        rendered.body.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_days;

    #[test]
    fn days_bounds() {
        assert_eq!(parse_days(None), Ok(7));
        assert_eq!(parse_days(Some("days=1")), Ok(1));
        assert_eq!(parse_days(Some("x=2&days=90")), Ok(90));
        assert!(parse_days(Some("days=0")).is_err());
        assert!(parse_days(Some("days=91")).is_err());
        assert!(parse_days(Some("days=abc")).is_err());
        assert!(parse_days(Some("days=")).is_err());
    }
}
