//! Per-user daily statistics for the mobile app.
//!
//! An [`aggregator`] consumes `raw-event.>` from the bus and counts, per (user, UTC day,
//! metric), the events the configured [`definitions`] name (a favorite counts for the
//! product's owner...) or the distinct values they carry (the distinct products of a seller
//! that were contacted), committing each batch's [`tally`] and the bus position in one
//! transaction (exactly once). The [`api`] serves `GET /v1/users/{user_id}/stats?days=N`
//! through a [`cache`] (Redis or in-process, single flight, ETag/304) to mobile clients (a JWT
//! whose subject is the user) and internal callers (service keys). The [`store`] is Postgres
//! (daily partitions, retention) or SQLite (embedded); [`backfill`] recomputes a day from the
//! lake.

pub mod aggregator;
pub mod api;
pub mod auth;
pub mod backfill;
pub mod cache;
pub mod config;
pub mod definitions;
pub mod openapi;
pub mod query;
pub mod service;
pub mod store;
pub mod tally;
pub mod ttl_cache;

pub use aggregator::{Aggregator, AggregatorOptions, AggregatorStats, Fatal};
pub use api::{AppState, router};
pub use config::StatsConfig;
pub use definitions::{Extractor, MetricDef, default_metrics};
pub use query::StatsReader;
pub use service::StatsService;
pub use store::Store;
