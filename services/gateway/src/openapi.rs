//! The gateway's OpenAPI 3.1 document, generated from the handlers (utoipa), served at
//! `/openapi.json` and checked in as `openapi/gateway.json` (a test fails when it is stale).

use service_kit::http::BearerScheme;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Event gateway", description = "Validates events, quarantines bad ones, publishes valid ones durably to the event bus."),
    paths(crate::api::post_events),
    components(schemas(crate::api::Accepted, crate::api::RejectedEvent, crate::api::ErrorBody, service_kit::http::ErrorDetail)),
    modifiers(&BEARER),
    tags((name = "events", description = "Event ingestion"))
)]
struct ApiDoc;

const BEARER: BearerScheme = BearerScheme { name: "api_key", description: None };

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the checked-in JSON text.
pub fn pretty_json() -> String {
    document().to_pretty_json().unwrap_or_default() + "\n"
}
