//! Redis going away, pausing and coming back: quick 503s, never hangs, recovery without restart.

use std::time::{Duration, Instant};

use crate::support::{spawn_app, RedisServer, TestApp};

/// The bound for "answers quickly when Redis is gone"; generous against the ~0.75 s
/// command deadline, so it is a "does not hang" check rather than a benchmark.
const UNAVAILABLE_ANSWER_BOUND: Duration = Duration::from_millis(1500);

async fn assert_quick_503(app: &TestApp, path: &str, redis: &RedisServer) {
    let started = Instant::now();
    let response = app.get(path).await;
    let elapsed = started.elapsed();
    assert_eq!(
        response.status(),
        503,
        "GET {path}; redis log:\n{}",
        redis.log()
    );
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        elapsed < UNAVAILABLE_ANSWER_BOUND,
        "GET {path} took {elapsed:?}, more than {UNAVAILABLE_ANSWER_BOUND:?}"
    );
}

async fn wait_for_status(app: &TestApp, path: &str, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let current = app.get(path).await.status().as_u16();
        if current == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} still {current} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn killed_redis_gives_quick_503s_and_restarted_redis_brings_200s_back() {
    let mut redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    // Warm the pool, so the test covers stale pooled connections, not only fresh connects.
    for _ in 0..5 {
        assert_eq!(app.get("/").await.status(), 200);
    }

    redis.kill();
    for _ in 0..3 {
        assert_quick_503(&app, "/", &redis).await;
        assert_quick_503(&app, "/readyz", &redis).await;
    }
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "liveness must not depend on Redis"
    );

    redis.restart();
    wait_for_status(&app, "/", 200, Duration::from_secs(5)).await;
    wait_for_status(&app, "/readyz", 200, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn paused_redis_gives_503s_instead_of_hanging() {
    let mut redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    for _ in 0..5 {
        assert_eq!(app.get("/").await.status(), 200);
    }

    redis.pause();
    for _ in 0..3 {
        assert_quick_503(&app, "/", &redis).await;
        assert_quick_503(&app, "/readyz", &redis).await;
    }
    redis.resume();

    wait_for_status(&app, "/", 200, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn app_starts_without_redis_and_becomes_ready_when_redis_appears() {
    let mut redis = RedisServer::stopped(None);
    let app = spawn_app(&redis.url()).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_quick_503(&app, "/readyz", &redis).await;

    redis.restart();
    wait_for_status(&app, "/readyz", 200, Duration::from_secs(5)).await;
    assert_eq!(app.get("/").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn readyz_names_the_replica_that_answered() {
    let redis = RedisServer::start();
    let app = crate::support::spawn_app_with(
        &redis.url(),
        &crate::support::unique_prefix(),
        &["--replica", "r-7"],
    )
    .await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"replica":"r-7","status":"ready"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn readyz_answers_503_as_soon_as_shutdown_begins() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    app.state.begin_shutdown();

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("a JSON body");
    assert_eq!(
        body,
        serde_json::json!({"status": "stopping", "replica": "test-replica", "error": "shutting down"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn exhausted_pool_gives_503_with_retry_after_and_is_counted() {
    let mut redis = RedisServer::start();
    // One connection; a request holds it for up to 5 s while Redis is paused.
    let app = crate::support::spawn_app_with(
        &redis.url(),
        &crate::support::unique_prefix(),
        &[
            "--redis-pool-size",
            "1",
            "--redis-pool-wait-timeout-ms",
            "100",
            "--redis-command-timeout-ms",
            "5000",
        ],
    )
    .await;
    assert_eq!(app.get("/").await.status(), 200);
    redis.pause();
    let holder = {
        let client = app.client.clone();
        let url = app.url("/");
        tokio::spawn(async move {
            client
                .get(url)
                .send()
                .await
                .map(|response| response.status())
        })
    };
    // The holder has the one connection once the pool shows none idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        if metrics.contains("\nwebapp_redis_pool_available 0\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the held request did not take the connection within 10 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let response = app.get("/api/hits").await;

    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    redis.resume();
    let holder_status = holder.await.expect("holder task").expect("holder request");
    assert_eq!(
        holder_status, 200,
        "the held request completes once Redis resumes"
    );
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains(r#"webapp_redis_errors_total{kind="pool_exhausted"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn request_outliving_the_request_timeout_gets_a_json_503() {
    let mut redis = RedisServer::start();
    // Redis may take 10 s, the request only 1 s: the timeout layer answers first.
    let app = crate::support::spawn_app_with(
        &redis.url(),
        &crate::support::unique_prefix(),
        &[
            "--request-timeout-secs",
            "1",
            "--redis-command-timeout-ms",
            "10000",
        ],
    )
    .await;
    assert_eq!(app.get("/").await.status(), 200);
    redis.pause();

    let response = app.get("/").await;

    redis.resume();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"service unavailable"}"#
    );
}
