//! The lake as tables, on a lake written with the lake library itself (three types over two
//! days, one type's schema growing midway): pruning reads only the partitions a query needs
//! and never lists the whole lake, projection reads only the needed columns, older files read
//! newer columns as NULL, the engine's column byte count is kept.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::record_batch::RecordBatch;
use event_lake::{Lake, PartitionKey, WriteOptions};
use lake_query::{LakeSession, SessionOptions};

/// 2026-11-23T00:00:00Z in ms.
const DAY0: i64 = 1_795_392_000_000;
const HOUR: i64 = 3_600_000;

/// Writes alpha (user_id, amount; `coupon` from hour 30 on), beta (user_id, padded) and gamma
/// (no user_id): one file per type and hour, hours 0..48 of two days.
async fn write_lake(url: &str) -> Lake {
    let lake = Lake::open(url, WriteOptions::default()).expect("open lake");
    // Incompressible padding (hex of a xorshift sequence), so that files have a size.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut pad = || {
        (0..200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    for hour in 0..48i64 {
        for t in ["alpha", "beta", "gamma"] {
            let mut lines = Vec::new();
            for i in 0..40i64 {
                let ms = DAY0 + hour * HOUR + i * 60_000;
                let id = format!("{t}-{hour}-{i}");
                let attrs = match t {
                    "alpha" if hour >= 30 => format!(r#"{{"user_id":"u{}","amount":{i},"coupon":"c{i}"}}"#, i % 7),
                    "alpha" => format!(r#"{{"user_id":"u{}","amount":{i}}}"#, i % 7),
                    "beta" => format!(r#"{{"user_id":"u{}","pad":"{}"}}"#, 100 + i % 5, pad()),
                    _ => format!(r#"{{"screen":"s{i}"}}"#),
                };
                lines.push(format!(r#"{{"data":{{"id":"{id}","type":"{t}","attributes":{attrs}}},"meta":{{"created_at":{ms}}}}}"#));
            }
            let key = PartitionKey::of(Arc::from(t), DAY0 + hour * HOUR);
            lake.write_events(&key, lines.iter().map(|l| l.as_bytes())).await.expect("write");
        }
    }
    lake
}

fn int(batches: &[RecordBatch], col: usize) -> Vec<i64> {
    batches.iter().flat_map(|b| b.column(col).as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(-1)).collect::<Vec<_>>()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_two_types_for_one_day_reads_only_their_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8");
    write_lake(url).await;
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    let b = s
        .collect(
            "SELECT (SELECT count(*) FROM alpha WHERE date = '2026-11-23') AS a, \
             (SELECT count(DISTINCT user_id) FROM beta WHERE date = '2026-11-23') AS b",
        )
        .await
        .expect("query");
    assert_eq!(int(&b, 0), vec![24 * 40]);
    assert_eq!(int(&b, 1), vec![5]);
    let read = s.stats().paths_read();
    let data: Vec<&String> = read.iter().filter(|p| p.ends_with(".parquet")).collect();
    assert_eq!(data.len(), 48, "24 hours of two types");
    assert!(
        data.iter().all(|p| p.starts_with("events/type=alpha/date=2026-11-23/") || p.starts_with("events/type=beta/date=2026-11-23/")),
        "{data:?}"
    );
    let listed = s.stats().prefixes_listed();
    assert!(!listed.contains("") && !listed.contains("events"), "listed the whole lake: {listed:?}");
    assert!(listed.iter().all(|p| !p.starts_with("events/") || p.ends_with("date=2026-11-23")), "{listed:?}");

    // The same through lake.events with a type filter.
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    let b = s
        .collect("SELECT count(*), count(DISTINCT user_id) FROM lake.events WHERE date = '2026-11-24' AND type IN ('alpha', 'gamma')")
        .await
        .expect("union");
    assert_eq!(int(&b, 0), vec![2 * 24 * 40]);
    assert_eq!(int(&b, 1), vec![7], "gamma has no user_id: NULL, not counted");
    let read = s.stats().paths_read();
    assert!(read.iter().filter(|p| p.ends_with(".parquet")).all(|p| p.contains("date=2026-11-24") && !p.contains("type=beta")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_at_and_hour_predicates_prune_hours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8");
    write_lake(url).await;
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    let b = s
        .collect("SELECT count(*) FROM gamma WHERE created_at >= '2026-11-23T22:30:00Z' AND created_at < '2026-11-24T01:00:00Z'")
        .await
        .expect("query");
    assert_eq!(int(&b, 0), vec![10 + 40 + 40]);
    let data: BTreeSet<String> = s.stats().paths_read().into_iter().filter(|p| p.ends_with(".parquet")).collect();
    assert_eq!(data.len(), 3, "hours 22, 23 and 00: {data:?}");
    // The files come from gamma's Delta log: no data folder is listed.
    let listed = s.stats().prefixes_listed();
    assert!(listed.iter().all(|p| !p.contains("date=")), "{listed:?}");

    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    let b = s.collect("SELECT count(*) FROM gamma WHERE hour IN (1, 2) AND date >= '2026-11-23'").await.expect("query");
    assert_eq!(int(&b, 0), vec![4 * 40]);
    assert_eq!(s.stats().snapshot().files_read, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_needed_columns_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8");
    write_lake(url).await;
    let total: u64 = walk(&dir.path().join("events/type=beta")).iter().sum();
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    s.collect("SELECT count(DISTINCT user_id) FROM beta").await.expect("query");
    let small = s.stats().bytes();
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    s.collect("SELECT max(length(pad)) FROM beta").await.expect("query");
    let large = s.stats().bytes();
    assert!(small * 4 < total, "user_id alone read {small} of {total} bytes");
    assert!(large > small * 3, "pad {large} vs user_id {small}");
}

fn walk(dir: &std::path::Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(e.metadata().expect("meta").len());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_files_read_newer_columns_as_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8");
    write_lake(url).await;
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    let b = s
        .collect("SELECT count(*) FILTER (WHERE coupon IS NULL), count(coupon), sum(amount) FROM alpha")
        .await
        .expect("query");
    assert_eq!(int(&b, 0), vec![30 * 40]);
    assert_eq!(int(&b, 1), vec![18 * 40]);
    assert_eq!(int(&b, 2), vec![48 * (0..40).sum::<i64>()]);
}

/// The engine's own count of column bytes (the figure a cluster run reports, where the store
/// wrapper does not reach) is kept beside the store's: column data only, so less than what the
/// store saw (footers too), and it grows with the columns read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_counts_the_column_bytes_it_scans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8");
    write_lake(url).await;
    let narrow = LakeSession::open(url, &SessionOptions::default()).expect("s");
    narrow.collect("SELECT count(DISTINCT user_id) FROM alpha WHERE date = '2026-11-23'").await.expect("q");
    let n = narrow.stats().snapshot();
    assert!(n.scanned_bytes > 0 && n.scanned_bytes < n.bytes_read, "{n:?}");
    let wide = LakeSession::open(url, &SessionOptions::default()).expect("s");
    wide.collect("SELECT count(DISTINCT user_id), sum(amount) FROM alpha WHERE date = '2026-11-23'").await.expect("q");
    assert!(wide.stats().snapshot().scanned_bytes > n.scanned_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_each_table_log_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8");
    write_lake(url).await;
    // gamma: version 0 creates it, then one commit per hour (versions 1..=48), checkpoints at
    // versions 19 and 39 (every 20 commits): the load reads the newest and the commits after it.
    let versions = 49;
    let s = LakeSession::open(url, &SessionOptions::default()).expect("session");
    let b = s.collect("SELECT count(*) FROM gamma WHERE date = '2026-11-24' AND hour = 5").await.expect("query");
    assert_eq!(int(&b, 0), vec![40]);
    let first = s.stats().snapshot();
    eprintln!("log GETs for one query on a table of {versions} versions: {}", first.log_get_requests);
    assert!(first.log_get_requests > 0, "the log reads are counted: {first:?}");
    // Schema and files come from one load of the log, and each commit is read once (the
    // kernel reads it twice in a load: once for protocol and metadata, once for the files;
    // the session's log cache answers the second).
    assert!(first.log_get_requests <= versions + 3, "{first:?}");
    assert_eq!(first.files_read, 1, "{first:?}");
    // Later queries of the session reuse its snapshot: no more log reads.
    s.collect("SELECT count(*) FROM gamma WHERE date = '2026-11-23'").await.expect("query");
    assert_eq!(s.stats().snapshot().log_get_requests, first.log_get_requests);
}
