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
    // A heavy user (4,000 events over 24 months) among 300 others, in two builds.
    let others: Vec<String> = (0..300).map(|i| format!("other-{i}")).collect();
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
}
