//! Benchmark of the timeline's cold tier: one heavy user's whole history (100,000 events over
//! two years) paged 1,000 at a time from the lake's history table, newest first.
//!
//! Builds a history table on a local lake as the build job leaves it (one file per build and
//! partition, `BENCH_BUILDS_PER_MONTH` builds a month, the heavy user among other users of
//! its bucket), then reads every page of the user:
//! - uncompacted, then compacted (every month closed: one run per partition);
//! - with every GET answered at once (local disk) and after `BENCH_GET_LATENCY_MS` (S3's
//!   first-byte latency, emulated on the local lake);
//! and reports per page: p50 / p99 / max latency, GET requests and bytes read. Baseline in the
//! same run: the same pages read the naive way (every file of the user's bucket in the
//! page's months decoded whole, then filtered), on the compacted table, without latency.
//!
//! Run: `scripts/bench-history.sh` (or `cargo bench -p event-lake --bench history_pages`).
//! Settings: BENCH_HEAVY_EVENTS (100,000), BENCH_OTHER_ROWS (400,000), BENCH_EVENT_BYTES
//! (2,000), BENCH_BUILDS_PER_MONTH (30), BENCH_GET_LATENCY_MS (30), BENCH_DIR (kept).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_lake::counting::{CountingStore, ReadStats};
use event_lake::history::{HistoryRow, USER_BUCKETS, UserQuery, bucket_of, month_of, txn_app};
use event_lake::history_compact::HistoryCompactOptions;
use event_lake::{Lake, WriteOptions};

const DAY: i64 = 86_400_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// A JSON event of about `bytes` bytes, its padding varied (so it compresses like events,
/// not like a repeated string).
fn event(id: &str, user: &str, t: i64, bytes: usize, x: &mut u64) -> String {
    let mut pad = String::with_capacity(bytes);
    const WORDS: [&str; 16] = ["red", "blue", "shoe", "size", "42", "price", "1999", "EUR", "true", "null", "seller", "rating", "4.5", "paris", "lyon", "ship"];
    while pad.len() < bytes.saturating_sub(160) {
        *x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        pad.push_str(WORDS[(*x >> 60) as usize]);
        pad.push(' ');
        pad.push_str(&((*x >> 20) % 100_000).to_string());
        pad.push(',');
    }
    format!(r#"{{"data":{{"id":"{id}","type":"product_viewed","attributes":{{"user_id":"{user}","text":"{pad}"}}}},"meta":{{"created_at":{t}}}}}"#)
}

struct Pages {
    /// Per page: the event times of its first and last rows.
    spans: Vec<(i64, i64)>,
    latencies: Vec<Duration>,
    gets: Vec<u64>,
    bytes: Vec<u64>,
    rows: usize,
}

impl Pages {
    fn report(&self, what: &str) {
        let mut l = self.latencies.clone();
        l.sort();
        let q = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1].as_secs_f64() * 1000.0;
        let mut g = self.gets.clone();
        g.sort();
        println!(
            "{what:<44} {:>4} pages {:>7} rows  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  GETs/page p50 {:>3} max {:>3}  {:>6.1} MB/page",
            l.len(),
            self.rows,
            q(0.5),
            q(0.99),
            q(1.0),
            g[g.len() / 2],
            g[g.len() - 1],
            self.bytes.iter().sum::<u64>() as f64 / self.bytes.len() as f64 / 1e6
        );
    }

    fn p99_ms(&self) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 * 0.99).ceil() as usize).clamp(1, l.len()) - 1].as_secs_f64() * 1000.0
    }

    fn p50_ms(&self) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        l[l.len() / 2].as_secs_f64() * 1000.0
    }
}

/// Every page of `user`, newest first, through a counting store (`latency` per GET).
async fn page_all(root: &str, user: &str, latency: Option<Duration>) -> Pages {
    let mut lake = Lake::open(root, WriteOptions::default()).unwrap();
    let stats = Arc::new(ReadStats::default());
    let mut store = CountingStore::new(lake.root.store.clone(), stats.clone());
    if let Some(l) = latency {
        store = store.with_get_latency(l);
    }
    lake.root.store = Arc::new(store);
    let mut out = Pages { spans: Vec::new(), latencies: Vec::new(), gets: Vec::new(), bytes: Vec::new(), rows: 0 };
    let mut after = None;
    loop {
        let before = stats.snapshot();
        let t = Instant::now();
        let q = UserQuery { user, from: 0, to: i64::MAX, types: &[], newest_first: true, after: after.clone(), limit: 1000 };
        let page = lake.root.read_user_history(&q).await.unwrap();
        out.latencies.push(t.elapsed());
        let now = stats.snapshot();
        out.gets.push(now.get_requests - before.get_requests);
        out.bytes.push(now.bytes_read - before.bytes_read);
        out.rows += page.rows.len();
        if let (Some(first), Some(last)) = (page.rows.first(), page.rows.last()) {
            out.spans.push((first.created_at, last.created_at));
        }
        after = page.rows.last().map(|r| (r.created_at, r.id.clone()));
        if !page.more {
            return out;
        }
    }
}

