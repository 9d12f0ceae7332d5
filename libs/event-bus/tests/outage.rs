//! The JetStream bus when its server dies and comes back: publishes and fetches fail fast
//! with `Unavailable` (no buffering forever), readiness drops, and the same bus recovers.
//! Runs its own `nats-server` (from PATH or `NATS_SERVER_BIN`) on a free loopback port;
//! skipped, with a note, when there is no such binary.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use event_bus::{BusError, JetStreamBus, JetStreamConfig, OutMessage, Publisher, Subscriber};

fn nats_server_bin() -> Option<String> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A nats-server this test started; killed (by its own handle) on drop.
struct Server(Child);

impl Server {
    fn start(bin: &str, port: u16, store: &Path) -> Server {
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server(child)
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn batch(tag: &str, n: usize) -> Vec<OutMessage> {
    (0..n)
        .map(|i| OutMessage {
            subject: format!("raw-event.{tag}"),
            id: format!("{tag}-{i}"),
            payload: bytes::Bytes::from(format!("{tag}-{i}")),
        })
        .collect()
}

#[tokio::test]
async fn server_outage_fails_fast_and_recovers() {
    let Some(bin) = nats_server_bin() else {
        eprintln!("skipped: no nats-server binary in PATH (or NATS_SERVER_BIN)");
        return;
    };
    let store = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(&bin, port, store.path());
    let cfg = JetStreamConfig {
        url: format!("nats://127.0.0.1:{port}"),
        publish_timeout_ms: 1000,
        ..Default::default()
    };
    let bus = JetStreamBus::connect(&cfg).await.expect("connect");
    let mut sub = bus
        .subscriber("lake", "raw-event.>", Duration::from_secs(30), 1000)
        .await
        .expect("subscriber");
    for r in bus.publish_batch(batch("before", 10)).await {
        r.expect("publish before the outage");
    }

    server.kill();
    let t = Instant::now();
    let results = bus.publish_batch(batch("during", 500)).await;
    let took = t.elapsed();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(BusError::Unavailable(_)))),
        "{:?}",
        results
            .iter()
            .find(|r| !matches!(r, Err(BusError::Unavailable(_))))
    );
    assert!(took < Duration::from_secs(3), "publish took {took:?}");
    assert!(!bus.is_ready().await);
    let t = Instant::now();
    let fetched = sub.fetch(10, Duration::from_millis(200)).await;
    assert!(
        matches!(fetched, Err(BusError::Unavailable(_))),
        "{fetched:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "fetch took {:?}",
        t.elapsed()
    );

    // Back on the same port and store: the same bus reconnects by itself.
    let _server = Server::start(&bin, port, store.path());
    let end = Instant::now() + Duration::from_secs(15);
    while !bus.is_ready().await {
        assert!(Instant::now() < end, "bus did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in bus.publish_batch(batch("after", 10)).await {
        r.expect("publish after the outage");
    }
    // Every acked publish is there. Publishes refused during the outage may still reach
    // the server once it is back (they were on the wire or queued in the client): callers
    // retry refused messages and the ids dedup them.
    let mut payloads = std::collections::BTreeSet::new();
    let count = |p: &std::collections::BTreeSet<String>, tag: &str| {
        p.iter().filter(|s| s.starts_with(tag)).count()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while (count(&payloads, "before-") < 10 || count(&payloads, "after-") < 10)
        && Instant::now() < end
    {
        let got = sub
            .fetch(1000, Duration::from_millis(300))
            .await
            .expect("fetch");
        payloads.extend(
            got.iter()
                .map(|d| String::from_utf8_lossy(&d.payload).into_owned()),
        );
        for r in event_bus::ack_all(got).await {
            r.expect("ack");
        }
    }
    eprintln!(
        "refused during the outage but stored after it: {}",
        count(&payloads, "during-")
    );
    assert_eq!(count(&payloads, "before-"), 10);
    assert_eq!(count(&payloads, "after-"), 10);
}
