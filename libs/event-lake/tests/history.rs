//! Reading one user's history from the history table (`LakeStore::read_user_history`), on a
//! local lake: rows of several users over 14 months in several files per partition; a user's
//! pages, oldest and newest first, follow each other through the cursor with no gap and no
//! repeat, are full except the last (ceil(n / limit) pages), honour the time range and the
//! types; an unknown user reads nothing; user keys with unusual bytes work.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use event_lake::history::{HistoryRow, UserQuery, bucket_of, month_of, txn_app, USER_BUCKETS};
use std::sync::Arc;

use event_lake::{Lake, WriteOptions};

const DAY: i64 = 86_400_000;

fn rows(users: &[&str], n: usize, start: i64, seed: u64) -> Vec<HistoryRow> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let user = users[(x >> 33) as usize % users.len()].to_owned();
            let created_at = start + ((x >> 20) % (420 * DAY as u64)) as i64;
            let event_type = ["product_viewed", "product_liked"][i % 2].to_owned();
            let id = format!("e{seed}-{i}");
            let event = format!(r#"{{"data":{{"id":"{id}","type":"{event_type}"}},"meta":{{"created_at":{created_at}}}}}"#);
            HistoryRow { user, created_at, id, event_type, event }
        })
        .collect()
}

async fn commit(lake: &Lake, mut rows: Vec<HistoryRow>, version: i64) {
    let mut groups: std::collections::BTreeMap<(String, u32), Vec<HistoryRow>> = Default::default();
    for r in rows.drain(..) {
        groups.entry((month_of(r.created_at), bucket_of(&r.user, USER_BUCKETS))).or_default().push(r);
    }
    let mut adds = Vec::new();
    for ((month, bucket), mut rows) in groups {
        adds.push(lake.root.put_history_file(&month, bucket, &mut rows).await.unwrap());
    }
    lake.root.commit_history(adds, &[(txn_app("t"), version)]).await.unwrap();
}

