//! Checks that hold whichever orchestrator runs the stack, written once over
//! [`Deployment`] and called by one test in each suite (tests/tests/compose/
//! and tests/tests/swarm.rs). Each asserts what must hold and returns what
//! it measured, for the suite to print.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use stack_contract::docker::Container;
use stack_contract::service::Service;

use crate::harness::{docker, get, http_client, parse_greeting, FixedRateLoad, RateReport};

/// What an orchestrator does with a webapp replica whose container was
/// killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterKill {
    /// It starts a new container in its place (Swarm: restart policy `any`).
    Replaced,
    /// It leaves it stopped (Compose: `docker kill` counts as stopping the
    /// container on purpose, so `restart: unless-stopped` does not apply).
    LeftDown,
}

/// A deployment of the stack under test, as the shared checks see it.
pub trait Deployment {
    /// "Compose" or "Swarm", for messages.
    fn orchestrator(&self) -> &'static str;
    /// The proxy's published URL, without a trailing `/`.
    fn base_url(&self) -> &str;
    /// The webapp replicas the deployment runs when left alone.
    fn webapp_replicas(&self) -> usize;
    /// The running webapp replicas' containers, inspected.
    fn webapp_containers(&self) -> Vec<Container>;
    /// For each service (by the name the orchestrator records, which
    /// should be one of [`Service::ALL`]), the host ports it publishes, from
    /// every place the orchestrator records one.
    fn published_ports(&self) -> BTreeMap<String, BTreeSet<u16>>;
    /// Waits until db, proxy and `webapp_replicas` webapps run healthy (and,
    /// on Swarm, no update is in progress); panics after a generous bound.
    fn wait_until_serving(&self, webapp_replicas: usize);
    /// What the orchestrator does when a replica's container is killed.
    fn after_kill(&self) -> AfterKill;

    /// Kills one webapp replica's container (SIGKILL).
    fn kill_webapp_replica(&self, container_id: &str) {
        docker(&["kill", container_id]);
    }
    /// Brings back a replica the orchestrator [`AfterKill::LeftDown`].
    fn start_killed_replica(&self, container_id: &str) {
        docker(&["start", container_id]);
    }

    /// The port of [`Deployment::base_url`].
    fn published_port(&self) -> u16 {
        self.base_url()
            .rsplit(':')
            .next()
            .and_then(|port| port.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.base_url()))
    }
}

/// Hostnames of the running webapp replicas: what their greetings name.
pub fn webapp_hostnames(deployment: &impl Deployment) -> BTreeSet<String> {
    deployment
        .webapp_containers()
        .into_iter()
        .map(|container| container.config.hostname)
        .collect()
}

/// What [`every_webapp_replica_serves`] saw.
#[derive(Debug, Clone)]
pub struct ServeReport {
    pub replicas: BTreeSet<String>,
    pub answers: BTreeMap<String, u64>,
    pub took: Duration,
}

/// Exactly `replicas` webapp replicas run, and each answers `GET /` through
/// the proxy within `deadline` (nginx caches its lookup of the replicas for
/// a few seconds, so a replica started just now may take that long); every
/// answer is a 200 greeting from one of the running replicas.
pub async fn every_webapp_replica_serves(
    deployment: &impl Deployment,
    replicas: usize,
    deadline: Duration,
) -> ServeReport {
    let live = webapp_hostnames(deployment);
    assert_eq!(
        live.len(),
        replicas,
        "{}: expected {replicas} running webapp replicas, found {live:?}",
        deployment.orchestrator()
    );
    let client = http_client();
    let url = format!("{}/", deployment.base_url());
    let started = Instant::now();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    while answers.len() < live.len() {
        assert!(
            started.elapsed() < deadline,
            "{}: after {deadline:?} only {:?} of the running replicas {live:?} had answered through the proxy ({answers:?})",
            deployment.orchestrator(),
            answers.keys().collect::<Vec<_>>()
        );
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { get(&client, &url).await })
            })
            .collect();
        for request in batch {
            let (status, body) = request.await.expect("request task").expect("GET / answers");
            assert_eq!(status, 200, "GET /: {body}");
            let (replica, _) = parse_greeting(&body);
            assert!(
                live.contains(&replica),
                "{}: {replica} answered, but the running replicas are {live:?}",
                deployment.orchestrator()
            );
            *answers.entry(replica).or_default() += 1;
        }
    }
    ServeReport {
        replicas: live,
        answers,
        took: started.elapsed(),
    }
}

