//! The cache against a real Redis: round trip, TTLs, expiry, and refusing bad input early.

use std::time::Duration;

use crate::support::{spawn_app, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn put_then_get_returns_the_value_and_its_remaining_ttl_then_delete_removes_it() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;

    let put = app.put("/api/cache/greeting?ttl=60", "hello, world").await;
    assert_eq!(put.status(), 204);

    let got = app.get("/api/cache/greeting").await;
    assert_eq!(got.status(), 200);
    let ttl: u64 = got.headers()["cache-ttl"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("ttl is a number");
    assert!((1..=60).contains(&ttl), "remaining ttl {ttl}");
    assert_eq!(got.bytes().await.expect("body").as_ref(), b"hello, world");

    assert_eq!(app.delete("/api/cache/greeting").await.status(), 204);
    assert_eq!(app.get("/api/cache/greeting").await.status(), 404);
    assert_eq!(app.delete("/api/cache/greeting").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn ttl_defaults_to_300_seconds() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    app.put("/api/cache/k", "v").await;
    let got = app.get("/api/cache/k").await;
    let ttl: u64 = got.headers()["cache-ttl"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!((290..=300).contains(&ttl), "remaining ttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn binary_values_up_to_64_kib_round_trip_unchanged() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    let value: Vec<u8> = (0..64 * 1024).map(|index| (index % 251) as u8).collect();
    assert_eq!(
        app.put("/api/cache/blob", value.clone()).await.status(),
        204
    );
    let got = app.get("/api/cache/blob").await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), value.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn value_is_gone_after_its_ttl_expires() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    app.put("/api/cache/short-lived?ttl=1", "soon gone").await;
    assert_eq!(app.get("/api/cache/short-lived").await.status(), 200);

    tokio::time::sleep(Duration::from_millis(2100)).await;

    let response = app.get("/api/cache/short-lived").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        redis.command(&["EXISTS", &format!("{}cache:short-lived", app.key_prefix)]),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn oversized_bodies_bad_keys_and_bad_ttls_are_refused_without_touching_redis() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    // Reading the counter is itself one command; measure that baseline first.
    let baseline = redis.commands_processed();
    let per_read = redis.commands_processed() - baseline;

    let before = redis.commands_processed();
    let oversized = app.put("/api/cache/big", vec![b'x'; 64 * 1024 + 1]).await;
    assert_eq!(oversized.status(), 413);
    assert_eq!(app.put("/api/cache/bad%20key", "v").await.status(), 400);
    assert_eq!(
        app.get(&format!("/api/cache/{}", "k".repeat(129)))
            .await
            .status(),
        400
    );
    assert_eq!(app.put("/api/cache/key?ttl=0", "v").await.status(), 400);
    assert_eq!(app.put("/api/cache/key?ttl=86401", "v").await.status(), 400);
    let after = redis.commands_processed();

    assert_eq!(after - before, per_read, "refused requests reached Redis");
    assert_eq!(redis.command(&["DBSIZE"]), "0");
}
