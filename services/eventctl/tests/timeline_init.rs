//! `eventctl timeline init` against the DynamoDB stand-in: creates the table with its TTL,
//! and a second run changes nothing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

#[test]
fn timeline_init_creates_the_table_once() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh"));
    let table = format!("tl-cli-{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros());
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_eventctl"))
            .args(["timeline", "init", "--table", &table, "--endpoint-url", &endpoint])
            .output()
            .expect("run eventctl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains(": created; TTL enabled on `ttl`"), "{first}");
    let second = run();
    assert!(second.contains(": already existed; TTL already enabled"), "{second}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let cfg = timeline::DynamoConfig { table: table.clone(), endpoint_url: Some(endpoint.clone()), ..Default::default() };
        let store = timeline::DynamoStore::connect(&cfg).await;
        let again = store.init().await.expect("init");
        assert!(!again.created && !again.ttl_enabled);
        store.drop_table().await.expect("drop");
    });
}
