//! `eventctl features export` and `eventctl features backfill` as users run them:
//! - the point-in-time export of a spine (CSV, and the same spine as Parquet) equals, row by
//!   row, what the online store answered at those instants while the same events were
//!   replayed through it in time order (lists, unknown products and instants before any
//!   event included);
//! - the rebuild writes Redis, refuses a store that holds windows, and rebuilds with
//!   `--reset`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::{eventctl, ok};
use features::layout::{Batch, Hit};
use features::{Layout, MemoryStore, WindowStore};

const HOUR: i64 = 3_600_000;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Events of the counted types (and one uncounted) over nine days before `end`.
fn events(n: usize, end: i64) -> Vec<(i64, String)> {
    let mut rng = Lcg(5);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = end - (rng.next() % (9 * 24 * HOUR as u64)) as i64;
        let p = |rng: &mut Lcg| format!("p{}", rng.next() % 8);
        let (ty, attributes) = match i % 5 {
            0 => ("product_viewed", serde_json::json!({"product_id": p(&mut rng)})),
            1 => ("search_results_shown", serde_json::json!({"product_ids": (0..4).map(|_| p(&mut rng)).collect::<Vec<_>>()})),
            2 => ("product_favorited", serde_json::json!({"product_id": p(&mut rng)})),
            3 => ("conversation_started", serde_json::json!({"product_id": p(&mut rng)})),
            _ => ("product_sold", serde_json::json!({"product_id": p(&mut rng)})),
        };
        out.push((t, serde_json::json!({"data": {"id": format!("x{i}"), "type": ty, "attributes": attributes}, "meta": {"created_at": t}}).to_string()));
    }
    out
}

/// Replays the events in time order through an in-memory online store (each arriving at its
/// event time) and reads it at each spine instant: the values the store served.
fn served(events: &[(i64, String)], spine: &[(String, i64)]) -> Vec<Vec<i64>> {
    let layout = Layout::default_layout();
    let store = MemoryStore::new(layout.clone(), 1_000_000, 1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut order: Vec<usize> = (0..spine.len()).collect();
    order.sort_by_key(|&i| spine[i].1);
    let mut sorted: Vec<&(i64, String)> = events.iter().collect();
    sorted.sort_by_key(|e| e.0);
    let mut out = vec![Vec::new(); spine.len()];
    rt.block_on(async {
        let (mut next, mut seq) = (0, 0);
        loop {
            let event = sorted.get(seq).map(|e| e.0);
            match (event, order.get(next)) {
                // A sample before the next event (or after the last): the store at its instant.
                (_, Some(&i)) if event.is_none_or(|t| spine[i].1 < t) => {
                    let (p, ts) = &spine[i];
                    while !store.expire(*ts).await.unwrap().complete {}
                    out[i] = store.read(std::slice::from_ref(p)).await.unwrap().values.remove(0);
                    next += 1;
                }
                // The next event arrives at its event time.
                (Some(t), _) => {
                    let body = &sorted[seq].1;
                    seq += 1;
                    let event_type = serde_json::from_str::<serde_json::Value>(body).unwrap()["data"]["type"].as_str().unwrap().to_owned();
                    if let Some(c) = layout.hit_of(&event_type, body.as_bytes(), t) {
                        let hits = c.products.into_iter().map(|product| Hit { product, counter: c.counter, t_ms: c.t_ms, source: 0, seq: seq as u64 }).collect();
                        let batch = Batch { now_ms: t, sources: vec!["s".into()], positions: vec![(0, seq as u64)], hits, marks: Vec::new(), unmarked: false };
                        store.apply(&batch).await.unwrap();
                    }
                }
                (None, _) => break,
            }
        }
    });
    out
}

fn read_output(path: &std::path::Path) -> Vec<(String, i64, Vec<i64>)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names[..2], ["product_id".to_owned(), "ts".to_owned()]);
        assert_eq!(names[2..], Layout::default_layout().columns().to_vec(), "one column per counter and window, named as in the API");
        let p = batch.column(0).as_string::<i32>();
        let ts = batch.column(1).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            let values = (2..batch.num_columns()).map(|c| batch.column(c).as_primitive::<Int64Type>().value(r)).collect();
            rows.push((p.value(r).to_owned(), ts.value(r), values));
        }
    }
    rows
}

