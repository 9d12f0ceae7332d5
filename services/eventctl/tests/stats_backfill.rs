//! `eventctl stats backfill` as an operator runs it: generated events ingested into a local
//! lake, the day recomputed into a SQLite statistics database (counts equal a direct count of
//! the generated events, the distinct metrics each owner's distinct products of the day), a
//! rerun gives the same day, and today is refused.

use std::collections::HashMap;
use std::process::Command;

fn eventctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eventctl"))
}

#[test]
fn backfill_recomputes_a_day_from_the_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let events = dir.path().join("events.ndjson");
    let db = format!("sqlite://{}/stats.db", dir.path().display());
    let generated = eventctl()
        .args(["gen", "-n", "4000", "--users", "30", "--start", "2026-01-10T00:00:00Z", "--hours", "24", "--out"])
        .arg(&events)
        .output()
        .expect("gen");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let ingest = eventctl().args(["ingest", "--json", "--no-progress", "--lake"]).arg(&lake).arg(&events).output().expect("ingest");
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));

    // The expected counts, straight from the generated lines (valid events of 2026-01-10).
    let mut expected: HashMap<&str, i64> = HashMap::new();
    // Distinct metrics: (owner, metric) -> the distinct products of the day.
    let mut products: HashMap<(String, &str), std::collections::BTreeSet<String>> = HashMap::new();
    let text = std::fs::read_to_string(&events).expect("read");
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(ty), Some(id)) = (v["data"]["type"].as_str(), v["data"]["id"].as_str()) else { continue };
        let Some(at) = v["meta"]["created_at"].as_i64() else { continue };
        if at.div_euclid(86_400_000) != 20_463 || !seen.insert((ty.to_owned(), id.to_owned())) {
            continue; // another day, or a repeated id
        }
        let (metric, field) = match ty {
            "product_contacted" => ("products_contacted", "owner_id"),
            "product_favorited" => ("favorites_received", "owner_id"),
            "product_viewed" => ("views_received", "owner_id"),
            "conversation_started" => ("conversations_started", "user_id"),
            "product_sold" => ("products_sold", "owner_id"),
            _ => continue,
        };
        if let Some(user) = v["data"]["attributes"][field].as_str().filter(|u| !u.is_empty()) {
            *expected.entry(metric).or_default() += 1;
            if let Some(p) = v["data"]["attributes"]["product_id"].as_str().filter(|_| ty == "product_contacted" || ty == "product_sold") {
                products.entry((user.to_owned(), metric)).or_default().insert(p.to_owned());
            }
        }
    }
    assert!(products.values().any(|p| p.len() > 1), "sellers with several products");
    assert!(expected.values().sum::<i64>() > 100, "the generator made business events: {expected:?}");

    for _ in 0..2 {
        let out = eventctl()
            .args(["stats", "backfill", "--date", "2026-01-10", "--json", "--lake"])
            .arg(&lake)
            .args(["--database-url", &db])
            .output()
            .expect("backfill");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
        assert_eq!(report["counted"].as_i64(), Some(expected.values().sum::<i64>()), "{report}");
    }
    // The distinct metrics hold each owner's distinct products of the day.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = stats::Store::open(&db, "public", 1, false).await.expect("open the statistics database");
        let day = stats::definitions::day_number(chrono::NaiveDate::from_ymd_opt(2026, 1, 10).expect("date"));
        for ((owner, metric), set) in &products {
            let stored = store.distinct_values(owner, metric, day).await.expect("values");
            assert_eq!(stored, set.iter().cloned().collect::<Vec<_>>(), "{owner} {metric}");
            let counts = store.user_stats(owner, day, day, Some(day)).await.expect("counts");
            assert!(counts.days.iter().any(|c| c.metric == *metric && c.count == set.len() as i64), "{owner} {metric}: {counts:?}");
        }
    });
    // Today is refused: the live aggregator is still counting it.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let out = eventctl().args(["stats", "backfill", "--date", &today, "--lake"]).arg(&lake).args(["--database-url", &db]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a closed day"));
    // `yesterday` (the daily CronJob's argument) names the day before today (UTC).
    let out = eventctl().args(["stats", "backfill", "--date", "yesterday", "--json", "--lake"]).arg(&lake).args(["--database-url", &db]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yesterday = (chrono::Utc::now().date_naive() - chrono::Days::new(1)).format("%Y-%m-%d").to_string();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&yesterday), "{}", String::from_utf8_lossy(&out.stdout));
}
