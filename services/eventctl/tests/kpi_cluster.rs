//! `eventctl kpi --cluster` on a real Ballista cluster of this build's own processes: a
//! `cluster scheduler` and two `cluster executor`s on 127.0.0.1 (what two laptops run, on one
//! machine):
//! - the KPIs equal the local run's and DuckDB's, from a local lake and from an S3 lake that
//!   the executors read with their own credentials (the S3-compatible server on 127.0.0.1);
//! - the scans read the same files and the same column bytes as the local run (pruning and
//!   projection survive the trip to the executors);
//! - losing an executor mid-run (SIGKILL, after it wrote shuffle data) still finishes every
//!   KPI, with the same results: the scheduler runs its tasks again on the other executor.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::eventctl;
use common::lakes::{DAY, duckdb_kpis, ingest, json, kpi, make_lake};

/// A free port on 127.0.0.1 (and the next one, for an executor's task port).
fn free_ports() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p < 65_000 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Processes killed when the test ends, however it ends.
struct Cluster {
    scheduler: String,
    children: Vec<Child>,
    work_dirs: Vec<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A scheduler and two executors (2 tasks each), quick to declare an executor lost (3 s).
fn start_cluster(dir: &Path) -> Cluster {
    let sp = free_ports();
    let scheduler = format!("127.0.0.1:{sp}");
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let mut s = eventctl();
    s.args(["cluster", "scheduler", "--bind", &scheduler, "--external-host", "127.0.0.1", "--executor-timeout-secs", "3", "--expire-interval-secs", "1"]);
    quiet(&mut s);
    let mut cluster = Cluster { scheduler: scheduler.clone(), children: vec![s.spawn().expect("scheduler")], work_dirs: Vec::new() };
    wait_for_port(sp);
    for i in 0..2 {
        let p = free_ports();
        let work = dir.join(format!("executor-{i}"));
        let mut e = eventctl();
        e.args(["cluster", "executor", "--scheduler", &scheduler, "--bind", &format!("127.0.0.1:{p}"), "--concurrency", "2", "--heartbeat-secs", "1"])
            .args(["--external-host", "127.0.0.1", "--work-dir", work.to_str().expect("utf8")]);
        quiet(&mut e);
        cluster.children.push(e.spawn().expect("executor"));
        cluster.work_dirs.push(work);
        wait_for_port(p);
    }
    cluster
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port} after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster_kpi(cluster: &Cluster, lake: &str, out: &Path) -> Value {
    kpi(lake, out, &["--cluster", &cluster.scheduler])
}

#[test]
fn kpis_on_the_cluster_equal_the_local_run_and_survive_a_lost_executor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().expect("utf8");
    let input = make_lake(dir.path(), lake);
    let local = kpi(lake, &dir.path().join("local"), &[]);
    assert_eq!(local["kpis"], duckdb_kpis(&lake_dir), "the local run disagrees with DuckDB");

    let mut cluster = start_cluster(dir.path());
    let out = dir.path().join("on-cluster");
    let remote = cluster_kpi(&cluster, lake, &out);
    assert!(remote["failed"].is_null(), "{}", remote["failed"]);
    assert_eq!(remote["kpis"], local["kpis"], "the cluster's KPIs differ from the local run's");
    assert!(remote["engine"].as_str().is_some_and(|e| e.starts_with("cluster")), "{}", remote["engine"]);
    // The same outputs as a local run.
    for f in ["kpis.json", "kpis.csv", "events_by_type_hour.csv", "top_sellers.csv", "hourly_volume.png"] {
        assert!(std::fs::metadata(out.join(f)).is_ok_and(|m| m.len() > 0), "{f} missing");
    }
    // Pruning and projection as good as here: the same files, the same column bytes.
    assert_eq!(remote["read"]["files_read"], local["read"]["files_read"]);
    assert_eq!(remote["read"]["scanned_bytes"], local["read"]["scanned_bytes"]);
    assert!(local["read"]["scanned_bytes"].as_u64().is_some_and(|b| b > 0));
    // The executors did the reading (shuffle files in their work folders), both of them.
    for w in &cluster.work_dirs {
        assert!(std::fs::read_dir(w).is_ok_and(|mut d| d.next().is_some()), "executor {} ran nothing", w.display());
    }

    // An S3 lake: the executors open the bucket with their own credentials (this environment's
    // AWS variables, as each laptop's own AWS profile would be).
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh"));
    let bucket = format!("kpi-cluster-{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    assert!(Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]).status().expect("curl").success());
    let s3 = format!("s3://{bucket}/lake");
    ingest(&s3, &input);
    let on_s3 = cluster_kpi(&cluster, &s3, &dir.path().join("s3-cluster"));
    assert_eq!(on_s3["kpis"], local["kpis"], "the cluster over S3 differs");

    // Lose an executor mid-run: as soon as executor 0 has written shuffle data of a new run,
    // SIGKILL it. The run goes on and every KPI is still right.
    for w in &cluster.work_dirs {
        let _ = std::fs::remove_dir_all(w);
        std::fs::create_dir_all(w).expect("mkdir");
    }
    let out = dir.path().join("lost-executor");
    let mut run = eventctl()
        .args(["kpi", "--date", DAY, "--json", "--lake", lake, "--cluster", &cluster.scheduler, "--out", out.to_str().expect("utf8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kpi");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_dir(&cluster.work_dirs[0]).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        assert!(run.try_wait().expect("wait").is_none(), "the run ended before executor 0 took any task");
        assert!(Instant::now() < deadline, "executor 0 took no task in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.children[1].kill().expect("kill executor 0");
    let _ = cluster.children[1].wait();
    let killed_while_running = run.try_wait().expect("wait").is_none();
    let started = Instant::now();
    let output = run.wait_with_output().expect("kpi output");
    assert!(output.status.success(), "the run failed after losing an executor: {}", String::from_utf8_lossy(&output.stderr));
    assert!(killed_while_running, "the executor was killed after the run had ended");
    let after = json(&output);
    assert_eq!(after["kpis"], local["kpis"], "KPIs differ after losing an executor");
    eprintln!("the run finished {:.1} s after executor 0 was killed", started.elapsed().as_secs_f64());
}

/// Mistakes a user makes starting the cluster get a clear message, not a hang.
#[test]
fn bad_cluster_addresses_are_refused_with_a_reason() {
    let out = eventctl().args(["cluster", "executor", "--scheduler", "laptop-1"]).output().expect("executor");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected HOST:PORT"), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens there: the run says so and names the scheduler.
    let port = free_ports();
    let out = eventctl()
        .args(["kpi", "--date", DAY, "--lake", dir.path().to_str().expect("utf8"), "--cluster", &format!("127.0.0.1:{port}")])
        .output()
        .expect("kpi");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scheduler") && err.contains(&port.to_string()), "{err}");
}

/// A scheduler URL with TLS is refused up front: the cluster's ports speak plain gRPC.
#[test]
fn a_tls_scheduler_url_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = eventctl()
        .args(["kpi", "--date", DAY, "--lake", dir.path().to_str().expect("utf8"), "--cluster", "https://laptop-a:50050"])
        .output()
        .expect("kpi");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TLS"), "{}", String::from_utf8_lossy(&out.stderr));
}
