//! The assembly `eventctl dev` runs (in-memory windows, the in-process bus): events published
//! on the bus are visible over HTTP and gRPC within a second, counted once; the stop signal
//! ends everything.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use event_bus::{InProcessBus, OutMessage, Publisher};
use features::api::FeaturesResponse;
use features::proto::GetFeaturesRequest;
use features::proto::features_client::FeaturesClient;

fn event(i: usize, t: &str, product: &str, created_at: i64) -> OutMessage {
    let payload = format!(r#"{{"data":{{"id":"e{i}","type":"{t}","attributes":{{"product_id":"{product}"}}}},"meta":{{"created_at":{created_at}}}}}"#);
    OutMessage { subject: format!("raw-event.{t}"), id: format!("e{i}"), payload: payload.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_the_in_process_bus_are_served_within_a_second() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = features::FeaturesConfig {
        backend: features::Backend::Memory,
        api_key_hashes: vec![service_kit::auth::hash_key("test-key")],
        ..features::FeaturesConfig::default()
    };
    let service = features::Features::build(&config, Some(std::sync::Arc::new(bus.clone()))).await.unwrap();
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (http_listener.local_addr().unwrap(), grpc_listener.local_addr().unwrap());
    let task = tokio::spawn(service.run(http_listener, grpc_listener, service_kit::shutdown::Shutdown::on(stop)));
    let http = format!("http://{http_addr}/v1/features");
    let now = chrono::Utc::now().timestamp_millis();
    let mut msgs = Vec::new();
    for i in 0..300 {
        msgs.push(event(i, "product_viewed", &format!("p{}", i % 3), now));
    }
    msgs.push(event(1000, "product_liked", "p0", now - 2 * 3_600_000));
    msgs.push(event(1001, "conversation_started", "p1", now - 3 * 86_400_000));
    msgs.push(event(1002, "product_sold", "p1", now));
    assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
    let published = Instant::now();
    let client = reqwest::Client::new();
    let body = serde_json::json!({"product_ids": ["p0", "p1", "p2", "zzz"]});
    let answer: FeaturesResponse = loop {
        let r: FeaturesResponse = client.post(&http).bearer_auth("test-key").json(&body).send().await.unwrap().json().await.unwrap();
        if r.products.iter().map(|p| p.values[2]).sum::<i64>() == 300 && r.products[1].values[8] == 1 {
            break r;
        }
        assert!(published.elapsed() < Duration::from_secs(1), "not visible within 1 s: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer.products[0].values, vec![100, 100, 100, 0, 1, 1, 0, 0, 0]);
    assert_eq!(answer.products[1].values, vec![100, 100, 100, 0, 0, 0, 0, 0, 1]);
    assert_eq!(answer.products[3].values, vec![0; 9]);
    let mut grpc = FeaturesClient::connect(format!("http://{grpc_addr}")).await.unwrap();
    let mut ask = tonic::Request::new(GetFeaturesRequest { product_ids: vec!["p0".into(), "p1".into(), "p2".into(), "zzz".into()] });
    ask.metadata_mut().insert("authorization", "Bearer test-key".parse().unwrap());
    let g = grpc.get_features(ask).await.unwrap().into_inner();
    for (a, b) in g.products.iter().zip(&answer.products) {
        assert_eq!(a.values, b.values);
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops").unwrap().unwrap();
}
