//! The timeline's OpenAPI 3.1 document, generated from the handlers (utoipa), served at
//! `/openapi.json` and checked in as `openapi/timeline.json` (a test fails when it is stale).

use service_kit::http::BearerScheme;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Timeline", description = "Per-user event history for internal teams: every event of a user, time-ordered, in pages."),
    paths(crate::api::get_events),
    components(schemas(crate::api::EventsPage, crate::api::TimelineEvent, crate::api::ErrorBody, service_kit::http::ErrorDetail)),
    modifiers(&BEARER),
    tags((name = "timeline", description = "Per-user event history"))
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
