//! The counter, and every replica serving through the proxy, also while
//! the stack scales under load.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn get_root_answers_200_with_the_counter_and_200_concurrent_requests_raise_it_by_exactly_200()
{
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    let url = format!("{}/", stack.url);

    let (status, body) = get(&client, &url).await.expect("GET / answers");
    assert_eq!(status, 200, "GET /: {body}");
    parse_greeting(&body);

    let check = stack_tests::harness::concurrent_get_root_counts_each_request_once(
        &client, &stack.url, 200,
    )
    .await;
    eprintln!(
        "[e2e] 200 concurrent GET /: {:.2?}, answers {:?}, counter {} -> {}",
        check.elapsed, check.outcomes, check.before, check.after
    );
}

// Every replica serves, also after scaling down and up again.

/// The fixed request rate kept up while the webapp is scaled.
const SCALE_LOAD_PER_SECOND: f64 = 100.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn every_running_webapp_replica_answers_get_root_through_the_proxy() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let served =
        checks::every_webapp_replica_serves(&stack, WEBAPP_REPLICAS, Duration::from_secs(30)).await;
    eprintln!(
        "[e2e] {} replicas: all answered within {:.2?}; answers per replica {:?}",
        served.replicas.len(),
        served.took,
        served.answers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn scaling_to_1_and_back_to_3_under_load_fails_no_request_and_keeps_the_proxy() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let nginx_before = [Service::Proxy, Service::Balancer].map(|service| stack.single(service));
    checks::every_webapp_replica_serves(&stack, WEBAPP_REPLICAS, Duration::from_secs(30)).await;
    // Every scale step changes the replicas' addresses, so the balancer
    // reloads its nginx while these kept-alive client connections send.
    let load = FixedRateLoad::start(
        &http_client(),
        &format!("{}/", stack.url),
        SCALE_LOAD_PER_SECOND,
        Duration::from_secs(1),
    );

    stack.xtask(&["scale", "1"]);
    let live = checks::webapp_hostnames(&stack);
    assert_eq!(live.len(), 1, "replicas after scale 1: {live:?}");
    // Right after scaling down, nginx may still hold the removed replicas'
    // addresses (until proxy-init's next lookup and reload): those attempts
    // must be retried on the live one, never reach the client as errors.
    let client = http_client();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..30 {
        let (status, body) = get(&client, &format!("{}/", stack.url))
            .await
            .expect("GET / answers after scale 1");
        assert_eq!(status, 200, "GET / after scale 1: {body}");
        *answers.entry(parse_greeting(&body).0).or_default() += 1;
    }
    eprintln!(
        "[e2e] scale 1: 30 sequential GET / in {:.2?}, all 200, answers per replica {answers:?}",
        started.elapsed()
    );
    assert!(answers.keys().all(|replica| live.contains(replica)));

    stack.xtask(&["scale", "3"]);
    let served =
        checks::every_webapp_replica_serves(&stack, WEBAPP_REPLICAS, Duration::from_secs(30)).await;
    eprintln!(
        "[e2e] scale 3: nginx reached every replica within {:.2?} of the scale finishing; answers {:?}",
        served.took, served.answers
    );
    let report = load.stop().await;
    eprintln!(
        "[e2e] scale 3 -> 1 -> 3 under {SCALE_LOAD_PER_SECOND} requests/s: {} sent in {:.1}s, {} failed, {} slower than 1 s; first failures {:?}",
        report.sent, report.seconds, report.failed, report.slow, report.first_failures
    );
    report.assert_rate_held("scale 3 -> 1 -> 3");
    assert_eq!(
        report.failed, 0,
        "requests failed while the webapp was scaled: {:?}",
        report.first_failures
    );

    for before in nginx_before {
        let service = before.label(SERVICE_LABEL).unwrap_or("?").to_owned();
        let after = stack.single(service.parse().expect("a service of the stack"));
        assert_eq!(before.id, after.id, "{service} container replaced");
        assert_eq!(
            before.state.started_at, after.state.started_at,
            "{service} restarted"
        );
    }
}

/// Replicas the webapp is scaled out to, and back from, under load.
const SCALE_OUT_REPLICAS: usize = 20;
/// The fixed rate kept up while the webapp scales out to 20 and back.
const SCALE_OUT_LOAD_PER_SECOND: f64 = 50.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn scaling_3_to_20_to_3_twice_under_load_fails_no_request() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let report = checks::scaling_out_and_back_in_under_load_fails_no_request(
        &stack,
        |replicas| stack.xtask(&["scale", &replicas.to_string()]),
        SCALE_OUT_REPLICAS,
        2,
        SCALE_OUT_LOAD_PER_SECOND,
    )
    .await;
    eprintln!(
        "[e2e] scale 3 -> {SCALE_OUT_REPLICAS} -> 3 twice under {SCALE_OUT_LOAD_PER_SECOND} requests/s: steps (replicas, until all served) {:?}; {} sent in {:.1}s, {} failed, {} slower than 1 s",
        report.steps, report.load.sent, report.load.seconds, report.load.failed, report.load.slow
    );
}

/// How many TCP connections the balancer container has opened so far: the
/// kernel's `ActiveOpens` counter of its network namespace, from
/// `/proc/<pid>/net/snmp` of one of its processes. Its only outgoing TCP
/// connections are nginx's to the replicas, proxy-init's `/readyz` probes
/// when the replicas change, and its healthcheck's to itself (the front
/// reaches it over a unix socket).
fn balancer_tcp_connections_opened(stack: &ComposeStack) -> u64 {
    let pids = container_pids(&stack.single(Service::Balancer).id);
    let pid = pids.first().expect("the balancer runs a process");
    let path = format!("/proc/{pid}/net/snmp");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let mut tcp_lines = text.lines().filter(|line| line.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp_lines.next(), tcp_lines.next()) else {
        panic!("no Tcp: lines in {path}:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ActiveOpens")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no ActiveOpens in {path}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn the_balancer_reuses_its_connections_to_the_replicas() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    let url = format!("{}/", stack.url);
    let requests: u64 = 400;
    let concurrency = 8;

    let before = balancer_tcp_connections_opened(&stack);
    for _ in 0..requests / concurrency {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, url) = (client.clone(), url.clone());
            batch.spawn(async move { get(&client, &url).await });
        }
        while let Some(answer) = batch.join_next().await {
            let (status, body) = answer.expect("request task").expect("GET / answers");
            assert_eq!(status, 200, "GET /: {body}");
        }
    }
    let opened = balancer_tcp_connections_opened(&stack) - before;

    eprintln!("[e2e] {requests} GET /, {concurrency} at a time: the balancer opened {opened} TCP connections");
    // A connection per proxied request would be `requests` of them; kept-alive
    // connections are opened once per replica and nginx worker, plus the
    // healthcheck's one every few seconds.
    assert!(
        opened < requests / 10,
        "the balancer opened {opened} connections for {requests} requests: it does not keep its connections to the replicas"
    );
}
