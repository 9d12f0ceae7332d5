//! `/healthz` (the process answers), `/readyz` (its dependencies answer; a service may also
//! report itself degraded: still ready, serving with less) and `/metrics` (Prometheus text),
//! merged into every service's router.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;

/// Tells whether a service can serve (its bus, database... answer).
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Tells whether a service can serve: `Ok(None)` ready, `Ok(Some(why))` ready but degraded
/// (e.g. serving without its cache), `Err(why)` not ready.
pub type StatusCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<Option<String>, String>> + Send + Sync>;

/// The health and metrics routes.
pub fn routes(ready: ReadinessCheck) -> Router {
    routes_with_status(Arc::new(move || {
        let ready = ready.clone();
        Box::pin(async move { ready().await.map(|()| None) })
    }))
}

/// The health and metrics routes, `/readyz` answering 200 `ready`, 200 `ready (degraded:
/// why)` or 503 `not ready: why`.
pub fn routes_with_status(status: StatusCheck) -> Router {
    // The recorder is installed before the service records anything (metrics recorded
    // without one are dropped).
    let _ = crate::telemetry::prometheus();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let status = status.clone();
                async move {
                    match status().await {
                        Ok(None) => (StatusCode::OK, "ready".to_owned()).into_response(),
                        Ok(Some(why)) => (StatusCode::OK, format!("ready (degraded: {why})")).into_response(),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                match crate::telemetry::prometheus() {
                    Some(h) => (StatusCode::OK, h.render()).into_response(),
                    None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder").into_response(),
                }
            }),
        )
}
