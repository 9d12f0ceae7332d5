//! Test support: a private `redis-server` on a free loopback port (the shared one on 6379 is
//! used by other test runs and must never be stopped), which a test can pause (SIGSTOP: every
//! call hangs), resume, kill and start again on the same port.

#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private Redis, killed on drop.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port (binary: `REDIS_SERVER_BIN` or `redis-server` on PATH).
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills it (SIGKILL): connections are refused until [`PrivateRedis::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and every call waits.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes it (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").args([sig, &c.id().to_string()]).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "kill {sig} failed");
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// An aggregator of `metrics` on the consumer runtime, consuming `bus` under the durable
/// `opts.consumer` in batches of `batch` (ordered, as the service runs it); stop it with the
/// sender, or abort the task to simulate a crash (its un-acked deliveries come back).
pub async fn spawn_aggregator(
    bus: &event_bus::InProcessBus,
    store: &stats::store::Store,
    cache: &std::sync::Arc<stats::cache::StatsCache>,
    metrics: &[stats::MetricDef],
    opts: stats::AggregatorOptions,
    batch: usize,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<event_bus::consumer::Report>) {
    let config = event_bus::ConsumerConfig { batch_messages: batch, ack_wait_secs: 30, ..event_bus::ConsumerConfig::named(&opts.consumer) };
    let mut spec = config.spec(vec![event_contract::wire::filter::all_events()]);
    spec.ordered = true;
    let consumer = event_bus::consumer::Consumer::subscribe(std::sync::Arc::new(bus.clone()), spec).await.expect("subscribe");
    let (fatal, _) = stats::Fatal::new();
    let extractor = stats::Extractor::new(metrics.to_vec());
    let aggregator = stats::Aggregator::start(store.clone(), cache.clone(), extractor, opts, fatal).await.expect("aggregator");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    (stop_tx, tokio::spawn(consumer.run(vec![aggregator], stop_rx)))
}
