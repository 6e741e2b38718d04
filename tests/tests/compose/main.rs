//! End-to-end tests of the Compose stack (proxy → webapp → db), through the
//! real nginx, webapp replicas and Redis in Docker.
//!
//! `cargo xtask e2e` starts a fresh stack under a unique project name and a
//! free host port, runs these tests with the `WEBSTACK_E2E_*` variables set
//! (see xtask/src/e2e/), and removes the stack afterwards. Run without
//! those variables, every test fails saying so.
//!
//! The tests share one stack and change it (stop the db, kill a replica,
//! scale, down/up), so they take turns ([`ONE_TEST_AT_A_TIME`]) and each
//! leaves it as it found it: db, proxy and three healthy webapp replicas.
//! Each prints what it measured, prefixed with `[e2e]`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use stack_contract::docker::{Container, HealthStatus};
use stack_contract::netguard::{self, HostNetwork, Ipv4Net};
use stack_contract::service::Service;
use stack_contract::variables::{
    COMPOSE_FILE_VARIABLE, PORT_VARIABLE, PROJECT_VARIABLE, URL_VARIABLE, XTASK_VARIABLE,
};
use stack_tests::checks::{self, AfterKill, Deployment};
use stack_tests::harness::{
    docker, docker_output, get, http_client, parse_greeting, read_hits, tally, ClosedLoad,
    FixedRateLoad, Timed, REQUEST_TIMEOUT,
};
use stack_tests::inspect;

mod failures;
mod front;
mod hardening;
mod hostile;
mod isolation;
mod scaling;
mod slow_readers;

/// Replicas `cargo xtask e2e` starts, and every test leaves running.
const WEBAPP_REPLICAS: usize = 3;

/// A generous bound: it catches a hang, it does not measure speed.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);

/// The tests change one shared stack: one at a time, whatever
/// `--test-threads` says. tokio's mutex does not poison, so one failed test
/// does not fail the others.
static ONE_TEST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The stack under test, from the variables `cargo xtask e2e` sets.
struct ComposeStack {
    url: String,
    project: String,
    port: u16,
    compose_file: PathBuf,
    xtask: PathBuf,
}

impl ComposeStack {
    fn from_environment() -> ComposeStack {
        let read = |variable: &str| {
            std::env::var(variable).unwrap_or_else(|_| {
                panic!(
                    "{variable} is not set: these tests need a running stack; run them with `cargo xtask e2e`, which starts one, sets the WEBSTACK_E2E_* variables and removes it afterwards"
                )
            })
        };
        let url = read(URL_VARIABLE);
        netguard::check_url(&url, &[]).unwrap_or_else(|refused| panic!("{refused}"));
        ComposeStack {
            url,
            project: read(PROJECT_VARIABLE),
            port: read(PORT_VARIABLE)
                .parse()
                .expect("WEBSTACK_E2E_PORT is a port number"),
            compose_file: PathBuf::from(read(COMPOSE_FILE_VARIABLE)),
            xtask: PathBuf::from(read(XTASK_VARIABLE)),
        }
    }

    fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// `cargo xtask <args> --project <this project>`, through the xtask
    /// binary that started the tests; its progress output is shown.
    fn xtask(&self, args: &[&str]) {
        self.xtask_with_env(args, &[]);
    }

    /// [`ComposeStack::xtask`] with these environment variables set.
    fn xtask_with_env(&self, args: &[&str], env: &[(&str, String)]) {
        let status = Command::new(&self.xtask)
            .args(args)
            .arg("--project")
            .arg(&self.project)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .status()
            .unwrap_or_else(|error| panic!("run xtask {args:?}: {error}"));
        assert!(status.success(), "xtask {args:?} failed: {status}");
    }

    /// Containers of a service (all services when `None`), running or not.
    fn containers(&self, service: Option<Service>) -> Vec<Container> {
        let mut args = vec![
            "ps".to_string(),
            "--all".into(),
            "--quiet".into(),
            "--filter".into(),
            format!("label=com.docker.compose.project={}", self.project),
        ];
        if let Some(service) = service {
            args.push("--filter".into());
            args.push(format!("label=com.docker.compose.service={service}"));
        }
        let ids = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        inspect::containers(&ids.split_whitespace().collect::<Vec<_>>())
    }

    fn running(&self, service: Service) -> Vec<Container> {
        self.containers(Some(service))
            .into_iter()
            .filter(Container::is_running)
            .collect()
    }

    /// The only container of a single-replica service.
    fn single(&self, service: Service) -> Container {
        let mut containers = self.containers(Some(service));
        assert_eq!(containers.len(), 1, "{service} has one container");
        containers.remove(0)
    }

