//! A poison event does not stop the updater: an event whose product id is longer than the
//! API accepts (it could never be read) is dead-lettered while the events around it are
//! counted within a second; with a configuration that accepts such ids, `replay` counts it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cleanup, redis_url, unique_prefix};
use event_bus::consumer::ConsumerConfig;
use event_bus::{Bus, InProcessBus, OutMessage, Publisher};
use features::api::FeaturesResponse;
use features::{Backend, Features, FeaturesConfig};
use service_kit::shutdown::Shutdown;

fn viewed(i: usize, product: &str, now: i64) -> OutMessage {
    let payload = format!(r#"{{"data":{{"id":"v{i}","type":"product_viewed","attributes":{{"product_id":"{product}"}}}},"meta":{{"created_at":{now}}}}}"#);
    OutMessage { subject: "raw-event.product_viewed".into(), id: format!("v{i}"), payload: payload.into() }
}

async fn start(bus: &InProcessBus, prefix: &str, max_id_bytes: usize) -> (String, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let config = FeaturesConfig {
        backend: Backend::Redis,
        redis_url: redis_url(),
        key_prefix: prefix.into(),
        max_id_bytes,
        consumer: ConsumerConfig { batch_wait_ms: 50, ..FeaturesConfig::default().consumer },
        api_key_hashes: vec![service_kit::auth::hash_key("test-key")],
        ..FeaturesConfig::default()
    };
    let service = Features::build(&config, Some(Arc::new(bus.clone()))).await.expect("build");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/v1/features", http.local_addr().expect("addr"));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        service.run(http, grpc, Shutdown::on(rx)).await.expect("features");
    });
    (base, stop, task)
}

async fn impressions(url: &str, ids: &[String]) -> Vec<i64> {
    let body = serde_json::json!({ "product_ids": ids });
    let r: FeaturesResponse = reqwest::Client::new().post(url).bearer_auth("test-key").json(&body).send().await.expect("post").json().await.expect("json");
    r.products.iter().map(|p| p.values[0]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_id_that_could_never_be_read_is_dead_lettered_and_replayed_once_accepted() {
    let prefix = unique_prefix("poison");
    let bus = InProcessBus::new(10_000, 64 << 20);
    let (url, stop, task) = start(&bus, &prefix, 16).await;
    let now = chrono::Utc::now().timestamp_millis();
    let long = "p".repeat(40);
    let mut msgs: Vec<OutMessage> = (0..200).map(|i| viewed(i, &format!("p{}", i % 10), now)).collect();
    msgs.insert(100, viewed(1000, &long, now));
    assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
    let ids: Vec<String> = (0..10).map(|p| format!("p{p}")).collect();
    let published = Instant::now();
    while impressions(&url, &ids).await.iter().sum::<i64>() < 200 {
        assert!(published.elapsed() < Duration::from_secs(5), "the events around the poison were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letters = bus.dead_letters("features", 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    let q = event_contract::wire::QuarantineMessage::decode(&letters[0].payload).expect("dead letter");
    assert!(q.detail.contains("max_id_bytes"), "{}", q.detail);
    let _ = stop.send(true);
    task.await.expect("stopped");

    // Fixed: ids up to 64 bytes are served; the replay counts the dead letter.
    let (url, stop, task) = start(&bus, &prefix, 64).await;
    let report = event_bus::replay(&bus, "features", 0, 10).await.expect("replay");
    assert_eq!((report.found, report.replayed), (1, 1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while impressions(&url, std::slice::from_ref(&long)).await != [1] {
        assert!(Instant::now() < deadline, "the replayed event was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(impressions(&url, &ids).await.iter().sum::<i64>(), 200, "nothing counted twice");
    let _ = stop.send(true);
    task.await.expect("stopped");
    cleanup(&prefix).await;
}

/// A results page listing more products than one event may (1,000) is dead-lettered with its
/// reason, never counted in part; pages around it count each listed product once, and an id
/// in a list too long to be read is left out while the others count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_results_page_is_dead_lettered_and_the_pages_around_it_count() {
    let prefix = unique_prefix("pages");
    let bus = InProcessBus::new(10_000, 64 << 20);
    let (url, stop, task) = start(&bus, &prefix, 16).await;
    let now = chrono::Utc::now().timestamp_millis();
    let page = |i: usize, ids: Vec<String>| {
        let list = ids.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(",");
        let payload = format!(r#"{{"data":{{"id":"s{i}","type":"search_results_shown","attributes":{{"product_ids":[{list}]}}}},"meta":{{"created_at":{now}}}}}"#);
        OutMessage { subject: "raw-event.search_results_shown".into(), id: format!("s{i}"), payload: payload.into() }
    };
    let mut msgs: Vec<OutMessage> = (0..20).map(|i| page(i, (0..30).map(|k| format!("q{}", (i + k) % 40)).collect())).collect();
    msgs.insert(10, page(100, (0..1001).map(|k| format!("x{k}")).collect()));
    msgs.push(page(101, vec!["q0".into(), "y".repeat(40)]));
    assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
    let ids: Vec<String> = (0..40).map(|p| format!("q{p}")).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while impressions(&url, &ids).await.iter().sum::<i64>() < 20 * 30 + 1 {
        assert!(Instant::now() < deadline, "the pages around the oversized one were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(impressions(&url, &ids).await.iter().sum::<i64>(), 601, "each listed product once");
    assert_eq!(impressions(&url, &["x0".to_owned()]).await, [0], "the oversized page counted in no part");
    let letters = bus.dead_letters("features", 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "only the oversized page");
    let q = event_contract::wire::QuarantineMessage::decode(&letters[0].payload).expect("dead letter");
    assert!(q.detail.contains("1001 products"), "{}", q.detail);
    let _ = stop.send(true);
    task.await.expect("stopped");
    cleanup(&prefix).await;
}
