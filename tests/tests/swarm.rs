//! End-to-end tests of the stack on Docker Swarm: replicas, a rolling update
//! under load, an automatic rollback, self-healing, and last HTTPS
//! (`swarm deploy --tls acme` against pebble; `--tls files`, then a renewed
//! certificate).
//!
//! `cargo xtask e2e --swarm` deploys a stack under a unique name and a free
//! port, runs these tests with the `WEBSTACK_SWARM_*` variables set, and
//! removes the stack afterwards. Run without those variables, every test
//! fails saying so. The tests share one stack, so they take turns (see
//! [`ONE_TEST_AT_A_TIME`]) and each leaves the stack converged; the HTTPS
//! ones (named `https_…`) leave it on HTTPS, so xtask runs them apart, after
//! the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use stack_contract::docker::{Container, HealthStatus, Task, UpdateState};
use stack_contract::service::Service;
use stack_contract::variables::swarm::{
    ACME_DIRECTORY_VARIABLE, ACME_DOMAIN_VARIABLE, HTTPS_PORT_VARIABLE,
    PEBBLE_LISTENER_CA_VARIABLE, PEBBLE_MANAGEMENT_PORT_VARIABLE, PEBBLE_SERVICE_VARIABLE,
    STACK_VARIABLE, TEST_IMAGE_LABEL, URL_VARIABLE, WEBAPP_IMAGE_VARIABLE, XTASK_VARIABLE,
};
use stack_tests::checks::{self, AfterKill, Deployment};
use stack_tests::harness::{
    docker, docker_output, http_client_builder, https_redirect, FixedRateLoad,
};
use stack_tests::inspect;

#[path = "support/test_ca.rs"]
mod test_ca;
use test_ca::{HttpsAnswer, IssuedFiles, ScratchDir, TestCa};

/// Replicas `deploy/stack.yaml` asks for.
const WEBAPP_REPLICAS: usize = 3;

/// Generous bounds: they catch a hang, they do not measure speed.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(240);

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
        stack_contract::netguard::check_url(&url, &[])
            .unwrap_or_else(|refused| panic!("{refused}"));
        SwarmStack {
            name: read(STACK_VARIABLE),
            url,
        }
    }

    /// The Swarm service's full name, `<stack>_<service>`.
    fn service(&self, service: Service) -> String {
        format!("{}_{service}", self.name)
    }

    fn webapp(&self) -> String {
        self.service(Service::Webapp)
    }
}

