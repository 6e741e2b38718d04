//! What a hostile client tries against a real Redis: filling the cache (alone, or from one
//! address for everyone), replaying a request, odd keys and query strings. The counter must
//! keep counting, exactly once per request.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{app::spawn_app_with, app::TestApp, unique_prefix, RedisServer};

/// Client addresses as the front nginx states them in `X-Real-IP`.
const CLIENT_A: &str = "192.0.2.1";
const CLIENT_B: &str = "2001:db8::2";

async fn json_of(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

fn hits_of(greeting: &str) -> u64 {
    greeting
        .rsplit_once("seen ")
        .and_then(|(_, rest)| rest.strip_suffix(" times."))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("not a greeting: {greeting:?}"))
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn over_the_entry_quota_a_new_key_gets_507_while_existing_keys_and_the_counter_still_work() {
    let redis = RedisServer::start();
    let app = spawn_app_with(
        &redis.url(),
        &unique_prefix(),
        &[
            "--cache-max-entries",
            "3",
            "--cache-max-entries-per-client",
            "3",
        ],
    )
    .await;
    for key in ["a", "b", "c"] {
        assert_eq!(
            app.put(&format!("/api/cache/{key}"), "v").await.status(),
            204
        );
    }
    // From another address, so its own quota is not what refuses it.
    let full = app.put_from(CLIENT_B, "/api/cache/d", "v").await;
    assert_eq!(full.status(), 507);
    let body = full.text().await.expect("body");
    assert!(body.contains("cache full") && body.contains('3'), "{body}");
    // Overwriting an existing key is not a new entry.
    assert_eq!(app.put("/api/cache/a", "w").await.status(), 204);
    // A delete frees a slot.
    assert_eq!(app.delete("/api/cache/b").await.status(), 204);
    assert_eq!(
        app.put_from(CLIENT_B, "/api/cache/d", "v").await.status(),
        204
    );
    assert_eq!(app.get("/").await.status(), 200);
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn expired_entries_free_their_quota_slots() {
    let redis = RedisServer::start();
    let app = spawn_app_with(
        &redis.url(),
        &unique_prefix(),
        &[
            "--cache-max-entries",
            "1",
            "--cache-max-entries-per-client",
            "1",
        ],
    )
    .await;
    assert_eq!(app.put("/api/cache/short?ttl=1", "v").await.status(), 204);
    let full = app.put_from(CLIENT_B, "/api/cache/other", "v").await;
    assert_eq!(full.status(), 507);
    assert!(full.text().await.expect("body").contains("cache full"));
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        app.put_from(CLIENT_B, "/api/cache/other", "v")
            .await
            .status(),
        204
    );
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn when_redis_is_full_the_cache_gives_way_and_the_counter_keeps_counting() {
    // A small Redis with the stack's policy: only keys with a TTL (cache entries) are evicted.
    let redis = RedisServer::start();
    redis.command(&["CONFIG", "SET", "maxmemory", "4mb"]);
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let app = spawn_app_with(
        &redis.url(),
        &unique_prefix(),
        &[
            "--cache-max-entries",
            "100000",
            "--cache-max-entries-per-client",
            "100000",
        ],
    )
    .await;
    let value = vec![b'x'; 64 * 1024];
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for index in 0..200 {
        let status = app
            .put(&format!("/api/cache/fill-{index}?ttl=86400"), value.clone())
            .await
            .status()
            .as_u16();
        *statuses.entry(status).or_default() += 1;
    }
    // 200 x 64 KiB is three times maxmemory: entries were evicted, none refused.
    assert_eq!(statuses.get(&204), Some(&200), "{statuses:?}");
    let evicted = redis.command(&["INFO", "stats"]);
    assert!(
        !evicted.contains("evicted_keys:0\r"),
        "nothing was evicted: {evicted}"
    );
    let first = hits_of(&app.get("/").await.text().await.expect("greeting"));
    let second = hits_of(&app.get("/").await.text().await.expect("greeting"));
    assert_eq!(second, first + 1);
}

/// The per-client quota's 507 body for a quota of `max` entries.
fn client_quota_full(max: u64) -> String {
    format!(
        r#"{{"error":"cache quota of your address is full: at most {max} entries per client address; delete one or wait for entries to expire"}}"#
    )
}

/// An app whose cache holds 10 entries, at most 2 per client address.
async fn app_with_two_entries_per_client(redis: &RedisServer) -> TestApp {
    spawn_app_with(
        &redis.url(),
        &unique_prefix(),
        &[
            "--cache-max-entries",
            "10",
            "--cache-max-entries-per-client",
            "2",
        ],
    )
    .await
}

/// The members of a Redis set or sorted set, sorted.
fn members(redis: &RedisServer, arguments: &[&str]) -> Vec<String> {
    let reply = redis.command(arguments);
    let mut members: Vec<String> = reply.lines().map(str::to_owned).collect();
    members.sort();
    members
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_client_at_its_quota_gets_507_for_a_new_key_but_overwrites_its_own_and_others_still_write(
) {
    let redis = RedisServer::start();
    let app = app_with_two_entries_per_client(&redis).await;
    for key in ["a1", "a2"] {
        let path = format!("/api/cache/{key}");
        assert_eq!(app.put_from(CLIENT_A, &path, "v").await.status(), 204);
    }
    let refused = app.put_from(CLIENT_A, "/api/cache/a3", "v").await;
    assert_eq!(refused.status(), 507);
    assert!(refused.headers().get("retry-after").is_none());
    assert_eq!(refused.text().await.expect("body"), client_quota_full(2));
    assert_eq!(app.get("/api/cache/a3").await.status(), 404);
    // Its own entries are still its to overwrite.
    let overwrite = app.put_from(CLIENT_A, "/api/cache/a1?ttl=60", "w").await;
    assert_eq!(overwrite.status(), 204);
    let read = app.get("/api/cache/a1").await;
    assert_eq!(read.text().await.expect("body"), "w");
    // Another address, and requests without one (one shared bucket), have quotas of their own.
    assert_eq!(
        app.put_from(CLIENT_B, "/api/cache/b1", "v").await.status(),
        204
    );
    assert_eq!(app.put("/api/cache/u1", "v").await.status(), 204);
    // A delete frees a slot of the client that held the entry.
    assert_eq!(app.delete("/api/cache/a2").await.status(), 204);
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/a3", "v").await.status(),
        204
    );
    let again = app.put_from(CLIENT_A, "/api/cache/a4", "v").await;
    assert_eq!(again.status(), 507);

    let prefix = &app.key_prefix;
    let entries_of_a = format!("{prefix}cache-client:{CLIENT_A}");
    assert_eq!(
        members(&redis, &["ZRANGE", &entries_of_a, "0", "-1"]),
        [format!("{prefix}cache:a1"), format!("{prefix}cache:a3")]
    );
    let owners = format!("{prefix}cache-owners");
    assert_eq!(
        redis.command(&["HGET", &owners, &format!("{prefix}cache:a3")]),
        entries_of_a
    );
    assert_eq!(
        redis.command(&["HGET", &owners, &format!("{prefix}cache:u1")]),
        format!("{prefix}cache-client:unknown")
    );
    assert_eq!(
        redis.command(&["HEXISTS", &owners, &format!("{prefix}cache:a2")]),
        "0"
    );
    // A client's set goes away with its latest entry (300 s here).
    let expires_in: i64 = redis
        .command(&["PTTL", &entries_of_a])
        .parse()
        .expect("PTTL is a number");
    assert!((290_000..=300_000).contains(&expires_in), "{expires_in}");
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains(
            r#"webapp_http_requests_total{method="PUT",route="/api/cache/{key}",status="507"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn an_entry_another_client_overwrites_moves_to_that_clients_quota() {
    let redis = RedisServer::start();
    let app = app_with_two_entries_per_client(&redis).await;
    for key in ["shared", "a1"] {
        let path = format!("/api/cache/{key}");
        assert_eq!(app.put_from(CLIENT_A, &path, "a").await.status(), 204);
    }
    assert_eq!(
        app.put_from(CLIENT_B, "/api/cache/shared", "b")
            .await
            .status(),
        204
    );
    // The entry left A's quota: A has room for one more, then is full again.
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/a2", "a").await.status(),
        204
    );
    let refused = app.put_from(CLIENT_A, "/api/cache/a3", "a").await;
    assert_eq!(refused.text().await.expect("body"), client_quota_full(2));
    // The entry is B's now: A, at its quota, cannot take it back.
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/shared", "a")
            .await
            .status(),
        507
    );
    let read = app.get("/api/cache/shared").await;
    assert_eq!(read.text().await.expect("body"), "b");
    // And it counts against B: one more, then B is full.
    assert_eq!(
        app.put_from(CLIENT_B, "/api/cache/b1", "b").await.status(),
        204
    );
    assert_eq!(
        app.put_from(CLIENT_B, "/api/cache/b2", "b").await.status(),
        507
    );

    let prefix = &app.key_prefix;
    let entries_of_b = format!("{prefix}cache-client:{CLIENT_B}");
    assert_eq!(
        redis.command(&[
            "HGET",
            &format!("{prefix}cache-owners"),
            &format!("{prefix}cache:shared")
        ]),
        entries_of_b
    );
    assert_eq!(
        members(&redis, &["ZRANGE", &entries_of_b, "0", "-1"]),
        [format!("{prefix}cache:b1"), format!("{prefix}cache:shared")]
    );
    assert_eq!(
        members(
            &redis,
            &[
                "ZRANGE",
                &format!("{prefix}cache-client:{CLIENT_A}"),
                "0",
                "-1"
            ]
        ),
        [format!("{prefix}cache:a1"), format!("{prefix}cache:a2")]
    );
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn expired_entries_free_their_owners_quota() {
    let redis = RedisServer::start();
    let app = app_with_two_entries_per_client(&redis).await;
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/long", "v")
            .await
            .status(),
        204
    );
    let short = app.put_from(CLIENT_A, "/api/cache/short?ttl=1", "v").await;
    assert_eq!(short.status(), 204);
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/other", "v")
            .await
            .status(),
        507
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    // The expired entry left A's set (which lives on with its other entry) and the owners.
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/other", "v")
            .await
            .status(),
        204
    );
    assert_eq!(
        app.put_from(CLIENT_A, "/api/cache/more", "v")
            .await
            .status(),
        507
    );
    let prefix = &app.key_prefix;
    assert_eq!(
        redis.command(&[
            "HEXISTS",
            &format!("{prefix}cache-owners"),
            &format!("{prefix}cache:short")
        ]),
        "0"
    );
    assert_eq!(
        members(
            &redis,
            &[
                "ZRANGE",
                &format!("{prefix}cache-client:{CLIENT_A}"),
                "0",
                "-1"
            ]
        ),
        [
            format!("{prefix}cache:long"),
            format!("{prefix}cache:other")
        ]
    );
    assert_eq!(
        redis.command(&["ZCARD", &format!("{prefix}cache-index")]),
        "2"
    );
}

