//! Poison events do not stop the timeline: an event whose id is too long for DynamoDB's sort
//! key, and one the store refuses (an SQLite trigger standing for a constraint), end in the
//! dead letters within seconds while the events behind them are written; once the store
//! accepts it again, `replay` brings the refused one back.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Harness, event, ids, t0};
use event_bus::Subscriber;
use event_contract::Reason;
use event_contract::wire::QuarantineMessage;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_dead_lettered_the_rest_is_written_and_replay_brings_one_back() {
    let mut h = Harness::new(Backend::Sqlite, "poison").await;
    let mut dead_letters = h.bus.subscriber("dl", "dead-letter.>", Duration::from_secs(30));
    let url = format!("sqlite://{}", h.sqlite_path().display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
    sqlx::query("CREATE TRIGGER refuse_u666 BEFORE INSERT ON timeline_items WHEN NEW.pk = 'u666' BEGIN SELECT RAISE(ABORT, 'user u666 is blocked'); END")
        .execute(&mut db)
        .await
        .expect("trigger");

    let t = t0();
    let long_id = "x".repeat(1100);
    let mut events: Vec<serde_json::Value> = (0..200).map(|i| event(&format!("e{i:03}"), "product_viewed", Some("u1"), t + i)).collect();
    events.insert(50, event(&long_id, "product_viewed", Some("u1"), t + 50));
    events.insert(120, event("blocked", "product_viewed", Some("u666"), t + 120));
    let started = Instant::now();
    h.publish(&events).await;
    assert!(started.elapsed() < Duration::from_secs(15), "settled in {:?}", started.elapsed());
    let (got, _) = h.all_pages("u1", "", 1000).await;
    assert_eq!(ids(&got), (0..200).map(|i| format!("e{i:03}")).collect::<Vec<_>>(), "the events behind the poison are written");
    let stats = h.stats();
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");

    let mut letters = Vec::new();
    for d in dead_letters.fetch(10, Duration::from_millis(500)).await.expect("fetch") {
        let q = QuarantineMessage::decode(&d.payload).expect("dead letter");
        assert_eq!((q.reason, q.source.as_ref(), d.subject.as_str()), (Reason::ConsumerFailed, "timeline", "dead-letter.timeline"));
        letters.push(q.detail.into_owned());
        d.ack().await.expect("ack");
    }
    letters.sort();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters[0].contains("sort key"), "{letters:?}");
    assert!(letters[1].contains("u666 is blocked"), "{letters:?}");

    // Fixed: the store accepts the user again; the replay brings both back, the blocked one
    // is written, the one that can never be stored is a dead letter again.
    sqlx::query("DROP TRIGGER refuse_u666").execute(&mut db).await.expect("drop trigger");
    let report = event_bus::replay(&h.bus, "timeline", 0, 100).await.expect("replay");
    assert_eq!((report.found, report.replayed), (2, 2));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, _) = h.all_pages("u666", "", 10).await;
        if ids(&got) == ["blocked"] {
            break;
        }
        assert!(Instant::now() < deadline, "the replayed event was not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.stats().dead_lettered < 3 {
        assert!(Instant::now() < deadline, "the unstorable event was not dead-lettered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.finish().await;
}
