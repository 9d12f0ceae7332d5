//! Shared helpers of the lake's tests: lakes on a temporary folder or on the S3 stand-in.

#![allow(dead_code)]

use std::sync::Arc;

use event_lake::{Lake, WriteOptions};

/// A local lake in a fresh temporary folder (kept alive by the returned guard).
pub fn local_lake() -> (tempfile::TempDir, Arc<Lake>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Lake::open(dir.path().to_str().expect("utf8 path"), WriteOptions::default()).expect("open lake");
    (dir, Arc::new(lake))
}

/// The S3 stand-in's endpoint; tests need `scripts/services.sh up` (done by `scripts/test.sh`).
pub fn s3_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh (it starts the S3 stand-in)")
    })
}

/// A new bucket on the S3 stand-in, and a lake URL in it.
pub fn s3_lake_url(test: &str) -> String {
    let endpoint = s3_endpoint();
    let bucket = format!("lake-{test}-{}", uuid_suffix());
    let status = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .status()
        .expect("curl");
    assert!(status.success(), "could not create bucket {bucket} at {endpoint}");
    format!("s3://{bucket}/lake")
}

fn uuid_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id())
}

/// One event line.
pub fn event(id: &str, t: &str, created_at: i64, attributes: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "data": {"id": id, "type": t, "attributes": attributes},
        "meta": {"created_at": created_at}
    }))
    .expect("json")
}

/// A multi-thread runtime for tests that drive the lake from threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}