/// Sends `method path` as written (no client library in between to resolve dot segments) on a
/// connection of its own, with a one-byte body; returns the whole response.
async fn send_as_written(app: &TestApp, method: &str, path: &str) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the app");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("an answer within 10 s")
    .expect("read the response");
    response
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn dot_and_dot_dot_keys_however_spelled_are_refused_with_400_and_store_nothing() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    for key in ["..", "%2e%2e", ".", ".%2e", "%2E%2E", "%2e", "a%2fb"] {
        for method in ["PUT", "GET", "DELETE"] {
            let response = send_as_written(&app, method, &format!("/api/cache/{key}")).await;
            assert!(
                response.starts_with("HTTP/1.1 400"),
                "{method} {key}: {response}"
            );
            assert!(
                response.ends_with(
                    r#"{"error":"key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, other than . and .."}"#
                ),
                "{method} {key}: {response}"
            );
        }
    }
    // Three dots are a key like any other.
    let stored = send_as_written(&app, "PUT", "/api/cache/...").await;
    assert!(stored.starts_with("HTTP/1.1 204"), "{stored}");
    let keys = redis.command(&["KEYS", &format!("{}cache:*", app.key_prefix)]);
    assert_eq!(keys, format!("{}cache:...", app.key_prefix));
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn out_of_memory_is_a_507_that_says_so_not_redis_unavailable() {
    // With `noeviction` (the old setting) a full Redis refuses writes: the app must say that
    // Redis is full, not that it is unreachable, and count it apart in the metrics.
    let redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    assert_eq!(app.get("/").await.status(), 200);
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
    let refused = app.get("/").await;
    assert_eq!(refused.status(), 507);
    assert!(refused.headers().get("retry-after").is_none());
    let body = refused.text().await.expect("body");
    assert!(body.contains("out of memory"), "{body}");
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("webapp_redis_errors_total{kind=\"oom\"} 1"),
        "{metrics}"
    );
    assert_eq!(app.get("/").await.status(), 200);
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_request_retried_with_the_same_idempotency_key_is_counted_once() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let replica_a = spawn_app_with(&redis.url(), &prefix, &["--replica", "a"]).await;
    let replica_b = spawn_app_with(&redis.url(), &prefix, &["--replica", "b"]).await;
    let greet = |app: &crate::support::app::TestApp, key: &str| {
        app.client
            .get(app.url("/"))
            .header("Idempotency-Key", key)
            .send()
    };
    let first = greet(&replica_a, "req-1")
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    // nginx retried the same request on replica b: the same count, not one more.
    let retry = greet(&replica_b, "req-1")
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(hits_of(&first), hits_of(&retry));
    let next = greet(&replica_b, "req-2")
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(hits_of(&next), hits_of(&first) + 1);
    // Per-replica counts add up to the total.
    let replicas = json_of(replica_a.get("/api/replicas").await).await;
    assert_eq!(replicas["a"], 1);
    assert_eq!(replicas["b"], 1);
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn head_reads_the_counter_without_counting() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    assert_eq!(app.get("/").await.status(), 200);
    let head = app.client.head(app.url("/")).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    let hits = json_of(app.get("/api/hits").await).await;
    assert_eq!(hits["hits"], 1);
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_body_on_a_route_that_takes_none_is_read_and_the_answer_is_the_routes_own() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    let body = vec![b'b'; 60_000];
    for _ in 0..20 {
        let response = app
            .client
            .get(app.url("/"))
            .body(body.clone())
            .send()
            .await
            .expect("GET / with a body");
        assert_eq!(response.status(), 200);
    }
    let post = app
        .client
        .post(app.url("/"))
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status(), 405);
    let hits = json_of(app.get("/api/hits").await).await;
    assert_eq!(hits["hits"], 20);
}

