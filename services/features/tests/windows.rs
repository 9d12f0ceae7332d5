//! Window semantics, against an exact computation over the same events, for both stores
//! (Redis under a unique prefix, and memory): bucket-aligned window edges, late and future
//! events, bounded expiry passes, entries leaving the windows, TTLs on the Redis keys, and
//! exactly-once of repeated positions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Lcg, cleanup, hit, keys, redis_conn, redis_store, unique_prefix};
use features::layout::{Batch, Hit};
use features::{Layout, MemoryStore, WindowStore};

const HOUR: i64 = 3_600_000;
const PRODUCTS: u64 = 12;

fn products() -> Vec<String> {
    (0..PRODUCTS).map(|i| format!("p{i}")).chain(["unknown".to_string()]).collect()
}

/// The count the store must return: events (time clamped to when they were written) whose
/// bucket is one of the window's last `n` buckets at `now`.
fn bucketed(layout: &Layout, events: &[(Hit, i64)], product: &str, counter: usize, window: usize, now: i64) -> i64 {
    let w = &layout.windows[window];
    let start = w.start_ms(now);
    events.iter().filter(|(h, _)| h.product == product && h.counter == counter && h.t_ms >= start && h.t_ms <= now).count() as i64
}

/// Events in the half-open time range [from, to).
fn in_range(events: &[(Hit, i64)], product: &str, counter: usize, from: i64, to: i64) -> i64 {
    events.iter().filter(|(h, _)| h.product == product && h.counter == counter && h.t_ms >= from && h.t_ms < to).count() as i64
}

async fn drive_expiry(store: &dyn WindowStore, now: i64) {
    for _ in 0..10_000 {
        if store.expire(now).await.expect("expire").complete {
            return;
        }
    }
    panic!("expiry never completed");
}

