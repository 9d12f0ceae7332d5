//! Publish throughput of `publish_batch` against the JetStream at `NATS_URL` (default
//! `nats://127.0.0.1:4222`) on a throw-away stream, and of the in-process bus.
//!
//! `cargo run --release -p event-bus --example publish_bench -- [MESSAGES] [SIZE] [BATCH] [CONCURRENCY]`
//! (defaults: 100000 messages of 1024 bytes, batches of 500, 1 publisher).

use std::time::Instant;

use bytes::Bytes;
use event_bus::{InProcessBus, JetStreamBus, JetStreamConfig, OutMessage, Publisher};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn run(
    bus: &(impl Publisher + Clone),
    prefix: &str,
    n: usize,
    size: usize,
    batch: usize,
    conc: usize,
) -> (f64, usize) {
    let payload = Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per_task = n / conc;
    for t in 0..conc {
        let bus = bus.clone();
        let payload = payload.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            let mut i = 0;
            while i < per_task {
                let k = batch.min(per_task - i);
                let msgs = (i..i + k)
                    .map(|j| OutMessage {
                        subject: format!("{prefix}.raw-event.bench{}", j % 8),
                        id: format!("{t}-{j}"),
                        payload: payload.clone(),
                    })
                    .collect();
                failed += bus
                    .publish_batch(msgs)
                    .await
                    .iter()
                    .filter(|r| r.is_err())
                    .count();
                i += k;
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(per_task);
    }
    (start.elapsed().as_secs_f64(), failed)
}

#[tokio::main]
async fn main() {
    let n = arg(1, 100_000);
    let size = arg(2, 1024);
    let batch = arg(3, 500);
    let conc = arg(4, 1).max(1);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
    let stream = format!("bench-{}", std::process::id());
    let prefix = format!("bench{}", std::process::id());
    let cfg = JetStreamConfig {
        url: url.clone(),
        stream: stream.clone(),
        subjects: vec![format!("{prefix}.raw-event.>")],
        ..Default::default()
    };
    let bus = match JetStreamBus::connect(&cfg).await {
        Ok(bus) => bus,
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(1);
        }
    };
    let (secs, failed) = run(&bus, &prefix, n, size, batch, conc).await;
    println!(
        "jetstream: {n} msgs x {size} B, batch {batch}, {conc} publisher(s): {secs:.2} s, {:.0} msg/s, {:.1} MB/s, {failed} failed",
        n as f64 / secs,
        (n * size) as f64 / secs / 1e6
    );
    if let Ok(client) = async_nats::connect(url.as_str()).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }

    let mem = InProcessBus::new(n + 1, (n + 1) * size);
    let _sub = mem.subscriber(
        "bench",
        &format!("{prefix}.raw-event.>"),
        std::time::Duration::from_secs(60),
    );
    let (secs, failed) = run(&mem, &prefix, n, size, batch, conc).await;
    println!(
        "in-process: {n} msgs x {size} B, batch {batch}, {conc} publisher(s): {secs:.3} s, {:.0} msg/s, {failed} failed",
        n as f64 / secs
    );
}