/// The checks both orchestrators run (stack_tests::checks) see the Swarm
/// stack through this.
impl Deployment for SwarmStack {
    fn orchestrator(&self) -> &'static str {
        "Swarm"
    }

    fn base_url(&self) -> &str {
        &self.url
    }

    fn webapp_replicas(&self) -> usize {
        WEBAPP_REPLICAS
    }

    fn webapp_containers(&self) -> Vec<Container> {
        let ids = running_task_containers(&self.webapp());
        inspect::containers(&ids.iter().map(String::as_str).collect::<Vec<_>>())
            .into_iter()
            .filter(Container::is_running)
            .collect()
    }

    /// What each service asks for and has (`Spec.EndpointSpec.Ports`,
    /// `Endpoint.Ports`), and what its running tasks' containers bound.
    fn published_ports(&self) -> BTreeMap<String, BTreeSet<u16>> {
        Service::ALL
            .into_iter()
            .map(|short_name| {
                let service = self.service(short_name);
                let mut ports = inspect::service(&service).published_ports();
                let containers = running_task_containers(&service);
                for container in
                    inspect::containers(&containers.iter().map(String::as_str).collect::<Vec<_>>())
                {
                    ports.extend(
                        container
                            .host_ports()
                            .unwrap_or_else(|error| panic!("{}: {error}", container.name)),
                    );
                }
                (short_name.to_string(), ports)
            })
            .collect()
    }

    /// db, balancer and proxy healthy, and webapp converged on `webapp_replicas`.
    fn wait_until_serving(&self, webapp_replicas: usize) {
        assert_eq!(
            webapp_replicas, WEBAPP_REPLICAS,
            "the stack file asks for {WEBAPP_REPLICAS} webapp replicas"
        );
        for service in [
            Service::Db,
            Service::Balancer,
            Service::Proxy,
            Service::Webapp,
        ] {
            wait_until_service_converged(&self.service(service));
        }
    }

    fn after_kill(&self) -> AfterKill {
        AfterKill::Replaced
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn every_running_webapp_replica_answers_get_root_through_the_proxy() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    // nginx picks the next replica per request, among the addresses of
    // proxy-init's last lookup of `webapp` (every second, then a reload of
    // the back nginx), so a replica that a previous test replaced may take a
    // few seconds to be seen.
    let served =
        checks::every_webapp_replica_serves(&stack, WEBAPP_REPLICAS, checks::NGINX_RERESOLVE_BOUND)
            .await;
    println!(
        "{} replicas: all answered within {:.2?}; answers per replica {:?}",
        served.replicas.len(),
        served.took,
        served.answers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn only_the_proxy_publishes_a_host_port() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    let published = checks::only_the_proxy_publishes_a_port(&stack);
    println!("host ports per service: {published:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn the_db_is_only_on_the_internal_backend_network() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    // db and webapp live on overlay networks the host has no route into.
    // (Connecting to their overlay addresses from the host to prove it would
    // send traffic off this machine, so the test checks the engine's view.)
    let db_networks = service_network_names(&stack.service(Service::Db));
    assert_eq!(
        db_networks,
        vec![format!("{}_backend", stack.name)],
        "db must be on the backend network only"
    );
    assert!(
        inspect::network(&format!("{}_backend", stack.name)).internal,
        "the backend network must be internal"
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
        outcome.state,
        UpdateState::Completed,
        "the rollout ended {} ({})",
        outcome.state,
        outcome.message
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
        outcome.state,
        UpdateState::RollbackCompleted,
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
async fn a_killed_webapp_container_is_replaced_and_no_request_fails() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    wait_until_service_converged(&stack.webapp());
    // The shared check: no request sent after the kill fails, Swarm starts
    // exactly one new container, and every replica, the new one too, serves.
    let killed = checks::a_killed_webapp_replica_fails_no_request_sent_after_it_is_gone(
        &stack,
        f64::from(CHECK_LOAD_PER_SECOND),
    )
    .await;
    let report = &killed.load;
    let replacement = killed.replacement.as_deref().unwrap_or("?");
    println!(
        "killed container: replaced by {replacement}, healed in {:.1}s; answers after {:?}; load {} requests ({} ok, {} failed)",
        killed.healed_after.unwrap_or_default().as_secs_f64(),
        killed.served.answers,
        report.sent,
        report.succeeded,
        report.failed
    );
    // On Swarm not even the requests in flight at the kill fail.
    assert_eq!(
        report.failed, 0,
        "{} of {} requests failed while a webapp container was killed and replaced, first failures: {:?}",
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
/// Replicas the webapp is scaled out to, and back from, under load.
const SCALE_OUT_REPLICAS: usize = 20;
/// The fixed rate kept up while the webapp scales out to 20 and back.
const SCALE_OUT_LOAD_PER_SECOND: f64 = 50.0;

// Multi-threaded: the load runs on its own workers while the test thread
// blocks on `docker` calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn scaling_3_to_20_to_3_twice_under_load_fails_no_request() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    let scale = |replicas: usize| {
        docker(&[
            "service",
            "scale",
            "--detach=false",
            &format!("{}={replicas}", stack.webapp()),
        ]);
        wait_until_service_converged(&stack.webapp());
    };
    let report = checks::scaling_out_and_back_in_under_load_fails_no_request(
        &stack,
        scale,
        SCALE_OUT_REPLICAS,
        2,
        SCALE_OUT_LOAD_PER_SECOND,
    )
    .await;
    println!(
        "scale 3 -> {SCALE_OUT_REPLICAS} -> 3 twice under {SCALE_OUT_LOAD_PER_SECOND} requests/s: steps (replicas, until all served) {:?}; {} sent in {:.1}s, {} failed, {} slower than 1 s",
        report.steps, report.load.sent, report.load.seconds, report.load.failed, report.load.slow
    );
}

// ---------------------------------------------------------------------------
// HTTPS, last: xtask runs the tests named `https_…` apart, after all the
// others, since the stack's plain port only redirects afterwards.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm; `cargo xtask e2e --swarm` deploys one and runs it"]
async fn https_from_files_then_a_renewed_certificate_replaces_it_and_its_secrets() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = SwarmStack::from_environment();
    let https = HttpsDeploy::from_environment(&stack);
    let ca = TestCa::new();

    // The running plain stack, redeployed with a chain of the test's own CA.
    let first = ca.issue(&https.dir.0.join("first"));
    let took = https.deploy(&stack, &first);
    let answer = https.get_root(&ca).await;
    answer.assert_greeting_over_http2_with(&first.leaf_der);
    let first_secrets = proxy_secret_names(&stack);
    assert_eq!(
        first_secrets.len(),
        2,
        "the certificate and the key: {first_secrets:?}"
    );
    // Whatever HTTPS the stack had before (the acme test's, which runs first): its acme
    // service and CA root are gone.
    let acme = format!("{}_acme", stack.name);
    assert!(
        !docker_output(&["service", "inspect", &acme])
            .status
            .success(),
        "{acme} still runs"
    );
    let left = stack_secret_names(&stack);
    assert!(
        !left.iter().any(|name| name.contains("_acme_ca_")),
        "the acme service's CA root is gone once unused; the stack's secrets: {left:?}"
    );
    println!(
        "swarm deploy --tls files: {took:.1?}; GET / over HTTPS: HTTP/2, 200, the chain checks against the test's CA; secrets {first_secrets:?}"
    );

    // The plain port redirects, and `swarm status` names the HTTPS URL.
    let https_root = format!("https://localhost:{}/", https.port);
    assert_eq!(
        https_redirect(&format!("{}/", stack.url)).await,
        (308, Some(https_root.clone()))
    );
    let status = https.xtask(&["swarm", "status", "--project", &stack.name]);
    assert!(
        status.contains(&format!("URL: {https_root}")),
        "swarm status:\n{status}"
    );

    // A renewed certificate: new secrets beside the old ones, which go once
    // the proxy runs with the new.
    let second = ca.issue(&https.dir.0.join("second"));
    let took = https.deploy(&stack, &second);
    let answer = https.get_root(&ca).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.leaf == second.leaf_der,
        "after the renewal the proxy still serves the first certificate"
    );
    let second_secrets = proxy_secret_names(&stack);
    assert!(
        second_secrets
            .iter()
            .all(|name| !first_secrets.contains(name)),
        "the renewed certificate is in new secrets: {first_secrets:?} then {second_secrets:?}"
    );
    let left = stack_secret_names(&stack);
    assert!(
        first_secrets.iter().all(|name| !left.contains(name)),
        "the first version is gone once unused; the stack's secrets: {left:?}"
    );
    assert!(
        second_secrets.iter().all(|name| left.contains(name)),
        "{left:?}"
    );
    println!(
        "renewal: {took:.1?}; the new certificate served; secrets {second_secrets:?}, the stack's now {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack on Swarm and pebble; `cargo xtask e2e --swarm` deploys them and runs it"]
async fn https_acme_the_first_certificate_from_pebble_is_served_over_http2() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let started = Instant::now();
    let stack = SwarmStack::from_environment();
    let https = HttpsDeploy::from_environment(&stack);
    let pebble = Pebble::from_environment();

    // The running stack, redeployed with the acme service, which asks pebble; pebble checks
    // the challenge on the proxy's plain port over the stack's edge network.
    let listener_ca = pebble.listener_ca.display().to_string();
    let took = https.deploy_with(
        &stack,
        &[
            "--tls",
            "acme",
            "--tls-name",
            &pebble.domain,
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-file",
            &listener_ca,
            "--acme-retry-secs",
            "1",
            "--acme-retry-max-secs",
            "2",
        ],
    );
    let deployed = started.elapsed();
    let root = reqwest::Certificate::from_pem(&pebble.root()).expect("pebble's root is PEM");
    let client = http_client_builder()
        .tls_certs_only([root])
        .resolve(
            &pebble.domain,
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, https.port)),
        )
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTPS client");
    let url = format!("https://{}:{}/", pebble.domain, https.port);
    // Until the certificate comes, the front serves the acme service's provisional,
    // self-signed one, which a client that trusts pebble's root alone refuses.
    let answer = loop {
        match client.get(&url).send().await {
            Ok(answer) => break answer,
            Err(error) if started.elapsed() < Duration::from_secs(90) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!(
                "no certificate from pebble {:.0?} after the deploy: {error:?}\nthe acme service said:\n{}",
                started.elapsed() - deployed,
                acme_log(&stack)
            ),
        }
    };
    assert_eq!(
        answer.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose HTTP/2"
    );
    assert_eq!(answer.status(), 200);
    let body = answer.text().await.expect("body");
    assert!(body.starts_with("Hello from "), "{body}");
    println!(
        "swarm deploy --tls acme: {took:.1?}; the first certificate from pebble served {:.1?} later: GET / over HTTPS: HTTP/2, 200, the chain checks against pebble's root; {:.1?} in all",
        started.elapsed() - deployed,
        started.elapsed()
    );
}

