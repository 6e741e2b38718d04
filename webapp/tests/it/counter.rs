//! The hit counter against a real Redis: exact under concurrency, per replica, under the prefix.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{app::spawn_app_with, spawn_app, unique_prefix, JsonValue, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn five_hundred_concurrent_greetings_raise_the_counter_by_exactly_500() {
    // Arrange: two replicas sharing one Redis and one prefix, as behind the proxy.
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    // Correctness under load, not speed: generous Redis deadlines, so a busy CI machine running
    // a debug build cannot turn a slow request into a 503.
    let patient = [
        "--redis-command-timeout-ms",
        "20000",
        "--redis-pool-wait-timeout-ms",
        "20000",
        "--redis-connect-timeout-ms",
        "5000",
    ];
    let replica_a = spawn_app_with(
        &redis.url(),
        &prefix,
        &[&patient[..], &["--replica", "replica-a"]].concat(),
    )
    .await;
    let replica_b = spawn_app_with(
        &redis.url(),
        &prefix,
        &[&patient[..], &["--replica", "replica-b"]].concat(),
    )
    .await;

    // Act: 500 requests at once, half to each replica.
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..500 {
        let client = replica_a.client.clone();
        let url = if index % 2 == 0 {
            replica_a.url("/")
        } else {
            replica_b.url("/")
        };
        tasks.spawn(async move {
            let response = client.get(&url).send().await.expect("GET /");
            let status = response.status();
            let text = response.text().await.expect("greeting text");
            assert_eq!(status, 200, "{text}");
            text
        });
    }
    let mut seen_counts = BTreeSet::new();
    while let Some(greeting) = tasks.join_next().await {
        let greeting = greeting.expect("request task");
        let count = greeting
            .strip_prefix("Hello from replica-")
            .and_then(|rest| rest.split_once("! I have been seen "))
            .and_then(|(_, rest)| rest.strip_suffix(" times."))
            .and_then(|count| count.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("unexpected greeting {greeting:?}"));
        seen_counts.insert(count);
    }

    // Assert: every increment was atomic (each request saw its own number) and nothing was lost.
    assert_eq!(seen_counts, (1..=500).collect::<BTreeSet<u64>>());
    let hits = replica_a.get("/api/hits").await.json_value().await;
    assert_eq!(hits["hits"], 500);
    assert_eq!(hits["replica"], "replica-a");
    let replicas: BTreeMap<String, u64> =
        serde_json::from_value(replica_b.get("/api/replicas").await.json_value().await)
            .expect("replica map");
    assert_eq!(
        replicas,
        BTreeMap::from([("replica-a".to_owned(), 250), ("replica-b".to_owned(), 250)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn reading_hits_does_not_increment_them() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    assert_eq!(app.get("/api/hits").await.json_value().await["hits"], 0);
    let greeting = app.get("/").await.text().await.expect("text");
    assert_eq!(
        greeting,
        "Hello from test-replica! I have been seen 1 times."
    );
    for _ in 0..3 {
        assert_eq!(app.get("/api/hits").await.json_value().await["hits"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn every_key_the_app_writes_is_under_its_prefix() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    app.get("/").await;
    app.put("/api/cache/some.key", "value").await;
    let keys = redis.command(&["KEYS", "*"]);
    let keys: Vec<&str> = keys.lines().collect();
    // Counter, per-replica counts, a cache entry, the cache index, the entries' owners, the
    // client's entries; and the replicas' last-seen times once a replica has refreshed its own.
    assert!((6..=7).contains(&keys.len()), "{keys:?}");
    for key in keys {
        assert!(
            key.starts_with(&app.key_prefix),
            "{key} is outside {}",
            app.key_prefix
        );
    }
}
