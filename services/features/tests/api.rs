//! The HTTP and gRPC APIs over real Redis: the same answers for a batch of 1,000 ids (unknown
//! ids: zeros), the limits and their errors, and the checked-in OpenAPI document.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{cleanup, hit, redis_store, unique_prefix};
use features::api::FeaturesResponse;
use features::grpc::FeaturesGrpc;
use features::layout::Batch;
use features::proto::GetFeaturesRequest;
use features::proto::features_client::FeaturesClient;
use features::api::Access;
use features::query::FeatureReader;
use service_kit::auth::{ApiKeys, hash_key};
use features::{Layout, WindowStore};
use serde_json::{Value, json};

const KEY: &str = "reranker-key";
const REVOKED: &str = "old-reranker-key";

/// Serves HTTP and gRPC on free ports, for callers with `KEY`; returns their base URLs.
async fn serve(store: Arc<dyn WindowStore>) -> (String, String) {
    let reader = Arc::new(FeatureReader::new(store, Layout::default_layout(), 1000, 256, 64, 1));
    let access = Access::Keys(Arc::new(ApiKeys::new(&[hash_key(KEY)], &[hash_key(REVOKED)])));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(axum::serve(service_kit::serve::nodelay(http), features::api::router(reader.clone(), access.clone())).into_future());
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FeaturesGrpc::server(reader, access))
            .serve_with_incoming(features::grpc::incoming(grpc)),
    );
    (format!("http://{http_addr}"), format!("http://{grpc_addr}"))
}

/// A gRPC client that sends `key` (if any) with every call.
async fn grpc_client(
    url: String,
    key: Option<&str>,
) -> FeaturesClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, impl tonic::service::Interceptor>> {
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = key.map(|k| format!("Bearer {k}").parse().unwrap());
    FeaturesClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(v) = &value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    })
}

async fn post(base: &str, body: Vec<u8>) -> (u16, Value, Option<String>) {
    post_as(base, Some(KEY), body).await
}