/// What the stack's acme service logged.
fn acme_log(stack: &SwarmStack) -> String {
    let output = docker_output(&["service", "logs", "--raw", &format!("{}_acme", stack.name)]);
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

/// pebble, Let's Encrypt's test CA, as xtask started it for the acme test: a Swarm service on
/// the stack's edge network.
struct Pebble {
    directory: String,
    domain: String,
    listener_ca: PathBuf,
    service: String,
    management_port: u16,
}

impl Pebble {
    fn from_environment() -> Pebble {
        let read = |variable: &str| {
            std::env::var(variable).unwrap_or_else(|_| {
                panic!("{variable} is not set: `cargo xtask e2e --swarm` starts pebble and sets it")
            })
        };
        Pebble {
            directory: read(ACME_DIRECTORY_VARIABLE),
            domain: read(ACME_DOMAIN_VARIABLE),
            listener_ca: PathBuf::from(read(PEBBLE_LISTENER_CA_VARIABLE)),
            service: read(PEBBLE_SERVICE_VARIABLE),
            management_port: read(PEBBLE_MANAGEMENT_PORT_VARIABLE)
                .parse()
                .expect("a port"),
        }
    }

    /// The root pebble issues under (PEM), from its management interface, which is published
    /// nowhere: on the loopback of its task's network namespace, over HTTPS signed by the
    /// listener CA.
    fn root(&self) -> Vec<u8> {
        use std::io::{Read, Write};

        let filter = format!("label=com.docker.swarm.service.name={}", self.service);
        let ids = docker(&[
            "ps",
            "--quiet",
            "--filter",
            &filter,
            "--filter",
            "status=running",
        ]);
        let id = ids
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("pebble ({}) runs no container", self.service));
        let pid = inspect::containers(&[id])
            .first()
            .expect("pebble's container")
            .state
            .pid;
        let address =
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.management_port));
        stack_contract::netguard::check_url(&format!("https://{address}"), &[])
            .unwrap_or_else(|refused| panic!("{refused}"));
        let stream = stack_tests::netns::in_network_namespace_of(pid, move || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        })
        .unwrap_or_else(|error| panic!("connect to pebble's management port: {error}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        let mut roots = rustls::RootCertStore::empty();
        let listener_ca = std::fs::read(&self.listener_ca).expect("the listener CA");
        use rustls::pki_types::pem::PemObject;
        for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(&listener_ca) {
            roots
                .add(certificate.expect("the listener CA is PEM"))
                .expect("the listener CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from("pebble").expect("a name");
        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), server)
            .expect("a TLS connection");
        let mut tls = rustls::StreamOwned::new(connection, stream);
        // HTTP/1.0: the answer is not chunked and ends with the connection.
        tls.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: pebble\r\n\r\n")
            .expect("ask pebble for its root");
        let mut answer = Vec::new();
        if let Err(error) = tls.read_to_end(&mut answer) {
            // A peer that closes without close_notify: what came is the whole answer.
            assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
        }
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.as_bytes().to_vec()
    }
}

