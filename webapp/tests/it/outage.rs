//! Redis going away, pausing and coming back: quick 503s, never hangs, recovery without restart.

use std::time::{Duration, Instant};

use crate::support::{spawn_app, RedisServer, TestApp};

/// The issue's bound for "answers quickly when Redis is gone"; generous against the ~0.75 s
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
async fn readyz_answers_503_as_soon_as_shutdown_begins() {
    let redis = RedisServer::start();
    let app = spawn_app(&redis.url()).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    app.state.begin_shutdown();

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"shutting down"}"#
    );
}
