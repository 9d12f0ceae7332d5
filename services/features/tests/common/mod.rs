//! Shared test helpers: a Redis store under a unique key prefix, hits, and cleanup.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use features::layout::Hit;
use features::{Layout, RedisStore, RedisStoreOptions};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("test:features:{name}:{}:{nanos}:", std::process::id())
}

pub async fn redis_store(layout: Layout, prefix: &str, budget: usize) -> RedisStore {
    RedisStore::connect(
        layout,
        RedisStoreOptions {
            url: redis_url(),
            prefix: prefix.to_owned(),
            dedup_ttl_secs: 3600,
            expire_budget: budget,
            timeout: Duration::from_secs(5),
            read_connections: 2,
        },
    )
    .await
    .expect("Redis at REDIS_URL (scripts/services.sh up)")
}

pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Keys under a prefix.
pub async fn keys(prefix: &str) -> Vec<String> {
    let mut c = redis_conn().await;
    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.unwrap()
}

/// Deletes every key under a prefix (only this test's).
pub async fn cleanup(prefix: &str) {
    let ks = keys(prefix).await;
    if !ks.is_empty() {
        let mut c = redis_conn().await;
        let _: () = redis::cmd("DEL").arg(ks).query_async(&mut c).await.unwrap();
    }
}

pub fn hit(product: &str, counter: usize, t_ms: i64, seq: u64) -> Hit {
    Hit { product: product.into(), counter, t_ms, source: 0, seq }
}

/// A tiny deterministic generator (no dependency).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
