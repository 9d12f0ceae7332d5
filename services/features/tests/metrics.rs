//! `/metrics` of the assembled service shows its read latency as a Prometheus histogram
//! with buckets (`_bucket{le=...}`, `_sum`, `_count`), which dashboards aggregate across
//! instances into quantiles.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_latency_is_a_histogram_with_buckets() {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = features::FeaturesConfig {
        backend: features::Backend::Memory,
        updater: false,
        api_key_hashes: vec![service_kit::auth::hash_key("test-key")],
        ..features::FeaturesConfig::default()
    };
    let service = features::Features::build(&config, None).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let task = tokio::spawn(service.run(http, grpc, service_kit::shutdown::Shutdown::on(stop)));
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.post(format!("{base}/v1/features")).bearer_auth("test-key").json(&serde_json::json!({"product_ids": ["p1"]})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let bucket = |le: &str| {
        let prefix = format!("features_read_seconds_bucket{{le=\"{le}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse::<u64>().ok())
    };
    // Cumulative buckets: every read of an in-memory store is under 1 s, all three in +Inf.
    assert_eq!(bucket("1"), Some(3), "{text}");
    assert_eq!(bucket("+Inf"), Some(3), "{text}");
    assert!(bucket("0.0005").is_some(), "the smallest bound is 0.5 ms: {text}");
    assert!(text.lines().any(|l| l.starts_with("features_read_seconds_count 3")), "{text}");
    assert!(!text.contains("features_read_seconds{quantile"), "a histogram, not a summary: {text}");
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}