/// Ten days of random events (late, on time and a few from the future), checked after every
/// batch against the exact computation, then everything leaves the windows.
async fn windows_match_the_exact_computation(store: &dyn WindowStore) {
    let layout = Layout::default_layout();
    let mut rng = Lcg(7);
    // Not aligned on any bucket.
    let mut now: i64 = 1_767_225_600_000 + 12_345_678;
    let mut written: Vec<(Hit, i64)> = Vec::new();
    let mut seq = 0u64;
    let ids = products();
    for step in 0..160 {
        // Steps from one second to three hours cross minute, hour and day edges.
        now += [1_000, 59_000, 61_000, 600_000, HOUR, 3 * HOUR][rng.below(6) as usize] + rng.below(1000) as i64;
        let mut hits = Vec::new();
        for _ in 0..rng.below(40) {
            seq += 1;
            let age = match rng.below(10) {
                0 => rng.below(9 * 24 * HOUR as u64) as i64, // anything up to 9 days late
                1 => -(rng.below(60_000) as i64),            // from the future
                _ => rng.below(2 * HOUR as u64) as i64,
            };
            let product = format!("p{}", rng.below(PRODUCTS));
            hits.push(hit(&product, rng.below(3) as usize, now - age, seq));
        }
        let batch = Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, seq)], hits: hits.clone() };
        let r = store.apply(&batch).await.expect("apply");
        assert_eq!(r.applied, hits.len());
        for mut h in hits {
            h.t_ms = h.t_ms.min(now);
            written.push((h, now));
        }
        drive_expiry(store, now).await;
        let sums = store.read(&ids).await.expect("read");
        assert_eq!(sums.as_of_ms, now);
        for (pi, p) in ids.iter().enumerate() {
            for c in 0..3 {
                for (wi, w) in layout.windows.iter().enumerate() {
                    let got = sums.values[pi][layout.column(c, wi)];
                    let want = bucketed(&layout, &written, p, c, wi, now);
                    assert_eq!(got, want, "step {step} product {p} counter {c} window {}", w.name);
                    // Error bound against an exact sliding window (now - length, now]: the
                    // store never counts older events and misses at most the part of one
                    // bucket at the old edge.
                    let exact = in_range(&written, p, c, now - w.length_ms() + 1, now + 1);
                    let start = w.start_ms(now);
                    assert!(got <= exact);
                    assert!(exact - got <= in_range(&written, p, c, start - w.bucket_ms, start));
                }
            }
        }
    }
    // A week and a bit later everything has left every window.
    now += 8 * 24 * HOUR;
    drive_expiry(store, now).await;
    let sums = store.read(&ids).await.expect("read");
    assert!(sums.values.iter().all(|v| v.iter().all(|&x| x == 0)), "{:?}", sums.values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_windows_match_the_exact_computation_and_empty_out() {
    let prefix = unique_prefix("windows");
    // A small expiry budget: passes are bounded and resumed.
    let store = redis_store(Layout::default_layout(), &prefix, 7).await;
    windows_match_the_exact_computation(&store).await;
    // Product hashes and schedules are gone once their buckets left the windows; only the
    // markers and the exactly-once bitmap remain.
    let left: Vec<String> = keys(&prefix).await.into_iter().filter(|k| !k.ends_with("meta") && !k.contains(":seen:")).collect();
    assert!(left.is_empty(), "{left:?}");
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_windows_match_the_exact_computation_and_empty_out() {
    let store = MemoryStore::new(Layout::default_layout(), 1000, 7);
    windows_match_the_exact_computation(&store).await;
    assert_eq!(store.products(), 0);
}

/// Keys carry expiries; a repeated position is not counted twice; a partly repeated batch
/// counts only its new hits.
async fn exactly_once_and_edges(store: &dyn WindowStore) {
    let now = 1_767_225_600_000 + 30 * 60_000 + 500; // 00:30:00.5
    let b = |hits: Vec<Hit>, pos| Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, pos)], hits };
    // Exactly at the edges of the 1h window (1-minute buckets): 23:31:00.000 is in, 23:30:59.999 is out.
    let in_edge = now - 500 - 59 * 60_000;
    let r = store.apply(&b(vec![hit("e", 0, in_edge, 1), hit("e", 0, in_edge - 1, 2), hit("e", 0, now, 3)], 3)).await.unwrap();
    assert_eq!(r.applied, 3);
    let r = store.apply(&b(vec![hit("e", 0, now, 2), hit("e", 0, now, 3), hit("e", 0, now, 4)], 4)).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (1, 2));
    assert_eq!(store.position("s").await.unwrap(), 4);
    drive_expiry(store, now).await;
    let v = store.read(&["e".to_string()]).await.unwrap().values.remove(0);
    // 1h: the in-edge event and two at `now`; 1d and 7d: all four.
    assert_eq!(&v[0..3], &[3, 4, 4]);
    // One minute later the in-edge bucket has left the hour.
    drive_expiry(store, now + 60_000).await;
    let v = store.read(&["e".to_string()]).await.unwrap().values.remove(0);
    assert_eq!(&v[0..3], &[2, 4, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_exactly_once_edges_and_expiries() {
    let prefix = unique_prefix("edges");
    let store = redis_store(Layout::default_layout(), &prefix, 100).await;
    exactly_once_and_edges(&store).await;
    let mut c = redis_conn().await;
    for k in keys(&prefix).await {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut c).await.unwrap();
        if k.contains(":seen:") {
            // The exactly-once memory: `dedup_ttl_secs` (1 h in these tests).
            assert!(ttl > 0 && ttl <= 3600, "{k}: {ttl}");
        } else {
            // States, views, schedules and markers are removed by the expiry pass, never by
            // time: an updater down for days catches up instead of leaving sums wrong.
            assert_eq!(ttl, -1, "{k}");
        }
    }
    cleanup(&prefix).await;
}

/// Two stores writing the same prefix at once (two updater replicas): every hit counted once,
/// the windows right, whatever the interleaving of their transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_writers_count_once() {
    let prefix = unique_prefix("concurrent");
    let layout = Layout::default_layout();
    let a = Arc::new(redis_store(layout.clone(), &prefix, 50).await);
    let b = Arc::new(redis_store(layout.clone(), &prefix, 50).await);
    let now = 1_767_225_600_000 + 12 * HOUR + 30 * 60_000;
    // The same 4,000 positions reach both writers (a redelivery to the other replica),
    // in different batches, while both also run expiry passes.
    let hits: Vec<Hit> = (1..=4000u64).map(|q| hit(&format!("p{}", q % 37), (q % 3) as usize, now - (q as i64 % 50) * 60_000, q)).collect();
    let run = |store: Arc<features::RedisStore>, hits: Vec<Hit>, size: usize| async move {
        for part in hits.chunks(size) {
            let max = part.iter().map(|h| h.seq).max().unwrap_or(0);
            let batch = Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, max)], hits: part.to_vec() };
            // As the updater does: a write refused too often (contention) is retried.
            while store.apply(&batch).await.is_err() {}
            while store.expire(now).await.is_err() {}
        }
    };
    let mut reversed = hits.clone();
    reversed.reverse();
    let (x, y) = tokio::join!(tokio::spawn(run(a.clone(), hits.clone(), 97)), tokio::spawn(run(b.clone(), reversed, 131)));
    x.unwrap();
    y.unwrap();
    drive_expiry(&*a, now).await;
    let ids: Vec<String> = (0..37).map(|i| format!("p{i}")).collect();
    let sums = a.read(&ids).await.unwrap();
    let mut total = vec![0i64; layout.columns().len()];
    for v in &sums.values {
        for (t, x) in total.iter_mut().zip(v) {
            *t += x;
        }
    }
    for c in 0..3 {
        let want_1h = hits.iter().filter(|h| h.counter == c && h.t_ms >= layout.windows[0].start_ms(now)).count() as i64;
        let want_all = hits.iter().filter(|h| h.counter == c).count() as i64;
        assert_eq!(total[layout.column(c, 0)], want_1h, "counter {c}, 1h");
        assert_eq!(total[layout.column(c, 1)], want_all, "counter {c}, 1d");
        assert_eq!(total[layout.column(c, 2)], want_all, "counter {c}, 7d");
    }
    cleanup(&prefix).await;
}

