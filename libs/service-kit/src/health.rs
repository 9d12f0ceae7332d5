//! `/healthz` (the process answers), `/readyz` (its dependencies answer) and `/metrics`
//! (Prometheus text), merged into every service's router.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;

/// Tells whether a service can serve (its bus, database... answer).
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The health and metrics routes.
pub fn routes(ready: ReadinessCheck) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, "ready".to_owned()).into_response(),
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
