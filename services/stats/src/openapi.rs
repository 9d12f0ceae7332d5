//! The stats API's OpenAPI 3.1 document, generated from the handlers (utoipa), served at
//! `/openapi.json` and checked in as `openapi/stats.json` (a test fails when it is stale).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "User statistics", description = "Per-user daily statistics for the mobile app: totals and per-day series of configured metrics over the last N days."),
    paths(crate::api::user_stats),
    components(schemas(crate::query::UserStats, crate::query::MetricStats, crate::api::ErrorBody)),
    modifiers(&Bearer),
    tags((name = "stats", description = "Per-user daily statistics"))
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("A JWT whose `sub` is the user id (mobile clients), or a service key (internal callers).".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the checked-in JSON text.
pub fn pretty_json() -> String {
    document().to_pretty_json().unwrap_or_default() + "\n"
}
