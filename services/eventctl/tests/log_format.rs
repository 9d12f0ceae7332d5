//! `LOG_FORMAT=json` reaches `eventctl dev`: every line it logs on stderr, from start to a
//! Ctrl-C stop, is one JSON object (log collectors parse them), not text.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `n` distinct free ports (held together while chosen, so they differ).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    held.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

#[test]
fn dev_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let p = free_ports(5);
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventctl"))
        .args(["dev", "--lake", lake.to_str().expect("utf8"), "--api-key", "k"])
        .args(["--listen", &addr(p[0]), "--timeline-listen", &addr(p[1]), "--stats-listen", &addr(p[2])])
        .args(["--features-listen", &addr(p[3]), "--features-grpc-listen", &addr(p[4])])
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eventctl dev");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", p[0])).is_err() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("eventctl dev did not listen");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill").success());
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    assert!(status.success(), "{status}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    let mut messages = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(messages.iter().any(|m| m == "shutdown requested"), "{messages:?}");
}