async fn post_as(base: &str, key: Option<&str>, body: Vec<u8>) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new().post(format!("{base}/v1/features")).header("content-type", "application/json").body(body);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_grpc_give_the_same_answers_for_a_batch_of_1000() {
    let prefix = unique_prefix("api");
    let store: Arc<dyn WindowStore> = Arc::new(redis_store(Layout::default_layout(), &prefix, 1000).await);
    let now = chrono::Utc::now().timestamp_millis();
    // p0..p49: p_i has i impressions now, one like 2 hours ago, and a conversation 3 days ago.
    let mut hits = Vec::new();
    let mut seq = 0;
    for i in 0..50 {
        let p = format!("p{i}");
        for _ in 0..i {
            seq += 1;
            hits.push(hit(&p, 0, now, seq));
        }
        seq += 1;
        hits.push(hit(&p, 1, now - 2 * 3_600_000, seq));
        seq += 1;
        hits.push(hit(&p, 2, now - 3 * 86_400_000, seq));
    }
    store.apply(&Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, seq)], hits }).await.unwrap();
    store.expire(now).await.unwrap();
    let (http, grpc) = serve(store).await;

    let ids: Vec<String> = (0..1000).map(|i| if i % 20 == 0 { format!("p{}", i / 20) } else { format!("nope-{i}") }).collect();
    let (status, body, _) = post(&http, serde_json::to_vec(&json!({ "product_ids": ids })).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let from_http: FeaturesResponse = serde_json::from_value(body).unwrap();
    assert_eq!(from_http.products.len(), 1000);
    assert_eq!(from_http.columns[..3], ["impressions_1h", "impressions_1d", "impressions_7d"]);
    assert_eq!(from_http.as_of_ms, now);
    for (i, p) in from_http.products.iter().enumerate() {
        assert_eq!(p.product_id, ids[i]);
        if i % 20 == 0 {
            let k = (i / 20) as i64;
            assert_eq!(p.values, vec![k, k, k, 0, 1, 1, 0, 0, 1], "{}", p.product_id);
        } else {
            assert_eq!(p.values, vec![0; 9]);
        }
    }

    let mut client = grpc_client(grpc, Some(KEY)).await;
    let from_grpc = client.get_features(GetFeaturesRequest { product_ids: ids.clone() }).await.unwrap().into_inner();
    assert_eq!(from_grpc.columns, from_http.columns);
    assert_eq!(from_grpc.as_of_ms, from_http.as_of_ms);
    assert_eq!(from_grpc.products.len(), from_http.products.len());
    for (g, h) in from_grpc.products.iter().zip(&from_http.products) {
        assert_eq!((&g.product_id, &g.values), (&h.product_id, &h.values));
    }

    // Limits, the same on both.
    let too_many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    let (status, body, _) = post(&http, serde_json::to_vec(&json!({ "product_ids": too_many })).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_many_ids")));
    let e = client.get_features(GetFeaturesRequest { product_ids: too_many }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let (status, body, _) = post(&http, br#"{"product_ids": []}"#.to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let e = client.get_features(GetFeaturesRequest { product_ids: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let (status, body, _) = post(&http, br#"{"product_ids": ["a", ""]}"#.to_vec()).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("product_ids[1]"), "{body}");
    let (status, _, _) = post(&http, b"not json".to_vec()).await;
    assert_eq!(status, 400);
    // Just above the body limit (1,000 x 600 bytes), small enough to be fully written
    // before the server answers (a much larger body races with the server closing).
    let (status, body, _) = post(&http, vec![b' '; 650_000]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("too_large")));
    let ready = reqwest::get(format!("{http}/readyz")).await.unwrap().status().as_u16();
    assert_eq!(ready, 200);
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_reads_answer_503_with_retry_after() {
    // A private redis-server that goes away under a running service.
    let Ok(bin) = which("redis-server") else {
        eprintln!("redis-server not on PATH; skipping");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(bin)
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Up to 10 s for it to listen (the test suite loads both cores).
    let mut up = false;
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(up, "the private redis-server did not listen");
    let store = features::RedisStore::connect(
        Layout::default_layout(),
        features::RedisStoreOptions {
            url: format!("redis://127.0.0.1:{port}"),
            prefix: "t:".into(),
            dedup_ttl_secs: 60,
            expire_budget: 10,
            timeout: std::time::Duration::from_millis(300),
            read_connections: 1,
        },
    )
    .await
    .unwrap();
    let (http, _) = serve(Arc::new(store)).await;
    let (status, _, _) = post(&http, br#"{"product_ids": ["a"]}"#.to_vec()).await;
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
    let (status, body, retry) = post(&http, br#"{"product_ids": ["a"]}"#.to_vec()).await;
    assert_eq!((status, body["error"]["code"].as_str(), retry.as_deref()), (503, Some("store_unavailable"), Some("1")));
    let ready = reqwest::get(format!("{http}/readyz")).await.unwrap().status().as_u16();
    assert_eq!(ready, 503);
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
        .ok_or(())
}

#[test]
fn the_checked_in_openapi_document_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/features.json");
    let current = features::openapi::pretty_json();
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, &current).expect("write openapi/features.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "openapi/features.json is stale: run `UPDATE_OPENAPI=1 cargo test -p features --test api` and commit it"
    );
    let doc: Value = serde_json::from_str(&current).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/features"]["post"]["responses"]["200"].is_object());
}

/// The API needs a key (issue 25: it had none while the compose file published its ports):
/// 401 / UNAUTHENTICATED without one or with an unknown one, 403 / PERMISSION_DENIED for a
/// revoked one; health stays open for probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_features_needs_an_api_key() {
    let store: Arc<dyn WindowStore> = Arc::new(features::MemoryStore::new(Layout::default_layout(), 1000, 100));
    let (http, grpc) = serve(store).await;
    let body = || br#"{"product_ids": ["p1"]}"#.to_vec();
    assert_eq!(post_as(&http, None, body()).await.0, 401);
    let (status, answer, _) = post_as(&http, Some("guess"), body()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthenticated")));
    assert_eq!(post_as(&http, Some(REVOKED), body()).await.0, 403);
    assert_eq!(post_as(&http, Some(KEY), body()).await.0, 200);
    let healthz = reqwest::get(format!("{http}/healthz")).await.unwrap();
    assert_eq!(healthz.status().as_u16(), 200);

    let ask = || GetFeaturesRequest { product_ids: vec!["p1".into()] };
    let e = grpc_client(grpc.clone(), None).await.get_features(ask()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = grpc_client(grpc.clone(), Some("guess")).await.get_features(ask()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = grpc_client(grpc.clone(), Some(REVOKED)).await.get_features(ask()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let ok = grpc_client(grpc, Some(KEY)).await.get_features(ask()).await.unwrap().into_inner();
    assert_eq!(ok.products.len(), 1);
}