#[tokio::test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn cache_reads_forbid_content_sniffing_and_queries_are_strict() {
    let redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    assert_eq!(app.put("/api/cache/page", "<html>").await.status(), 204);
    let read = app.get("/api/cache/page").await;
    assert_eq!(
        read.headers()
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
    for (path, named) in [
        ("/api/cache/page?TTL=5", "TTL"),
        ("/api/cache/page?ttl[]=5", "ttl[]"),
        ("/api/cache/page?ttl=5&ttl=5", "ttl"),
    ] {
        let response = app.put(path, "v").await;
        assert_eq!(response.status(), 400, "{path}");
        let body = response.text().await.expect("body");
        assert!(
            body.contains(&format!("\"{named}\"").replace('"', "\\\"")),
            "{path}: {body}"
        );
    }
    for path in ["/api/cache/page?ttl=+5", "/api/cache/page?ttl=0005"] {
        assert_eq!(app.put(path, "v").await.status(), 400, "{path}");
    }
    assert_eq!(app.get("/api/cache/page?x=1").await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn a_503_on_a_write_is_an_unknown_outcome_the_counter_never_exceeds_200s_plus_503s() {
    // Redis paused under load: the app answers 503 at its deadline, but commands it already sent
    // run when Redis resumes. The README states this; the figure printed here is its measure.
    let mut redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    let load = |app: &crate::support::app::TestApp| {
        let (client, url) = (app.client.clone(), app.url("/"));
        tokio::spawn(async move {
            let (mut ok, mut unavailable) = (0u64, 0u64);
            let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
            while std::time::Instant::now() < until {
                match client.get(&url).send().await.map(|r| r.status().as_u16()) {
                    Ok(200) => ok += 1,
                    Ok(503) => unavailable += 1,
                    other => panic!("GET /: {other:?}"),
                }
            }
            (ok, unavailable)
        })
    };
    let workers: Vec<_> = (0..8).map(|_| load(&app)).collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    redis.pause();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    redis.resume();
    let (mut ok, mut unavailable) = (0, 0);
    for worker in workers {
        let (worker_ok, worker_unavailable) = worker.await.expect("load");
        ok += worker_ok;
        unavailable += worker_unavailable;
    }
    let hits = json_of(app.get("/api/hits").await).await["hits"]
        .as_u64()
        .expect("hits");
    eprintln!(
        "Redis paused 2 s under 8 clients: {ok} x 200, {unavailable} x 503, counter {hits}: {} of the 503s were counted",
        hits.saturating_sub(ok)
    );
    assert!(unavailable > 0, "the pause produced no 503");
    assert!(hits >= ok, "a 200 was not counted");
    assert!(hits <= ok + unavailable, "more counts than requests");
}
