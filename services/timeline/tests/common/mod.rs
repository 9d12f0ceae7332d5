//! Test harness shared by the timeline's tests: a store of either backend (SQLite in a
//! temporary folder, or a unique table on the DynamoDB stand-in at `AWS_ENDPOINT_URL`), a
//! consumer on an in-process bus, and the API on a free port.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use event_bus::consumer::{Consumer, ConsumerConfig, Counters};
use event_bus::{InProcessBus, OutMessage, Publisher};
use event_lake::Lake;
use serde_json::{Value, json};
use service_kit::auth::{ApiKeys, hash_key};
use timeline::item::ItemOptions;
use timeline::user::UserPaths;
use timeline::{AppState, DynamoConfig, DynamoStore, PageLimits, SqliteStore, Store, TimelineCounters, router};
use tokio::sync::watch;

pub const KEY: &str = "timeline-test-key";
pub const REVOKED: &str = "timeline-old-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Dynamo,
}

/// The DynamoDB stand-in's endpoint (scripts/test.sh starts it and exports it).
pub fn dynamo_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh (it starts the DynamoDB stand-in)"))
}

/// A table name no other test uses.
pub fn unique_table(name: &str) -> String {
    format!("tl-{name}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// A fresh table on the stand-in (created with `init`), with fast retries.
pub async fn dynamo_store(name: &str, endpoint: Option<String>) -> (DynamoStore, DynamoConfig) {
    let cfg = DynamoConfig {
        table: unique_table(name),
        endpoint_url: Some(endpoint.unwrap_or_else(dynamo_endpoint)),
        backoff_base_ms: 5,
        backoff_max_ms: 50,
        ..DynamoConfig::default()
    };
    let store = DynamoStore::connect(&cfg).await;
    store.init().await.expect("create the table");
    (store, cfg)
}

pub fn item_options(per_type: &[(&str, &[&str])]) -> ItemOptions {
    let m = per_type.iter().map(|(t, p)| (t.to_string(), p.iter().map(|s| s.to_string()).collect())).collect();
    ItemOptions {
        paths: UserPaths::new(&["data.attributes.user_id".into()], &m).expect("paths"),
        hot_window_secs: 30 * 86_400,
        item_budget_bytes: 1024,
        compress_min_bytes: 128,
    }
}

/// A recent base time (the hot window is 30 days), on a whole second.
pub fn t0() -> i64 {
    (chrono::Utc::now().timestamp() - 3 * 3600) * 1000
}

pub fn event(id: &str, ty: &str, user: Option<&str>, created_at: i64) -> Value {
    let mut attrs = json!({"product_id": format!("p-{id}"), "n": 1});
    if let Some(u) = user {
        attrs["user_id"] = json!(u);
    }
    json!({"data": {"id": id, "type": ty, "attributes": attrs}, "meta": {"created_at": created_at}})
}

pub struct Harness {
    pub backend: Backend,
    pub base: String,
    pub store: Arc<dyn Store>,
    pub dynamo: Option<DynamoStore>,
    pub bus: InProcessBus,
    pub lake: Arc<Lake>,
    pub cold: Option<Arc<timeline::tiers::ColdTier>>,
    stop: watch::Sender<bool>,
    counters: (Arc<Counters>, Arc<TimelineCounters>),
    consumer: tokio::task::JoinHandle<event_bus::consumer::Report>,
    published: u64,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn new(backend: Backend, name: &str) -> Harness {
        Harness::with_options(backend, name, item_options(&[])).await
    }

    pub async fn with_options(backend: Backend, name: &str, opts: ItemOptions) -> Harness {
        Harness::build(backend, name, opts, None).await
    }

    /// With the cold tier (the lake's history table) stitched in, complete `lateness_ms`
    /// below its last build.
    pub async fn with_cold(backend: Backend, name: &str, opts: ItemOptions, lateness_ms: i64) -> Harness {
        Harness::build(backend, name, opts, Some(lateness_ms)).await
    }

    async fn build(backend: Backend, name: &str, opts: ItemOptions, cold_lateness_ms: Option<i64>) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, dynamo): (Arc<dyn Store>, Option<DynamoStore>) = match backend {
            Backend::Sqlite => {
                let path = dir.path().join("timeline.db");
                (Arc::new(SqliteStore::open(path.to_str().expect("utf-8 path")).await.expect("sqlite")), None)
            }
            Backend::Dynamo => {
                let (d, _) = dynamo_store(name, None).await;
                (Arc::new(d.clone()), Some(d))
            }
        };
        let lake = Arc::new(Lake::open(dir.path().join("lake").to_str().expect("utf-8"), Default::default()).expect("lake"));
        let bus = InProcessBus::new(100_000, 256 << 20);
        let consumer = Consumer::subscribe(Arc::new(bus.clone()), ConsumerConfig::named("timeline").spec(vec!["raw-event.>".into()]))
            .await
            .expect("consumer");
        let (stop, stop_rx) = watch::channel(false);
        let (handlers, counters) = timeline::handlers(store.clone(), Arc::new(opts), 1);
        let counters = (consumer.counters(), counters);
        let consumer = tokio::spawn(consumer.run(handlers, stop_rx));
        let cold = cold_lateness_ms.map(|l| Arc::new(timeline::tiers::ColdTier::new(lake.clone(), l)));
        let state = Arc::new(AppState {
            store: store.clone(),
            lake: Some(lake.clone()),
            keys: ApiKeys::new(&[hash_key(KEY)], &[hash_key(REVOKED)]),
            limits: PageLimits::default(),
            retry_after_secs: 1,
            in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
            cold: cold.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        Harness { backend, base, store, dynamo, bus, lake, cold, stop, counters, consumer, published: 0, _dir: dir }
    }

    /// Publishes events (no bus dedup: a repeat is a redelivery to the consumer) and waits
    /// until the consumer has settled all of them (acked or dead-lettered).
    pub async fn publish(&mut self, events: &[Value]) {
        let msgs = events
            .iter()
            .map(|e| OutMessage {
                subject: format!("raw-event.{}", e["data"]["type"].as_str().expect("type")),
                id: String::new(),
                payload: bytes::Bytes::from(e.to_string()),
            })
            .collect();
        for r in self.bus.publish_batch(msgs).await {
            r.expect("publish");
        }
        self.published += events.len() as u64;
        let want = self.published;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.stats().acked + self.stats().dead_lettered < want {
            assert!(std::time::Instant::now() < deadline, "the consumer did not ack {want} events in time: {:?}", self.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stats(&self) -> Stats {
        stats(&self.counters)
    }

    /// GET the events of a user with a query string; status and JSON body.
    /// The SQLite file of the store (SQLite backend).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self._dir.path().join("timeline.db")
    }

    pub async fn get(&self, user: &str, query: &str) -> (u16, Value) {
        get_with_key(&self.base, Some(KEY), user, query).await
    }

    /// Every event of a user, following cursors with `limit` per page; the pages' sizes too.
    pub async fn all_pages(&self, user: &str, query: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
        let mut events = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut q = format!("{query}&limit={limit}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(user, &q).await;
            assert_eq!(status, 200, "{body}");
            let page = body["events"].as_array().expect("events").clone();
            sizes.push(page.len());
            events.extend(page);
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return (events, sizes),
            }
        }
        panic!("too many pages");
    }

    /// Stops the consumer and removes the table.
    pub async fn finish(self) -> Stats {
        let _ = self.stop.send(true);
        self.consumer.await.expect("consumer");
        if let Some(d) = &self.dynamo {
            let _ = d.drop_table().await;
        }
        stats(&self.counters)
    }
}

pub async fn get_with_key(base: &str, key: Option<&str>, user: &str, query: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{base}/v1/users/{user}/events?{query}"));
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

pub fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect()
}

/// What the runtime and the timeline's handler counted.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub received: u64,
    pub acked: u64,
    pub dead_lettered: u64,
    pub items_written: u64,
    pub skipped_no_user: u64,
    pub skipped_expired: u64,
    pub invalid: u64,
}

pub fn stats((runtime, timeline): &(Arc<Counters>, Arc<TimelineCounters>)) -> Stats {
    let r = runtime.report();
    let t = timeline.snapshot();
    Stats {
        received: r.received,
        acked: r.acked,
        dead_lettered: r.dead_lettered,
        items_written: t.items_written,
        skipped_no_user: t.skipped_no_user,
        skipped_expired: t.skipped_expired,
        invalid: t.invalid,
    }
}

/// Waits until `done` holds for the counters.
pub async fn wait_for(counters: &(Arc<Counters>, Arc<TimelineCounters>), secs: u64, what: &str, done: impl Fn(&Stats) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done(&stats(counters)) {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", stats(counters));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
