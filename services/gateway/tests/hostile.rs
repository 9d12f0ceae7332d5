//! The gateway binary under hostile load, as an attacker without a key and a careless
//! producer with one would send it: 100 connections that trickle their bodies a byte at a
//! time (half of them with a valid key), and gzip bombs (small bodies that inflate to
//! millions of invalid lines) sent again and again. Meanwhile well-behaved producers still
//! get their events accepted, and the process's peak resident memory stays under a stated
//! bound (issue 25).
//!
//! Bound: with `max_in_flight_requests = 16` and `max_body_bytes = 4 MiB`, the gateway holds
//! at most 16 bodies of 4 MiB, each with its decoded copy and the parsed events (about 3 x
//! the body: the documented memory bound of `GatewayConfig`), plus quarantine records capped
//! per request: 16 x 12 MiB = 192 MiB above the idle process. The test allows 192 MiB + the
//! idle RSS + 64 MiB of allocator slack.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_bus::testing::NatsServer;
use gateway::auth::hash_key;
use tokio::io::AsyncWriteExt;

const KEY: &str = "hostile-test-key";
/// The careless producer's own key (its rate limit is not the good producers').
const BOMB_KEY: &str = "bomb-test-key";
const IN_FLIGHT: usize = 16;
const MAX_BODY: usize = 4 << 20;

/// Resident and peak resident memory of a process, in bytes (Linux).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn event(i: u64) -> String {
    format!(r#"{{"data":{{"id":"good-{i}","type":"product_viewed","attributes":{{"user_id":"u{}"}}}},"meta":{{"created_at":1795392000000}}}}"#, i % 100)
}

/// A gzip body of `lines` invalid lines (it inflates to about 20 bytes a line).
fn gzip_bomb(lines: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..lines {
        enc.write_all(b"{\"not\":\"an event\"}\n").expect("gzip");
    }
    enc.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_gzip_bombs_neither_stop_ingest_nor_grow_memory_past_its_bound() {
    let nats = NatsServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEWAY_BUS__URL", nats.url())
        .env("GATEWAY_BUS__REPLICAS", "1")
        .env("GATEWAY_API_KEY_HASHES", format!("{},{}", hash_key(KEY), hash_key(BOMB_KEY)))
        .env("GATEWAY_MAX_IN_FLIGHT_REQUESTS", IN_FLIGHT.to_string())
        .env("GATEWAY_MAX_BODY_BYTES", MAX_BODY.to_string())
        .env("GATEWAY_BODY_TIMEOUT_SECS", "3")
        .env("GATEWAY_REQUEST_TIMEOUT_SECS", "6")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the gateway");
    let child = KillOnDrop(child);
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm up, then take the idle footprint.
    let r = http.post(format!("{base}/v1/events")).bearer_auth(KEY).header("content-type", "application/x-ndjson").body(event(0)).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let (idle, _) = rss(pid);

    let stop = Arc::new(AtomicBool::new(false));
    // 100 slow clients: each sends headers announcing a 1 MiB body, then a byte a second.
    let mut slow = Vec::new();
    for i in 0..100 {
        let stop = stop.clone();
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return };
            let auth = if i % 2 == 0 { format!("Authorization: Bearer {KEY}\r\n") } else { String::new() };
            let head = format!("POST /v1/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/x-ndjson\r\nContent-Length: 1048576\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(b"{").await.is_err() {
                    return; // answered (401, 408) and closed: the gateway let it go
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // Gzip bombs from a client with a key, again and again from 8 connections: half inflate to
    // 90,000 invalid lines (1.7 MB: each is validated, a rejection summary answered and at most
    // 1,000 lines quarantined), half to 4 MiB of them (over the events-per-request bound: 413).
    let small_bomb = bytes::Bytes::from(gzip_bomb(90_000));
    let big_bomb = bytes::Bytes::from(gzip_bomb((MAX_BODY / 19) - 10));
    assert!(big_bomb.len() < 64 << 10, "a bomb is small: {} bytes", big_bomb.len());
    // Answers to the bombs, by status: 422 (every line rejected), 413, 429, 503.
    let bomb_answers: Arc<[AtomicU64; 600]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let mut bombers = Vec::new();
    for b in 0..8 {
        let bomb = if b % 2 == 0 { small_bomb.clone() } else { big_bomb.clone() };
        let (stop, http, base, answers) = (stop.clone(), http.clone(), base.clone(), bomb_answers.clone());
        bombers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(BOMB_KEY)
                    .header("content-type", "application/x-ndjson")
                    .header("content-encoding", "gzip")
                    .body(bomb.clone())
                    .send()
                    .await;
                if let Ok(r) = r {
                    let status = usize::from(r.status().as_u16()).min(599);
                    let _ = r.bytes().await;
                    answers[status].fetch_add(1, Ordering::Relaxed);
                    if status == 429 || status == 503 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    // Well-behaved producers: 100-event batches, retrying on 429/503 after Retry-After.
    let started = Instant::now();
    let mut accepted = 0u64;
    let mut retries = 0u64;
    let mut peak_sampled = 0u64;
    let mut next = 1u64;
    while started.elapsed() < Duration::from_secs(12) {
        let body: String = (next..next + 100).map(|i| event(i) + "\n").collect();
        let r = http.post(format!("{base}/v1/events")).bearer_auth(KEY).header("content-type", "application/x-ndjson").body(body).send().await.expect("post");
        match r.status().as_u16() {
            202 => {
                accepted += 100;
                next += 100;
            }
            429 | 503 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("a well-behaved request got {other}"),
        }
        peak_sampled = peak_sampled.max(rss(pid).0);
    }
    stop.store(true, Ordering::Relaxed);
    for t in bombers.into_iter().chain(slow) {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let (_, peak) = rss(pid);
    let answered: Vec<(usize, u64)> =
        bomb_answers.iter().enumerate().map(|(s, n)| (s, n.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0).collect();
    let bound = idle + (IN_FLIGHT as u64) * 3 * MAX_BODY as u64 + (64 << 20);
    eprintln!(
        "idle RSS {} MiB, peak {} MiB (sampled {} MiB), bound {} MiB; {accepted} good events accepted in 12 s ({retries} retries); bombs answered by status {answered:?}",
        idle >> 20,
        peak >> 20,
        peak_sampled >> 20,
        bound >> 20,
    );
    assert!(accepted >= 2000, "well-behaved producers were starved: {accepted} events in 12 s");
    let count = |s: usize| answered.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
    assert!(count(422) >= 4 && count(413) >= 4, "the bombs were processed (422: all lines rejected) and refused (413): {answered:?}");
    assert!(answered.iter().all(|(s, _)| [413, 422, 429, 503].contains(s)), "a bomb got another answer: {answered:?}");
    assert!(peak <= bound, "peak RSS {} MiB is over the bound {} MiB", peak >> 20, bound >> 20);
    drop(child);
    drop(nats);
}
