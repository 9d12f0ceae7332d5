//! One suite, two backends: every test runs against SQLite (temporary file) and against a
//! DynamoDB-compatible server (a unique table on the stand-in at `AWS_ENDPOINT_URL`), with
//! the same assertions, through the bus consumer and the HTTP API as internal teams use it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{Backend, Harness, KEY, REVOKED, event, get_with_key, ids, item_options, t0};
use serde_json::Value;
use timeline::item::{Item, sort_key};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name(Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dynamodb() { super::$name(Backend::Dynamo).await }
        })*
    };
}

both_backends!(
    pages_and_cursors_walk_every_event_once_in_time_order,
    time_ranges_are_half_open_and_accept_rfc3339,
    type_filters_page_across_other_types,
    a_redelivered_event_overwrites_its_own_item,
    a_user_without_events_gets_an_empty_page,
    events_without_a_user_are_counted_and_skipped,
    bad_requests_and_auth_are_refused,
    expired_items_are_hidden,
    include_payload_reads_full_events_from_the_lake,
);

async fn pages_and_cursors_walk_every_event_once_in_time_order(backend: Backend) {
    let mut h = Harness::new(backend, "pages").await;
    let t = t0();
    // 230 events of u1 (two per millisecond for some: ties ordered by id), 20 of u2.
    let mut events: Vec<Value> = (0..230).map(|i| event(&format!("e{i:04}"), "product_viewed", Some("u1"), t + (i / 2) as i64)).collect();
    events.extend((0..20).map(|i| event(&format!("o{i}"), "product_viewed", Some("u2"), t + i)));
    // Published out of order: the order comes from the sort key, not from arrival.
    events.reverse();
    h.publish(&events).await;

    let expected: Vec<String> = (0..230).map(|i| format!("e{i:04}")).collect();
    let (asc, sizes) = h.all_pages("u1", "order=asc", 100).await;
    assert_eq!(ids(&asc), expected);
    assert_eq!(sizes, vec![100, 100, 30], "full pages, then the rest; the last page has no cursor");
    let times: Vec<i64> = asc.iter().map(|e| e["created_at"].as_i64().expect("time")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(asc[0]["type"], "product_viewed");
    assert_eq!(asc[0]["attributes"]["product_id"], "p-e0000");
    assert_eq!(asc[0]["attributes_in_lake_only"], false);
    assert!(asc[0]["lake_partition"].as_str().expect("lake").starts_with("events/type=product_viewed/date="));

    let (desc, sizes) = h.all_pages("u1", "order=desc", 77).await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(ids(&desc), reversed);
    assert_eq!(sizes, vec![77, 77, 76]);

    // A page exactly as long as what is left has no cursor.
    let (all, sizes) = h.all_pages("u2", "", 20).await;
    assert_eq!((all.len(), sizes), (20, vec![20]));

    // Default limit 100; a cursor of one order is refused for the other.
    let (status, body) = h.get("u1", "").await;
    assert_eq!((status, body["events"].as_array().map(Vec::len)), (200, Some(100)));
    let cursor = body["next_cursor"].as_str().expect("cursor").to_owned();
    let (status, body) = h.get("u1", &format!("order=desc&cursor={cursor}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")));
    h.finish().await;
}

async fn time_ranges_are_half_open_and_accept_rfc3339(backend: Backend) {
    let mut h = Harness::new(backend, "ranges").await;
    let t = t0();
    let events: Vec<Value> = (0..60).map(|i| event(&format!("e{i:02}"), "product_viewed", Some("u1"), t + i * 1000)).collect();
    h.publish(&events).await;

    let (got, _) = h.all_pages("u1", &format!("from={}&to={}", t + 10_000, t + 20_000), 4).await;
    assert_eq!(ids(&got), (10..20).map(|i| format!("e{i:02}")).collect::<Vec<_>>(), "from inclusive, to exclusive");
    let (got, _) = h.all_pages("u1", &format!("from={}&to={}&order=desc", t + 10_001, t + 12_000), 10).await;
    assert_eq!(ids(&got), vec!["e11"]);
    let from = chrono::DateTime::from_timestamp_millis(t + 55_000).expect("time").to_rfc3339();
    let (got, _) = h.all_pages("u1", &format!("from={}", from.replace('+', "%2B")), 100).await;
    assert_eq!(ids(&got), (55..60).map(|i| format!("e{i:02}")).collect::<Vec<_>>());
    let (got, _) = h.all_pages("u1", &format!("to={t}"), 100).await;
    assert!(got.is_empty());
    h.finish().await;
}