/// A stored state that cannot be read (written by something else) is counted and restarted,
/// not a stuck updater; the other products are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreadable_state_is_restarted() {
    let prefix = unique_prefix("corrupt");
    let store = redis_store(Layout::default_layout(), &prefix, 100).await;
    let now = 1_767_225_600_000 + 30 * 60_000;
    let mut c = redis_conn().await;
    let _: () = redis::cmd("SET").arg(format!("{prefix}st:bad")).arg("not a state").query_async(&mut c).await.unwrap();
    let batch = Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, 2)], hits: vec![hit("bad", 0, now, 1), hit("good", 0, now, 2)] };
    assert_eq!(store.apply(&batch).await.unwrap().applied, 2);
    let v = store.read(&["bad".to_string(), "good".to_string()]).await.unwrap().values;
    assert_eq!((v[0][0], v[1][0]), (1, 1));
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_exactly_once_and_edges() {
    let store = MemoryStore::new(Layout::default_layout(), 1000, 100);
    exactly_once_and_edges(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_does_not_count_new_products_beyond_its_bound() {
    let store = Arc::new(MemoryStore::new(Layout::default_layout(), 2, 100));
    let now = 1_767_225_600_000;
    let batch = Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, 4)], hits: vec![hit("a", 0, now, 1), hit("b", 0, now, 2), hit("c", 0, now, 3), hit("a", 0, now, 4)] };
    store.apply(&batch).await.unwrap();
    assert_eq!(store.products(), 2);
    let v = store.read(&["a".into(), "b".into(), "c".into()]).await.unwrap().values;
    assert_eq!((v[0][0], v[1][0], v[2][0]), (2, 1, 0));
}

