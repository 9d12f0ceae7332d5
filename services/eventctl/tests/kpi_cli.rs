//! `eventctl kpi` and `eventctl query` as users run them, on a lake made by `eventctl gen` +
//! `eventctl ingest` (two days of events, schema evolution included):
//! - every KPI equals an independent computation by DuckDB over the same Parquet files;
//! - the KPIs hand-made shards could not merge (a median, a top 10 with ties broken) too;
//! - the same events in an S3 lake (the S3-compatible server on 127.0.0.1) give the same KPIs;
//! - `query` output formats (table, CSV, JSON, Parquet) and its read report.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

mod common;

use common::lakes::{DAY, duckdb, duckdb_kpis, ingest, json, kpi, make_lake};
use common::{eventctl, ok};

#[test]
fn kpis_match_duckdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().expect("utf8");
    make_lake(dir.path(), lake);

    // The whole day, in one run.
    let single_dir = dir.path().join("single");
    let single = kpi(lake, &single_dir, &[]);
    let expected = duckdb_kpis(&lake_dir);
    assert_eq!(single["kpis"], expected, "eventctl kpi disagrees with DuckDB");
    assert!(single["kpis"]["daily_active_users"].as_u64().expect("dau") > 100);
    assert!(single["read"]["bytes_read"].as_u64().expect("bytes") > 0);
    for f in ["kpis.json", "kpis.csv", "events_by_type_hour.csv", "hourly_volume.png"] {
        let p = single_dir.join(f);
        assert!(std::fs::metadata(&p).is_ok_and(|m| m.len() > 0), "{} missing", p.display());
    }
    let png = std::fs::read(single_dir.join("hourly_volume.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let csv = std::fs::read_to_string(single_dir.join("kpis.csv")).expect("csv");
    assert!(csv.contains(&format!("daily_active_users,{}\n", expected["daily_active_users"])), "{csv}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(single_dir.join("kpis.json")).expect("json")).expect("kpis.json");
    assert_eq!(on_disk["kpis"], single["kpis"]);

    assert!(single["read"]["scanned_bytes"].as_u64().expect("scanned") > 0);
    assert_eq!(single["engine"], "local");
    let top = single["kpis"]["top_sellers"].as_array().expect("top sellers rows");
    assert_eq!(top.len(), 10, "{top:?}");
    let csv = std::fs::read_to_string(single_dir.join("top_sellers.csv")).expect("top_sellers.csv");
    assert!(csv.starts_with("seller_id,gmv_cents,sales\n"), "the query's column order: {csv}");
}

#[test]
fn kpis_from_an_s3_lake_equal_the_local_ones() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh"));
    let bucket = format!("kpi-{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    assert!(Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]).status().expect("curl").success());
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let input = make_lake(dir.path(), lake_dir.to_str().expect("utf8"));
    let s3 = format!("s3://{bucket}/lake");
    ingest(&s3, &input);
    let local = kpi(lake_dir.to_str().expect("utf8"), &dir.path().join("local"), &[]);
    let remote = kpi(&s3, &dir.path().join("s3"), &[]);
    assert_eq!(remote["kpis"], local["kpis"]);
    assert!(remote["read"]["bytes_read"].as_u64().expect("bytes") > 0);
}

#[test]
fn query_prints_tables_csv_json_and_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let lake = lake_dir.to_str().expect("utf8");
    make_lake(dir.path(), lake);
    let sql = format!("SELECT hour, count(*) AS n, count(DISTINCT user_id) AS users FROM product_viewed WHERE date = '{DAY}' AND hour < 3 GROUP BY hour ORDER BY hour");
    let want = duckdb(&format!(
        "SELECT CAST(hour AS BIGINT), count(*), count(DISTINCT user_id) FROM read_parquet('{}/events/type=product_viewed/date={DAY}/*/*.parquet', hive_partitioning=true) WHERE CAST(hour AS INTEGER) < 3 GROUP BY ALL ORDER BY ALL",
        lake_dir.display()
    ));
    assert_eq!(want.len(), 3);

    let csv = ok(eventctl().args(["query", "--lake", lake, "--format", "csv", &sql]).output().expect("csv"));
    let text = String::from_utf8(csv.stdout).expect("utf8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("hour,n,users"));
    let got: Vec<Vec<Value>> = lines.map(|l| l.split(',').map(|c| Value::from(c.parse::<i64>().expect("int"))).collect()).collect();
    assert_eq!(got, want);
    // The read report: only the three hours' files of one type were read.
    let stats = String::from_utf8_lossy(&csv.stderr);
    assert!(stats.contains("from 3 files"), "{stats}");

    let js = ok(eventctl().args(["query", "--lake", lake, "--format", "json", "--stats", &sql]).output().expect("json"));
    let rows: Vec<Value> = js.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).expect("ndjson")).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["n"], want[1][1]);
    let st: Value = serde_json::from_slice(&js.stderr).expect("--stats JSON on stderr");
    assert_eq!(st["read"]["files_read"], 3);

    let table = ok(eventctl().args(["query", "--lake", lake, &sql]).output().expect("table"));
    let t = String::from_utf8(table.stdout).expect("utf8");
    assert!(t.contains("| hour |") && t.contains(&format!("| {} ", want[2][1])), "{t}");

    let pq = dir.path().join("out.parquet");
    ok(eventctl().args(["query", "--lake", lake, "--format", "parquet", "--out", pq.to_str().expect("utf8"), &sql]).output().expect("parquet"));
    let back = duckdb(&format!("SELECT CAST(hour AS BIGINT), n, users FROM read_parquet('{}') ORDER BY 1", pq.display()));
    assert_eq!(back, want);

    // Errors are readable: unknown table, bad SQL.
    let out = eventctl().args(["query", "--lake", lake, "SELECT * FROM no_such_type"]).output().expect("bad");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_type"));
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let out = ok(eventctl().args(["query", "--lake", lake, "--format", "csv", &format!("SELECT type, count(*) AS n FROM lake.events WHERE date = '{DAY}' AND type IN ('product_sold', 'user_created') GROUP BY type")]).output().expect("union"));
    for l in String::from_utf8(out.stdout).expect("utf8").lines().skip(1) {
        let (t, n) = l.split_once(',').expect("2 columns");
        counts.insert(t.to_owned(), n.parse().expect("n"));
    }
    assert_eq!(counts.len(), 2);
}

