//! The HTTP API for internal teams: `GET /v1/users/{user_id}/events`, time-ordered pages of a
//! user's events with an opaque cursor, bearer-key auth (401 unknown, 403 revoked), a bound
//! on requests in flight (503 with Retry-After beyond), plus health, metrics and the
//! OpenAPI document.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use event_lake::Lake;
use event_lake::history::UserQuery;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use service_kit::auth::{ApiKeys, AuthResult};
use tokio::sync::Semaphore;
use utoipa::{IntoParams, ToSchema};

use crate::cursor;
use crate::item::{Item, MAX_TIME_MS};
use crate::store::{Order, PageQuery, Store, StoreError};
use crate::user::MAX_USER_BYTES;

/// Most types in one `types` filter.
pub const MAX_TYPES_PER_REQUEST: usize = 20;

/// Bounds of `limit`.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// When `limit` is absent.
    pub default_limit: usize,
    /// Largest `limit`.
    pub max_limit: usize,
    /// Largest `limit` with `include=payload`.
    pub max_payload_limit: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits { default_limit: 100, max_limit: 1000, max_payload_limit: 100 }
    }
}

/// What the handlers share.
pub struct AppState {
    /// The items.
    pub store: Arc<dyn Store>,
    /// The lake, for `include=payload` (None: the option is refused).
    pub lake: Option<Arc<Lake>>,
    /// Accepted and revoked keys.
    pub keys: ApiKeys,
    /// Bounds of `limit`.
    pub limits: PageLimits,
    /// Retry-After of 503.
    pub retry_after_secs: u64,
    /// Requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// The cold tier (the lake's history table) under the same API; `None`: the hot tier
    /// alone.
    pub cold: Option<Arc<crate::tiers::ColdTier>>,
}

/// Query parameters of a page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Event time from (inclusive): epoch milliseconds or RFC 3339. Default: the beginning.
    pub from: Option<String>,
    /// Event time to (exclusive): epoch milliseconds or RFC 3339. Default: no end.
    pub to: Option<String>,
    /// Only these event types, comma-separated (at most 20).
    pub types: Option<String>,
    /// Events per page: default 100, at most 1000 (100 with `include=payload`).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (same `order`).
    pub cursor: Option<String>,
    /// `asc` (oldest first, default) or `desc` (newest first).
    pub order: Option<String>,
    /// `payload`: also return each full event, read from the lake.
    pub include: Option<String>,
}

/// One page of a user's events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    /// The user.
    pub user_id: String,
    /// The events, in the requested order.
    pub events: Vec<TimelineEvent>,
    /// Pass it as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// With `include=payload`: events of this page not (yet) found in the lake (the lake
    /// writer commits events within its max age, 5 minutes by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payloads_missing: Option<usize>,
}

/// One event of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    /// `data.id`.
    pub id: String,
    /// `data.type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `meta.created_at`, epoch ms.
    pub created_at: i64,
    /// `data.attributes`, when they fit the compact item; else see `attributes_in_lake_only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Box<RawValue>>,
    /// True when the attributes were too large to keep here: ask `include=payload`.
    pub attributes_in_lake_only: bool,
    /// The lake partition holding the full event.
    pub lake_partition: String,
    /// When this entry leaves the hot window (epoch seconds); 0 for an event served from the
    /// lake's history table (kept for good).
    pub expires_at: i64,
    /// With `include=payload`: the full event from the lake, when found (numbers with the
    /// digits they were sent with).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
}

pub use service_kit::http::{ApiError, ErrorBody};

const REQUESTS_METRIC: &str = "timeline_requests_total";

fn error(e: ApiError) -> Response {
    e.counted(REQUESTS_METRIC)
}

/// The router: the API, health and metrics, the OpenAPI document.
pub fn router(state: Arc<AppState>) -> Router {
    let ready_store = state.store.clone();
    let ready: service_kit::health::ReadinessCheck = Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { if store.is_ready().await { Ok(()) } else { Err("the store does not answer".into()) } })
    });
    let api = Router::new()
        .route("/v1/users/{user_id}/events", get(get_events))
        .layer(middleware::from_fn_with_state(
            service_kit::http::InFlightLimit { permits: state.in_flight.clone(), retry_after_secs: state.retry_after_secs, metric: REQUESTS_METRIC },
            service_kit::http::limit_in_flight,
        ))
        .with_state(state);
    api.route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .merge(service_kit::health::routes(ready))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// A validated page request.
struct Parsed {
    query: PageQuery,
    payload: bool,
}

fn parse_time(name: &str, v: &str) -> Result<i64, String> {
    let t = match v.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => chrono::DateTime::parse_from_rfc3339(v)
            .map_err(|_| format!("{name} must be epoch milliseconds or an RFC 3339 time, got {v:?}"))?
            .timestamp_millis(),
    };
    if !(0..=MAX_TIME_MS + 1).contains(&t) {
        return Err(format!("{name} is out of range (0..={})", MAX_TIME_MS + 1));
    }
    Ok(t)
}

