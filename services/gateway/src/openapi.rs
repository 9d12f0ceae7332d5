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

/// The document as utoipa generates it from the handlers (request bodies as plain text).
pub fn generated() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document: the generated one with the event contract's JSON Schema
/// (`event_contract::schema`, also `openapi/event.schema.json`) as the components `Event` and
/// `EventValue`, and the request body of `POST /v1/events` described with them.
pub fn document() -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(generated()).unwrap_or_default();
    let value_ref = "#/components/schemas/EventValue";
    let limits = event_contract::Limits::default();
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(serde_json::Value::as_object_mut) {
        schemas.insert("Event".into(), event_contract::schema::event_schema(&limits, value_ref));
        schemas.insert("EventValue".into(), event_contract::schema::value_schema(value_ref));
    }
    if let Some(content) = doc.pointer_mut("/paths/~1v1~1events/post/requestBody/content").and_then(serde_json::Value::as_object_mut) {
        content.insert(
            "application/json".into(),
            json!({"schema": {"oneOf": [
                {"$ref": "#/components/schemas/Event"},
                {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "description": "A batch: each item is checked on its own (bad ones are rejected, the others accepted)."}
            ]}}),
        );
        content.insert(
            "application/x-ndjson".into(),
            json!({"schema": {"type": "string", "description": "One Event (components/schemas/Event) per line."}}),
        );
    }
    doc
}

/// The document as the checked-in JSON text.
pub fn pretty_json() -> String {
    serde_json::to_string_pretty(&document()).unwrap_or_default() + "\n"
}
