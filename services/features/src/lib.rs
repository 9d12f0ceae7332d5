//! Real-time features for the search re-ranker: per product, counters of event types
//! (impressions, likes, conversations by default) over sliding windows (1h, 1d, 7d by
//! default), kept in Redis (in memory for the embedded mode) by an updater consuming the bus
//! exactly once, and served over HTTP (`POST /v1/features`) and gRPC
//! (`features.v1.Features/GetFeatures`) from the same function.

pub mod api;
pub mod backfill;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod layout;
pub mod export;
pub mod openapi;
pub mod query;
pub mod service;
pub mod store;
pub mod updater;

pub use config::{Backend, FeaturesConfig};
pub use service::Features;
pub use layout::Layout;
pub use store::{MemoryStore, RedisStore, RedisStoreOptions, WindowStore};

/// The code generated from `proto/features.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("features.v1");
}
