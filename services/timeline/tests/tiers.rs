//! One API over both tiers (SQLite hot tier with a 10-day window, the lake's history table):
//! a user's 60 days of events come back whole, in both orders, with no gap and no repeat at
//! the seam, pages full except the last; the seam moving between two pages (a build
//! finished) changes nothing for the reader; the time range and the types hold across the
//! seam; payloads come from either tier and equal what the lake holds; a user without events
//! gets an empty page.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Backend, Harness, event, item_options};
use event_lake::PartitionKey;
use serde_json::Value;

const DAY: i64 = 86_400_000;

async fn write_lake(h: &Harness, events: &[Value]) {
    let mut parts: BTreeMap<PartitionKey, Vec<String>> = BTreeMap::new();
    for e in events {
        let key = PartitionKey::of(Arc::from(e["data"]["type"].as_str().unwrap()), e["meta"]["created_at"].as_i64().unwrap());
        parts.entry(key).or_default().push(e.to_string());
    }
    for (key, lines) in parts {
        h.lake.write_events(&key, lines.iter().map(|l| l.as_bytes())).await.expect("lake");
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_whole_across_the_hot_and_cold_seam() {
    let mut opts = item_options(&[]);
    opts.hot_window_secs = 10 * 86_400;
    let now = chrono::Utc::now().timestamp_millis();
    // The seam 3 days ago: the last 3 days from the hot tier, the rest from the lake.
    let mut h = Harness::with_cold(Backend::Sqlite, "tiers", opts, 3 * DAY).await;
    let types = ["product_viewed", "product_liked"];
    let events: Vec<Value> = (0..400)
        .map(|i| {
            let user = if i % 4 == 3 { "u2" } else { "u1" };
            event(&format!("e{i:03}"), types[i % 2], Some(user), now - (i as i64 * 3_600_000 * 36 / 10) % (60 * DAY) - 1000)
        })
        .collect();
    // The bus (hot items for the last 10 days) and the lake (everything), then a build.
    h.publish(&events).await;
    write_lake(&h, &events).await;
    let paths = timeline::user::UserPaths::new(&["data.attributes.user_id".into()], &Default::default()).unwrap();
    timeline::history::build(&h.lake, &paths, &Default::default()).await.expect("build");

    let mut want: Vec<&Value> = events.iter().filter(|e| e["data"]["attributes"]["user_id"] == "u1").collect();
    want.sort_by_key(|e| (e["meta"]["created_at"].as_i64().unwrap(), e["data"]["id"].as_str().unwrap().to_owned()));
    let want_ids: Vec<String> = want.iter().map(|e| e["data"]["id"].as_str().unwrap().to_owned()).collect();
    for limit in [7, 100, 1000] {
        let (asc, sizes) = h.all_pages("u1", "order=asc", limit).await;
        assert_eq!(ids(&asc), want_ids, "oldest first, limit {limit}");
        assert!(sizes.len() <= want_ids.len().div_ceil(limit) + 1, "{} pages of {limit} for {}", sizes.len(), want_ids.len());
        assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == limit), "pages full except the last: {sizes:?}");
        let (desc, _) = h.all_pages("u1", "order=desc", limit).await;
        let mut rev = want_ids.clone();
        rev.reverse();
        assert_eq!(ids(&desc), rev, "newest first, limit {limit}");
    }
    // Both tiers answered: cold events do not expire, hot ones do.
    let (all, _) = h.all_pages("u1", "order=asc", 1000).await;
    assert!(all.iter().any(|e| e["expires_at"] == 0) && all.iter().any(|e| e["expires_at"].as_i64().unwrap() > 0));

    // The seam moves between two pages (a build finished): nothing is lost or repeated.
    let cold = h.cold.clone().unwrap();
    let (mut got, mut cursor) = (Vec::new(), None::<String>);
    for page in 0.. {
        if page == 3 {
            cold.set_lateness_ms(DAY);
        }
        if page == 6 {
            cold.set_lateness_ms(5 * DAY);
        }
        let q = match &cursor {
            Some(c) => format!("order=desc&limit=20&cursor={c}"),
            None => "order=desc&limit=20".to_owned(),
        };
        let (status, body) = h.get("u1", &q).await;
        assert_eq!(status, 200, "{body}");
        got.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut rev = want_ids.clone();
    rev.reverse();
    assert_eq!(ids(&got), rev, "paging while the seam moves");
    cold.set_lateness_ms(3 * DAY);

    // A range and a type across the seam.
    let (from, to) = (now - 20 * DAY, now - DAY);
    let (ranged, _) = h.all_pages("u1", &format!("order=asc&from={from}&to={to}&types=product_liked"), 9).await;
    let want_ranged: Vec<String> = want
        .iter()
        .filter(|e| {
            let t = e["meta"]["created_at"].as_i64().unwrap();
            t >= from && t < to && e["data"]["type"] == "product_liked"
        })
        .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&ranged), want_ranged);

    // Payloads from either tier: the event as the lake holds it.
    let (with_payloads, _) = h.all_pages("u1", "order=desc&include=payload", 100).await;
    let by_id: BTreeMap<&str, &Value> = want.iter().map(|e| (e["data"]["id"].as_str().unwrap(), *e)).collect();
    for e in &with_payloads {
        let sent = by_id[e["id"].as_str().unwrap()];
        assert_eq!(&e["payload"], sent, "payload of {}", e["id"]);
    }

    // Nobody.
    let (status, body) = h.get("nobody", "order=desc").await;
    assert_eq!(status, 200);
    assert_eq!(body["events"], serde_json::json!([]));
    h.finish().await;
}