async fn all_pages(lake: &Lake, user: &str, limit: usize, newest_first: bool, from: i64, to: i64, types: &[String]) -> (Vec<HistoryRow>, usize) {
    let (mut out, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let q = UserQuery { user, from, to, types, newest_first, after: after.clone(), limit };
        let page = lake.root.read_user_history(&q).await.unwrap();
        pages += 1;
        if page.more {
            assert_eq!(page.rows.len(), limit, "a page is full unless it is the last");
        }
        after = page.rows.last().map(|r| (r.created_at, r.id.clone()));
        out.extend(page.rows);
        if !page.more {
            return (out, pages);
        }
        assert!(pages < 10_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_pages_follow_each_other_in_both_orders() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), WriteOptions::default()).unwrap();
    let start = 1_780_000_000_000; // 2026-05-28
    let users = ["heavy", "u2", "quote\"d/slash", "émile ☃", "u5"];
    // The heavy user in most rows; two commits, so months hold several files.
    let first = rows(&["heavy", "heavy", "heavy", "u2", "quote\"d/slash", "émile ☃", "u5"], 3000, start, 1);
    let second = rows(&users, 1000, start, 2);
    commit(&lake, first.clone(), 1).await;
    commit(&lake, second.clone(), 2).await;
    let all: Vec<HistoryRow> = first.into_iter().chain(second).collect();

    for user in users {
        let mut want: Vec<&HistoryRow> = all.iter().filter(|r| r.user == user).collect();
        want.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        for (limit, newest_first) in [(100, false), (100, true), (1000, true), (7, false)] {
            let (got, pages) = all_pages(&lake, user, limit, newest_first, 0, i64::MAX, &[]).await;
            let mut expected: Vec<&HistoryRow> = want.clone();
            if newest_first {
                expected.reverse();
            }
            let ids = |rows: &[&HistoryRow]| rows.iter().map(|r| (r.created_at, r.id.clone())).collect::<Vec<_>>();
            let got_refs: Vec<&HistoryRow> = got.iter().collect();
            assert!(got_refs == expected, "{user} limit {limit} newest_first {newest_first}: {} rows, want {}; first {:?} / {:?}", got.len(), expected.len(), ids(&got_refs).first(), ids(&expected).first());
            assert!(pages <= want.len().div_ceil(limit).max(1), "{user}: {pages} pages for {} rows of {limit}", want.len());
        }
    }

    // The time range and the types.
    let (from, to) = (start + 100 * DAY, start + 200 * DAY);
    let types = vec!["product_liked".to_owned()];
    let (got, _) = all_pages(&lake, "heavy", 50, true, from, to, &types).await;
    let want = all.iter().filter(|r| r.user == "heavy" && r.created_at >= from && r.created_at < to && r.event_type == "product_liked").count();
    assert_eq!(got.len(), want);
    assert!(got.iter().all(|r| r.created_at >= from && r.created_at < to && r.event_type == "product_liked"));

    // Nobody: nothing read.
    let q = UserQuery { user: "nobody", from: 0, to: i64::MAX, types: &[], newest_first: true, after: None, limit: 10 };
    let page = lake.root.read_user_history(&q).await.unwrap();
    assert!(page.rows.is_empty() && !page.more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_page_of_a_heavy_user_costs_a_few_dozen_requests() {
    use event_lake::counting::{CountingStore, ReadStats};
    let url = common::s3_lake_url("history");
    let mut lake = Lake::open(&url, WriteOptions::default()).unwrap();
    let start = 1_750_000_000_000; // 2025-06-15: 24 months of events
    // A heavy user (4,000 events over 24 months) among 300 others of its bucket (a reader of
    // the heavy user opens nothing else), in two builds.
    let others: Vec<String> = (0..).map(|i| format!("other-{i}")).filter(|u| bucket_of(u, USER_BUCKETS) == bucket_of("heavy", USER_BUCKETS)).take(300).collect();
    let mut users: Vec<&str> = others.iter().map(String::as_str).collect();
    users.extend(std::iter::repeat_n("heavy", 100));
    let two_years = |mut r: Vec<HistoryRow>| {
        for (k, row) in r.iter_mut().enumerate() {
            row.created_at = start + (k as i64 * 7_919_311_u64 as i64) % (730 * DAY);
            row.event = format!(r#"{{"data":{{"id":"{}"}},"pad":"{}"}}"#, row.id, "x".repeat(600));
        }
        r
    };
    let first = two_years(rows(&users, 6000, start, 3));
    let second = two_years(rows(&users, 4000, start, 4));
    commit(&lake, first.clone(), 1).await;
    commit(&lake, second.clone(), 2).await;
    let heavy = first.iter().chain(&second).filter(|r| r.user == "heavy").count();
    assert!(heavy > 2000, "{heavy}");
    let bucket = bucket_of("heavy", USER_BUCKETS).to_string();
    let (mut bucket_files, mut all_bytes) = (0, 0u64);
    {
        let table = lake.root.open_history().await.unwrap().unwrap();
        for f in table.snapshot().unwrap().log_data().iter() {
            if f.partition_values_map().get("bucket").cloned().flatten().as_deref() == Some(bucket.as_str()) {
                bucket_files += 1;
                all_bytes += f.size() as u64;
            }
        }
    }

    // Count what one page reads.
    let stats = Arc::new(ReadStats::default());
    lake.root.store = Arc::new(CountingStore::new(lake.root.store.clone(), stats.clone()));
    let q = UserQuery { user: "heavy", from: 0, to: i64::MAX, types: &[], newest_first: true, after: None, limit: 1000 };
    let page = lake.root.read_user_history(&q).await.unwrap();
    assert_eq!(page.rows.len(), 1000);
    let read = stats.snapshot();
    eprintln!("one page of 1,000: {} GETs, {} bytes of {} in the bucket's {} files, {} files opened", read.get_requests, read.bytes_read, all_bytes, bucket_files, page.files_opened);
    assert!(read.get_requests <= 60, "{} GET requests for one page", read.get_requests);
    assert!(page.files_opened < bucket_files, "months past the page are not opened: {} of {bucket_files}", page.files_opened);

    // Compacted (the months closed: a run each), the same page reads one file per month.
    let opts = event_lake::history_compact::HistoryCompactOptions::default();
    let report = lake.compact_history(&opts, start + 800 * DAY).await.unwrap();
    assert!(report.merges > 0, "{report:?}");
    let stats = Arc::new(ReadStats::default());
    let inner = lake.root.store.clone();
    lake.root.store = Arc::new(CountingStore::new(inner, stats.clone()));
    let compacted = lake.root.read_user_history(&q).await.unwrap();
    let read_after = stats.snapshot();
    eprintln!("compacted: {} GETs, {} bytes, {} files opened", read_after.get_requests, read_after.bytes_read, compacted.files_opened);
    assert_eq!(compacted.rows, page.rows, "the same page");
    assert!(read_after.get_requests < read.get_requests, "{} GETs after compaction, {} before", read_after.get_requests, read.get_requests);
}

/// Builds `range` (a commit each, version = build + 1) of `n` rows of `users` within `days`
/// days from `start`.
async fn builds(lake: &Lake, users: &[&str], range: std::ops::Range<u64>, n: usize, start: i64, days: i64, seed: u64) {
    for build in range {
        let mut r = rows(users, n, start, seed + build);
        for row in &mut r {
            row.created_at = start + (row.created_at - start) % (days * DAY);
        }
        commit(lake, r, build as i64 + 1).await;
    }
}

/// The table's rows (every live file read whole), sorted; and a few users' histories through
/// the reader, oldest first.
async fn histories(lake: &Lake, users: &[&str]) -> (Vec<(String, i64, String, String)>, Vec<Vec<(i64, String, String)>>) {
    use arrow_array::cast::AsArray;
    let table = lake.root.open_history().await.unwrap().unwrap();
    let root = lake.root.local_dir.clone().unwrap();
    let mut all = Vec::new();
    for f in table.snapshot().unwrap().log_data().iter() {
        let file = std::fs::File::open(root.join("history").join(f.path().as_ref())).unwrap();
        for b in parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            let b = b.unwrap();
            let (u, c, id, e) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<arrow_array::types::Int64Type>(), b.column(2).as_string::<i32>(), b.column(4).as_string::<i32>());
            for r in 0..b.num_rows() {
                all.push((u.value(r).to_owned(), c.value(r), id.value(r).to_owned(), e.value(r).to_owned()));
            }
        }
    }
    all.sort();
    let mut some = Vec::new();
    for u in users.iter().step_by(25).chain(users.iter().rev().take(2)) {
        let (rows, _) = all_pages(lake, u, 500, false, 0, i64::MAX, &[]).await;
        some.push(rows.into_iter().map(|r| (r.created_at, r.id, r.event)).collect());
    }
    (all, some)
}

/// (files, runs' ranges) of the history table per (month, bucket).
async fn layout(lake: &Lake) -> std::collections::BTreeMap<(String, String), (usize, Vec<(String, String, String)>)> {
    let table = lake.root.open_history().await.unwrap().unwrap();
    let mut out: std::collections::BTreeMap<(String, String), (usize, Vec<(String, String, String)>)> = Default::default();
    for f in table.snapshot().unwrap().log_data().iter() {
        let v = f.partition_values_map();
        let key = (v["month"].clone().unwrap(), v["bucket"].clone().unwrap());
        let entry = out.entry(key).or_default();
        entry.0 += 1;
        let name = f.path().rsplit('/').next().unwrap().to_owned();
        if let Some(rest) = name.strip_prefix("run-") {
            let stats: serde_json::Value = serde_json::from_str(&f.stats().unwrap()).unwrap();
            let run = rest[..rest.rfind('-').unwrap()].to_owned();
            entry.1.push((run, stats["minValues"]["user"].as_str().unwrap().to_owned(), stats["maxValues"]["user"].as_str().unwrap().to_owned()));
        }
    }
    out
}

/// Compaction (`Lake::compact_history`): twelve builds leave twelve files in a partition;
/// compaction merges them into a run of files with disjoint user ranges (a user's rows in one
/// file), every user's history unchanged; a reader of a user then opens one file per month;
/// a crash before the commit changes nothing; two compactions at once keep every row once; a
/// closed month ends as one run; vacuum deletes the files merged away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_build_files_into_runs_and_keeps_every_row_once() {
    use event_lake::history_compact::HistoryCompactOptions;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), WriteOptions::default()).unwrap();
    // 2026-03-02 .. 2026-03-28: one month; users of a few buckets.
    let start = 1_772_409_600_000 + DAY;
    let names: Vec<String> = (0..400).map(|i| format!("user-{i}")).chain(["quote\"d/slash".to_owned(), "émile ☃".to_owned()]).collect();
    let users: Vec<&str> = names.iter().map(String::as_str).collect();
    builds(&lake, &users, 0..12, 4000, start, 26, 100).await;
    let before = histories(&lake, &users).await;
    let files_before: usize = layout(&lake).await.values().map(|(n, _)| n).sum();
    assert!(layout(&lake).await.values().all(|(n, _)| *n == 12), "a file per build and partition");
    let march_open = start + 3 * DAY;

    // A crash between writing the runs and committing them: nothing changes.
    let opts = HistoryCompactOptions { target_file_bytes: 32 << 10, crash_before_commit: true, ..Default::default() };
    let r = lake.compact_history(&opts, march_open).await.unwrap();
    assert!(r.interrupted && r.merges == 0);
    assert_eq!(histories(&lake, &users).await, before);

    // Two compactions at once: each partition merged once, every row once.
    let opts = HistoryCompactOptions { target_file_bytes: 32 << 10, ..Default::default() };
    let (a, b) = tokio::join!(lake.compact_history(&opts, march_open), lake.compact_history(&opts, march_open));
    let (a, b) = (a.unwrap(), b.unwrap());
    let partitions = layout(&lake).await.len() as u64;
    assert_eq!(a.merges + b.merges, partitions, "each partition once: {a:?} {b:?}");
    assert_eq!(histories(&lake, &users).await, before, "every user's history unchanged");
    let after = layout(&lake).await;
    let files_after: usize = after.values().map(|(n, _)| n).sum();
    assert!(after.values().all(|(n, runs)| *n == runs.len()), "only run files left");
    assert!(files_after < files_before, "{files_after} files of {files_before}");
    for ((month, bucket), (_, runs)) in &after {
        let mut ranges: Vec<&(String, String, String)> = runs.iter().collect();
        ranges.sort_by(|x, y| x.1.cmp(&y.1));
        assert!(ranges.iter().all(|r| r.0 == ranges[0].0), "one run in {month}/{bucket}");
        for w in ranges.windows(2) {
            assert!(w[0].2 < w[1].1, "disjoint user ranges in {month}/{bucket}: {:?} then {:?}", w[0], w[1]);
        }
    }
    assert!(after.values().any(|(n, _)| *n > 1), "small target: runs of several files");
    // A reader of one user opens one file of the run.
    for u in ["user-7", "émile ☃", "quote\"d/slash"] {
        let q = UserQuery { user: u, from: 0, to: i64::MAX, types: &[], newest_first: true, after: None, limit: 1000 };
        let page = lake.root.read_user_history(&q).await.unwrap();
        assert_eq!(page.files_opened, 1, "{u}");
    }
    // Nothing more to do in an open month.
    assert_eq!(lake.compact_history(&opts, march_open).await.unwrap().merges, 0);

    // Three more builds, then the month closes: one run per partition.
    builds(&lake, &users, 12..15, 300, start, 26, 100).await;
    let before = histories(&lake, &users).await;
    let closed = lake.compact_history(&opts, start + 40 * DAY).await.unwrap();
    assert_eq!(closed.merges, partitions);
    assert_eq!(histories(&lake, &users).await, before);
    assert!(layout(&lake).await.values().all(|(_, runs)| runs.iter().all(|r| r.0 == runs[0].0)), "one run per closed partition");

    // Vacuum deletes the merged-away files (retention 0), and readers go on.
    let v = lake.vacuum(None, chrono::Duration::zero(), false).await.unwrap();
    assert!(v.deleted.iter().filter(|p| p.starts_with("history/")).count() >= files_before, "{v:?}");
    assert_eq!(histories(&lake, &users).await, before);
}

