//! What compression saves on the JetStream bus, and what it costs: for each corpus of NDJSON
//! events (`eventctl gen` output) and each option — `none`, `zstd` per message, `s2` stream
//! compression, `both` — publishes the events to a fresh stream of a private nats-server (file
//! store) and prints, per event:
//!
//! - `state B`: the stream's `state.bytes` (what JetStream accounts: payload, headers,
//!   subject, record overhead; S2 is not reflected there);
//! - `disk B`: the stream's folder on disk (message blocks and indexes; S2 compresses a block
//!   once it is full, so the block being written, at most 8 MiB, is counted uncompressed);
//! - `moved B`: payload + headers a consumer receives (what also crosses between nodes for
//!   each replica or consumer; S2 stream compression does not change it);
//! - `pub CPU µs` / `con CPU µs`: this process's CPU time (user + system) per event while
//!   publishing through [`JetStreamBus`] and while consuming through its subscriber (which
//!   decodes); the server's own CPU is not included;
//!
//! and the ratios against `none` in the same run. Before the table, the codec alone (one
//! thread, best of 3 passes) at levels 1, 3 and 6, and with one dictionary trained on other
//! events of the corpus (what per-type dictionaries could add; the bus does not use them).
//!
//! `cargo run --release -p event-bus --features testing --example bus_bytes -- FILE:EVENTS...`
//! (`scripts/bench-bus.sh` generates the 1 KB and 10 KB corpora and runs it). The server is
//! `nats-server` on PATH or `NATS_SERVER_BIN` (2.10 or newer, for S2).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_bus::testing::NatsServer;
use event_bus::{JetStreamBus, JetStreamConfig, MessageCompression, OutMessage, Publisher, StreamCompression, Subscriber};
use futures::StreamExt;

/// The zstd level of the bus runs (`BUS_BYTES_LEVEL`, default the bus's default).
fn level() -> i32 {
    std::env::var("BUS_BYTES_LEVEL").ok().and_then(|l| l.parse().ok()).unwrap_or(JetStreamConfig::default().compression_level)
}

struct Row {
    option: &'static str,
    state_bytes: f64,
    disk_bytes: f64,
    moved_bytes: f64,
    pub_cpu_us: f64,
    con_cpu_us: f64,
    pub_eps: f64,
}

/// This process's CPU time (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// This thread's time on a CPU (/proc/thread-self/schedstat, nanoseconds): unlike a wall
/// clock, it does not count the time the thread waited for a core on a busy machine.
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn load(path: &str, n: usize) -> Vec<(String, Bytes)> {
    let text = std::fs::read_to_string(path).expect("corpus file");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{path} is empty");
    (0..n)
        .map(|i| {
            let line = lines[i % lines.len()];
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let ty = v.pointer("/data/type").and_then(|t| t.as_str()).unwrap_or("unknown").to_owned();
            (ty, Bytes::from(line.to_owned()))
        })
        .collect()
}

/// The codec alone at `level` (with a dictionary when given): µs per event to compress and
/// to decompress (this thread's CPU time, best of 3 passes), and the bytes per event.
fn codec_cost(events: &[(String, Bytes)], level: i32, dict: Option<&[u8]>) -> (f64, f64, f64) {
    let sample = &events[..events.len().min(20_000)];
    let mut c = match dict {
        Some(d) => zstd::bulk::Compressor::with_dictionary(level, d),
        None => zstd::bulk::Compressor::new(level),
    }
    .expect("compressor");
    let mut d = match dict {
        Some(d) => zstd::bulk::Decompressor::with_dictionary(d),
        None => zstd::bulk::Decompressor::new(),
    }
    .expect("decompressor");
    let mut best = (f64::MAX, f64::MAX);
    let mut frames = Vec::new();
    for _ in 0..3 {
        let t = thread_cpu();
        frames = sample.iter().map(|(_, e)| c.compress(e).expect("compress")).collect::<Vec<_>>();
        let ct = (thread_cpu() - t).as_secs_f64() * 1e6 / sample.len() as f64;
        let t = thread_cpu();
        for (f, (_, e)) in frames.iter().zip(sample) {
            std::hint::black_box(d.decompress(f, e.len()).expect("decompress"));
        }
        let dt = (thread_cpu() - t).as_secs_f64() * 1e6 / sample.len() as f64;
        best = (best.0.min(ct), best.1.min(dt));
    }
    let bytes: usize = frames.iter().map(Vec::len).sum();
    (best.0, best.1, bytes as f64 / sample.len() as f64)
}