async fn type_filters_page_across_other_types(backend: Backend) {
    let mut h = Harness::new(backend, "types").await;
    let t = t0();
    let kinds = ["product_viewed", "product_viewed", "product_viewed", "product_liked", "product_sold"];
    let events: Vec<Value> = (0..150).map(|i| event(&format!("e{i:03}"), kinds[i % kinds.len()], Some("u1"), t + i as i64)).collect();
    h.publish(&events).await;

    let (liked, sizes) = h.all_pages("u1", "types=product_liked", 7).await;
    assert_eq!(ids(&liked), (0..150).filter(|i| i % 5 == 3).map(|i| format!("e{i:03}")).collect::<Vec<_>>());
    assert!(sizes.iter().rev().skip(1).all(|&s| s == 7), "pages are filled across filtered-out items: {sizes:?}");
    let (two, _) = h.all_pages("u1", "types=product_liked,product_sold&order=desc", 1000).await;
    assert_eq!(two.len(), 60);
    assert!(two.iter().all(|e| e["type"] == "product_liked" || e["type"] == "product_sold"));
    let (none, _) = h.all_pages("u1", "types=user_signed_up", 10).await;
    assert!(none.is_empty());
    h.finish().await;
}

async fn a_redelivered_event_overwrites_its_own_item(backend: Backend) {
    let paths: &[&str] = &["data.attributes.user_id", "data.attributes.owner_id"];
    let mut h = Harness::with_options(backend, "redelivery", item_options(&[("product_sold", paths)])).await;
    let t = t0();
    let mut events: Vec<Value> = (0..40).map(|i| event(&format!("e{i:02}"), "product_viewed", Some("u1"), t + i)).collect();
    let mut sold = event("s1", "product_sold", Some("buyer"), t + 100);
    sold["data"]["attributes"]["owner_id"] = "seller".into();
    events.push(sold);
    h.publish(&events).await;
    // The same events again (a redelivery after a crash), twice, one batch with repeats.
    h.publish(&events).await;
    let mut doubled = events.clone();
    doubled.extend(events.iter().cloned());
    h.publish(&doubled).await;

    let (got, _) = h.all_pages("u1", "", 1000).await;
    assert_eq!(ids(&got), (0..40).map(|i| format!("e{i:02}")).collect::<Vec<_>>(), "no duplicates");
    for user in ["buyer", "seller"] {
        let (got, _) = h.all_pages(user, "", 10).await;
        assert_eq!(ids(&got), vec!["s1"], "an event naming two users is in both histories, once");
    }
    let stats = h.finish().await;
    assert_eq!(stats.acked, 41 * 4);
    assert_eq!(stats.items_written, 42 * 4);
}

async fn a_user_without_events_gets_an_empty_page(backend: Backend) {
    let mut h = Harness::new(backend, "nobody").await;
    h.publish(&[event("e1", "product_viewed", Some("u1"), t0())]).await;
    let (status, body) = h.get("nobody", "limit=1000&types=product_viewed").await;
    assert_eq!(status, 200);
    assert_eq!(body["user_id"], "nobody");
    assert_eq!(body["events"], Value::Array(vec![]));
    assert!(body.get("next_cursor").is_none());
    h.finish().await;
}

async fn events_without_a_user_are_counted_and_skipped(backend: Backend) {
    let mut h = Harness::new(backend, "nouser").await;
    let t = t0();
    let mut events = vec![event("a", "product_viewed", None, t), event("b", "product_viewed", Some("u1"), t + 1)];
    let mut numeric = event("c", "product_viewed", None, t + 2);
    numeric["data"]["attributes"]["user_id"] = 42.into();
    events.push(numeric);
    let mut null = event("d", "product_viewed", None, t + 3);
    null["data"]["attributes"]["user_id"] = Value::Null;
    events.push(null);
    h.publish(&events).await;
    assert_eq!(h.stats().skipped_no_user, 2);
    let (got, _) = h.all_pages("u1", "", 10).await;
    assert_eq!(ids(&got), vec!["b"]);
    let (got, _) = h.all_pages("42", "", 10).await;
    assert_eq!(ids(&got), vec!["c"], "numeric user ids are kept as their text");
    h.finish().await;
}

