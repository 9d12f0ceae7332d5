//! Behaviour tests of the in-process bus: the same contract as the JetStream bus (delivery,
//! ack, redelivery, work sharing, filters, dedup) plus its capacity bounds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_bus::{BusError, InProcessBus, OutMessage, Publisher, Subscriber, ack_all};

fn message(subject: &str, id: impl Into<String>, payload: impl Into<Bytes>) -> OutMessage {
    OutMessage {
        subject: subject.to_string(),
        id: id.into(),
        payload: payload.into(),
    }
}

fn assert_all_ok(results: &[Result<(), BusError>]) {
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "message {i}: {r:?}");
    }
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn publish_1000_fetch_all_ack_then_nothing_comes_back() {
    let bus = InProcessBus::new(10_000, 64 << 20);
    let mut sub = bus.subscriber("lake", "raw-event.>", LONG);
    let msgs: Vec<OutMessage> = (0..1000)
        .map(|i| message("raw-event.page_view", format!("id-{i}"), format!("p{i}")))
        .collect();
    assert_all_ok(&bus.publish_batch(msgs).await);
    let mut got = Vec::new();
    while got.len() < 1000 {
        let batch = sub.fetch(300, Duration::from_millis(100)).await.unwrap();
        assert!(!batch.is_empty());
        got.extend(batch);
    }
    assert_eq!(got.len(), 1000);
    let payloads: HashSet<Bytes> = got.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(payloads.len(), 1000);
    assert!(got.iter().all(|d| !d.redelivered));
    // Delivered in publish order.
    assert_eq!(got[0].payload.as_ref(), b"p0");
    assert_eq!(got[999].payload.as_ref(), b"p999");
    assert_all_ok(&ack_all(got).await);
    assert_eq!(bus.pending("lake"), Some(0));
    let after = sub.fetch(100, Duration::from_millis(50)).await.unwrap();
    assert!(after.is_empty());
}

#[tokio::test]
async fn same_id_is_stored_once() {
    let bus = InProcessBus::new(100, 1 << 20);
    let mut sub = bus.subscriber("d", "raw-event.>", LONG);
    assert_all_ok(
        &bus.publish_batch(vec![
            message("raw-event.x", "dup", "first"),
            message("raw-event.x", "dup", "second"),
        ])
        .await,
    );
    assert_all_ok(
        &bus.publish_batch(vec![message("raw-event.x", "dup", "third")])
            .await,
    );
    assert_eq!(bus.pending("d"), Some(1));
    let got = sub.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload.as_ref(), b"first");
}

#[tokio::test]
async fn dedup_window_expires() {
    let bus = InProcessBus::with_dedup(100, 1 << 20, Duration::from_millis(50), 1000);
    let _sub = bus.subscriber("d", ">", LONG);
    assert_all_ok(&bus.publish_batch(vec![message("a", "same", "1")]).await);
    assert_all_ok(&bus.publish_batch(vec![message("a", "same", "2")]).await);
    assert_eq!(bus.pending("d"), Some(1));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_all_ok(&bus.publish_batch(vec![message("a", "same", "3")]).await);
    assert_eq!(bus.pending("d"), Some(2));
}

#[tokio::test]
async fn unacked_dropped_nakked_or_expired_messages_come_back() {
    let bus = InProcessBus::new(100, 1 << 20);
    let ack_wait = Duration::from_millis(200);
    let mut sub = bus.subscriber("r", "raw-event.>", ack_wait);
    assert_all_ok(
        &bus.publish_batch(vec![message("raw-event.a", "m1", "one")])
            .await,
    );

    // Dropped: back at once.
    let first = sub.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(!first[0].redelivered);
    drop(first);
    let again = sub.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].redelivered);

    // Kept but not acked within ack_wait: back after ack_wait, to any replica.
    let mut replica = bus.subscriber("r", "raw-event.>", ack_wait);
    let t = Instant::now();
    let expired = replica.fetch(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].redelivered);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The stale delivery's nak doesn't disturb the current one.
    for d in again {
        d.nak().await.unwrap();
    }
    assert!(replica.fetch(10, Duration::ZERO).await.unwrap().is_empty());

    // Nak: back at once.
    for d in expired {
        d.nak().await.unwrap();
    }
    let after_nak = sub.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(after_nak.len(), 1);

    // In progress keeps it from being redelivered past ack_wait.
    let d = after_nak.into_iter().next().unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        d.in_progress().await.unwrap();
    }
    assert!(
        replica
            .fetch(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );

    // Acked: never again.
    d.ack().await.unwrap();
    assert!(
        sub.fetch(10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(bus.pending("r"), Some(0));
}

#[tokio::test]
async fn subscribers_with_one_durable_share_the_work() {
    let bus = InProcessBus::new(1000, 1 << 20);
    let mut a = bus.subscriber("workers", "raw-event.>", LONG);
    let mut b = bus.subscriber("workers", "raw-event.>", LONG);
    let msgs: Vec<OutMessage> = (0..200)
        .map(|i| message("raw-event.e", format!("w{i}"), format!("{i}")))
        .collect();
    assert_all_ok(&bus.publish_batch(msgs).await);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < 200 {
        for (sub, got) in [(&mut a, &mut got_a), (&mut b, &mut got_b)] {
            let batch = sub.fetch(10, Duration::from_millis(50)).await.unwrap();
            got.extend(batch.iter().map(|d| d.payload.clone()));
            assert_all_ok(&ack_all(batch).await);
        }
    }
    assert_eq!(got_a.len(), 100);
    assert_eq!(got_b.len(), 100);
    let set_a: HashSet<Bytes> = got_a.into_iter().collect();
    let set_b: HashSet<Bytes> = got_b.into_iter().collect();
    assert!(set_a.is_disjoint(&set_b));
    assert_eq!(set_a.len() + set_b.len(), 200);
}

#[tokio::test]
async fn concurrent_replicas_each_message_once() {
    let bus = InProcessBus::new(10_000, 1 << 24);
    let mut handles = Vec::new();
    for _ in 0..4 {
        let mut sub = bus.subscriber("workers", "raw-event.>", LONG);
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let batch = sub.fetch(50, Duration::from_millis(200)).await.unwrap();
                if batch.is_empty() {
                    return seen;
                }
                seen.extend(batch.iter().map(|d| d.payload.clone()));
                for r in ack_all(batch).await {
                    r.unwrap();
                }
            }
        }));
    }
    // Replicas are waiting: publishing wakes them.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for chunk in 0..10 {
        let msgs: Vec<OutMessage> = (0..500)
            .map(|i| {
                message(
                    "raw-event.e",
                    format!("c{chunk}-{i}"),
                    format!("{chunk}-{i}"),
                )
            })
            .collect();
        assert_all_ok(&bus.publish_batch(msgs).await);
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    assert_eq!(all.len(), 5000);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 5000);
}