/// Of the stack's services only the proxy publishes a host port, and
/// exactly the one the stack's URL names. Returns the ports per service.
pub fn only_the_proxy_publishes_a_port(
    deployment: &impl Deployment,
) -> BTreeMap<String, BTreeSet<u16>> {
    let published = deployment.published_ports();
    let services: BTreeSet<&str> = published.keys().map(String::as_str).collect();
    assert_eq!(
        services,
        BTreeSet::from(Service::ALL.map(Service::name)),
        "{}: the services found",
        deployment.orchestrator()
    );
    for (service, ports) in &published {
        if service != Service::Proxy.name() {
            assert!(
                ports.is_empty(),
                "{}: {service} publishes host ports {ports:?}; only the proxy may ({published:?})",
                deployment.orchestrator()
            );
        }
    }
    assert_eq!(
        published[Service::Proxy.name()],
        BTreeSet::from([deployment.published_port()]),
        "{}: the proxy publishes exactly the stack's port",
        deployment.orchestrator()
    );
    published
}

/// How long the kill check keeps the load on after the kill at least
/// before it checks who serves: past the time the proxy takes to drop the
/// dead replica from its list (a lookup every second, then a reload of the
/// back nginx), so requests also meet the state where nginx no longer knows
/// it. A replica left down is looked for after this long.
pub const AFTER_KILL_WAIT: Duration = Duration::from_secs(8);
/// How long the orchestrator may take to replace a killed replica.
pub const REPLACE_TIMEOUT: Duration = Duration::from_secs(180);
/// How long nginx may serve from a stale list of the replicas' addresses:
/// proxy-init looks them up every second (`PROXY_RESOLVE_INTERVAL_MS`) and
/// reloads the back nginx, whose old workers finish their requests first;
/// with a wide margin.
pub const NGINX_RERESOLVE_BOUND: Duration = Duration::from_secs(20);
/// A `GET /` answered this slowly is counted as slow (reported only).
const SLOW_ANSWER: Duration = Duration::from_secs(1);

/// What [`a_killed_webapp_replica_fails_no_request_sent_after_it_is_gone`]
/// saw.
#[derive(Debug, Clone)]
pub struct KillReport {
    pub victim: String,
    /// From sending the kill to `docker kill` returning.
    pub kill_took: Duration,
    pub after_kill: AfterKill,
    /// [`AfterKill::Replaced`]: the new container, and how long after the
    /// kill every replica ran healthy again.
    pub replacement: Option<String>,
    pub healed_after: Option<Duration>,
    /// The replicas that served under load after the kill.
    pub served: ServeReport,
    pub load: RateReport,
    pub failed_sent_after_gone: usize,
}

