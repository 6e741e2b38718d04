//! End-to-end tests of the stack on Docker Swarm: replicas, a rolling update
//! under load, an automatic rollback, and self-healing.
//!
//! `cargo xtask e2e --swarm` deploys a stack under a unique name and a free
//! port, runs these tests with the `WEBSTACK_SWARM_*` variables set, and
//! removes the stack afterwards. Run without those variables, every test
//! fails saying so. The tests share one stack, so they take turns (see
//! [`ONE_TEST_AT_A_TIME`]) and each leaves the stack converged.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stack_tests::contract::swarm::{
    STACK_VARIABLE, TEST_IMAGE_LABEL, URL_VARIABLE, WEBAPP_IMAGE_VARIABLE,
};
use stack_tests::harness::{docker, FixedRateLoad};

/// Replicas `deploy/stack.yaml` asks for.
const WEBAPP_REPLICAS: usize = 3;

/// Generous bounds: they catch a hang, they do not measure speed.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long nginx may serve from a stale lookup of the replicas' addresses:
/// its cache time (`valid=` in nginx/webapp-upstream.conf, a few seconds),
/// with a wide margin.
const NGINX_RERESOLVE_BOUND: Duration = Duration::from_secs(20);

/// The tests change one shared stack (counter, images, containers): one at a
/// time, whatever `--test-threads` says. An async mutex, because each test
/// holds it across awaits; tokio's does not poison, so one failed test does
/// not fail the others.
static ONE_TEST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The stack under test, from the variables xtask sets.
struct SwarmStack {
    name: String,
    url: String,
}

impl SwarmStack {
    fn from_environment() -> SwarmStack {
        let read = |variable: &str| {
            std::env::var(variable).unwrap_or_else(|_| {
                panic!(
                    "{variable} is not set: these tests need a stack deployed on Docker Swarm; \
                     run them with `cargo xtask e2e --swarm`, which deploys one, sets \
                     {STACK_VARIABLE}, {URL_VARIABLE} and {WEBAPP_IMAGE_VARIABLE}, and removes it afterwards"
                )
            })
        };
        // Read all three so a half-set environment fails here, not later.
        let _ = read(WEBAPP_IMAGE_VARIABLE);
        let url = read(URL_VARIABLE).trim_end_matches('/').to_owned();
        // Test traffic stays on this machine: the published port on loopback.
        stack_tests::netguard::check_url(&url, &[]).unwrap_or_else(|refused| panic!("{refused}"));
        SwarmStack {
            name: read(STACK_VARIABLE),
            url,
        }
    }

    fn service(&self, short_name: &str) -> String {
        format!("{}_{short_name}", self.name)
    }

    fn webapp(&self) -> String {
        self.service("webapp")
    }
}

// ---------------------------------------------------------------------------
// The checks.

// Multi-threaded: the load runs on its own workers while the test thread
// blocks on `docker` calls and sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn counter_rises_by_exactly_200_under_200_concurrent_requests() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    let client = stack_tests::harness::http_client();

    let check = stack_tests::harness::concurrent_get_root_counts_each_request_once(
        &client, &stack.url, 200,
    )
    .await;
    println!(
        "200 concurrent GET /: {:.2?}, answers {:?}, counter {} -> {}",
        check.elapsed, check.outcomes, check.before, check.after
    );
}