async fn measure(nats: &NatsServer, label: &str, option: &'static str, events: &[(String, Bytes)]) -> Row {
    let name = format!("BYTES_{label}_{option}");
    let prefix = format!("b{label}{option}");
    let cfg = JetStreamConfig {
        url: nats.url(),
        stream: name.clone(),
        subjects: vec![format!("{prefix}.raw-event.>")],
        compression: if matches!(option, "zstd" | "both") { MessageCompression::Zstd } else { MessageCompression::None },
        compression_level: level(),
        stream_compression: if matches!(option, "s2" | "both") { StreamCompression::S2 } else { StreamCompression::None },
        ..JetStreamConfig::default()
    };
    let bus = JetStreamBus::connect(&cfg).await.expect("bus");
    let n = events.len();

    let (cpu, t) = (cpu_time(), Instant::now());
    for (b, chunk) in events.chunks(500).enumerate() {
        let msgs = chunk
            .iter()
            .enumerate()
            .map(|(i, (ty, e))| OutMessage { subject: format!("{prefix}.raw-event.{ty}"), id: format!("{option}-{b}-{i}"), payload: e.clone() })
            .collect();
        let failed = bus.publish_batch(msgs).await.into_iter().filter(Result::is_err).count();
        assert_eq!(failed, 0, "publish failures");
    }
    let pub_eps = n as f64 / t.elapsed().as_secs_f64();
    let pub_cpu_us = (cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64;
    // Let the server write its blocks out.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let client = async_nats::connect(nats.url()).await.expect("client");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&name).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    assert_eq!(state.messages as usize, n);
    let disk = dir_size(&nats.store_dir().join("jetstream").join("$G").join("streams").join(&name));

    // The bytes a consumer receives: payload + headers (the NATS/1.0 header block).
    let reader: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { ack_policy: async_nats::jetstream::consumer::AckPolicy::None, ..Default::default() })
        .await
        .expect("reader");
    let (mut got, mut moved) = (0usize, 0usize);
    while got < n {
        let mut batch = reader.fetch().max_messages(1000).expires(Duration::from_secs(1)).messages().await.expect("fetch");
        while let Some(m) = batch.next().await {
            let m = m.expect("message");
            let headers = m.headers.as_ref().map_or(0, |h| {
                12 + h.iter().map(|(k, vs)| vs.iter().map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4).sum::<usize>()).sum::<usize>()
            });
            moved += m.payload.len() + headers;
            got += 1;
        }
    }

    // Consuming through the bus (decoding included).
    let mut sub = bus.subscriber("bytes", &format!("{prefix}.raw-event.>"), Duration::from_secs(60), 100_000).await.expect("subscriber");
    let (cpu, mut seen, mut payload) = (cpu_time(), 0usize, 0usize);
    while seen < n {
        let ds = sub.fetch(1000, Duration::from_secs(1)).await.expect("fetch");
        seen += ds.len();
        payload += ds.iter().map(|d| d.payload.len()).sum::<usize>();
        drop(event_bus::ack_all_unconfirmed(ds).await);
    }
    let con_cpu_us = (cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64;
    let original: usize = events.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(payload, original, "consumers see the events as published");
    js.delete_stream(&name).await.expect("delete stream");

    Row {
        option,
        state_bytes: state.bytes as f64 / n as f64,
        disk_bytes: disk as f64 / n as f64,
        moved_bytes: moved as f64 / n as f64,
        pub_cpu_us,
        con_cpu_us,
        pub_eps,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(!args.is_empty(), "usage: bus_bytes FILE:EVENTS...");
    let nats = NatsServer::start();
    println!("zstd level {}, nats-server file store, publisher and consumer in this process", level());
    for (k, arg) in args.iter().enumerate() {
        let (path, n) = arg.rsplit_once(':').and_then(|(p, n)| Some((p, n.parse::<usize>().ok()?))).expect("FILE:EVENTS");
        let events = load(path, n);
        let avg = events.iter().map(|(_, e)| e.len()).sum::<usize>() as f64 / n as f64;
        println!();
        println!("corpus {path}, {n} events: {avg:.0} B/event of JSON");
        println!("  the codec alone, one thread (µs per event = CPU s per million events):");
        for l in [1, 3, 6] {
            let (c_us, d_us, zbytes) = codec_cost(&events, l, None);
            println!("  zstd -{l:<2}          {zbytes:>6.0} B/event ({:.2}x)  compress {c_us:>6.1} µs  decompress {d_us:>5.1} µs", avg / zbytes);
        }
        // What per-type dictionaries could add: one dictionary trained on other events of the
        // same corpus (the last 2,000, all types together), applied to the first ones.
        let train: Vec<&[u8]> = events[events.len().saturating_sub(2000)..].iter().map(|(_, e)| e.as_ref()).collect();
        if let Ok(dict) = zstd::dict::from_samples(&train, 112 * 1024) {
            let test = &events[..events.len().saturating_sub(2000).clamp(1, 5000)];
            let test_avg = test.iter().map(|(_, e)| e.len()).sum::<usize>() as f64 / test.len() as f64;
            let (_, _, plain) = codec_cost(test, 3, None);
            let (c_us, d_us, zbytes) = codec_cost(test, 3, Some(&dict));
            println!("  zstd -3 + dict    {zbytes:>6.0} B/event ({:.2}x, {:.2}x without it on the same events)  compress {c_us:>6.1} µs  decompress {d_us:>5.1} µs  (one {} KB dictionary, not used by the bus)", test_avg / zbytes, test_avg / plain, dict.len() / 1024);
        }
        println!("{:<6} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>11} {:>11} {:>10}", "option", "state B", "disk B", "moved B", "state x", "disk x", "moved x", "pub CPU µs", "con CPU µs", "pub ev/s");
        let mut rows = Vec::new();
        for option in ["none", "zstd", "s2", "both"] {
            rows.push(measure(&nats, &format!("c{k}"), option, &events).await);
        }
        let base = (rows[0].state_bytes, rows[0].disk_bytes, rows[0].moved_bytes);
        for r in &rows {
            println!(
                "{:<6} {:>9.0} {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>11.1} {:>11.1} {:>10.0}",
                r.option,
                r.state_bytes,
                r.disk_bytes,
                r.moved_bytes,
                base.0 / r.state_bytes,
                base.1 / r.disk_bytes,
                base.2 / r.moved_bytes,
                r.pub_cpu_us,
                r.con_cpu_us,
                r.pub_eps
            );
        }
    }
    println!();
    println!("x: how many times smaller than `none` (higher is better)");
}