/// The naive reader of the same pages (no user ranges, no page index, no Bloom filter): for
/// each page, every file of the user's bucket in the months the page spans, decoded whole,
/// then filtered and sorted (a stateless API cannot keep a month between two requests).
async fn naive_pages(root: &str, user: &str, spans: &[(i64, i64)]) -> Pages {
    use arrow_array::cast::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let lake = Lake::open(root, WriteOptions::default()).unwrap();
    let table = lake.root.open_history().await.unwrap().unwrap();
    let bucket = bucket_of(user, USER_BUCKETS);
    let mut months: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in table.snapshot().unwrap().log_data().iter() {
        let v = f.partition_values_map();
        if v["bucket"].clone().unwrap().parse::<u32>().unwrap() == bucket {
            months.entry(v["month"].clone().unwrap()).or_default().push(format!("{root}/history/{}", f.path()));
        }
    }
    let mut out = Pages { spans: Vec::new(), latencies: Vec::new(), gets: Vec::new(), bytes: Vec::new(), rows: 0 };
    for &(first, last) in spans {
        let t = Instant::now();
        let (lo, hi) = (month_of(first.min(last)), month_of(first.max(last)));
        let (mut rows, mut read) = (Vec::new(), 0u64);
        for (_, files) in months.range(lo..=hi) {
            for path in files {
                let file = std::fs::File::open(path).unwrap();
                read += file.metadata().unwrap().len();
                for b in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
                    let b = b.unwrap();
                    let (u, c, id) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<arrow_array::types::Int64Type>(), b.column(2).as_string::<i32>());
                    for r in 0..b.num_rows() {
                        let t = c.value(r);
                        if u.value(r) == user && t >= first.min(last) && t <= first.max(last) {
                            rows.push((t, id.value(r).to_owned(), b.column(4).as_string::<i32>().value(r).len()));
                        }
                    }
                }
            }
        }
        rows.sort_unstable();
        out.rows += rows.len();
        out.latencies.push(t.elapsed());
        out.bytes.push(read);
        out.gets.push(0);
    }
    out
}

