//! The timeline: every event of a user, for internal teams.
//!
//! A durable consumer of the bus (`raw-event.>`, run by the bus library's consumer runtime)
//! turns each event into one compact item per
//! user it names (configurable JSON paths per type) and writes them to DynamoDB (SQLite in
//! the embedded mode) with keys that make a redelivery overwrite its own item. Items hold
//! the id, type, time, the attributes when they fit one write unit, and the lake partition
//! of the full event; they expire after the hot window (TTL). `GET /v1/users/{id}/events`
//! pages through a user's items in time order with an opaque cursor; `include=payload`
//! reads the full events back from the lake. See README.md for the layout and the costs.

pub mod api;
pub mod config;
pub mod consumer;
pub mod cursor;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod history;
pub mod item;
pub mod lake_fetch;
pub mod openapi;
pub mod service;
pub mod sqlite;
pub mod store;
pub mod tiers;
pub mod user;

pub use api::{AppState, PageLimits, router};
pub use config::{Backend, DynamoConfig, TimelineConfig};
pub use consumer::{ConsumerStats, TimelineCounters, TimelineHandler, handlers};
#[cfg(feature = "dynamodb")]
pub use dynamo::DynamoStore;
pub use service::{BuildError, Timeline};
pub use sqlite::SqliteStore;
pub use store::{Order, Page, PageQuery, Store, StoreError};
