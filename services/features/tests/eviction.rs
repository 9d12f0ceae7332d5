//! A Redis that may evict keys is refused at start: an evicted state or dedup bitmap would
//! silently break exact, exactly-once counts. Each case runs its own `redis-server` (the
//! shared one's configuration is left alone).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use features::store::StoreError;
use features::{Layout, RedisStore, RedisStoreOptions};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(policy: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxmemory-policy", policy])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (scripts/services.sh installs it)");
    Server(child, port)
}

async fn connect(server: &Server) -> Result<RedisStore, StoreError> {
    let opts = RedisStoreOptions {
        url: format!("redis://127.0.0.1:{}", server.1),
        prefix: "t:".into(),
        dedup_ttl_secs: 60,
        expire_budget: 10,
        timeout: Duration::from_secs(2),
        read_connections: 1,
    };
    for _ in 0..50 {
        match RedisStore::connect(Layout::default_layout(), opts.clone()).await {
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other,
        }
    }
    panic!("redis-server did not start");
}

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused() {
    for policy in ["allkeys-lru", "volatile-ttl"] {
        let server = start(policy);
        match connect(&server).await {
            Err(StoreError::Misconfigured(m)) => assert!(m.contains(policy) && m.contains("noeviction"), "{m}"),
            Err(e) => panic!("{policy}: {e}"),
            Ok(_) => panic!("{policy}: a Redis that may evict keys was accepted"),
        }
    }
    let server = start("noeviction");
    assert!(connect(&server).await.is_ok());
}