fn main() {
    let heavy_events = env("BENCH_HEAVY_EVENTS", 100_000) as usize;
    let other_rows = env("BENCH_OTHER_ROWS", 400_000) as usize;
    let event_bytes = env("BENCH_EVENT_BYTES", 2_000) as usize;
    let builds_per_month = env("BENCH_BUILDS_PER_MONTH", 30).max(1) as i64;
    let latency = Duration::from_millis(env("BENCH_GET_LATENCY_MS", 30));
    let kept;
    let root = match std::env::var("BENCH_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            d
        }
        Err(_) => {
            kept = tempfile::tempdir().unwrap();
            kept.path().to_str().unwrap().to_owned()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let lake = Lake::open(&root, WriteOptions::default()).unwrap();
        let heavy = "heavy-user-0042";
        let bucket = bucket_of(heavy, USER_BUCKETS);
        // Other users of the same bucket (a reader of the heavy user only ever opens its bucket).
        let others: Vec<String> = (0..).map(|i| format!("user-{i:07}")).filter(|u| bucket_of(u, USER_BUCKETS) == bucket).take(5_000).collect();
        let start = 1_735_689_600_000; // 2025-01-01
        let span = 730 * DAY;
        let months = 24;
        let slot = span / (months * builds_per_month);
        let total = heavy_events + other_rows;
        println!(
            "history table: {heavy_events} events of one user and {other_rows} of {} others of its bucket, over 24 months, {event_bytes} B events, {builds_per_month} builds a month",
            others.len()
        );
        let t0 = Instant::now();
        let mut x = 7u64;
        let (mut version, mut rows_written, mut bytes_written) = (0i64, 0usize, 0u64);
        // Build by build: the rows whose time falls in the build's slot.
        let per_slot = total.div_ceil((months * builds_per_month) as usize);
        let mut next_heavy = 0usize;
        for s in 0..months * builds_per_month {
            let mut rows = Vec::with_capacity(per_slot);
            for k in 0..per_slot {
                let i = s as usize * per_slot + k;
                if i >= total {
                    break;
                }
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let t = start + s * slot + ((x >> 20) as i64 % slot);
                // The heavy user's share of each slot, spread evenly.
                let user = if (i * heavy_events) / total != ((i + 1) * heavy_events) / total { next_heavy += 1; heavy.to_owned() } else { others[(x >> 40) as usize % others.len()].clone() };
                let id = format!("e{i:09}");
                let event = event(&id, &user, t, event_bytes, &mut x);
                rows.push(HistoryRow { user, created_at: t, id, event_type: "product_viewed".into(), event });
            }
            let mut groups: std::collections::BTreeMap<String, Vec<HistoryRow>> = Default::default();
            for r in rows {
                groups.entry(month_of(r.created_at)).or_default().push(r);
            }
            let mut adds = Vec::new();
            for (month, mut rows) in groups {
                rows_written += rows.len();
                let add = lake.root.put_history_file(&month, bucket, &mut rows).await.unwrap();
                bytes_written += add.size as u64;
                adds.push(add);
            }
            version += 1;
            lake.root.commit_history(adds, &[(txn_app("product_viewed"), version)]).await.unwrap();
        }
        println!(
            "  built: {rows_written} rows ({next_heavy} of the heavy user), {:.0} MB in {} commits, {:.1} s",
            bytes_written as f64 / 1e6,
            version,
            t0.elapsed().as_secs_f64()
        );

        let uncompacted = page_all(&root, heavy, None).await;
        uncompacted.report("uncompacted, local");
        let uncompacted_s3 = page_all(&root, heavy, Some(latency)).await;
        uncompacted_s3.report(&format!("uncompacted, {} ms per GET (S3-like)", latency.as_millis()));
        // The job runs every 10 minutes: compaction until it has nothing left to merge.
        let t1 = Instant::now();
        let (mut merges, mut files_in, mut bytes_in, mut bytes_out, mut rows, mut runs) = (0, 0, 0, 0, 0, 0);
        loop {
            let report = lake.compact_history(&HistoryCompactOptions::default(), start + 800 * DAY).await.unwrap();
            if report.merges == 0 {
                break;
            }
            runs += 1;
            merges += report.merges;
            files_in += report.files_in;
            bytes_in += report.bytes_in;
            bytes_out += report.bytes_out;
            rows += report.rows;
        }
        let secs = t1.elapsed().as_secs_f64();
        let live = lake.root.open_history().await.unwrap().unwrap().snapshot().unwrap().log_data().num_files();
        println!(
            "  compacted in {runs} runs: {merges} merges of {files_in} files ({:.0} MB read) into {live} files ({:.0} MB written), {rows} rows merged, {secs:.1} s ({:.1} MB/s read, {:.0} rows/s)",
            bytes_in as f64 / 1e6,
            bytes_out as f64 / 1e6,
            bytes_in as f64 / 1e6 / secs,
            rows as f64 / secs
        );
        let compacted = page_all(&root, heavy, None).await;
        compacted.report("compacted, local");
        let s3 = page_all(&root, heavy, Some(latency)).await;
        s3.report(&format!("compacted, {} ms per GET (S3-like)", latency.as_millis()));
        let naive = naive_pages(&root, heavy, &compacted.spans).await;
        naive.report("baseline: page's month files decoded whole");
        assert_eq!(compacted.rows, heavy_events, "every event of the user, once");
        assert_eq!(uncompacted.rows, heavy_events);
        let mb = |p: &Pages| p.bytes.iter().sum::<u64>() as f64 / p.bytes.len() as f64;
        let gets = |p: &Pages| p.gets.iter().sum::<u64>() as f64 / p.gets.len() as f64;
        println!(
            "ratios: compaction cuts the S3-like p99 {:.1}x and the GETs per page {:.0}x; the reader fetches {:.1}x fewer bytes per page than the baseline (local p50: {:.1}x)",
            uncompacted_s3.p99_ms() / s3.p99_ms(),
            gets(&uncompacted_s3) / gets(&s3).max(1.0),
            mb(&naive) / mb(&compacted),
            naive.p50_ms() / compacted.p50_ms()
        );
    });
}