    /// Waits until db, proxy and `webapp_replicas` webapps run healthy.
    fn wait_until_healthy(&self, webapp_replicas: usize) {
        let started = Instant::now();
        loop {
            let containers = self.containers(None);
            let healthy = |service: Service| {
                containers
                    .iter()
                    .filter(|container| {
                        container.label(SERVICE_LABEL) == Some(service.name())
                            && container.is_running()
                            && container.health() == Some(HealthStatus::Healthy)
                    })
                    .count()
            };
            if healthy(Service::Db) == 1
                && healthy(Service::Balancer) == 1
                && healthy(Service::Proxy) == 1
                && healthy(Service::Webapp) == webapp_replicas
            {
                return;
            }
            assert!(
                started.elapsed() < HEALTHY_TIMEOUT,
                "the stack did not become healthy within {HEALTHY_TIMEOUT:?} (db {}, webapp {}/{webapp_replicas}, balancer {}, proxy {})",
                healthy(Service::Db),
                healthy(Service::Webapp),
                healthy(Service::Balancer),
                healthy(Service::Proxy)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn redis_password(&self) -> String {
        let root = self
            .compose_file
            .parent()
            .and_then(|deploy| deploy.parent())
            .expect("the compose file lives in <root>/deploy/");
        let path = root.join(".secrets").join("redis_password");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
            .trim_end()
            .to_string()
    }
}

/// The label Compose puts the service's name in.
const SERVICE_LABEL: &str = "com.docker.compose.service";

/// The checks both orchestrators run (stack_tests::checks) see the Compose
/// project through this.
impl Deployment for ComposeStack {
    fn orchestrator(&self) -> &'static str {
        "Compose"
    }

    fn base_url(&self) -> &str {
        &self.url
    }

    fn webapp_replicas(&self) -> usize {
        WEBAPP_REPLICAS
    }

    fn webapp_containers(&self) -> Vec<Container> {
        self.running(Service::Webapp)
    }

    /// Every container of the project, running or not, by its service.
    fn published_ports(&self) -> BTreeMap<String, BTreeSet<u16>> {
        let mut published: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for container in self.containers(None) {
            let service = container
                .label(SERVICE_LABEL)
                .unwrap_or_else(|| panic!("{} has no service label", container.name))
                .to_string();
            published.entry(service).or_default().extend(
                container
                    .host_ports()
                    .unwrap_or_else(|error| panic!("{}: {error}", container.name)),
            );
        }
        published
    }

    fn wait_until_serving(&self, webapp_replicas: usize) {
        self.wait_until_healthy(webapp_replicas);
    }

    fn after_kill(&self) -> AfterKill {
        AfterKill::LeftDown
    }
}

/// The host's process ids of every process in a container.
fn container_pids(container_id: &str) -> Vec<String> {
    let top = docker(&["top", container_id, "-o", "pid"]);
    top.lines()
        .skip(1)
        .map(|pid| pid.trim().to_owned())
        .collect()
}

/// What the engine says of one of the stack's networks.
struct NetworkFacts {
    internal: bool,
    subnets: Vec<Ipv4Net>,
}

fn network_facts(network: &str) -> NetworkFacts {
    let inspected = inspect::network(network);
    NetworkFacts {
        internal: inspected.internal,
        subnets: inspected
            .subnets()
            .filter_map(|subnet| subnet.parse().ok())
            .collect(),
    }
}

fn addresses_of(container: &Container) -> BTreeMap<String, Ipv4Addr> {
    container
        .network_settings
        .networks
        .iter()
        .map(|(network, settings)| {
            (
                network.clone(),
                settings.ip_address.parse().unwrap_or_else(|_| {
                    panic!("{} has no IPv4 address on {network}", container.name)
                }),
            )
        })
        .collect()
}

async fn hits(client: &reqwest::Client, stack: &ComposeStack) -> u64 {
    read_hits(client, &stack.url).await
}

/// One answer read off a raw connection: status, headers (names in lower
/// case) and body.
struct RawAnswer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl RawAnswer {
    fn parse(bytes: &[u8]) -> Option<RawAnswer> {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        Some(RawAnswer {
            status,
            headers,
            body: body.to_string(),
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Clients on the proxy container's own loopback, with addresses of their
/// own (127.0.0.2 and up), talking to its nginx on 127.0.0.1:80: nginx sees
/// each address as a client of its own, as clients on other machines are.
#[derive(Clone, Copy)]
struct ProxyLoopback {
    pid: u32,
}

impl ComposeStack {
    fn proxy_loopback(&self) -> ProxyLoopback {
        ProxyLoopback {
            pid: self.single(Service::Proxy).state.pid,
        }
    }
}

impl ProxyLoopback {
    /// Sends `request` (which says `Connection: close`) from `source` and
    /// reads the answer to the end of the connection.
    async fn exchange(&self, source: Ipv4Addr, request: &[u8]) -> RawAnswer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let nginx = std::net::SocketAddr::from(([127, 0, 0, 1], 80));
        netguard::check_destination(nginx.ip(), &[]).unwrap_or_else(|refused| panic!("{refused}"));
        assert!(source.is_loopback(), "{source} is not a loopback address");
        let socket = stack_tests::netns::in_network_namespace_of(self.pid, || {
            tokio::net::TcpSocket::new_v4().expect("a socket in the proxy's namespace")
        });
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .unwrap_or_else(|error| panic!("bind {source}: {error}"));
        let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(nginx))
            .await
            .expect("connect in time")
            .expect("connect to the proxy's nginx");
        // nginx may answer and close before it read a long request to its end.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut answer)).await;
        RawAnswer::parse(&answer).unwrap_or_else(|| {
            panic!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(300)])
            )
        })
    }
}

/// A container's log lines (stdout and stderr) since `since` (Unix seconds).
fn log_since(container_id: &str, since: f64) -> String {
    let output = docker_output(&["logs", "--since", &format!("{since:.3}"), container_id]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}
