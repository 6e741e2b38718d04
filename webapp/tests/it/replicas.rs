//! `/api/replicas` forgets replicas gone longer than `WEBAPP_REPLICA_FORGET_AFTER_SECS`, and the
//! per-replica counts plus the retired total stay equal to the counter, under concurrent load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{app::spawn_app_with, unique_prefix, JsonValue, RedisServer, TestApp};

/// The shortest forget time the setting takes, so the test waits seconds, not a minute.
const FORGET_AFTER_SECS: &str = "2";

async fn replica(redis: &RedisServer, prefix: &str, name: &str) -> TestApp {
    spawn_app_with(
        &redis.url(),
        prefix,
        &[
            "--replica",
            name,
            "--replica-forget-after-secs",
            FORGET_AFTER_SECS,
            // Correctness under load, not speed: a busy machine must not turn a hit into a 503.
            "--redis-command-timeout-ms",
            "20000",
            "--redis-pool-wait-timeout-ms",
            "20000",
        ],
    )
    .await
}

async fn replicas_of(app: &TestApp) -> BTreeMap<String, u64> {
    serde_json::from_value(app.get("/api/replicas").await.json_value().await)
        .expect("a map of counts")
}

/// Greets `app` until `until`, half of the requests with an idempotency key; answers how many
/// were counted (200). Every request must be answered 200.
fn greet_until(app: &TestApp, until: Instant, client_id: usize) -> tokio::task::JoinHandle<u64> {
    let (client, url) = (app.client.clone(), app.url("/"));
    tokio::spawn(async move {
        let mut counted = 0;
        while Instant::now() < until {
            let mut request = client.get(&url);
            if counted % 2 == 0 {
                request = request.header("Idempotency-Key", format!("c{client_id}-{counted}"));
            }
            let status = request.send().await.expect("GET /").status();
            assert_eq!(status, 200);
            counted += 1;
        }
        counted
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_replica_gone_longer_than_the_forget_time_leaves_api_replicas_and_the_total_stays_exact()
{
    // Arrange: a count from before last-seen times were kept, and three replicas: one busy,
    // one idle, one that will leave.
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    redis.command(&["SET", &format!("{prefix}hits"), "5"]);
    redis.command(&["HSET", &format!("{prefix}replica-hits"), "old-replica", "5"]);
    let busy = replica(&redis, &prefix, "busy").await;
    let idle = replica(&redis, &prefix, "idle").await;
    let leaving = replica(&redis, &prefix, "leaving").await;
    assert_eq!(idle.get("/").await.status(), 200);

    // Act: load on two replicas while /api/replicas is read (and prunes) all along; one
    // replica stops half way, the other serves on until it is long forgotten.
    let load_ends = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for client_id in 0..4 {
        clients.push(greet_until(&busy, load_ends, client_id));
    }
    let leaving_ends = Instant::now() + Duration::from_secs(1);
    for client_id in 4..6 {
        clients.push(greet_until(&leaving, leaving_ends, client_id));
    }
    let reader = {
        let (client, url) = (busy.client.clone(), busy.url("/api/replicas"));
        tokio::spawn(async move {
            while Instant::now() < load_ends {
                let status = client.get(&url).send().await.expect("GET").status();
                assert_eq!(status, 200);
            }
        })
    };
    tokio::time::sleep_until((leaving_ends + Duration::from_millis(100)).into()).await;
    leaving.begin_shutdown();
    let mut counted = 1;
    for client in clients {
        counted += client.await.expect("a load client");
    }
    reader.await.expect("the reader");

    // Assert: only the replicas still running are listed; nothing was lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = replicas_of(&busy).await;
        if !listed.contains_key("leaving") && !listed.contains_key("old-replica") {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "gone replicas still listed 20 s on: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        listed.keys().map(String::as_str).collect::<Vec<_>>(),
        ["busy", "idle"],
        "the idle replica stays: it refreshes its last-seen time"
    );
    assert_eq!(listed["idle"], 1);
    let hits = busy.get("/api/hits").await.json_value().await;
    let total = hits["hits"].as_u64().expect("hits");
    let retired = hits["retired_replica_hits"].as_u64().expect("retired hits");
    assert_eq!(total, 5 + counted, "the counter lost or gained hits");
    assert_eq!(
        listed.values().sum::<u64>() + retired,
        total,
        "listed {listed:?} plus {retired} retired"
    );
    assert!(retired > 5, "the leaving replica's hits were not retired");
}
