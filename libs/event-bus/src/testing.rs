//! Test support: a private `nats-server` with JetStream on a free loopback port, its store in
//! a temporary folder, killed on drop. The binary is `nats-server` on PATH or
//! `NATS_SERVER_BIN`; `scripts/services.sh` installs it.

#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

/// A private NATS JetStream server on a free port, stopped on drop.
pub struct NatsServer {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut n = NatsServer { child: None, port, dir: tempfile::tempdir().expect("tempdir") };
        n.restart();
        n
    }
    /// Starts it again on the same port and store (after `kill`).
    pub fn restart(&mut self) {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = std::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (installed by scripts/services.sh)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }
    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Its JetStream store folder (`-sd`).
    pub fn store_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

