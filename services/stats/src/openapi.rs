//! The stats API's OpenAPI 3.1 document, generated from the handlers (utoipa), served at
//! `/openapi.json` and checked in as `openapi/stats.json` (a test fails when it is stale).

use service_kit::http::BearerScheme;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "User statistics", description = "Per-user daily statistics for the mobile app: totals and per-day series of configured metrics over the last N days."),
    paths(crate::api::user_stats),
    components(schemas(crate::query::UserStats, crate::query::MetricStats, crate::api::ErrorBody, service_kit::http::ErrorDetail)),
    modifiers(&BEARER),
    tags((name = "stats", description = "Per-user daily statistics"))
)]
struct ApiDoc;

const BEARER: BearerScheme = BearerScheme {
    name: "bearer",
    description: Some("The app's identity provider JWT (RS256 or ES256, checked against its JWKS: issuer, audience, expiry) naming the user (mobile clients), or a service key (internal callers)."),
};

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the checked-in JSON text.
pub fn pretty_json() -> String {
    document().to_pretty_json().unwrap_or_default() + "\n"
}