#[test]
fn the_export_equals_what_the_online_store_served_at_each_instant() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let end = chrono::Utc::now().timestamp_millis() - 24 * HOUR;
    let evs = events(4000, end);
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, evs.iter().map(|e| format!("{}\n", e.1)).collect::<String>()).unwrap();
    ok(eventctl().args(["ingest", "--lake", lake.to_str().unwrap(), input.to_str().unwrap()]).output().expect("ingest"));

    // 300 rows: known and unknown products, instants across the span, on bucket edges, and
    // before the first event; not sorted.
    let mut rng = Lcg(9);
    let mut spine: Vec<(String, i64)> = (0..300)
        .map(|k| {
            let product = format!("p{}", rng.next() % 10); // p8, p9: no events
            let ts = match k % 4 {
                0 => end - (rng.next() % (9 * 24 * HOUR as u64)) as i64,
                1 => (end - (rng.next() % (8 * 24 * HOUR as u64)) as i64).div_euclid(60_000) * 60_000,
                2 => (end - (rng.next() % (8 * 24 * HOUR as u64)) as i64).div_euclid(HOUR) * HOUR - 1,
                _ => evs[(rng.next() as usize) % evs.len()].0,
            };
            (product, ts)
        })
        .collect();
    spine.push(("p1".into(), end - 10 * 24 * HOUR));
    let want = served(&evs, &spine);
    assert!(want.iter().filter(|v| v.iter().any(|&x| x > 0)).count() > 200, "most rows have counts");

    let csv = dir.path().join("spine.csv");
    std::fs::write(&csv, std::iter::once("product_id,ts\n".to_owned()).chain(spine.iter().map(|(p, t)| format!("{p},{t}\n"))).collect::<String>()).unwrap();
    let out = dir.path().join("train.parquet");
    let report = ok(eventctl().args(["features", "export", "--json", "--lake", lake.to_str().unwrap(), "--spine", csv.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().expect("export"));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).expect("json report");
    assert_eq!(report["rows"], spine.len());
    let rows = read_output(&out);
    assert_eq!(rows.len(), spine.len(), "one row per spine row");
    for (k, ((p, ts), v)) in spine.iter().zip(&want).enumerate() {
        assert_eq!((&rows[k].0, rows[k].1), (p, *ts), "row {k} in spine order");
        assert_eq!(&rows[k].2, v, "row {k}: {p} at {ts}");
    }

    // The same spine as Parquet gives the same file contents.
    let pq = dir.path().join("spine.parquet");
    {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        let batch = RecordBatch::try_from_iter([
            ("product_id", Arc::new(StringArray::from_iter_values(spine.iter().map(|s| s.0.as_str()))) as ArrayRef),
            ("ts", Arc::new(Int64Array::from_iter_values(spine.iter().map(|s| s.1))) as ArrayRef),
        ])
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    let out2 = dir.path().join("train2.parquet");
    ok(eventctl().args(["features", "export", "--lake", lake.to_str().unwrap(), "--spine", pq.to_str().unwrap(), "--out", out2.to_str().unwrap()]).output().expect("export"));
    assert_eq!(read_output(&out2), rows);

    // A spine without the columns is refused with a readable reason.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "product,time\np1,1\n").unwrap();
    let r = eventctl().args(["features", "export", "--lake", lake.to_str().unwrap(), "--spine", bad.to_str().unwrap(), "--out", out2.to_str().unwrap()]).output().unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("product_id and ts"), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn backfill_rebuilds_redis_and_refuses_a_store_holding_windows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let now = chrono::Utc::now().timestamp_millis();
    let evs = events(500, now);
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, evs.iter().map(|e| format!("{}\n", e.1)).collect::<String>()).unwrap();
    ok(eventctl().args(["ingest", "--lake", lake.to_str().unwrap(), input.to_str().unwrap()]).output().expect("ingest"));
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("test:eventctl-backfill:{}:{now}:", std::process::id());
    let run = |extra: &[&str]| {
        eventctl()
            .args(["features", "backfill", "--lake", lake.to_str().unwrap(), "--redis", &redis])
            .args(extra)
            .env("FEATURES_KEY_PREFIX", &prefix)
            .output()
            .expect("backfill")
    };
    let first = ok(run(&["--json"]));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert!(report["handover"]["events"].as_u64().unwrap() > 250, "{report}");
    assert_eq!(report["handover"]["done"], true);
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--reset"), "{}", String::from_utf8_lossy(&again.stderr));
    let reset = ok(run(&["--reset"]));
    assert!(String::from_utf8_lossy(&reset.stdout).contains("rebuilt"), "{}", String::from_utf8_lossy(&reset.stdout));
    // The windows are in Redis under the prefix, with the handover record.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let options = features::RedisStoreOptions {
            url: redis.clone(),
            prefix: prefix.clone(),
            dedup_ttl_secs: 3600,
            expire_budget: 1000,
            timeout: std::time::Duration::from_secs(5),
            read_connections: 1,
        };
        let store = features::RedisStore::connect(Layout::default_layout(), options).await.unwrap();
        let handover = store.handover().await.unwrap().expect("handover record");
        assert!(handover.done && !handover.rewound);
        let sums = store.read(&(0..8).map(|p| format!("p{p}")).collect::<Vec<_>>()).await.unwrap();
        assert!(sums.values.iter().all(|v| v[2] > 0), "7d impressions of every product: {:?}", sums.values);
        store.clear().await.unwrap();
        assert!(store.is_empty().await.unwrap());
    });
}
