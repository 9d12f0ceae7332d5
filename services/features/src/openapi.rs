//! The features OpenAPI 3.1 document, generated from the handlers (utoipa), served at
//! `/openapi.json` and checked in as `openapi/features.json` (a test fails when it is stale).

use service_kit::http::BearerScheme;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Product features", description = "Real-time counters per product (impressions, likes, conversations over 1h, 1d, 7d by default) for the search re-ranker. The same answers over gRPC: features.v1.Features/GetFeatures (services/features/proto/features.proto)."),
    paths(crate::api::post_features),
    components(schemas(crate::api::FeaturesRequest, crate::api::FeaturesResponse, crate::api::ProductFeatures, crate::api::ErrorBody, service_kit::http::ErrorDetail)),
    modifiers(&BEARER),
    tags((name = "features", description = "Windowed counters per product"))
)]
struct ApiDoc;

const BEARER: BearerScheme = BearerScheme { name: "api_key", description: Some("An API key of FEATURES_API_KEY_HASHES (gRPC: `authorization: Bearer <key>` metadata)") };

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the checked-in JSON text.
pub fn pretty_json() -> String {
    document().to_pretty_json().unwrap_or_default() + "\n"
}