#[tokio::test]
async fn a_waiting_fetch_wakes_on_publish() {
    let bus = InProcessBus::new(10, 1 << 20);
    let mut sub = bus.subscriber("d", ">", LONG);
    let publisher = bus.clone();
    let t = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        publisher
            .publish_batch(vec![message("x.y", "1", "hi")])
            .await
    });
    let got = sub.fetch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn filter_subject_selects_messages() {
    let bus = InProcessBus::new(100, 1 << 20);
    let mut raw = bus.subscriber("raw", "raw-event.>", LONG);
    let mut one_type = bus.subscriber("views", "raw-event.page_view", LONG);
    let mut q = bus.subscriber("q", "quarantine.*", LONG);
    let mut msgs = Vec::new();
    for i in 0..3 {
        msgs.push(message("raw-event.page_view", format!("r{i}"), "raw"));
    }
    msgs.push(message("raw-event.click", "c", "raw"));
    for i in 0..2 {
        msgs.push(message("quarantine.x", format!("q{i}"), "bad"));
    }
    msgs.push(message("quarantine.x.y", "deep", "bad"));
    assert_all_ok(&bus.publish_batch(msgs).await);

    let got = raw.fetch(100, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|d| d.subject.starts_with("raw-event.")));
    let got = one_type.fetch(100, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 3);
    let got = q.fetch(100, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2, "`*` matches one token only");
    assert!(got.iter().all(|d| d.subject == "quarantine.x"));

    // Wildcards can't be published to.
    let r = bus
        .publish_batch(vec![message("raw-event.*", "w", "x")])
        .await;
    assert!(matches!(r[0], Err(BusError::Rejected(_))));
}

#[tokio::test]
async fn capacity_counts_unacked_messages_and_bytes() {
    let bus = InProcessBus::new(10, 1 << 20);
    let mut sub = bus.subscriber("d", "raw-event.>", LONG);
    let msgs: Vec<OutMessage> = (0..15)
        .map(|i| message("raw-event.e", format!("m{i}"), "x"))
        .collect();
    let r = bus.publish_batch(msgs).await;
    assert_all_ok(&r[..10]);
    assert!(
        r[10..].iter().all(|r| matches!(r, Err(BusError::Full(_)))),
        "{r:?}"
    );

    // Delivered but un-acked still counts.
    let got = sub.fetch(100, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 10);
    let r = bus
        .publish_batch(vec![message("raw-event.e", "m10", "x")])
        .await;
    assert!(matches!(r[0], Err(BusError::Full(_))));

    // After acks there is room again; refused ids were not remembered by dedup.
    assert_all_ok(&ack_all(got).await);
    let msgs: Vec<OutMessage> = (10..15)
        .map(|i| message("raw-event.e", format!("m{i}"), "x"))
        .collect();
    assert_all_ok(&bus.publish_batch(msgs).await);
    assert_eq!(sub.fetch(100, Duration::ZERO).await.unwrap().len(), 5);

    // Byte capacity.
    let bus = InProcessBus::new(100, 1000);
    let _sub = bus.subscriber("d", ">", LONG);
    let r = bus
        .publish_batch(vec![
            message("a", "1", vec![0u8; 400]),
            message("a", "2", vec![0u8; 400]),
            message("a", "3", vec![0u8; 400]),
            message("a", "4", vec![0u8; 100]),
            message("a", "5", vec![0u8; 2000]),
        ])
        .await;
    assert!(r[0].is_ok() && r[1].is_ok());
    assert!(matches!(r[2], Err(BusError::Full(_))));
    assert!(r[3].is_ok(), "a smaller message still fits");
    assert!(matches!(r[4], Err(BusError::Rejected(_))), "can never fit");
}

#[tokio::test]
async fn every_durable_gets_every_message_and_one_full_durable_refuses() {
    let bus = InProcessBus::new(2, 1 << 20);
    let mut lake = bus.subscriber("lake", "raw-event.>", LONG);
    let mut audit = bus.subscriber("audit", ">", LONG);
    let r = bus
        .publish_batch(vec![
            message("raw-event.a", "1", "1"),
            message("quarantine.x", "2", "2"),
            message("raw-event.a", "3", "3"),
        ])
        .await;
    assert!(r[0].is_ok() && r[1].is_ok());
    // `audit` holds 2 un-acked messages: the third is refused for everyone.
    assert!(matches!(r[2], Err(BusError::Full(_))));
    assert_eq!(lake.fetch(10, Duration::ZERO).await.unwrap().len(), 1);
    assert_eq!(audit.fetch(10, Duration::ZERO).await.unwrap().len(), 2);
}