// Multi-threaded: the load runs on its own workers while the test thread
// blocks on `docker` calls and sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn every_webapp_replica_serves_requests_and_only_the_proxy_is_published() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    let client = stack_tests::harness::http_client();

    let replica_hostnames: BTreeSet<String> = running_task_containers(&stack.webapp())
        .iter()
        .map(|container| container_hostname(container))
        .collect();
    assert_eq!(
        replica_hostnames.len(),
        WEBAPP_REPLICAS,
        "expected {WEBAPP_REPLICAS} running webapp tasks, found {replica_hostnames:?}"
    );
    // nginx picks the next replica per request, among the addresses its
    // last lookup of `webapp` returned; a lookup is reused for a few seconds
    // (nginx/webapp-upstream.conf), per nginx worker, so a replica that a
    // previous test replaced may take that long to be seen everywhere.
    let deadline = Instant::now() + NGINX_RERESOLVE_BOUND;
    let served_by = loop {
        let mut served_by = BTreeSet::new();
        for _ in 0..(10 * WEBAPP_REPLICAS) {
            served_by.insert(replica_of_greeting(&client, &stack.url).await);
        }
        if served_by == replica_hostnames || Instant::now() > deadline {
            break served_by;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        served_by, replica_hostnames,
        "requests through the proxy were served by {served_by:?}, the running replicas are {replica_hostnames:?}"
    );

    // Only the proxy publishes a port; db and webapp live on overlay
    // networks the host has no route into. (Connecting to their overlay
    // addresses from the host to prove it would send traffic off this
    // machine, so the test checks the engine's view instead.)
    for short_name in ["db", "webapp"] {
        let service = inspect_service(&stack.service(short_name));
        let published = &service["Endpoint"]["Ports"];
        assert!(
            published.is_null() || published.as_array().is_some_and(Vec::is_empty),
            "{short_name} publishes ports: {published}"
        );
        let spec_ports = &service["Spec"]["EndpointSpec"]["Ports"];
        assert!(
            spec_ports.is_null() || spec_ports.as_array().is_some_and(Vec::is_empty),
            "{short_name} asks for published ports: {spec_ports}"
        );
        for container in running_task_containers(&stack.service(short_name)) {
            let bindings = docker(&[
                "inspect",
                "--type",
                "container",
                "--format",
                "{{json .NetworkSettings.Ports}}",
                &container,
            ]);
            assert!(
                !bindings.contains("HostPort"),
                "{short_name} container {container} has host port bindings: {bindings}"
            );
        }
    }
    let db_networks = service_network_names(&stack.service("db"));
    assert_eq!(
        db_networks,
        vec![format!("{}_backend", stack.name)],
        "db must be on the backend network only"
    );
    let backend = docker(&[
        "network",
        "inspect",
        "--format",
        "{{.Internal}}",
        &format!("{}_backend", stack.name),
    ]);
    assert_eq!(
        backend.trim(),
        "true",
        "the backend network must be internal"
    );
    let proxy_ports =
        inspect_service(&stack.service("proxy"))["Spec"]["EndpointSpec"]["Ports"].clone();
    let proxy_published: Vec<u64> = proxy_ports
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|port| port["PublishedPort"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let url_port: u64 = stack
        .url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the stack URL ends with a port");
    assert_eq!(
        proxy_published,
        vec![url_port],
        "the proxy publishes exactly the stack's port"
    );
}

// Multi-threaded: the load runs on its own workers while the test thread
// blocks on `docker` calls and sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn rolling_update_of_webapp_under_load_fails_no_request() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    let image_before = service_image(&stack.webapp());
    // A freshly built image in all but the build: same files, one more
    // label, so a new image id that Swarm must roll out.
    let new_image = commit_test_image(&stack, &image_before, "rolled", &[]);

    let load = start_load(&stack.url, ROLLOUT_LOAD_PER_SECOND);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rollout_started = Instant::now();
    let previous_start = update_webapp_image(&stack, &new_image);
    let outcome = wait_for_update_to_finish(&stack.webapp(), previous_start).await;
    let rollout_duration = rollout_started.elapsed();
    wait_until_service_converged(&stack.webapp());
    // Keep the load on a moment after the last old replica went away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop().await;
    report.assert_rate_held("load during the rolling update");

    println!(
        "rolling update: {} in {:.1}s; load {} requests ({} ok, {} failed) in {:.1}s, {:.0} requests/s",
        outcome.state,
        rollout_duration.as_secs_f64(),
        report.sent,
        report.succeeded,
        report.failed,
        report.seconds,
        report.sent as f64 / report.seconds
    );
    assert_eq!(
        outcome.state, "completed",
        "the rollout ended {} ({})",
        outcome.state, outcome.message
    );
    let images_running = running_task_images(&stack.webapp());
    assert!(
        images_running.iter().all(|image| image == &new_image),
        "after the rollout, the tasks run {images_running:?}, expected only {new_image}"
    );
    assert!(
        report.sent >= MIN_REQUESTS_DURING_ROLLOUT,
        "only {} requests were sent during the rollout: the load generator did not keep up",
        report.sent
    );
    assert_eq!(
        report.failed, 0,
        "{} of {} requests failed during the rolling update, first failures: {:?}",
        report.failed, report.sent, report.first_failures
    );
}

