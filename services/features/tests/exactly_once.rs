//! Restart without double counting, on a private NATS JetStream and real Redis: an updater
//! (on the consumer runtime) whose store writes "fail" after succeeding (the reply lost: the
//! runtime retries the same batch) is killed mid-stream with unacked deliveries; a second
//! updater takes over, the bus redelivers, and every counter ends exactly at the number of
//! events published.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{cleanup, redis_store, unique_prefix};
use event_bus::testing::NatsServer;
use event_bus::{JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use features::clock::SystemClock;
use features::layout::Batch;
use features::store::{ApplyReport, ExpireReport, StoreError, Sums};
use event_bus::consumer::{Consumer, ConsumerConfig};
use features::updater::Updater;
use features::{FeaturesConfig, Layout, WindowStore};
use futures::future::BoxFuture;

/// Real Redis underneath; every `fail_every`-th apply reports a failure after it was applied
/// (as when the reply is lost), so the updater retries a batch that is already counted; the
/// `hang_at`-th apply is applied and then never returns (the process "dies" between the write
/// and the acks).
struct LostReplies<S> {
    inner: S,
    calls: AtomicUsize,
    fail_every: usize,
    hang_at: usize,
    hung: std::sync::atomic::AtomicBool,
}

impl<S: WindowStore> WindowStore for LostReplies<S> {
    fn apply<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<ApplyReport, StoreError>> {
        Box::pin(async move {
            let r = self.inner.apply(batch).await?;
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call == self.hang_at {
                self.hung.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            if call.is_multiple_of(self.fail_every) {
                return Err(StoreError::Unavailable("injected: reply lost".into()));
            }
            Ok(r)
        })
    }
    fn expire(&self, now_ms: i64) -> BoxFuture<'_, Result<ExpireReport, StoreError>> {
        self.inner.expire(now_ms)
    }
    fn read<'a>(&'a self, products: &'a [String]) -> BoxFuture<'a, Result<Sums, StoreError>> {
        self.inner.read(products)
    }
    fn position<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.position(source)
    }
    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.ready()
    }
    fn is_empty(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.is_empty()
    }
    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.clear()
    }
    fn handover(&self) -> BoxFuture<'_, Result<Option<features::store::Handover>, StoreError>> {
        self.inner.handover()
    }
    fn set_handover<'a>(&'a self, h: &'a features::store::Handover) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.set_handover(h)
    }
}

const TYPES: [&str; 5] = ["product_viewed", "product_liked", "product_favorited", "conversation_started", "product_sold"];
const PRODUCTS: usize = 40;

fn config() -> FeaturesConfig {
    FeaturesConfig {
        consumer: ConsumerConfig { batch_messages: 300, batch_wait_ms: 50, max_ack_pending: 500, ack_wait_secs: 2, ..ConsumerConfig::named("features") },
        ..FeaturesConfig::default()
    }
}

async fn consumer(bus: &JetStreamBus, layout: &Layout) -> Consumer {
    Consumer::subscribe(Arc::new(bus.clone()), config().consumer_spec(layout)).await.expect("consumer")
}

fn updater(layout: &Layout, store: Arc<dyn WindowStore>) -> Updater {
    // Stream sequences are comparable across the stream's consumers: the stream's name.
    Updater::new(layout.clone(), store, Arc::new(SystemClock), "EVENTS".into(), 256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_updater_and_lost_replies_count_nothing_twice() {
    let nats = NatsServer::start();
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");
    let layout = Layout::default_layout();
    let prefix = unique_prefix("restart");
    let now = chrono::Utc::now().timestamp_millis();

    // 6,000 events over 40 products; expected counts per (product, counter).
    let mut expected = vec![[0i64; 3]; PRODUCTS];
    let mut msgs = Vec::new();
    for i in 0..6000usize {
        let t = TYPES[(i * 7 + i / 13) % TYPES.len()];
        let p = (i * 31 + i / 7) % PRODUCTS;
        if let Some(c) = layout.counter_of(t) {
            expected[p][c] += 1;
        }
        let payload = format!(
            r#"{{"data":{{"id":"e{i}","type":"{t}","attributes":{{"user_id":"u{i}","product_id":"p{p}"}}}},"meta":{{"created_at":{}}}}}"#,
            now - (i as i64 % 600) * 1000
        );
        msgs.push(OutMessage { subject: format!("raw-event.{t}"), id: format!("e{i}"), payload: payload.into() });
    }
    let first = consumer(&bus, &layout).await;
    for chunk in msgs.chunks(1000) {
        assert!(bus.publish_batch(chunk.to_vec()).await.iter().all(Result::is_ok));
    }

    // First updater: lost replies on every third write, then killed (task aborted: nothing
    // flushed or acked) while a counted batch waits for its acks.
    let store1 = Arc::new(LostReplies {
        inner: redis_store(layout.clone(), &prefix, 1000).await,
        calls: AtomicUsize::new(0),
        fail_every: 3,
        hang_at: 10,
        hung: false.into(),
    });
    let u1 = updater(&layout, store1.clone());
    let stats1 = u1.stats();
    let (_stop1_tx, stop1) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(first.run(vec![u1], stop1));
    tokio::time::timeout(Duration::from_secs(30), async {
        while !store1.hung.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("first updater progresses");
    task.abort();
    let _ = task.await;
    let dup1 = stats1.duplicates.load(Ordering::SeqCst);
    assert!(dup1 > 0, "the retried batches were recognised as counted");

    // Second updater on the same durable: the bus redelivers what the first left unacked
    // (the first one's worker is stuck in its write: it never acks).
    let store2: Arc<dyn WindowStore> = Arc::new(redis_store(layout.clone(), &prefix, 1000).await);
    let u2 = updater(&layout, store2.clone());
    let stats2 = u2.stats();
    let (stop2_tx, stop2) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(consumer(&bus, &layout).await.run(vec![u2], stop2));
    let ids: Vec<String> = (0..PRODUCTS).map(|p| format!("p{p}")).collect();
    let total: i64 = expected.iter().flatten().sum();
    let read_total = |v: &Vec<Vec<i64>>| v.iter().map(|r| r[0] + r[3] + r[6]).sum::<i64>();
    tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let sums = store2.read(&ids).await.unwrap();
            if read_total(&sums.values) >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("everything is counted after the restart");
    // Redeliveries of what the first updater counted but never acked arrive after ack_wait (2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop2_tx.send(true);
    task.await.unwrap();

    let sums = store2.read(&ids).await.unwrap();
    let layout_cols = layout.windows.len();
    for (p, want) in expected.iter().enumerate() {
        for (c, &n) in want.iter().enumerate() {
            for w in 0..layout_cols {
                assert_eq!(sums.values[p][c * layout_cols + w], n, "p{p} counter {c} window {w}");
            }
        }
    }
    assert!(stats2.duplicates.load(Ordering::SeqCst) > 0, "the second run saw redeliveries of counted events");
    assert!(store2.position("EVENTS").await.unwrap() >= 5000);
    cleanup(&prefix).await;
}
