//! The HTTP API: `POST /v1/features` (a batch of product ids -> their window counters), the
//! OpenAPI document, and health / metrics.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::query::{Answer, FeatureReader, QueryError};

/// The request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturesRequest {
    /// 1..=1000 product ids (`attributes.product_id` of the events).
    pub product_ids: Vec<String>,
}

/// The answer: one entry per requested id, in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FeaturesResponse {
    /// Column names `<counter>_<window>`, the order of every `values`.
    pub columns: Vec<String>,
    /// Per product.
    pub products: Vec<ProductFeatures>,
    /// The windows are exact as of this instant (epoch ms, the updater's last expiry pass).
    pub as_of_ms: i64,
}

/// One product's counters.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProductFeatures {
    /// The id as requested.
    pub product_id: String,
    /// One value per column (zeros for an unknown product).
    pub values: Vec<i64>,
}

/// An error answer (codes: `invalid_request`, `too_many_ids`, `too_large`, `overloaded`,
/// `store_unavailable`).
pub use service_kit::http::{ApiError, ErrorBody};

impl From<Answer> for FeaturesResponse {
    fn from(a: Answer) -> Self {
        FeaturesResponse {
            columns: a.columns,
            products: a.products.into_iter().map(|(product_id, values)| ProductFeatures { product_id, values }).collect(),
            as_of_ms: a.as_of_ms,
        }
    }
}

fn error(e: ApiError) -> Response {
    e.counted("features_http_requests_total")
}

/// Counters of a batch of products.
#[utoipa::path(
    post,
    path = "/v1/features",
    tag = "features",
    request_body(content = FeaturesRequest, description = "Up to 1,000 product ids", content_type = "application/json",
        example = json!({"product_ids": ["p1", "p42"]})),
    responses(
        (status = 200, description = "Counters per product (unknown products: zeros)", body = FeaturesResponse,
            example = json!({"columns": ["impressions_1h", "impressions_1d", "impressions_7d", "likes_1h", "likes_1d", "likes_7d", "conversations_1h", "conversations_1d", "conversations_7d"],
                "products": [{"product_id": "p1", "values": [12, 340, 2210, 1, 25, 130, 0, 3, 21]}, {"product_id": "p42", "values": [0, 0, 0, 0, 0, 0, 0, 0, 0]}],
                "as_of_ms": 1767225600000_i64})),
        (status = 400, description = "Not JSON, no ids, or an empty / too long id", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "A revoked API key", body = ErrorBody),
        (status = 413, description = "More ids than allowed (1,000) or body too large", body = ErrorBody),
        (status = 503, description = "Overloaded or the store does not answer (Retry-After)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn post_features(State(reader): State<Arc<FeatureReader>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return error(ApiError::too_large("too_large", e.body_text())),
        Err(e) => return error(ApiError::invalid("invalid_request", e.body_text())),
    };
    let req: FeaturesRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(ApiError::invalid("invalid_request", format!("expected {{\"product_ids\": [\"...\"]}}: {e}"))),
    };
    match reader.features(req.product_ids).await {
        Ok(answer) => {
            metrics::counter!("features_http_requests_total", "status" => "200").increment(1);
            Json(FeaturesResponse::from(answer)).into_response()
        }
        Err(e) => {
            let retry = reader.retry_after_secs;
            error(match e {
                QueryError::Empty { .. } | QueryError::BadId { .. } => ApiError::invalid("invalid_request", e.to_string()),
                QueryError::TooMany { .. } => ApiError::too_large("too_many_ids", e.to_string()),
                QueryError::Overloaded => ApiError::overloaded(e.to_string(), retry),
                QueryError::Store(s) => {
                    tracing::warn!(error = %s, "feature read failed");
                    ApiError::unavailable("store_unavailable", s.to_string(), retry)
                }
            })
        }
    }
}

async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::pretty_json())
}

/// Who may read features.
#[derive(Clone, Debug)]
pub enum Access {
    /// Callers with one of these API keys (the service always runs so: its configuration
    /// requires keys). HTTP: 401 without a valid key, 403 for a revoked one.
    Keys(Arc<service_kit::auth::ApiKeys>),
    /// Anyone: for tests and benchmarks that call [`router`] directly.
    Open,
}

impl Access {
    /// Checks an `Authorization` value over gRPC (`authorization` metadata).
    pub fn check(&self, authorization: Option<&str>) -> service_kit::auth::AuthResult {
        match self {
            Access::Keys(keys) => keys.check(authorization),
            Access::Open => service_kit::auth::AuthResult::Allowed,
        }
    }
}

/// The features API (behind `access`), `/openapi.json`, and `/healthz` `/readyz` `/metrics`
/// (ready when the store answers; open, for probes and scrapers).
pub fn router(reader: Arc<FeatureReader>, access: Access) -> Router {
    // 1,000 ids of up to 256 bytes, JSON-escaped, fit in well under 2 MiB.
    let body_limit = (reader.max_ids() * 600).max(64 << 10);
    let store = reader.store().clone();
    let ready: service_kit::health::ReadinessCheck = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ready().await.map_err(|e| e.to_string()) })
    });
    let mut api = Router::new().route("/v1/features", post(post_features)).layer(DefaultBodyLimit::max(body_limit));
    if let Access::Keys(keys) = access {
        // Checked from the headers, before the body is read.
        let check = service_kit::http::KeyCheck { keys, rate: None, metric: "features_http_requests_total" };
        api = api.layer(axum::middleware::from_fn_with_state(check, service_kit::http::require_api_key));
    }
    api.with_state(reader)
        .route("/openapi.json", get(openapi_json))
        .merge(service_kit::health::routes(ready))
}
