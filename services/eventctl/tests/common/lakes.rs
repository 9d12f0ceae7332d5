//! A lake of generated events and the KPIs DuckDB computes over it, for the KPI tests (run here
//! and on a cluster).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{eventctl, ok};

/// The day the KPIs are computed for.
pub const DAY: &str = "2026-11-23";

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Generates 36 hours of events from DAY 00:00 UTC and ingests them into `lake`.
pub fn make_lake(dir: &Path, lake: &str) -> std::path::PathBuf {
    let input = dir.join("events.ndjson");
    ok(eventctl()
        .args(["gen", "--events", "24000", "--types", "40", "--hours", "36", "--seed", "5", "--size", "600", "--users", "3000"])
        .args(["--products", "5000", "--start", &format!("{DAY}T00:00:00Z"), "--out", input.to_str().expect("utf8")])
        .output()
        .expect("gen"));
    ingest(lake, &input);
    input
}

pub fn ingest(lake: &str, input: &Path) {
    ok(eventctl().args(["ingest", "--json", "--no-progress", "--lake", lake, input.to_str().expect("utf8")]).output().expect("ingest"));
}

/// Runs SQL in DuckDB (the tools venv of scripts/services.sh); rows as JSON arrays.
pub fn duckdb(sql: &str) -> Vec<Vec<Value>> {
    let python = std::env::var("EVENTPLAT_PYTHON")
        .unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh (it installs DuckDB)"));
    let script = "import duckdb, json, sys\nrows = duckdb.sql(sys.argv[1]).fetchall()\nprint(json.dumps([list(r) for r in rows], default=str))";
    let out = Command::new(python).args(["-c", script, sql]).output().expect("run python");
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("duckdb rows as JSON")
}

pub fn duck_scalar(sql: &str) -> i64 {
    duckdb(sql)[0][0].as_i64().unwrap_or_else(|| panic!("no integer from {sql}"))
}

/// The KPIs computed by DuckDB, in the shape of `eventctl kpi --json`'s `kpis`.
pub fn duckdb_kpis(lake: &Path) -> Value {
    let day = |t: &str| format!("read_parquet('{}/events/type={t}/date={DAY}/*/*.parquet', hive_partitioning=true, union_by_name=true)", lake.display());
    let all = day("*");
    let mut by_type_hour = Vec::new();
    for r in duckdb(&format!("SELECT type, CAST(hour AS BIGINT), count(*) FROM {all} GROUP BY ALL ORDER BY ALL")) {
        by_type_hour.push(serde_json::json!({"type": r[0], "hour": r[1], "events": r[2]}));
    }
    let mut top_sellers = Vec::new();
    for r in duckdb(&format!(
        "SELECT owner_id, CAST(sum(CAST(round(price * 100) AS BIGINT)) AS BIGINT) AS g, count(*) FROM {} \
         WHERE owner_id IS NOT NULL GROUP BY owner_id ORDER BY g DESC, owner_id ASC LIMIT 10",
        day("product_sold")
    )) {
        top_sellers.push(serde_json::json!({"seller_id": r[0], "gmv_cents": r[1], "sales": r[2]}));
    }
    serde_json::json!({
        "daily_active_users": duck_scalar(&format!("SELECT count(DISTINCT user_id) FROM {all}")),
        "new_users": duck_scalar(&format!("SELECT count(DISTINCT user_id) FROM {}", day("user_created"))),
        "products_listed": duck_scalar(&format!("SELECT count(DISTINCT product_id) FROM {}", day("product_listed"))),
        "products_contacted": duck_scalar(&format!("SELECT count(DISTINCT product_id) FROM {}", day("product_contacted"))),
        "products_sold": duck_scalar(&format!("SELECT count(DISTINCT product_id) FROM {}", day("product_sold"))),
        "sales": {
            "sales": duck_scalar(&format!("SELECT count(*) FROM {}", day("product_sold"))),
            "gmv_cents": duck_scalar(&format!("SELECT CAST(sum(CAST(round(price * 100) AS BIGINT)) AS BIGINT) FROM {}", day("product_sold"))),
        },
        "conversations_started": duck_scalar(&format!("SELECT count(*) FROM {}", day("conversation_started"))),
        "median_order_value": duckdb(&format!("SELECT median(CAST(round(price * 100) AS DOUBLE)) FROM {}", day("product_sold")))[0][0],
        "top_sellers": top_sellers,
        "events_by_type_hour": by_type_hour,
    })
}

pub fn kpi(lake: &str, out: &Path, extra: &[&str]) -> Value {
    json(&ok(eventctl()
        .args(["kpi", "--date", DAY, "--json", "--lake", lake, "--out", out.to_str().expect("utf8")])
        .args(extra)
        .output()
        .expect("kpi")))
}