fn parse(user: String, p: PageParams, limits: PageLimits) -> Result<Parsed, (&'static str, String)> {
    let bad = |m: String| ("invalid_parameter", m);
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(bad(format!("user_id must have 1 to {MAX_USER_BYTES} bytes")));
    }
    let order = match p.order.as_deref() {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(o) => return Err(bad(format!("order must be asc or desc, got {o:?}"))),
    };
    let payload = match p.include.as_deref() {
        None | Some("") => false,
        Some("payload") => true,
        Some(o) => return Err(bad(format!("include accepts only payload, got {o:?}"))),
    };
    let from = p.from.as_deref().map(|v| parse_time("from", v)).transpose().map_err(bad)?.unwrap_or(0);
    let to = p.to.as_deref().map(|v| parse_time("to", v)).transpose().map_err(bad)?.unwrap_or(MAX_TIME_MS + 1);
    if from >= to {
        return Err(bad(format!("from ({from}) must be before to ({to})")));
    }
    let max = if payload { limits.max_payload_limit } else { limits.max_limit };
    let limit = match p.limit.as_deref() {
        None => limits.default_limit.min(max),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return Err(bad(format!("limit must be an integer from 1 to {max}, got {l:?}"))),
        },
    };
    let types: Vec<String> = p.types.as_deref().unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    if types.len() > MAX_TYPES_PER_REQUEST {
        return Err(bad(format!("at most {MAX_TYPES_PER_REQUEST} types")));
    }
    if let Some(t) = types.iter().find(|t| !event_contract::is_valid_type(t)) {
        return Err(bad(format!("{t:?} is not a valid event type")));
    }
    let after = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(cursor::decode(order, c).map_err(|m| ("invalid_cursor", format!("{m}; start again without a cursor")))?),
    };
    let now_secs = chrono::Utc::now().timestamp();
    Ok(Parsed { query: PageQuery { user, from, to, types, limit, after, order, now_secs }, payload })
}

fn to_event(it: Item) -> Result<TimelineEvent, StoreError> {
    let attributes = it.attrs.as_ref().map(|a| a.to_json().map_err(StoreError::Corrupt)).transpose()?;
    Ok(TimelineEvent {
        id: it.id().to_owned(),
        created_at: it.created_at(),
        attributes_in_lake_only: attributes.is_none(),
        attributes,
        event_type: it.event_type,
        lake_partition: it.lake,
        expires_at: it.expires_at,
        payload: None,
    })
}

/// One page over both tiers (see [`crate::tiers`]): below the seam from the history table,
/// at or above it from the hot store, in the page's order, the second filling what the first
/// leaves of the page. The cursor is the last position returned.
async fn stitched(state: &AppState, parsed: &Parsed, cold: Option<(i64, Arc<event_lake::history::HistorySnapshot>)>) -> Result<(Vec<TimelineEvent>, Option<String>), ApiError> {
    let q = &parsed.query;
    let hot_page = |from: i64, after: Option<String>, limit: usize| {
        let query = PageQuery { from, after, limit, ..q.clone() };
        async move {
            state.store.query(&query).await.map_err(|e| {
                tracing::warn!(error = %e, "query failed");
                ApiError::unavailable("store_unavailable", e.to_string(), state.retry_after_secs)
            })
        }
    };
    let hot_events = |items: Vec<crate::item::Item>| -> Result<Vec<TimelineEvent>, ApiError> {
        items.into_iter().map(|it| to_event(it).map_err(|e| ApiError::internal("corrupt_item", e.to_string()))).collect()
    };
    let (Some((seam, snapshot)), Some(cold)) = (cold, &state.cold) else {
        let page = hot_page(q.from, q.after.clone(), q.limit).await?;
        let next = page.next_after.as_deref().map(|sk| cursor::encode(q.order, sk));
        return Ok((hot_events(page.items)?, next));
    };
    let after: Option<(i64, String)> = q.after.as_deref().and_then(crate::item::parse_sort_key);
    let cold_page = |limit: usize, after: Option<(i64, String)>| {
        let types = q.types.clone();
        let user = q.user.clone();
        let snapshot = snapshot.clone();
        async move {
            let uq = UserQuery { user: &user, from: q.from, to: q.to.min(seam), types: &types, newest_first: q.order == Order::Desc, after, limit };
            cold.page(&snapshot, &uq).await.map_err(|e| {
                tracing::warn!(error = %e, "history read failed");
                ApiError::unavailable("lake_unavailable", e.to_string(), state.retry_after_secs)
            })
        }
    };
    let cold_events = |rows: Vec<event_lake::history::HistoryRow>| -> Result<Vec<TimelineEvent>, ApiError> {
        rows.into_iter().map(|r| crate::tiers::cold_event(r, parsed.payload).map_err(|e| ApiError::internal("corrupt_history", e))).collect()
    };
    let position = |e: &TimelineEvent| cursor::encode(q.order, &crate::item::sort_key(e.created_at, &e.id));
    let mut events = Vec::new();
    let cold_range = q.from < seam;
    let hot_range = q.to > seam;
    match q.order {
        Order::Asc => {
            // Below the seam first (unless the cursor is past it).
            if cold_range && after.as_ref().is_none_or(|(t, _)| *t < seam) {
                let page = cold_page(q.limit, after.clone()).await?;
                let more = page.more;
                events = cold_events(page.rows)?;
                if more || events.len() == q.limit {
                    let next = events.last().filter(|_| more || hot_range).map(position);
                    return Ok((events, next));
                }
            }
            if hot_range {
                let hot_after = q.after.clone().filter(|_| after.as_ref().is_some_and(|(t, _)| *t >= seam));
                let page = hot_page(q.from.max(seam), hot_after, q.limit - events.len()).await?;
                events.extend(hot_events(page.items)?);
                let next = page.next_after.as_deref().map(|sk| cursor::encode(q.order, sk));
                return Ok((events, next));
            }
            Ok((events, None))
        }
        Order::Desc => {
            // At or above the seam first (unless the cursor is below it).
            if hot_range && after.as_ref().is_none_or(|(t, _)| *t >= seam) {
                let page = hot_page(q.from.max(seam), q.after.clone(), q.limit).await?;
                events = hot_events(page.items)?;
                if page.next_after.is_some() || events.len() == q.limit {
                    let next = events.last().filter(|_| page.next_after.is_some() || cold_range).map(position);
                    return Ok((events, next));
                }
            }
            if cold_range {
                let cold_after = after.filter(|(t, _)| *t < seam);
                let page = cold_page(q.limit - events.len(), cold_after).await?;
                let more = page.more;
                events.extend(cold_events(page.rows)?);
                let next = events.last().filter(|_| more).map(position);
                return Ok((events, next));
            }
            Ok((events, None))
        }
    }
}