/// With `GET /` at `per_second` through the proxy (an open loop, whose rate
/// must hold), one webapp replica's container is killed: no request sent
/// after `docker kill` returned fails. Then, under the same load, the
/// orchestrator does what it does ([`Deployment::after_kill`]): Swarm
/// replaces the replica (exactly one new container, the killed one gone,
/// every replica healthy again) and every replica, the new one too, serves;
/// Compose leaves it down and the other replicas serve. A replica left down
/// is started again afterwards, so the stack is as it was.
pub async fn a_killed_webapp_replica_fails_no_request_sent_after_it_is_gone(
    deployment: &impl Deployment,
    per_second: f64,
) -> KillReport {
    let replicas = deployment.webapp_replicas();
    let orchestrator = deployment.orchestrator();
    deployment.wait_until_serving(replicas);
    let before: BTreeSet<String> = deployment
        .webapp_containers()
        .into_iter()
        .map(|container| container.id)
        .collect();
    let victim = before.first().expect("webapp has running replicas").clone();

    let load = FixedRateLoad::start(
        &http_client(),
        &format!("{}/", deployment.base_url()),
        per_second,
        SLOW_ANSWER,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill_sent = Instant::now();
    deployment.kill_webapp_replica(&victim);
    let gone = Instant::now();

    let after_kill = deployment.after_kill();
    let (replacement, healed_after, served) = match after_kill {
        AfterKill::Replaced => {
            let deadline = Instant::now() + REPLACE_TIMEOUT;
            let replacement = loop {
                let running: BTreeSet<String> = deployment
                    .webapp_containers()
                    .into_iter()
                    .map(|container| container.id)
                    .collect();
                let new: Vec<&String> = running.difference(&before).collect();
                if running.len() == replicas && !running.contains(&victim) && new.len() == 1 {
                    break new[0].clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "{orchestrator} did not replace the killed container {victim} within {REPLACE_TIMEOUT:?}: running {running:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            deployment.wait_until_serving(replicas);
            let healed_after = gone.elapsed();
            tokio::time::sleep(AFTER_KILL_WAIT.saturating_sub(healed_after)).await;
            let served =
                every_webapp_replica_serves(deployment, replicas, NGINX_RERESOLVE_BOUND).await;
            (Some(replacement), Some(healed_after), served)
        }
        AfterKill::LeftDown => {
            tokio::time::sleep(AFTER_KILL_WAIT).await;
            let running: BTreeSet<String> = deployment
                .webapp_containers()
                .into_iter()
                .map(|container| container.id)
                .collect();
            assert!(
                !running.contains(&victim) && running.len() == replicas - 1,
                "{orchestrator} leaves a killed replica down, yet {AFTER_KILL_WAIT:?} after killing {victim} the running replicas are {running:?}"
            );
            let served =
                every_webapp_replica_serves(deployment, replicas - 1, NGINX_RERESOLVE_BOUND).await;
            (None, None, served)
        }
    };
    let load_started = load.started();
    let report = load.stop().await;
    report.assert_rate_held(&format!(
        "{orchestrator}: load while a killed webapp replica is {}",
        match after_kill {
            AfterKill::Replaced => "replaced",
            AfterKill::LeftDown => "left down",
        }
    ));
    let failed_sent_after_gone = report.failed_sent_since(gone - load_started);
    assert_eq!(
        failed_sent_after_gone, 0,
        "{orchestrator}: {failed_sent_after_gone} requests sent after the killed replica was gone failed ({} failed in all of {}); first failures: {:?}",
        report.failed, report.sent, report.first_failures
    );
    if after_kill == AfterKill::LeftDown {
        deployment.start_killed_replica(&victim);
        deployment.wait_until_serving(replicas);
    }
    KillReport {
        victim,
        kill_took: gone - kill_sent,
        after_kill,
        replacement,
        healed_after,
        served,
        load: report,
        failed_sent_after_gone,
    }
}

/// What [`scaling_out_and_back_in_under_load_fails_no_request`] measured.
#[derive(Debug, Clone)]
pub struct ScaleReport {
    /// Each step: the replicas asked for, and how long until all of them
    /// served through the proxy (the scale command included).
    pub steps: Vec<(usize, Duration)>,
    pub load: RateReport,
}

/// Under a fixed rate of `GET /`, scales the webapp from its usual replicas
/// to `many` and back, `rounds` times, with `scale` (the orchestrator's own
/// command, returning once it is done); after each step every running
/// replica serves through the proxy. No request fails: replicas that leave
/// stop getting requests (and retries) before they stop serving.
pub async fn scaling_out_and_back_in_under_load_fails_no_request(
    deployment: &impl Deployment,
    scale: impl Fn(usize),
    many: usize,
    rounds: usize,
    per_second: f64,
) -> ScaleReport {
    let usual = deployment.webapp_replicas();
    let orchestrator = deployment.orchestrator();
    deployment.wait_until_serving(usual);
    every_webapp_replica_serves(deployment, usual, NGINX_RERESOLVE_BOUND).await;
    let load = FixedRateLoad::start(
        &http_client(),
        &format!("{}/", deployment.base_url()),
        per_second,
        SLOW_ANSWER,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut steps = Vec::new();
    for _ in 0..rounds {
        for replicas in [many, usual] {
            let started = Instant::now();
            eprintln!(
                "{orchestrator}: {:.1}s into the load: scaling the webapp to {replicas}",
                (started - load.started()).as_secs_f64()
            );
            scale(replicas);
            every_webapp_replica_serves(deployment, replicas, NGINX_RERESOLVE_BOUND).await;
            steps.push((replicas, started.elapsed()));
        }
    }
    // Replicas that left a moment ago may still be in their lame-duck period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop().await;
    report.assert_rate_held(&format!(
        "{orchestrator}: load while the webapp scaled {usual} -> {many} -> {usual}"
    ));
    assert_eq!(
        report.failed, 0,
        "{orchestrator}: {} of {} requests failed while the webapp scaled {usual} -> {many} -> {usual} {rounds} times; first failures: {:?}",
        report.failed, report.sent, report.first_failures
    );
    ScaleReport {
        steps,
        load: report,
    }
}
