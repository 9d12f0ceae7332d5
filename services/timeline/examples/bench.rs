//! Timeline benchmark (run by scripts/bench-timeline.sh): items/s written to a store and
//! API latency of a 1,000-event page, each against a baseline measured in the same run.
//!
//! `bench <sqlite|dynamodb> <events.ndjson> <page requests>`: the events (from `eventctl
//! gen`) are turned into items (the consumer's work, timed: the CPU baseline of writes),
//! written with `put_batch` in batches of 500 (as the consumer does), then the API serves
//! `GET /v1/users/{u}/events?limit=1000` for a user given 1,200 of the events, timed against
//! `GET /healthz` on the same server (the HTTP baseline). Prints one JSON line.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use service_kit::auth::{ApiKeys, hash_key};
use timeline::item::{Built, ItemBuilder};
use timeline::{AppState, DynamoConfig, DynamoStore, PageLimits, SqliteStore, Store, TimelineConfig, router};

const PAGE_USER: &str = "bench-page-user";

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn timed(client: &reqwest::Client, url: &str, key: &str, n: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.get(url).header("Authorization", format!("Bearer {key}")).send().await.expect("request");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let _ = resp.bytes().await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (backend, file, requests) = (args[1].as_str(), &args[2], args[3].parse::<usize>().expect("requests"));
    let text = std::fs::read_to_string(file).expect("events file");
    let mut lines: Vec<String> = Vec::new();
    let mut raw_bytes = 0usize;
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        raw_bytes += line.len();
        if i < 1200 {
            let mut v: Value = serde_json::from_str(line).expect("json");
            v["data"]["attributes"]["user_id"] = json!(PAGE_USER);
            lines.push(v.to_string());
        } else {
            lines.push(line.to_owned());
        }
    }
    let opts = Arc::new(TimelineConfig::default().item_options().expect("options"));
    let mut builder = ItemBuilder::new(opts);
    let now = chrono::Utc::now().timestamp();
    let started = Instant::now();
    let mut items = Vec::with_capacity(lines.len());
    for l in &lines {
        if let Built::Items(v) = builder.build(l.as_bytes(), now) {
            items.extend(v);
        }
    }
    let build_secs = started.elapsed().as_secs_f64();
    let inline = items.iter().filter(|i| i.attrs.is_some()).count();
    let avg_item = items.iter().map(|i| i.size_bytes()).sum::<usize>() as f64 / items.len().max(1) as f64;
    let max_item = items.iter().map(|i| i.size_bytes()).max().unwrap_or(0);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut dynamo = None;
    let store: Arc<dyn Store> = match backend {
        "sqlite" => Arc::new(SqliteStore::open(dir.path().join("bench.db").to_str().expect("utf-8")).await.expect("sqlite")),
        "dynamodb" => {
            let cfg = DynamoConfig { table: format!("tl-bench-{}", std::process::id()), ..DynamoConfig::default() };
            let d = DynamoStore::connect(&cfg).await;
            d.init().await.expect("init");
            dynamo = Some(d.clone());
            Arc::new(d)
        }
        other => panic!("unknown backend {other}"),
    };
    let started = Instant::now();
    for chunk in items.chunks(500) {
        store.put_batch(chunk).await.expect("write");
    }
    let write_secs = started.elapsed().as_secs_f64();

    // Baseline of the store's own round trip: moto answers ~150 operations/s.
    let mut op_rate = None;
    if let Some(d) = &dynamo {
        let started = Instant::now();
        for _ in 0..50 {
            assert!(d.is_ready().await);
        }
        op_rate = Some(50.0 / started.elapsed().as_secs_f64());
    }

    let key = "bench-key";
    let state = Arc::new(AppState {
        store: store.clone(),
        lake: None,
        keys: ApiKeys::new(&[hash_key(key)], &[]),
        limits: PageLimits::default(),
        retry_after_secs: 1,
        in_flight: Arc::new(tokio::sync::Semaphore::new(64)),
        cold: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let page_url = format!("{base}/v1/users/{PAGE_USER}/events?limit=1000");
    let check: Value = client.get(&page_url).header("Authorization", format!("Bearer {key}")).send().await.expect("page").json().await.expect("json");
    let page_len = check["events"].as_array().map_or(0, Vec::len);
    let page_bytes = check.to_string().len();
    let _ = timed(&client, &page_url, key, 3.min(requests)).await;
    let page = timed(&client, &page_url, key, requests).await;
    let health = timed(&client, &format!("{base}/healthz"), key, requests).await;
    if let Some(d) = &dynamo {
        let _ = d.drop_table().await;
    }
    let out = json!({
        "backend": backend,
        "events": lines.len(),
        "avg_event_bytes": raw_bytes / lines.len().max(1),
        "items": items.len(),
        "items_with_inline_attributes": inline,
        "avg_item_bytes": avg_item.round(),
        "max_item_bytes": max_item,
        "build_items_per_s": (items.len() as f64 / build_secs).round(),
        "write_items_per_s": (items.len() as f64 / write_secs).round(),
        "write_vs_build_ratio": ((items.len() as f64 / write_secs) / (items.len() as f64 / build_secs) * 1000.0).round() / 1000.0,
        "store_ops_per_s_baseline": op_rate.map(f64::round),
        "page_events": page_len,
        "page_json_bytes": page_bytes,
        "requests": requests,
        "page_ms_p50": (pct(&page, 0.5) * 100.0).round() / 100.0,
        "page_ms_p99": (pct(&page, 0.99) * 100.0).round() / 100.0,
        "healthz_ms_p50": (pct(&health, 0.5) * 1000.0).round() / 1000.0,
        "healthz_ms_p99": (pct(&health, 0.99) * 1000.0).round() / 1000.0,
        "page_p50_vs_healthz_p50": (pct(&page, 0.5) / pct(&health, 0.5)).round(),
    });
    println!("{out}");
}
