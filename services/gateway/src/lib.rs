//! The ingest gateway: `POST /v1/events` validates events with the shared contract,
//! publishes valid ones durably to the bus (`raw-event.<type>`, message id
//! `<type>:<data.id>`),
//! quarantines rejected ones (`quarantine.gateway`) and answers 202 only once every valid
//! event of the request is acknowledged by the bus.

pub mod api;
pub mod body;
pub mod config;
pub mod openapi;

pub use api::{AppState, router};
/// API keys live in `service-kit` (every service checks them the same way).
pub use service_kit::auth;
pub use config::GatewayConfig;
