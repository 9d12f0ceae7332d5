//! The history build stopped half-way and started again (a CronJob pod killed mid-build):
//! nothing is counted twice and nothing is missed. A type's first build (from a snapshot,
//! in chunks) stopped after some chunks, with the next chunk's files written but not
//! committed; events appended meanwhile; stopped again during the next build; then a build
//! to the end: every event is in the history once per user it names.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use event_lake::history::UserQuery;
use event_lake::{Lake, PartitionKey, WriteOptions};
use serde_json::json;
use timeline::history::{BuildOptions, build};
use timeline::user::UserPaths;

const DAY: i64 = 86_400_000;

/// Events `from..from+n`: users u0..u6, some sales naming two users, over three months.
fn events(from: usize, n: usize) -> Vec<(String, i64, String, Vec<String>)> {
    let start = 1_767_225_600_000; // 2026-01-01
    (from..from + n)
        .map(|i| {
            let t = start + (i as i64 * 7_919) % (80 * DAY) * 1000 % (80 * DAY);
            let (ty, users) = if i % 5 == 0 { ("product_sold", vec![format!("u{}", i % 7), format!("u{}", (i + 3) % 7)]) } else { ("product_viewed", vec![format!("u{}", i % 7)]) };
            let body = if users.len() == 2 {
                json!({"data": {"id": format!("e{i:05}"), "type": ty, "attributes": {"user_id": users[0], "owner_id": users[1]}}, "meta": {"created_at": t}})
            } else {
                json!({"data": {"id": format!("e{i:05}"), "type": ty, "attributes": {"user_id": users[0]}}, "meta": {"created_at": t}})
            };
            (ty.to_owned(), t, body.to_string(), users)
        })
        .collect()
}

/// Writes events in `batches` lake commits (one version each per type and partition).
async fn write(lake: &Lake, evs: &[(String, i64, String, Vec<String>)], batches: usize) {
    for chunk in evs.chunks(evs.len().div_ceil(batches)) {
        let mut parts: BTreeMap<PartitionKey, Vec<&str>> = BTreeMap::new();
        for (ty, t, body, _) in chunk {
            parts.entry(PartitionKey::of(Arc::from(ty.as_str()), *t)).or_default().push(body);
        }
        for (key, lines) in parts {
            lake.write_events(&key, lines.iter().map(|l| l.as_bytes())).await.unwrap();
        }
    }
}

async fn history(lake: &Lake, user: &str) -> Vec<String> {
    let q = UserQuery { user, from: 0, to: i64::MAX, types: &[], newest_first: false, after: None, limit: 100_000 };
    lake.root.read_user_history(&q).await.unwrap().rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_stopped_half_way_and_started_again_counts_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), WriteOptions::default()).unwrap();
    let paths = UserPaths::new(&["data.attributes.user_id".into()], &[("product_sold".to_owned(), vec!["data.attributes.user_id".to_owned(), "data.attributes.owner_id".to_owned()])].into()).unwrap();
    let first = events(0, 700);
    write(&lake, &first, 4).await;

    // Chunks of one source file: many commits; stopped after 3, the 4th chunk's files written.
    let small = BuildOptions { chunk_bytes: 1, compact: None, stop_after_commits: Some(3), ..BuildOptions::default() };
    let r = build(&lake, &paths, &small).await.unwrap();
    assert!(r.stopped && r.commits == 3, "{r:?}");
    // More events meanwhile (new table versions), then stopped again.
    let second = events(700, 300);
    write(&lake, &second, 3).await;
    let r = build(&lake, &paths, &BuildOptions { stop_after_commits: Some(4), ..small.clone() }).await.unwrap();
    assert!(r.stopped, "{r:?}");
    // To the end (and a second run finds nothing new).
    let r = build(&lake, &paths, &BuildOptions { compact: None, ..BuildOptions::default() }).await.unwrap();
    assert!(!r.stopped && r.commits > 0, "{r:?}");
    let r = build(&lake, &paths, &BuildOptions::default()).await.unwrap();
    assert_eq!(r.commits, 0, "{r:?}");

    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all: Vec<_> = first.iter().chain(&second).collect();
    all.sort_by_key(|e| (e.1, e.2.clone()));
    for (_, t, body, users) in &all {
        let id = serde_json::from_str::<serde_json::Value>(body).unwrap()["data"]["id"].as_str().unwrap().to_owned();
        let _ = t;
        for u in users {
            want.entry(u.clone()).or_default().push(id.clone());
        }
    }
    for (user, ids) in &want {
        let mut got = history(&lake, user).await;
        let mut expected = ids.clone();
        got.sort();
        expected.sort();
        assert_eq!(got.len(), expected.len(), "{user}: {} rows, {} events", got.len(), expected.len());
        assert_eq!(got, expected, "{user}: every event once");
    }
}
