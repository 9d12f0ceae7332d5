//! Exactly once across a crash: the `stats` binary aggregates from a private NATS JetStream
//! into a private Postgres schema, is killed with SIGKILL in the middle of the stream (its
//! fetched, maybe committed, un-acked batch is redelivered), restarted, and the stored totals
//! then equal an exact count of the published events, none lost and none counted twice (and
//! the distinct metrics the exact number of distinct products per owner).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use event_bus::testing::NatsServer;
use event_bus::{JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use sqlx::Row;

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn spawn_stats(nats: &str, schema: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stats"))
        .env("STATS_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATS_DATABASE_URL", pg_url())
        .env("STATS_DATABASE_SCHEMA", schema)
        .env("STATS_BUS__URL", nats)
        .env("STATS_CONSUMER__ACK_WAIT_SECS", "2")
        .env("STATS_CONSUMER__BATCH_MESSAGES", "100")
        .env("STATS_JWT_SECRET", "exactly-once-secret-exactly-once-secret")
        .env("RUST_LOG", "warn,stats=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("stats binary")
}

fn event(i: usize, ty: &str, user: &str, owner: &str, product: &str, now_ms: i64) -> String {
    format!(
        r#"{{"data":{{"id":"ev-{i}","type":"{ty}","attributes":{{"user_id":"{user}","product_id":"{product}","owner_id":"{owner}","pad":"{}"}}}},"meta":{{"created_at":{now_ms}}}}}"#,
        "x".repeat(200)
    )
}

async fn position(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT seq FROM consumer_positions WHERE consumer = 'stats-aggregator'").fetch_optional(pool).await.ok().flatten().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_counts_every_event_once() {
    let nats = NatsServer::start();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let schema = format!("stats_eo_{}_{nanos}", std::process::id());
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");

    // 6000 events of 3 counted types and one ignored type over 40 users. The aggregator
    // subscribes to the counted types only: its position ends at the last counted event.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let types = ["product_favorited", "product_contacted", "product_sold", "product_listed"];
    let mut expected: HashMap<(String, String), i64> = HashMap::new();
    let mut distinct: HashMap<(String, String), std::collections::HashSet<String>> = HashMap::new();
    let mut messages = Vec::new();
    for i in 0..6000 {
        let ty = types[i % types.len()];
        let user = format!("u{}", i % 40);
        let owner = format!("u{}", (i * 7 + 3) % 40);
        // Products repeat: the distinct metrics count each (owner, product) once a day.
        let product = format!("p{}", i % 300);
        match ty {
            "product_favorited" => *expected.entry((owner.clone(), "favorites_received".into())).or_default() += 1,
            "product_contacted" => {
                distinct.entry((owner.clone(), "products_contacted".into())).or_default().insert(product.clone());
            }
            "product_sold" => {
                distinct.entry((owner.clone(), "products_sold".into())).or_default().insert(product.clone());
            }
            _ => {}
        }
        messages.push(OutMessage { subject: format!("raw-event.{ty}"), id: format!("ev-{i}"), payload: event(i, ty, &user, &owner, &product, now_ms).into() });
    }
    expected.extend(distinct.into_iter().map(|(k, v)| (k, v.len() as i64)));
    let end = messages.iter().rposition(|m| m.subject != "raw-event.product_listed").expect("a counted event") as i64 + 1;
    assert_eq!(end, 5999, "the last event (seq 6000) is of the ignored type");
    // Half before the first start, the rest while it runs.
    let second = messages.split_off(3000);
    assert!(bus.publish_batch(messages).await.iter().all(Result::is_ok));

    let port = free_port();
    let mut child = spawn_stats(&nats.url(), &schema, port);
    let opts = sqlx::postgres::PgConnectOptions::from_str_opts(&pg_url(), &schema);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_with(opts).await.expect("postgres");

    // Wait until some batches are committed, publish the rest, and kill -9 mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while position(&pool).await < 500 {
        assert!(Instant::now() < deadline, "the aggregator made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rest arrives paced (30 chunks over about a second), so the kill lands mid-stream
    // however fast the aggregator is: it is killed as soon as it has counted into the
    // second half.
    let publisher = tokio::spawn(async move {
        let mut ok = true;
        let mut rest = second;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(100));
            ok &= bus.publish_batch(rest).await.iter().all(Result::is_ok);
            rest = tail;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        ok
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while position(&pool).await < 3100 {
        assert!(Instant::now() < deadline, "the aggregator did not reach the second half");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let at_kill = position(&pool).await;
    assert!(publisher.await.expect("publisher"), "publish failed");
    assert!(at_kill < 6000, "killed after the end (position {at_kill}); the test did not cut the stream");

    // Restart: it holds what it fetches until the killed instance's un-acked deliveries come
    // back (one ack wait), then goes on in stream order, skipping what it counted.
    let mut child = spawn_stats(&nats.url(), &schema, port);
    let deadline = Instant::now() + Duration::from_secs(90);
    while position(&pool).await < end {
        assert!(Instant::now() < deadline, "did not reach the end: position {}", position(&pool).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let any duplicate redelivery arrive and be skipped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = sqlx::query("SELECT user_id, metric, sum(count)::int8 FROM daily_stats GROUP BY 1, 2").fetch_all(&pool).await.expect("query");
    let mut got: HashMap<(String, String), i64> = HashMap::new();
    for r in rows {
        got.insert((r.get(0), r.get(1)), r.get(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.values().sum::<i64>(), expected.values().sum::<i64>(), "total over all users");
    assert_eq!(got, expected);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(&pool).await;
}

trait FromStrOpts {
    fn from_str_opts(url: &str, schema: &str) -> Self;
}

impl FromStrOpts for sqlx::postgres::PgConnectOptions {
    fn from_str_opts(url: &str, schema: &str) -> Self {
        use std::str::FromStr;
        sqlx::postgres::PgConnectOptions::from_str(url).expect("url").options([("search_path", schema)])
    }
}
