//! The Lua scripts run by their SHA1 (`EVALSHA`): when Redis has lost its script cache
//! (`SCRIPT FLUSH`, a restart, a replica that never loaded them), the script is loaded and run
//! again, and the request is still answered and counted or stored exactly once.

use crate::support::{spawn_app_with, unique_prefix, JsonValue, RedisServer, TestApp};

/// The app, without its background refresh of `/api/replicas` (every 6 hours), so that every
/// script Redis runs is one a request asked for.
async fn spawn_quiet_app(redis: &RedisServer) -> TestApp {
    spawn_app_with(
        &redis.url(),
        &unique_prefix(),
        &["--replica-forget-after-secs", "86400"],
    )
    .await
}

async fn greet(app: &TestApp, idempotency_key: &str) -> (u16, String) {
    let response = app
        .client
        .get(app.url("/"))
        .header("Idempotency-Key", idempotency_key)
        .send()
        .await
        .expect("GET /");
    let status = response.status().as_u16();
    (status, response.text().await.expect("greeting text"))
}

/// No Redis failure was counted: NOSCRIPT, handled, is not one.
async fn assert_no_redis_error_counted(app: &TestApp) {
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(!metrics.contains("webapp_redis_errors_total{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_script_flush_between_two_greetings_counts_each_once_and_fails_none() {
    let redis = RedisServer::start();
    let app = spawn_quiet_app(&redis).await;
    let seen = |times: u64| format!("Hello from test-replica! I have been seen {times} times.");

    // A fresh Redis knows no script either.
    assert_eq!(greet(&app, "req-1").await, (200, seen(1)));
    assert_eq!(greet(&app, "req-2").await, (200, seen(2)));
    redis.command(&["SCRIPT", "FLUSH"]);
    assert_eq!(greet(&app, "req-3").await, (200, seen(3)));
    // nginx retries req-3 on this replica after Redis lost its scripts again: not counted twice.
    redis.command(&["SCRIPT", "FLUSH"]);
    assert_eq!(greet(&app, "req-3").await, (200, seen(3)));

    assert_eq!(app.get("/api/hits").await.json_value().await["hits"], 3);
    redis.command(&["SCRIPT", "FLUSH"]);
    let replicas = app.get("/api/replicas").await;
    assert_eq!(replicas.status(), 200);
    assert_eq!(
        replicas.text().await.expect("body"),
        r#"{"test-replica":3}"#
    );

    // By SHA1 only, never the script's text: one EVALSHA per request (five), and for the four
    // that found the script unknown one more that met NOSCRIPT first, and a SCRIPT LOAD.
    assert_eq!(redis.command_calls("eval"), (0, 0));
    assert_eq!(redis.command_calls("evalsha"), (5 + 4, 4));
    assert_eq!(redis.command_calls("script|load"), (4, 0));
    assert_no_redis_error_counted(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_script_flush_between_two_cache_writes_stores_each_once_and_fails_none() {
    let redis = RedisServer::start();
    let app = spawn_quiet_app(&redis).await;
    let index = format!("{}cache-index", app.key_prefix);
    let owners = format!("{}cache-owners", app.key_prefix);

    assert_eq!(app.put("/api/cache/first", "one").await.status(), 204);
    redis.command(&["SCRIPT", "FLUSH"]);
    assert_eq!(app.put("/api/cache/second", "two").await.status(), 204);
    for (key, value) in [("first", "one"), ("second", "two")] {
        let got = app.get(&format!("/api/cache/{key}")).await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.text().await.expect("body"), value);
    }
    // Each entry is in the quotas' bookkeeping once.
    assert_eq!(redis.command(&["ZCARD", &index]), "2");
    assert_eq!(redis.command(&["HLEN", &owners]), "2");

    redis.command(&["SCRIPT", "FLUSH"]);
    assert_eq!(app.delete("/api/cache/first").await.status(), 204);
    assert_eq!(app.get("/api/cache/first").await.status(), 404);
    assert_eq!(redis.command(&["ZCARD", &index]), "1");
    assert_eq!(redis.command(&["HLEN", &owners]), "1");

    // Each of the three scripted requests found its script unknown: NOSCRIPT, load, run.
    assert_eq!(redis.command_calls("eval"), (0, 0));
    assert_eq!(redis.command_calls("evalsha"), (3 + 3, 3));
    assert_eq!(redis.command_calls("script|load"), (3, 0));
    assert_no_redis_error_counted(&app).await;
}