/// One KPI that cannot be computed on this lake (its `product_sold` events carry
/// `price_cents`, not the `price` the built-in `sales` KPI reads) is reported with its reason
/// and a non-zero exit; every other KPI is computed and written. With `--kpis DIR`, the
/// business's own KPI files run instead (issue 30).
#[test]
fn a_broken_kpi_is_reported_and_the_others_are_written_and_own_kpi_files_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let t0: i64 = 1_795_428_000_000; // DAY 10:00 UTC
    let mut lines = Vec::new();
    for i in 0..30 {
        lines.push(format!(r#"{{"data":{{"id":"u{i}","type":"user_created","attributes":{{"user_id":"u{i}"}}}},"meta":{{"created_at":{}}}}}"#, t0 + i));
    }
    for i in 0..10 {
        lines.push(format!(
            r#"{{"data":{{"id":"s{i}","type":"product_sold","attributes":{{"user_id":"u{i}","product_id":"p{i}","price_cents":{}}}}},"meta":{{"created_at":{}}}}}"#,
            1000 + i,
            t0 + 100 + i
        ));
    }
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    ingest(lake, &input);

    let out_dir = dir.path().join("kpis-out");
    let out = eventctl()
        .args(["kpi", "--date", DAY, "--json", "--lake", lake, "--out", out_dir.to_str().expect("utf8")])
        .output()
        .expect("kpi");
    assert_eq!(out.status.code(), Some(1), "a failed KPI makes the exit code non-zero: {}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    let why = report["failed"]["sales"].as_str().unwrap_or_else(|| panic!("sales reported failed: {report}"));
    assert!(why.contains("price"), "the reason names the column: {why}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("KPI sales failed"), "{}", String::from_utf8_lossy(&out.stderr));
    // The others are computed and written.
    assert_eq!(report["kpis"]["new_users"], 30, "{report}");
    assert_eq!(report["kpis"]["products_sold"], 10, "{report}");
    assert_eq!(report["kpis"]["daily_active_users"], 30, "{report}");
    let written: Value = serde_json::from_slice(&std::fs::read(out_dir.join("kpis.json")).expect("kpis.json written")).expect("json");
    assert_eq!(written["kpis"]["new_users"], 30);
    assert!(written["kpis"].get("sales").is_none() && written["failed"]["sales"].is_string());

    // The business's own KPI files.
    let kpis = dir.path().join("our-kpis");
    std::fs::create_dir_all(&kpis).expect("mkdir");
    std::fs::write(
        kpis.join("sales_cents.sql"),
        "-- kpi: sales\n-- title: Sales and GMV (cents)\n-- merge: sum\n-- tables: product_sold\nSELECT count(*) AS sales, coalesce(sum(price_cents), 0) AS gmv_cents FROM product_sold WHERE date = DATE '{date}'\n",
    )
    .expect("write");
    let ours = kpi(lake, &dir.path().join("ours-out"), &["--kpis", kpis.to_str().expect("utf8")]);
    assert_eq!(ours["kpis"]["sales"], serde_json::json!({"sales": 10, "gmv_cents": (1000..1010).sum::<i64>()}), "{ours}");
    assert_eq!(ours["kpis"].as_object().map(|m| m.len()), Some(1), "only the folder's KPIs run: {ours}");
    // A folder without KPI files is refused with a clear message.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = eventctl().args(["kpi", "--date", DAY, "--lake", lake, "--kpis", empty.to_str().expect("utf8")]).output().expect("kpi");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no *.sql KPI files"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The top 10 sellers is the same list on every run: equal GMVs are ordered by seller id; the
/// median order value is exact (a KPI no merge of shards could give).
#[test]
fn top_sellers_break_ties_by_seller_id_and_the_median_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let t0: i64 = 1_795_428_000_000; // DAY 10:00 UTC
    // Sellers o1..o12 sell one product each for 10.00; o12 sells a second one for 30.00.
    let mut lines = Vec::new();
    for i in 1..=12 {
        lines.push(format!(
            r#"{{"data":{{"id":"s{i}","type":"product_sold","attributes":{{"user_id":"b{i}","product_id":"p{i}","owner_id":"o{i}","price":10.0}}}},"meta":{{"created_at":{}}}}}"#,
            t0 + i
        ));
    }
    lines.push(format!(
        r#"{{"data":{{"id":"s13","type":"product_sold","attributes":{{"user_id":"b1","product_id":"p13","owner_id":"o12","price":30.0}}}},"meta":{{"created_at":{}}}}}"#,
        t0 + 13
    ));
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    ingest(lake, &input);
    let report = kpi(lake, &dir.path().join("out"), &[]);
    let sellers: Vec<&str> = report["kpis"]["top_sellers"].as_array().expect("rows").iter().map(|r| r["seller_id"].as_str().expect("id")).collect();
    assert_eq!(sellers, ["o12", "o1", "o10", "o11", "o2", "o3", "o4", "o5", "o6", "o7"], "{report}");
    assert_eq!(report["kpis"]["top_sellers"][0]["gmv_cents"], 4000);
    assert_eq!(report["kpis"]["median_order_value"], 1000.0, "{report}");
    assert_eq!(report["kpis"]["new_users"], serde_json::json!([]), "a type the lake never held: empty, not failed");
}

/// A build without the `cluster` feature says how to get it rather than failing obscurely.
#[cfg(not(feature = "cluster"))]
#[test]
fn a_build_without_the_cluster_feature_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = eventctl()
        .args(["kpi", "--date", DAY, "--lake", dir.path().to_str().expect("utf8"), "--cluster", "127.0.0.1:50050"])
        .output()
        .expect("kpi");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--features cluster"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = eventctl().args(["cluster", "scheduler"]).output().expect("cluster");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster"), "{}", String::from_utf8_lossy(&out.stderr));
}