async fn bad_requests_and_auth_are_refused(backend: Backend) {
    let h = Harness::new(backend, "bad").await;
    for q in ["limit=0", "limit=1001", "limit=x", "order=up", "from=10&to=10", "from=yesterday", "types=a/b", "include=everything", "cursor=%21%21", "cursor=AWF4"] {
        let (status, body) = h.get("u1", q).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _) = h.get("u1", "include=payload&limit=101").await;
    assert_eq!(status, 400, "include=payload has its own bound");
    assert_eq!(get_with_key(&h.base, None, "u1", "").await.0, 401);
    assert_eq!(get_with_key(&h.base, Some("nope"), "u1", "").await.0, 401);
    assert_eq!(get_with_key(&h.base, Some(REVOKED), "u1", "").await.0, 403);
    assert_eq!(get_with_key(&h.base, Some(KEY), "u1", "limit=1000").await.0, 200);
    h.finish().await;
}

async fn expired_items_are_hidden(backend: Backend) {
    let h = Harness::new(backend, "expired").await;
    let now = chrono::Utc::now().timestamp();
    let item = |id: &str, expires_at: i64| Item {
        user: "u1".into(),
        sk: sort_key(t0(), id),
        event_type: "product_viewed".into(),
        attrs: None,
        lake: "events/type=product_viewed/date=2025-01-01/hour=00".into(),
        expires_at,
    };
    h.store.put_batch(&[item("old", now - 10), item("fresh", now + 3600)]).await.expect("put");
    let (got, _) = h.all_pages("u1", "", 10).await;
    assert_eq!(ids(&got), vec!["fresh"]);
    assert_eq!(got[0]["attributes_in_lake_only"], true);
    assert!(got[0].get("attributes").is_none());
    h.finish().await;
}

async fn include_payload_reads_full_events_from_the_lake(backend: Backend) {
    let mut h = Harness::new(backend, "payload").await;
    let t = t0();
    let events: Vec<Value> = (0..5).map(|i| event(&format!("e{i}"), "product_viewed", Some("u1"), t + i)).collect();
    h.publish(&events).await;
    // The lake writer's job, done here: the first three events committed to the lake.
    let key = event_lake::PartitionKey::of(std::sync::Arc::from("product_viewed"), t);
    let mut lines: Vec<Vec<u8>> = events[..3].iter().map(|e| e.to_string().into_bytes()).collect();
    // e0 as its producer sent it, with a number no f64 holds: the payload keeps its digits.
    let mut e0 = events[0].clone();
    e0["data"]["attributes"]["amount"] = serde_json::json!("AMOUNT");
    lines[0] = e0.to_string().replace("\"AMOUNT\"", "123456789012345678901234567890.000001").into_bytes();
    h.lake.write_events(&key, lines.iter().map(Vec::as_slice)).await.expect("write lake");
    let text = reqwest::Client::new()
        .get(format!("{}/v1/users/u1/events?include=payload&limit=5", h.base))
        .bearer_auth(common::KEY)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(text.contains(r#""amount":123456789012345678901234567890.000001"#), "{text}");

    let (status, body) = h.get("u1", "include=payload&limit=5").await;
    assert_eq!(status, 200, "{body}");
    let got = body["events"].as_array().expect("events");
    for (i, e) in got.iter().enumerate() {
        if i < 3 {
            assert_eq!(e["payload"]["data"]["id"], format!("e{i}"));
            assert_eq!(e["payload"]["data"]["attributes"]["product_id"], format!("p-e{i}"));
        } else {
            assert!(e.get("payload").is_none(), "not in the lake yet");
        }
    }
    assert_eq!(body["payloads_missing"], 2);
    h.finish().await;
}