// Multi-threaded: the load runs on its own workers while the test thread
// blocks on `docker` calls and sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn update_to_an_image_failing_its_healthcheck_rolls_back_and_keeps_serving() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    let image_before = service_image(&stack.webapp());
    // The stack file declares webapp's healthcheck, which overrides any
    // HEALTHCHECK of the image, so the broken image is broken the way a bad
    // build would be: it serves on port 5001 while the healthcheck (and
    // nginx) expect 5000. Its tasks never become healthy, so Swarm never
    // routes to them and the update's failure action rolls back.
    let broken_image = commit_test_image(
        &stack,
        &image_before,
        "unhealthy",
        &[r#"ENTRYPOINT ["/usr/local/bin/webapp", "--port", "5001"]"#],
    );

    let load = start_load(&stack.url, CHECK_LOAD_PER_SECOND);
    let started = Instant::now();
    let previous_start = update_webapp_image(&stack, &broken_image);
    let outcome = wait_for_update_to_finish(&stack.webapp(), previous_start).await;
    let rollback_duration = started.elapsed();
    wait_until_service_converged(&stack.webapp());
    let report = load.stop().await;
    report.assert_rate_held("load during the failed update and its rollback");

    println!(
        "failed update: {} after {:.1}s ({}); load {} requests ({} ok, {} failed)",
        outcome.state,
        rollback_duration.as_secs_f64(),
        outcome.message,
        report.sent,
        report.succeeded,
        report.failed
    );
    assert_eq!(
        outcome.state, "rollback_completed",
        "an update to an image that never becomes healthy must roll back by itself ({})",
        outcome.message
    );
    assert_eq!(
        service_image(&stack.webapp()),
        image_before,
        "after the rollback the service spec names the previous image again"
    );
    let images_running = running_task_images(&stack.webapp());
    assert!(
        images_running.iter().all(|image| image == &image_before),
        "after the rollback, the tasks run {images_running:?}, expected only {image_before}"
    );
    assert_eq!(
        images_running.len(),
        WEBAPP_REPLICAS,
        "after the rollback {WEBAPP_REPLICAS} replicas run"
    );
    assert_eq!(
        report.failed, 0,
        "{} of {} requests failed while the broken update rolled back, first failures: {:?}",
        report.failed, report.sent, report.first_failures
    );
}