/// A user's events, time-ordered, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/events",
    tag = "timeline",
    params(("user_id" = String, Path, description = "The user (the value found at the configured JSON path of each event)"), PageParams),
    responses(
        (status = 200, description = "One page; follow `next_cursor` for the next one (a user without events gets an empty page)", body = EventsPage),
        (status = 400, description = "Invalid parameter or cursor", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Revoked API key", body = ErrorBody),
        (status = 503, description = "Overloaded or the store is unavailable; retry after Retry-After seconds", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_events(
    State(state): State<Arc<AppState>>,
    Path(user_id): Path<String>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    match state.keys.check(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())) {
        AuthResult::Allowed => {}
        AuthResult::Unauthenticated => return error(ApiError::unauthenticated("send Authorization: Bearer <API key>")),
        AuthResult::Revoked => return error(ApiError::revoked_key()),
    }
    let parsed = match parse(user_id, params, state.limits) {
        Ok(p) => p,
        Err((code, message)) => return error(ApiError::invalid(code, message)),
    };
    if parsed.payload && state.lake.is_none() {
        return error(ApiError::invalid("invalid_parameter", "include=payload: this server has no lake configured"));
    }
    let started = Instant::now();
    let cold = match &state.cold {
        None => None,
        Some(cold) => match cold.snapshot().await {
            Ok(s) => s.and_then(|s| cold.seam_of(&s).map(|seam| (seam, s))),
            Err(e) => {
                tracing::warn!(error = %e, "history table unreadable");
                return error(ApiError::unavailable("lake_unavailable", e.to_string(), state.retry_after_secs));
            }
        },
    };
    let (mut events, next_cursor) = match stitched(&state, &parsed, cold).await {
        Ok(page) => page,
        Err(e) => return error(e),
    };
    metrics::histogram!("timeline_query_seconds").record(started.elapsed().as_secs_f64());
    let mut payloads_missing = None;
    if parsed.payload {
        // Cold events carry their payload already; hot ones are read from the lake.
        let hot: Vec<&TimelineEvent> = events.iter().filter(|e| e.payload.is_none()).collect();
        if let (Some(lake), false) = (&state.lake, hot.is_empty()) {
            let wanted: Vec<(String, i64, String)> = hot.iter().map(|e| (e.id.clone(), e.created_at, e.lake_partition.clone())).collect();
            match crate::lake_fetch::fetch_events(lake, &wanted).await {
                Ok(mut found) => {
                    for ev in &mut events {
                        if ev.payload.is_none() {
                            ev.payload = found.remove(&ev.id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lake read failed");
                    return error(ApiError::unavailable("lake_unavailable", e.to_string(), state.retry_after_secs));
                }
            }
        }
        payloads_missing = Some(events.iter().filter(|e| e.payload.is_none()).count());
    }
    metrics::counter!("timeline_requests_total", "status" => "200").increment(1);
    Json(EventsPage { user_id: parsed.query.user, events, next_cursor, payloads_missing }).into_response()
}