/// What the HTTPS test needs besides the stack: xtask, the port, and a
/// directory of its own for certificates, removed afterwards.
struct HttpsDeploy {
    xtask: PathBuf,
    port: u16,
    dir: ScratchDir,
}

impl HttpsDeploy {
    fn from_environment(stack: &SwarmStack) -> HttpsDeploy {
        let read = |variable: &str| {
            std::env::var(variable).unwrap_or_else(|_| {
                panic!(
                    "{variable} is not set: the HTTPS tests run last, apart, with it; \
                     `cargo xtask e2e --swarm` runs them"
                )
            })
        };
        let port = read(HTTPS_PORT_VARIABLE)
            .parse()
            .unwrap_or_else(|error| panic!("{HTTPS_PORT_VARIABLE}: {error}"));
        HttpsDeploy {
            xtask: PathBuf::from(read(XTASK_VARIABLE)),
            port,
            dir: ScratchDir::new(&format!("{}-https", stack.name)),
        }
    }

    /// Runs xtask, its progress shown; returns what it printed on stdout.
    fn xtask(&self, args: &[&str]) -> String {
        let output = Command::new(&self.xtask)
            .args(args)
            // Where xtask writes the copies it deploys from (by default the
            // checkout's `.secrets/tls/`).
            .env("WEBSTACK_TLS_DIR", self.dir.0.join("deployed"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|error| panic!("run xtask {args:?}: {error}"));
        assert!(output.status.success(), "xtask {args:?}: {}", output.status);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `swarm deploy --tls files` of the stack as it runs (its images, its
    /// plain port) with `certificate`; returns how long it took to converge
    /// and serve.
    fn deploy(&self, stack: &SwarmStack, certificate: &IssuedFiles) -> Duration {
        self.deploy_with(
            stack,
            &[
                "--tls",
                "files",
                "--tls-certificate",
                &certificate.chain.display().to_string(),
                "--tls-key",
                &certificate.key.display().to_string(),
            ],
        )
    }

    /// `swarm deploy --skip-images` of the stack as it runs (its images, its plain port) on
    /// the HTTPS port, with the TLS flags `tls`; returns how long it took to converge and
    /// serve.
    fn deploy_with(&self, stack: &SwarmStack, tls: &[&str]) -> Duration {
        let plain_port = stack.url.rsplit(':').next().expect("a port in the URL");
        let https_port = self.port.to_string();
        let started = Instant::now();
        let mut args = vec![
            "swarm",
            "deploy",
            "--project",
            &stack.name,
            "--port",
            plain_port,
            "--skip-images",
            "--https-port",
            &https_port,
        ];
        args.extend_from_slice(tls);
        self.xtask(&args);
        started.elapsed()
    }

    /// `GET /` over HTTPS on loopback, trusting the test's CA alone.
    async fn get_root(&self, ca: &TestCa) -> HttpsAnswer {
        test_ca::get_root(
            &format!("https://127.0.0.1:{}/", self.port),
            ca.root_certificate(),
        )
        .await
    }
}

/// The secrets the proxy's spec names.
fn proxy_secret_names(stack: &SwarmStack) -> Vec<String> {
    inspect::service(&stack.service(Service::Proxy))
        .spec
        .task_template
        .container_spec
        .secret_names()
        .into_iter()
        .filter(|name| name.contains("_tls_"))
        .map(str::to_owned)
        .collect()
}

/// Every secret of the stack, by name.
fn stack_secret_names(stack: &SwarmStack) -> Vec<String> {
    docker(&[
        "secret",
        "ls",
        "--filter",
        &format!("label=com.docker.stack.namespace={}", stack.name),
        "--format",
        "{{.Name}}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

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
// Docker helpers: the real engine, through the docker CLI.

fn service_image(service: &str) -> String {
    inspect::service(service).image().to_owned()
}

fn service_network_names(service: &str) -> Vec<String> {
    let mut names: Vec<String> = inspect::service(service)
        .spec
        .task_template
        .networks
        .unwrap_or_default()
        .iter()
        .map(|network| inspect::network(&network.target).name)
        .collect();
    names.sort();
    names
}

/// The tasks Swarm wants running for a service, inspected.
fn desired_running_tasks(service: &str) -> Vec<Task> {
    let ids = inspect::desired_running_task_ids(service);
    inspect::tasks(&ids.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Container ids of the service's tasks that are running.
fn running_task_containers(service: &str) -> Vec<String> {
    desired_running_tasks(service)
        .iter()
        .filter(|task| task.is_running())
        .filter_map(Task::container_id)
        .map(str::to_owned)
        .collect()
}

fn running_task_images(service: &str) -> Vec<String> {
    desired_running_tasks(service)
        .iter()
        .filter(|task| task.is_running())
        .map(|task| task.image().to_owned())
        .collect()
}

/// Ok when every replica the service asks for runs its spec's image and is
/// healthy and no rolling update is in progress; Err says what is missing.
fn service_converged(service: &str) -> Result<(), String> {
    let spec = inspect::service(service);
    if let Some(update_state) = spec
        .update_status
        .as_ref()
        .map(|status| status.state)
        .filter(|state| state.in_progress())
    {
        return Err(format!("rolling update in progress ({update_state})"));
    }
    let desired = spec.desired_replicas();
    let image = spec.image();
    let mut ready = 0;
    for task in desired_running_tasks(service) {
        if !task.is_running() || task.image() != image {
            return Err(format!(
                "task {} is {} on {}",
                task.id,
                task.status.state,
                task.image()
            ));
        }
        let container = task.container_id().unwrap_or("");
        let inspected = inspect::containers(&[container]);
        let health = inspected
            .first()
            .and_then(Container::health)
            .unwrap_or(HealthStatus::None);
        if !matches!(health, HealthStatus::Healthy | HealthStatus::None) {
            return Err(format!("container {container} is {health}"));
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
    let previous_start = inspect::service(&stack.webapp())
        .update_status
        .and_then(|status| status.started_at);
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
    state: UpdateState,
    message: String,
}

/// Waits for the rolling update just requested (one that started after
/// `previous_start`) to end: completed, rolled back or paused.
async fn wait_for_update_to_finish(service: &str, previous_start: Option<String>) -> UpdateOutcome {
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    loop {
        let status = inspect::service(service).update_status;
        if let Some(finished) = status
            .as_ref()
            .filter(|status| status.started_at != previous_start && status.state.is_final())
        {
            return UpdateOutcome {
                state: finished.state,
                message: finished.message.clone().unwrap_or_default(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the update of {service} did not finish within {ROLLOUT_TIMEOUT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