/// Compaction in shards (`HistoryCompactOptions::shard`, an indexed Job's pods): shard 0 of 2
/// merges the partitions of the even buckets only; shard 1 then the odd ones; rows unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_shards_take_disjoint_buckets() {
    use event_lake::history_compact::HistoryCompactOptions;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), WriteOptions::default()).unwrap();
    let start = 1_772_409_600_000 + DAY; // March 2026
    let names: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let users: Vec<&str> = names.iter().map(String::as_str).collect();
    builds(&lake, &users, 0..8, 400, start, 20, 300).await;
    let before = histories(&lake, &users).await;
    let now = start + 5 * DAY;
    let even = lake.compact_history(&HistoryCompactOptions { shard: Some((0, 2)), ..Default::default() }, now).await.unwrap();
    assert!(even.merges > 0);
    for ((_, bucket), (files, runs)) in layout(&lake).await {
        let b: u32 = bucket.parse().unwrap();
        assert_eq!(runs.is_empty(), b % 2 == 1, "bucket {b}: {files} files, {} run files", runs.len());
    }
    let odd = lake.compact_history(&HistoryCompactOptions { shard: Some((1, 2)), ..Default::default() }, now).await.unwrap();
    assert!(odd.merges > 0);
    assert!(layout(&lake).await.values().all(|(n, runs)| *n == runs.len()), "every partition compacted");
    assert_eq!(histories(&lake, &users).await, before);
}