/// A batch larger than one script call (Redis applies it in chunks), then the same batch
/// again with a few new hits: only those count.
async fn big_batches_count_once(store: &dyn WindowStore) {
    let now = 1_767_225_600_000;
    let mk = |n: u64| -> Vec<Hit> { (1..=n).map(|s| hit(&format!("b{}", s % 7), (s % 3) as usize, now - (s as i64 % 5000), s)).collect() };
    let batch = |hits: Vec<Hit>, pos| Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, pos)], hits };
    let r = store.apply(&batch(mk(12_000), 12_000)).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (12_000, 0));
    let r = store.apply(&batch(mk(12_010), 12_010)).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (10, 12_000));
    let ids: Vec<String> = (0..7).map(|i| format!("b{i}")).collect();
    let sums = store.read(&ids).await.unwrap();
    let total: i64 = sums.values.iter().map(|v| v[0] + v[3] + v[6]).sum();
    assert_eq!(total, 12_010);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_big_batches_count_once() {
    let prefix = unique_prefix("big");
    let store = redis_store(Layout::default_layout(), &prefix, 100).await;
    big_batches_count_once(&store).await;
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_big_batches_count_once() {
    big_batches_count_once(&MemoryStore::new(Layout::default_layout(), 1000, 100)).await;
}

/// Results pages: each message lists 30 products (one hit each, all with the message's
/// position). 500 of them are 15,000 hits, more than one Redis transaction takes: every
/// listed product counts once, and applying the batch again (a redelivery) with 10 new pages
/// counts only those. (That no message is split across two transactions, so a crash between
/// them cannot leave one half counted, is `store::redis::chunk_tests`.)
async fn listed_products_count_once_across_chunks(store: &dyn WindowStore) {
    let now = 1_767_225_600_000;
    let page = |seq: u64| -> Vec<Hit> { (0..30).map(|k| hit(&format!("l{}", (seq * 7 + k * 13) % 2000), 0, now - 1000, seq)).collect() };
    let batch = |n: u64| Batch { marks: Vec::new(), unmarked: false, now_ms: now, sources: vec!["s".into()], positions: vec![(0, n)], hits: (1..=n).flat_map(page).collect() };
    let r = store.apply(&batch(500)).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (15_000, 0));
    let r = store.apply(&batch(510)).await.unwrap();
    assert_eq!((r.applied, r.duplicates), (300, 15_000));
    let ids: Vec<String> = (0..2000).map(|i| format!("l{i}")).collect();
    let sums = store.read(&ids).await.unwrap();
    let mut want = vec![0i64; 2000];
    for seq in 1..=510u64 {
        for k in 0..30 {
            want[((seq * 7 + k * 13) % 2000) as usize] += 1;
        }
    }
    let got: Vec<i64> = sums.values.iter().map(|v| v[0]).collect();
    assert_eq!(got, want, "impressions_1h per product");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_listed_products_count_once_across_chunks() {
    let prefix = unique_prefix("listed");
    let store = redis_store(Layout::default_layout(), &prefix, 100).await;
    listed_products_count_once_across_chunks(&store).await;
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_listed_products_count_once_across_chunks() {
    listed_products_count_once_across_chunks(&MemoryStore::new(Layout::default_layout(), 5000, 100)).await;
}

/// A schedule lost (deleted by hand, say) leaves a bucket the expiry cannot find; the next
/// event of that product drops it (it is already due), so the sums are right again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_schedule_heals_on_the_next_event() {
    let prefix = unique_prefix("heal");
    let store = redis_store(Layout::default_layout(), &prefix, 100).await;
    let now = 1_767_225_600_000 + 10 * 60_000;
    let b = |hits: Vec<Hit>, pos, at| Batch { marks: Vec::new(), unmarked: false, now_ms: at, sources: vec!["s".into()], positions: vec![(0, pos)], hits };
    store.apply(&b(vec![hit("x", 0, now, 1)], 1, now)).await.unwrap();
    let mut c = redis_conn().await;
    for k in keys(&prefix).await.into_iter().filter(|k| k.contains(":due:")) {
        let _: () = redis::cmd("DEL").arg(&k).query_async(&mut c).await.unwrap();
    }
    let later = now + 2 * HOUR;
    drive_expiry(&store, later).await;
    let v = store.read(&["x".to_string()]).await.unwrap().values.remove(0);
    assert_eq!(&v[0..3], &[1, 1, 1], "the lost schedule keeps the old minute in the hour");
    store.apply(&b(vec![hit("x", 0, later, 2)], 2, later)).await.unwrap();
    let v = store.read(&["x".to_string()]).await.unwrap().values.remove(0);
    assert_eq!(&v[0..3], &[1, 2, 2], "1h: only the new event; 1d and 7d: both");
    cleanup(&prefix).await;
}
