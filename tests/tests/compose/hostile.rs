//! Hostile clients and sick replicas, seen from the webapp's side: write
//! floods, unwanted bodies, a frozen replica, odd input.

use super::*;

/// Sends `request` as raw bytes to the proxy's published port (loopback,
/// checked by the guard) and returns the status and body of the answer.
fn raw_request(stack: &ComposeStack, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", stack.port)
        .parse()
        .expect("address");
    netguard::check_destination(address.ip(), &[]).unwrap_or_else(|refused| panic!("{refused}"));
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, REQUEST_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("read timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

/// `redis-cli <args>` in the db container, authenticated.
fn redis_cli(stack: &ComposeStack, args: &[&str]) -> String {
    let db = stack.single(Service::Db).id;
    let password = stack.redis_password();
    let mut command = vec![
        "exec",
        &db,
        "/usr/bin/redis-cli",
        "--no-auth-warning",
        "-a",
        &password,
    ];
    command.extend_from_slice(args);
    docker(&command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn a_cache_write_flood_is_rate_limited_and_get_root_keeps_answering_200() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();

    // Cache entries carry a TTL and the counters none, so under memory
    // pressure Redis evicts cache entries, never the counters.
    let policy = redis_cli(&stack, &["config", "get", "maxmemory-policy"]);
    assert!(policy.contains("volatile-lru"), "{policy}");

    let root_load = ClosedLoad::start(&client, &format!("{}/", stack.url), 2);
    // 16 writers of 64 KiB values with a long TTL, as the attack did.
    let value = vec![b'v'; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let (client, url, value) = (client.clone(), stack.url.clone(), value.clone());
            tokio::spawn(async move {
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                let mut retry_after_on_429 = true;
                let mut sent = 0;
                while Instant::now() < deadline {
                    let response = client
                        .put(format!("{url}/api/cache/e2e-fill-{writer}-{sent}?ttl=60"))
                        .body(value.clone())
                        .send()
                        .await;
                    sent += 1;
                    let Ok(response) = response else { continue };
                    let status = response.status().as_u16();
                    if status == 429 {
                        retry_after_on_429 &= response.headers().contains_key("retry-after");
                        let body = response.text().await.unwrap_or_default();
                        assert!(body.contains("\"error\""), "429 body: {body}");
                    }
                    *statuses.entry(status).or_default() += 1;
                }
                (statuses, retry_after_on_429)
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for writer in writers {
        let (counts, retry_after) = writer.await.expect("writer");
        assert!(retry_after, "a 429 without Retry-After");
        for (status, count) in counts {
            *statuses.entry(status).or_default() += count;
        }
    }
    let root = root_load.stop().await;
    let used = redis_cli(&stack, &["info", "memory"]);
    let used_memory = used
        .lines()
        .find_map(|line| line.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    eprintln!(
        "[e2e] cache write flood (16 writers, 64 KiB values, 4 s): PUT statuses {statuses:?}; GET / meanwhile {:?}; Redis used_memory {used_memory}",
        tally(&root)
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 0,
        "the flood was not rate limited: {statuses:?}"
    );
    assert!(
        statuses
            .keys()
            .all(|status| [204, 429, 507].contains(status)),
        "{statuses:?}"
    );
    assert!(!root.is_empty());
    assert!(
        root.iter().all(|outcome| outcome.result == Ok(200)),
        "GET / during the flood: {:?}",
        tally(&root)
    );
    // Leave no entries behind for the other tests.
    redis_cli(
        &stack,
        &[
            "eval",
            "for _, pattern in ipairs({ARGV[1], ARGV[3]}) do \
               for _, key in ipairs(redis.call('keys', pattern)) do redis.call('del', key) end \
             end \
             redis.call('del', ARGV[2], ARGV[4]) return 1",
            "0",
            "webstack:cache:e2e-fill-*",
            "webstack:cache-index",
            "webstack:cache-client:*",
            "webstack:cache-owners",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn bodies_on_routes_that_take_none_give_the_apps_own_status_and_count_each_request_once() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    let before = hits(&client, &stack).await;
    let mut root_200s = 0;
    for size in [0, 1_000, 65_536, 70_000, 120_000, 131_072] {
        for (method, path, expected) in [
            ("GET", "/", 200),
            ("DELETE", "/api/cache/e2e-no-such-key", 404),
            ("POST", "/", 405),
            ("GET", "/no-such-page", 404),
        ] {
            // nginx refuses POST itself, before it looks at the body's size.
            let expected = if size > 65_536 && method != "POST" {
                413
            } else {
                expected
            };
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let response = client
                .request(method.clone(), format!("{}{path}", stack.url))
                .body(vec![b'b'; size])
                .send()
                .await
                .unwrap_or_else(|error| panic!("{method} {path} with {size} bytes: {error}"));
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(
                status, expected,
                "{method} {path} with {size} bytes: {body}"
            );
            assert!(
                body.is_empty() || status == 200 || body.contains("\"error\""),
                "{body}"
            );
            if method == reqwest::Method::GET && path == "/" && status == 200 {
                root_200s += 1;
            }
        }
    }
    // The same under concurrency, with the largest body a replica accepts.
    let body = vec![b'c'; 65_000];
    let requests: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, body) = (client.clone(), format!("{}/", stack.url), body.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..10 {
                    let status = match client.get(&url).body(body.clone()).send().await {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 0,
                    };
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for request in requests {
        for status in request.await.expect("client") {
            *statuses.entry(status).or_default() += 1;
        }
    }
    root_200s += statuses.get(&200).copied().unwrap_or(0) as u64;
    let after = hits(&client, &stack).await;
    eprintln!(
        "[e2e] bodies on GET /: 32 clients x 10 requests with 65,000 bytes: {statuses:?}; counter +{} for {root_200s} answers 200",
        after - before
    );
    assert_eq!(statuses.get(&200), Some(&320), "{statuses:?}");
    assert_eq!(after - before, root_200s, "each GET / must count once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn a_frozen_replica_fails_no_request_and_delays_none_beyond_2_seconds() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    let victim = stack.running(Service::Webapp)[0].id.clone();
    let before = hits(&client, &stack).await;

    let load = ClosedLoad::start(&client, &format!("{}/", stack.url), 16);
    tokio::time::sleep(Duration::from_secs(1)).await;
    docker(&["kill", "--signal", "STOP", &victim]);
    let frozen = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let outcomes = load.stop().await;
    docker(&["kill", "--signal", "CONT", &victim]);

    let during: Vec<&Timed> = outcomes
        .iter()
        .filter(|outcome| outcome.started >= frozen)
        .collect();
    let slowest = during
        .iter()
        .map(|outcome| outcome.took)
        .max()
        .unwrap_or_default();
    let over_one_second = during
        .iter()
        .filter(|outcome| outcome.took > Duration::from_secs(1))
        .count();
    let ok = outcomes
        .iter()
        .filter(|outcome| outcome.result == Ok(200))
        .count() as u64;
    eprintln!(
        "[e2e] one of 3 replicas frozen (SIGSTOP) under 16 clients for 8 s: {} requests while frozen, {:?}, slowest {slowest:.2?}, {over_one_second} took over 1 s",
        during.len(),
        tally(&outcomes)
    );
    assert!(
        outcomes.iter().all(|outcome| outcome.result == Ok(200)),
        "{:?}",
        tally(&outcomes)
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?} while one replica was frozen"
    );
    // The thawed replica runs the requests nginx gave up on; they were
    // counted where nginx retried them, so the counter is exact.
    stack.wait_until_healthy(WEBAPP_REPLICAS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = hits(&client, &stack).await;
    assert_eq!(
        after - before,
        ok,
        "the counter must rise by the answers 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn small_things_json_errors_nosniff_strict_queries_one_request_id_and_head_counts_nothing() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();

    let put = client
        .put(format!("{}/api/cache/e2e-small?ttl=30", stack.url))
        .body("<script>")
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 204);
    let read = client
        .get(format!("{}/api/cache/e2e-small", stack.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(
        read.headers()
            .get("x-content-type-options")
            .and_then(|value| value.to_str().ok()),
        Some("nosniff")
    );
    assert_eq!(
        read.headers().get_all("x-request-id").iter().count(),
        1,
        "one X-Request-Id: {:?}",
        read.headers()
    );

    for (query, names) in [
        ("TTL=5", "TTL"),
        ("ttl[]=5", "ttl[]"),
        ("ttl=5&ttl=6", "ttl"),
        ("ttl=+5", "ttl"),
        ("ttl=0005", "ttl"),
    ] {
        let (status, body) = {
            let response = client
                .put(format!("{}/api/cache/e2e-small?{query}", stack.url))
                .body("x")
                .send()
                .await
                .expect("PUT");
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        };
        assert_eq!(status, 400, "?{query}: {body}");
        assert!(body.contains(names), "?{query}: {body}");
    }

    let too_large = client
        .put(format!("{}/api/cache/e2e-small", stack.url))
        .body(vec![b'x'; 70_000])
        .send()
        .await
        .expect("PUT");
    assert_eq!(too_large.status().as_u16(), 413);
    assert_eq!(
        too_large
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/json")
    );

    // What the webapp's own HTTP parser would refuse with a bare 400 or 431
    // never reaches it: nginx refuses odd request lines itself, with JSON,
    // and passes no client header on.
    let odd_header =
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Odd: a\x01b\r\nConnection: close\r\n\r\n".to_vec();
    let mut many_headers = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for index in 0..150 {
        many_headers.extend_from_slice(format!("X-Header-{index}: v\r\n").as_bytes());
    }
    many_headers.extend_from_slice(b"Connection: close\r\n\r\n");
    for (request, expected) in [
        (
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /?a<b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (odd_header, 200),
        (many_headers, 200),
    ] {
        let (status, body) = raw_request(&stack, &request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert_eq!(status, expected, "{shown:?}: {body}");
        if expected == 400 {
            assert!(
                body.contains("\"error\""),
                "{shown:?}: a bare {status}: {body:?}"
            );
        }
    }

    let before = hits(&client, &stack).await;
    let head = client
        .head(format!("{}/", stack.url))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(hits(&client, &stack).await, before, "HEAD / must not count");

    let delete = client
        .delete(format!("{}/api/cache/e2e-small", stack.url))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status().as_u16(), 204);
}

/// Entries one client address may hold (the webapp's
/// `WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT`, by default).
const CACHE_ENTRIES_PER_CLIENT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn one_client_cannot_lock_others_out_of_the_cache() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    // Two clients with addresses of their own, as clients on two machines.
    let (greedy, other) = (Ipv4Addr::new(127, 0, 0, 42), Ipv4Addr::new(127, 0, 0, 43));
    let clients = stack.proxy_loopback();
    let request = |method: &str, key: &str| {
        format!(
            "{method} /api/cache/{key}?ttl=86400 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nvalue"
        )
        .into_bytes()
    };
    let delete = |key: &str| {
        format!("DELETE /api/cache/{key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    for index in 0..CACHE_ENTRIES_PER_CLIENT {
        let answer = clients
            .exchange(greedy, &request("PUT", &format!("e2e-greedy-{index}")))
            .await;
        assert_eq!(answer.status, 204, "entry {index}: {}", answer.body);
    }
    let refused = clients
        .exchange(greedy, &request("PUT", "e2e-greedy-more"))
        .await;
    assert_eq!(refused.status, 507, "{}", refused.body);
    assert!(
        refused.body.contains("per client address"),
        "{}",
        refused.body
    );
    // Its own entries it may still overwrite.
    let overwritten = clients
        .exchange(greedy, &request("PUT", "e2e-greedy-0"))
        .await;
    assert_eq!(overwritten.status, 204, "{}", overwritten.body);
    // Another client is not locked out.
    let others = clients.exchange(other, &request("PUT", "e2e-other")).await;
    assert_eq!(others.status, 204, "{}", others.body);
    // A deleted entry frees its owner's quota.
    assert_eq!(
        clients
            .exchange(greedy, &delete("e2e-greedy-1"))
            .await
            .status,
        204
    );
    let again = clients
        .exchange(greedy, &request("PUT", "e2e-greedy-more"))
        .await;
    assert_eq!(again.status, 204, "{}", again.body);
    eprintln!(
        "[e2e] one address: {CACHE_ENTRIES_PER_CLIENT} entries of a day stored, the next refused (507: {}), its own overwritten (204); another address stored (204)",
        refused.body.trim()
    );
    for key in (0..CACHE_ENTRIES_PER_CLIENT)
        .map(|index| format!("e2e-greedy-{index}"))
        .chain(["e2e-greedy-more".to_string()])
    {
        let _ = clients.exchange(greedy, &delete(&key)).await;
    }
    assert_eq!(
        clients.exchange(other, &delete("e2e-other")).await.status,
        204
    );
}
