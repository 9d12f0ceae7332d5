//! The aggregator on the consumer runtime, with a real Postgres: an event the database
//! refuses (an `owner_id` holding a NUL, a user a trigger refuses) is dead-lettered while
//! the rest of its batch is counted, and `replay` brings the fixed one back; and a delivery
//! that a partial fetch (here: another client of the same durable) left outside the
//! aggregator is counted when it comes back, not skipped by the high-water mark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_bus::testing::NatsServer;
use event_bus::{Bus, ConsumerConfig, InProcessBus, JetStreamBus, JetStreamConfig, OutMessage, Publisher};
use service_kit::auth::hash_key;
use service_kit::shutdown::Shutdown;
use sqlx::Row;
use stats::{StatsConfig, StatsService};

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn config(schema: &str) -> StatsConfig {
    StatsConfig {
        listen: "127.0.0.1:0".into(),
        database_url: pg_url(),
        database_schema: schema.into(),
        database_max_connections: 4,
        service_key_hashes: vec![hash_key("stats-consumer-test")],
        consumer: ConsumerConfig { batch_messages: 100, ack_wait_secs: 2, ..ConsumerConfig::named("stats-aggregator") },
        ..StatsConfig::default()
    }
}

fn favorite(i: usize, owner: &str) -> OutMessage {
    let now = chrono::Utc::now().timestamp_millis();
    let owner = serde_json::to_string(owner).expect("json");
    let payload = format!(
        r#"{{"data":{{"id":"f{i}","type":"product_favorited","attributes":{{"user_id":"u","product_id":"p{i}","owner_id":{owner}}}}},"meta":{{"created_at":{now}}}}}"#
    );
    OutMessage { subject: "raw-event.product_favorited".into(), id: format!("f{i}"), payload: payload.into() }
}

async fn pool(schema: &str) -> sqlx::PgPool {
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(&pg_url()).expect("url").options([("search_path", schema)]);
    sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_with(opts).await.expect("postgres")
}

async fn favorites(pool: &sqlx::PgPool, user: Option<&str>) -> i64 {
    let sql = "SELECT coalesce(sum(count), 0)::int8 FROM daily_stats WHERE metric = 'favorites_received' AND ($1::text IS NULL OR user_id = $1)";
    sqlx::query(sql).bind(user).fetch_one(pool).await.map(|r| r.get::<i64, _>(0)).unwrap_or(-1)
}

async fn wait_until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_dead_lettered_the_batch_is_counted_and_replay_brings_one_back() {
    let schema = unique("stats_poison");
    let bus = InProcessBus::new(100_000, 64 << 20);
    let service = StatsService::build(&config(&schema), Some(Arc::new(bus.clone()))).await.expect("build");
    let pool = pool(&schema).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_blocked() RETURNS trigger AS $$ BEGIN \
           IF NEW.user_id = 'blocked' THEN RAISE EXCEPTION 'user blocked is refused' USING ERRCODE = 'check_violation'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse BEFORE INSERT ON daily_stats FOR EACH ROW EXECUTE FUNCTION refuse_blocked();",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(service.run(listener, Shutdown::on(stop_rx)));

    let mut msgs: Vec<OutMessage> = (0..300).map(|i| favorite(i, &format!("u{}", i % 10))).collect();
    msgs.insert(120, favorite(1000, "bad\u{0}owner"));
    msgs.insert(250, favorite(1001, "blocked"));
    assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
    let started = Instant::now();
    wait_until("300 favorites counted", 30, async || favorites(&pool, None).await == 300).await;
    assert!(started.elapsed() < Duration::from_secs(15), "counted in {:?}", started.elapsed());
    wait_until("two dead letters", 10, async || bus.dead_letters("stats-aggregator", 0, 10).await.expect("dead letters").len() == 2).await;
    let letters = bus.dead_letters("stats-aggregator", 0, 10).await.expect("dead letters");
    let details: Vec<String> = letters
        .iter()
        .map(|l| event_contract::wire::QuarantineMessage::decode(&l.payload).expect("dead letter").detail.into_owned())
        .collect();
    assert!(details.iter().any(|d| d.contains("0x00")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("blocked is refused")), "{details:?}");

    // Fixed: the trigger is gone. The replay counts the blocked user's favorite; the NUL is
    // refused again (a new dead letter).
    sqlx::raw_sql("DROP TRIGGER refuse ON daily_stats").execute(&pool).await.expect("drop trigger");
    let report = event_bus::replay(&bus, "stats-aggregator", 0, 10).await.expect("replay");
    assert_eq!((report.found, report.replayed), (2, 2));
    wait_until("the replayed favorite", 15, async || favorites(&pool, Some("blocked")).await == 1).await;
    wait_until("the NUL dead-lettered again", 15, async || bus.dead_letters("stats-aggregator", 0, 10).await.expect("dead letters").len() == 1).await;
    assert_eq!(favorites(&pool, None).await, 301);
    let _ = stop.send(true);
    let report = task.await.expect("join").expect("stats").expect("aggregator report");
    assert_eq!(report.dead_lettered, 3);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_left_outside_by_a_partial_fetch_is_counted_not_skipped() {
    let nats = NatsServer::start();
    let schema = unique("stats_gap");
    let bus = JetStreamBus::connect(&JetStreamConfig { url: nats.url(), ..JetStreamConfig::default() }).await.expect("bus");
    let cfg = config(&schema);
    // Another client of the same durable takes the first event and never acks it (as the
    // tail of a fetch cut short by a timeout: delivered by the server, never seen by the
    // aggregator). It comes back after the ack wait (2 s), below the position by then.
    let msgs: Vec<OutMessage> = (0..500).map(|i| favorite(i, &format!("u{}", i % 7))).collect();
    assert!(bus.publish_batch(msgs).await.iter().all(Result::is_ok));
    let mut thief = bus.subscribe(&cfg.consumer_spec()).await.expect("the aggregator's durable");
    let stolen = thief.fetch(1, Duration::from_secs(2)).await.expect("fetch");
    assert_eq!(stolen.len(), 1);
    drop(stolen);

    let service = StatsService::build(&cfg, Some(Arc::new(bus.clone()))).await.expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(service.run(listener, Shutdown::on(stop_rx)));
    let pool = pool(&schema).await;
    wait_until("500 favorites counted", 30, async || favorites(&pool, None).await == 500).await;
    // Any late redelivery must be recognised, not counted again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(favorites(&pool, None).await, 500, "every event counted once");
    let _ = stop.send(true);
    task.await.expect("join").expect("stats");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(&pool).await;
}