// Multi-threaded: the load runs on its own workers while the test thread
// blocks on `docker` calls and sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn a_removed_webapp_container_is_replaced_and_requests_keep_succeeding() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    let client = stack_tests::harness::http_client();
    let containers_before = running_task_containers(&stack.webapp());
    let victim = containers_before
        .first()
        .expect("webapp has running tasks")
        .clone();

    let load = start_load(&stack.url, CHECK_LOAD_PER_SECOND);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    docker(&["rm", "--force", &victim]);
    // Swarm notices the task's container is gone and starts a replacement.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let replacement = loop {
        let containers = running_task_containers(&stack.webapp());
        let new: Vec<&String> = containers
            .iter()
            .filter(|container| !containers_before.contains(container))
            .collect();
        if containers.len() == WEBAPP_REPLICAS
            && !containers.contains(&victim)
            && new.len() == 1
            && service_converged(&stack.webapp()).is_ok()
        {
            break new[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "Swarm did not replace the removed container within {CONVERGE_TIMEOUT:?}: running {containers:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let healed_after = started.elapsed();
    // The replacement must get traffic too, without touching nginx: it
    // re-resolves the service name every few seconds.
    let replacement_hostname = container_hostname(&replacement);
    let deadline = Instant::now() + NGINX_RERESOLVE_BOUND;
    let mut served_by_replacement = false;
    while !served_by_replacement && Instant::now() < deadline {
        served_by_replacement =
            replica_of_greeting(&client, &stack.url).await == replacement_hostname;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.stop().await;
    report.assert_rate_held("load while the removed container is replaced");

    println!(
        "removed container: healed in {:.1}s; load {} requests ({} ok, {} failed)",
        healed_after.as_secs_f64(),
        report.sent,
        report.succeeded,
        report.failed
    );
    assert!(
        served_by_replacement,
        "the replacement replica {replacement_hostname} got no request through the proxy within {NGINX_RERESOLVE_BOUND:?}"
    );
    assert_eq!(
        report.failed, 0,
        "{} of {} requests failed while a webapp container was removed and replaced, first failures: {:?}",
        report.failed,
        report.sent,
        report.first_failures
    );
}

// ---------------------------------------------------------------------------
// Load: a steady rate of `GET /`, counted, bounded in time.

/// Requests per second during the rolling update: "a few hundred".
const ROLLOUT_LOAD_PER_SECOND: u32 = 300;
/// Requests per second while checking rollback and healing.
const CHECK_LOAD_PER_SECOND: u32 = 100;
/// Below this the rollout check would prove little.
const MIN_REQUESTS_DURING_ROLLOUT: u64 = 1_000;
/// A `GET /` answered this slowly is counted as slow (reported only).
const SLOW_ANSWER: Duration = Duration::from_secs(1);

/// A steady rate of `GET /` through the proxy (the harness's open loop).
fn start_load(base_url: &str, per_second: u32) -> FixedRateLoad {
    FixedRateLoad::start(
        &stack_tests::harness::http_client(),
        &format!("{base_url}/"),
        f64::from(per_second),
        SLOW_ANSWER,
    )
}

// ---------------------------------------------------------------------------
// HTTP helpers.

/// `GET /` and the replica name from "Hello from NAME! I have been seen N times."
async fn replica_of_greeting(client: &reqwest::Client, base_url: &str) -> String {
    let (status, body) = stack_tests::harness::get(client, &format!("{base_url}/"))
        .await
        .expect("GET / answers");
    assert_eq!(status, 200, "GET /: {body}");
    stack_tests::harness::parse_greeting(&body).0
}

// ---------------------------------------------------------------------------
// Docker helpers: the real engine, through the docker CLI.

fn inspect_service(service: &str) -> Value {
    let json = docker(&["service", "inspect", service]);
    let mut services: Vec<Value> = serde_json::from_str(&json).expect("service inspect JSON");
    services
        .pop()
        .expect("service inspect returned the service")
}

fn service_image(service: &str) -> String {
    inspect_service(service)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .expect("service spec has an image")
        .to_owned()
}

fn service_network_names(service: &str) -> Vec<String> {
    let spec = inspect_service(service);
    let mut names: Vec<String> = spec["Spec"]["TaskTemplate"]["Networks"]
        .as_array()
        .map(|networks| {
            networks
                .iter()
                .filter_map(|network| network["Target"].as_str())
                .map(|id| {
                    docker(&["network", "inspect", "--format", "{{.Name}}", id])
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The tasks Swarm wants running for a service, inspected.
fn desired_running_tasks(service: &str) -> Vec<Value> {
    let ids = docker(&[
        "service",
        "ps",
        "--quiet",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        service,
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--type", "task"];
    args.extend(ids);
    serde_json::from_str(&docker(&args)).expect("task inspect JSON")
}

/// Container ids of the service's tasks that are running.
fn running_task_containers(service: &str) -> Vec<String> {
    desired_running_tasks(service)
        .iter()
        .filter(|task| task["Status"]["State"] == "running")
        .filter_map(|task| task["Status"]["ContainerStatus"]["ContainerID"].as_str())
        .map(str::to_owned)
        .collect()
}

fn running_task_images(service: &str) -> Vec<String> {
    desired_running_tasks(service)
        .iter()
        .filter(|task| task["Status"]["State"] == "running")
        .filter_map(|task| task["Spec"]["ContainerSpec"]["Image"].as_str())
        .map(|image| image.split('@').next().unwrap_or(image).to_owned())
        .collect()
}

fn container_hostname(container: &str) -> String {
    docker(&[
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.Config.Hostname}}",
        container,
    ])
    .trim()
    .to_owned()
}

/// Ok when every replica the service asks for runs its spec's image and is
/// healthy and no rolling update is in progress; Err says what is missing.
fn service_converged(service: &str) -> Result<(), String> {
    let spec = inspect_service(service);
    let update_state = spec["UpdateStatus"]["State"].as_str().unwrap_or("");
    if matches!(update_state, "updating" | "rollback_started") {
        return Err(format!("rolling update in progress ({update_state})"));
    }
    let desired = spec["Spec"]["Mode"]["Replicated"]["Replicas"]
        .as_u64()
        .unwrap_or(0) as usize;
    let image = service_image(service);
    let mut ready = 0;
    for task in desired_running_tasks(service) {
        let task_image = task["Spec"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or("");
        if task["Status"]["State"] != "running" || task_image.split('@').next() != Some(&image) {
            return Err(format!(
                "task {} is {} on {task_image}",
                task["ID"], task["Status"]["State"]
            ));
        }
        let container = task["Status"]["ContainerStatus"]["ContainerID"]
            .as_str()
            .unwrap_or("");
        let health = docker(&[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
            container,
        ]);
        if !matches!(health.trim(), "healthy" | "none") {
            return Err(format!("container {container} is {}", health.trim()));
        }
        ready += 1;
    }
    if ready != desired {
        return Err(format!("{ready} of {desired} replicas ready"));
    }
    Ok(())
}

fn wait_until_service_converged(service: &str) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        match service_converged(service) {
            Ok(()) => return,
            Err(reason) if Instant::now() > deadline => {
                panic!("{service} did not converge within {CONVERGE_TIMEOUT:?}: {reason}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Makes a new image from `base` with `docker commit`: a real new image id
/// (one more label), optionally with Dockerfile-style changes. Labelled for
/// cleanup by xtask once the stack is gone.
fn commit_test_image(stack: &SwarmStack, base: &str, purpose: &str, changes: &[&str]) -> String {
    let repository = base.split(':').next().unwrap_or(base);
    let tag = format!("{repository}:e2e-{}-{purpose}", stack.name);
    let container = docker(&["create", base]).trim().to_owned();
    let revision = format!("LABEL webstack.rev={purpose}-{}", std::process::id());
    let cleanup_label = format!("LABEL {TEST_IMAGE_LABEL}={}", stack.name);
    let mut args = vec!["commit", "--change", &revision, "--change", &cleanup_label];
    for change in changes {
        args.push("--change");
        args.push(change);
    }
    args.push(&container);
    args.push(&tag);
    let committed = Command::new("docker").args(&args).output();
    // Remove the helper container whatever the commit did.
    docker(&["rm", &container]);
    let committed = committed.expect("run docker commit");
    assert!(
        committed.status.success(),
        "docker commit failed: {}",
        String::from_utf8_lossy(&committed.stderr)
    );
    tag
}

/// Starts a rolling update of webapp to `image`; returns the start time of
/// the service's previous update, to tell the new one from it.
fn update_webapp_image(stack: &SwarmStack, image: &str) -> Option<String> {
    let previous_start = inspect_service(&stack.webapp())["UpdateStatus"]["StartedAt"]
        .as_str()
        .map(str::to_owned);
    // --no-resolve-image: the image is local, there is no registry to ask.
    docker(&[
        "service",
        "update",
        "--detach",
        "--no-resolve-image",
        "--image",
        image,
        &stack.webapp(),
    ]);
    previous_start
}

struct UpdateOutcome {
    state: String,
    message: String,
}

/// Waits for the rolling update just requested (one that started after
/// `previous_start`) to end: completed, rolled back or paused.
async fn wait_for_update_to_finish(service: &str, previous_start: Option<String>) -> UpdateOutcome {
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    loop {
        let status = inspect_service(service)["UpdateStatus"].clone();
        let state = status["State"].as_str().unwrap_or("").to_owned();
        let is_new = status["StartedAt"].as_str().map(str::to_owned) != previous_start;
        if is_new
            && matches!(
                state.as_str(),
                "completed" | "rollback_completed" | "paused" | "rollback_paused"
            )
        {
            return UpdateOutcome {
                state,
                message: status["Message"].as_str().unwrap_or("").to_owned(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the update of {service} did not finish within {ROLLOUT_TIMEOUT:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
