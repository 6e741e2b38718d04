//! The one typed description of the stack (proxy → webapp → db) that every
//! deploy file is rendered from: `deploy/compose.yaml` by
//! [`crate::render::render_compose`], `deploy/stack.yaml` by the Swarm
//! renderer.
//!
//! It states intent (networks, secrets, hardening, health, limits) once, in
//! terms neither file format owns; each renderer maps it onto what its tool
//! understands, and leaves out what that tool ignores or rejects.

use std::time::Duration;

use stack_contract::service::Service as ServiceName;

/// Host port the proxy publishes when none is given.
pub const DEFAULT_HOST_PORT: u16 = 8070;

/// The environment variable the deploy files read the host port from
/// (`${WEBSTACK_PORT:-8070}`), so one file serves any port.
pub const PORT_VARIABLE: &str = "WEBSTACK_PORT";

/// uid:gid of every image's `nonroot` user (the images, deploy files and flake.nix all use it).
pub const NONROOT_USER: &str = "65532:65532";
pub const NONROOT_ID: u32 = 65532;

/// Seconds the webapp drains in-flight requests after its lame-duck period;
/// the webapp stop grace period below is longer than both together, so
/// Docker never SIGKILLs a draining replica.
pub const WEBAPP_SHUTDOWN_GRACE_SECS: u64 = 10;

/// How long a webapp replica serves on after SIGTERM while its /readyz says
/// "stopping" (`WEBAPP_LAME_DUCK_MS`): proxy-init sees that at its next
/// lookup (every [`PROXY_RESOLVE_INTERVAL`]) and reloads the back nginx
/// without it, so no request reaches it once it stops accepting.
pub const WEBAPP_LAME_DUCK: Duration = Duration::from_secs(5);

/// How often the proxy looks up the webapp replicas' addresses and, when they
/// changed, reloads its back nginx (`PROXY_RESOLVE_INTERVAL_MS`, read by
/// webapp/src/bin/proxy-init.rs).
pub const PROXY_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// The port the webapp listens on inside the stack.
pub const WEBAPP_PORT: u16 = 5000;

/// Service names: also the DNS names the services find each other by.
/// Defined once, in `stack_contract::service`, which the suites read too.
pub const DB: &str = ServiceName::Db.name();
pub const WEBAPP: &str = ServiceName::Webapp.name();
pub const PROXY: &str = ServiceName::Proxy.name();

/// Network names. Only `edge` has an address on the host, which the
/// proxy's published port needs; `frontend` (proxy ↔ webapp) and `backend`
/// (webapp ↔ db) are internal and addressless on the host, so neither the
/// webapp nor the db can be reached from the host, only through the proxy.
pub const EDGE: &str = "edge";
pub const FRONTEND: &str = "frontend";
pub const BACKEND: &str = "backend";

/// Named volume holding Redis's append-only file.
pub const DB_DATA_VOLUME: &str = "db-data";

/// Secret holding the Redis password alone, read by the webapp through
/// `REDIS_PASSWORD_FILE`.
pub const REDIS_PASSWORD_SECRET: &str = "redis_password";
/// Secret holding a redis.conf fragment (`requirepass …`) that redis-server
/// `--include`s: redis-server cannot read a password from a file, but it can
/// read configuration from one, and so the password never appears in
/// `docker inspect` or the process list.
pub const REDIS_CONFIG_SECRET: &str = "redis_config";

/// The whole stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub services: Vec<Service>,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
    pub secrets: Vec<Secret>,
}

impl Stack {
    /// The service of that name; `name` is one of [`DB`], [`WEBAPP`] and
    /// [`PROXY`].
    pub fn service(&self, name: &str) -> anyhow::Result<&Service> {
        self.services
            .iter()
            .find(|service| service.name == name)
            .ok_or_else(|| anyhow::anyhow!("the stack has no service {name:?}"))
    }

    /// The ports a service listens on, as the model states them: the
    /// container side of what it publishes, its own `*_PORT` settings, and
    /// the port every other service's URLs reach it by name on; as
    /// `"5000/tcp"`, sorted. Both image builders (xtask's and flake.nix)
    /// expose exactly these.
    pub fn listening_ports(&self, service: &Service) -> anyhow::Result<Vec<String>> {
        let mut ports = std::collections::BTreeSet::new();
        for published in &service.published_ports {
            ports.insert(published.container_port);
        }
        for (variable, value) in &service.environment {
            if variable.ends_with("_PORT") {
                ports.insert(value.parse::<u16>().map_err(|_| {
                    anyhow::anyhow!("{} sets {variable}={value:?}, not a port", service.name)
                })?);
            }
        }
        for other in &self.services {
            for (_, value) in &other.environment {
                ports.extend(port_in_url(value, service.name));
            }
        }
        Ok(ports.iter().map(|port| format!("{port}/tcp")).collect())
    }
}

/// The port in `scheme://{host}:{port}…`, when the URL names `host`.
fn port_in_url(url: &str, host: &str) -> Option<u16> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let (name, port) = authority.rsplit_once(':')?;
    (name == host).then(|| port.parse().ok())?
}

impl Service {
    /// The image's working directory: the target of the service's volume
    /// (the db's /data), else `/`.
    pub fn working_dir(&self) -> anyhow::Result<&'static str> {
        match &self.volumes[..] {
            [] => Ok("/"),
            [volume] => Ok(volume.target),
            _ => anyhow::bail!(
                "{} mounts several volumes: which is its working directory?",
                self.name
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Network {
    pub name: &'static str,
    /// No route to or from outside the network: only its members talk.
    pub internal: bool,
    /// Whether the host gets an address on the network's bridge. On Linux
    /// that address lets any host process reach every container on the
    /// network directly, internal or not; without it the host has no route.
    pub host_address: bool,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub name: &'static str,
}

/// A secret read from a file under `.secrets/` (git-ignored), generated by
/// xtask on first use.
#[derive(Debug, Clone)]
pub struct Secret {
    pub name: &'static str,
    /// Path relative to the workspace root.
    pub file_from_root: &'static str,
}

/// Where a service sees a secret: `/run/secrets/<name>`. Owner and mode
/// apply where the orchestrator can set them (Swarm); Compose bind-mounts
/// the file with its host owner and mode, so xtask makes the host file
/// readable by the non-root user instead.
#[derive(Debug, Clone)]
pub struct SecretMount {
    pub secret: &'static str,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl SecretMount {
    /// Readable by the non-root user every service runs as, and nobody else.
    pub fn for_nonroot(secret: &'static str) -> SecretMount {
        SecretMount {
            secret,
            uid: NONROOT_ID,
            gid: NONROOT_ID,
            mode: 0o400,
        }
    }
}

/// A tmpfs mount on the read-only root filesystem: world-writable with the
/// sticky bit (mode 1777, Swarm's default, and asked for explicitly under
/// Compose) and bounded in size.
#[derive(Debug, Clone, Copy)]
pub struct Tmpfs {
    pub target: &'static str,
    /// A whole number of MiB, as Compose's short syntax writes it.
    pub size_mib: u64,
}

impl Tmpfs {
    pub fn size_bytes(&self) -> u64 {
        self.size_mib * MIB
    }

    /// Compose's short syntax: `/tmp:size=16m,mode=1777`.
    pub fn compose_spec(&self) -> String {
        format!("{}:size={}m,mode=1777", self.target, self.size_mib)
    }
}

#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub volume: &'static str,
    pub target: &'static str,
}

/// An image reference that a deployment may override through an environment
/// variable (the Swarm deploy pins content-derived tags this way), defaulting
/// to the stable `:local` tag.
#[derive(Debug, Clone)]
pub struct Image {
    pub repository: &'static str,
    pub variable: &'static str,
}

/// What each image runs: the model holds only what comes after it
/// (`Service::command`, given in the deploy files).
pub fn entrypoint(service: &str) -> anyhow::Result<Vec<String>> {
    let parts: &[&str] = match service {
        WEBAPP => &["/usr/local/bin/webapp"],
        DB => &["/usr/bin/redis-server"],
        // Runs the front and back nginx and keeps the back's list of
        // replicas equal to DNS (webapp/src/bin/proxy-init.rs).
        PROXY => &["/usr/local/bin/proxy-init"],
        other => anyhow::bail!("xtask builds no image for service {other:?}"),
    };
    Ok(parts.iter().map(|part| part.to_string()).collect())
}

/// The tag deploy files use; each build also tags its image with a
/// content tag, the config digest's first 12 hex digits.
pub const STABLE_TAG: &str = "local";

impl Image {
    /// `${WEBSTACK_WEBAPP_IMAGE:-webstack/webapp:local}`: interpolated by
    /// both Compose and `docker stack deploy`.
    pub fn reference_with_override(&self) -> String {
        format!("${{{}:-{}:{}}}", self.variable, self.repository, STABLE_TAG)
    }
}

/// The three image references one deployment uses.
///
/// Swarm compares image *strings*: redeploying `webstack/webapp:local` after
/// the tag moved to a new build changes nothing, so xtask always deploys the
/// content-derived tags and an update is a real change of image.
#[derive(Clone, Debug)]
pub struct StackImages {
    pub webapp: String,
    pub db: String,
    pub proxy: String,
}

impl StackImages {
    /// Each service's image variable (`WEBSTACK_WEBAPP_IMAGE` …) with its
    /// image: what pins a Compose project or a Swarm stack to these images,
    /// since both deploy files name their images through the variables.
    pub fn variables(&self) -> anyhow::Result<Vec<(String, String)>> {
        stack()
            .services
            .iter()
            .map(|service| {
                Ok((
                    service.image.variable.to_string(),
                    self.for_service(service.name)?.to_string(),
                ))
            })
            .collect()
    }

    /// The image for a service of the stack description.
    pub fn for_service(&self, service: &str) -> anyhow::Result<&str> {
        match service {
            WEBAPP => Ok(&self.webapp),
            DB => Ok(&self.db),
            PROXY => Ok(&self.proxy),
            other => anyhow::bail!(
                "the stack description has a service {other:?} that xtask builds no image for"
            ),
        }
    }
}

/// A host port the service publishes, read from `variable` with a default.
#[derive(Debug, Clone)]
pub struct PublishedPort {
    pub variable: &'static str,
    pub default_host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone)]
pub struct Healthcheck {
    /// Exec form: the images have no shell.
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// When a stopped container comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// After crashes and engine restarts, but not after `docker stop`, so an
    /// operator (or a test) can stop a service on purpose.
    UnlessStopped,
}

/// The node label that marks the node holding the Redis volume: db runs
/// there and nowhere else, since a local volume does not follow a task to
/// another node. `swarm deploy` puts it on the manager it deploys to when no
/// node carries it yet.
pub const DB_NODE_LABEL: &str = "webstack.db";

/// Where Swarm places a service's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Spread over the nodes, evenly, with no cap per node: when a node is
    /// lost or drained, the others take its replicas.
    Spread,
    /// Only on the node carrying [`DB_NODE_LABEL`]`=true`.
    LabelledDbNode,
    /// On a manager: where the published port is, and the address users are
    /// given.
    Manager,
}

/// Settings for rolling updates, used where the orchestrator rolls (Swarm).
/// Read by the Swarm renderer (deploy/stack.yaml); Compose does not roll.
#[derive(Debug, Clone)]
pub struct RollingUpdate {
    pub parallelism: u32,
    /// Start the new task before stopping the old one.
    pub start_first: bool,
    pub monitor: Duration,
    pub rollback_on_failure: bool,
    /// New tasks that may fail, as a fraction of the replicas, before the
    /// update is rolled back (Swarm's `max_failure_ratio`; its default, 0,
    /// rolls back at the first). A task can fail for the engine's own
    /// reasons: Docker 20.10 failed one with "error while removing network:
    /// unknown network" after a drain and a node loss, in about one cluster
    /// end-to-end run in three, and that alone should not undo a healthy
    /// update. An image that never becomes healthy fails every task it
    /// starts, so it still rolls back, at the second failure; with
    /// `start_first` the old tasks serve until then.
    pub max_failure_ratio: f64,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub image: Image,
    /// Arguments after the image's entrypoint.
    pub command: Vec<String>,
    pub environment: Vec<(&'static str, String)>,
    pub networks: Vec<&'static str>,
    pub published_ports: Vec<PublishedPort>,
    pub volumes: Vec<VolumeMount>,
    pub secrets: Vec<SecretMount>,
    pub healthcheck: Healthcheck,
    /// Services that must be healthy before this one starts (Compose only:
    /// Swarm ignores start order, so every service copes without it).
    pub depends_on_healthy: Vec<&'static str>,
    pub restart: Restart,
    /// Replicas when nobody asks for another number.
    pub replicas: u32,
    /// Replicas are reached by name through DNS round robin (one address
    /// per replica) rather than through a virtual IP: nginx balances per
    /// request itself.
    /// Read by the Swarm renderer only, like `update`.
    pub dns_round_robin: bool,
    pub update: Option<RollingUpdate>,
    /// Where Swarm may run the service's tasks (Compose has one host).
    pub placement: Placement,
    pub user: &'static str,
    pub read_only_root_filesystem: bool,
    pub tmpfs: Vec<Tmpfs>,
    pub memory_limit_bytes: u64,
    /// Fraction of CPUs (hundredths, to stay exact): 100 = one CPU.
    pub cpu_limit_hundredths: u32,
    pub pids_limit: u32,
    /// The open files limit (`nofile`, soft and hard alike), or the
    /// engine's default. A process running as the non-root user cannot raise
    /// its own beyond the hard limit.
    pub open_files_limit: Option<u32>,
    pub stop_grace_period: Duration,
    /// The signal that makes the main process stop gracefully. The image
    /// carries it (`images` reads it from here), so the deploy files do not
    /// repeat it.
    pub stop_signal: &'static str,
    /// Kernel settings of the container's own network namespace.
    pub sysctls: Vec<(&'static str, &'static str)>,
}

const MIB: u64 = 1024 * 1024;

/// The proxy's open files limit; nginx/nginx.conf's `worker_rlimit_nofile`
/// says the same (a test checks).
pub const PROXY_OPEN_FILES_LIMIT: u32 = 16384;

/// Healthcheck cadence shared by all services: frequent enough that a stack
/// is up in seconds (three services start one after the other), cheap
/// enough (one exec of a tiny static binary) to run every few seconds.
fn healthcheck(command: &[&str]) -> Healthcheck {
    Healthcheck {
        command: command.iter().map(|part| part.to_string()).collect(),
        interval: Duration::from_secs(3),
        timeout: Duration::from_secs(3),
        retries: 3,
        start_period: Duration::from_secs(10),
    }
}

impl Service {
    /// A service with the hardening every service of the stack keeps: the
    /// non-root user, a read-only root filesystem, restarts unless stopped,
    /// the shared healthcheck cadence, one CPU, 64 MiB and 64 processes, one
    /// replica. Each service below says only where it differs.
    fn hardened(name: &'static str, image: Image, healthcheck_command: &[&str]) -> Service {
        Service {
            name,
            image,
            command: Vec::new(),
            environment: Vec::new(),
            networks: Vec::new(),
            published_ports: Vec::new(),
            volumes: Vec::new(),
            secrets: Vec::new(),
            healthcheck: healthcheck(healthcheck_command),
            depends_on_healthy: Vec::new(),
            restart: Restart::UnlessStopped,
            replicas: 1,
            dns_round_robin: false,
            update: None,
            placement: Placement::Spread,
            user: NONROOT_USER,
            read_only_root_filesystem: true,
            tmpfs: Vec::new(),
            memory_limit_bytes: 64 * MIB,
            cpu_limit_hundredths: 100,
            pids_limit: 64,
            open_files_limit: None,
            stop_grace_period: Duration::from_secs(10),
            stop_signal: "SIGTERM",
            sysctls: Vec::new(),
        }
    }
}

/// The stack: the single source of `deploy/compose.yaml` and
/// `deploy/stack.yaml`.
pub fn stack() -> Stack {
    let db = Service {
        command: [
            // requirepass, from the secret (see REDIS_CONFIG_SECRET).
            "--include",
            "/run/secrets/redis_config",
            // Every write goes to the append-only file, fsynced each second;
            // no RDB snapshots besides it.
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--dir",
            "/data",
            // Below the container's memory limit, so Redis is never
            // OOM-killed. At the limit it evicts only keys with a TTL: cache
            // entries always have one, the counters never, so a full cache
            // gives way and the counter keeps counting.
            "--maxmemory",
            "192mb",
            "--maxmemory-policy",
            "volatile-lru",
        ]
        .iter()
        .map(|argument| argument.to_string())
        .collect(),
        networks: vec![BACKEND],
        volumes: vec![VolumeMount {
            volume: DB_DATA_VOLUME,
            target: "/data",
        }],
        secrets: vec![SecretMount::for_nonroot(REDIS_CONFIG_SECRET)],
        // The webapp reaches `db` by name; on Swarm a virtual IP would need
        // IPVS in the kernel, which not every host has, so the name resolves
        // to the task's own address instead.
        dns_round_robin: true,
        placement: Placement::LabelledDbNode,
        memory_limit_bytes: 256 * MIB,
        ..Service::hardened(
            DB,
            Image {
                repository: "webstack/db",
                variable: "WEBSTACK_DB_IMAGE",
            },
            // redis-cli exits 0 once a Redis server answered, whatever it
            // answered (here NOAUTH, since the check has no password), and 1
            // when nothing listens: the exit code proves liveness without
            // handing the password to the healthcheck (it would show up in
            // `docker inspect`).
            &["/usr/bin/redis-cli", "ping"],
        )
    };

    let webapp = Service {
        environment: vec![
            ("WEBAPP_PORT", WEBAPP_PORT.to_string()),
            ("REDIS_URL", format!("redis://{DB}:6379")),
            (
                "REDIS_PASSWORD_FILE",
                format!("/run/secrets/{REDIS_PASSWORD_SECRET}"),
            ),
            ("LOG_FORMAT", "json".to_string()),
            (
                "WEBAPP_SHUTDOWN_GRACE_SECS",
                WEBAPP_SHUTDOWN_GRACE_SECS.to_string(),
            ),
            (
                "WEBAPP_LAME_DUCK_MS",
                WEBAPP_LAME_DUCK.as_millis().to_string(),
            ),
        ],
        networks: vec![FRONTEND, BACKEND],
        secrets: vec![SecretMount::for_nonroot(REDIS_PASSWORD_SECRET)],
        depends_on_healthy: vec![DB],
        replicas: 3,
        dns_round_robin: true,
        update: Some(RollingUpdate {
            parallelism: 1,
            start_first: true,
            monitor: Duration::from_secs(15),
            rollback_on_failure: true,
            // One of three replicas.
            max_failure_ratio: 0.34,
        }),
        memory_limit_bytes: 128 * MIB,
        pids_limit: 128,
        // Lame duck, then the drain, then 5 s to spare.
        stop_grace_period: WEBAPP_LAME_DUCK + Duration::from_secs(WEBAPP_SHUTDOWN_GRACE_SECS + 5),
        ..Service::hardened(
            WEBAPP,
            Image {
                repository: "webstack/webapp",
                variable: "WEBSTACK_WEBAPP_IMAGE",
            },
            &["/usr/local/bin/webapp", "healthcheck"],
        )
    };

    let proxy = Service {
        environment: vec![
            // Where the replicas are: Docker's DNS answers one address each.
            ("PROXY_UPSTREAM", format!("{WEBAPP}:{WEBAPP_PORT}")),
            (
                "PROXY_RESOLVE_INTERVAL_MS",
                PROXY_RESOLVE_INTERVAL.as_millis().to_string(),
            ),
        ],
        networks: vec![EDGE, FRONTEND],
        published_ports: vec![PublishedPort {
            variable: PORT_VARIABLE,
            default_host_port: DEFAULT_HOST_PORT,
            container_port: 80,
        }],
        depends_on_healthy: vec![WEBAPP],
        placement: Placement::Manager,
        // nginx's pid file and temp paths (see nginx/nginx.conf).
        tmpfs: vec![Tmpfs {
            target: "/tmp",
            size_mib: 16,
        }],
        // Thousands of slow clients: each connection is a file of a front
        // nginx worker, and one more while its request goes to the back
        // nginx. The front's worker_rlimit_nofile (nginx/nginx.conf) is this
        // number; engines differ in their default (1024 soft with some).
        open_files_limit: Some(PROXY_OPEN_FILES_LIMIT),
        // Room for every connection the front nginx accepts (4,096 for each
        // of its 2 workers): a slow client's connection costs about 9 KiB
        // (measured with 3,000 trickling headers: docs/hardening.md), so
        // the workers run short of connections, which nginx handles by
        // closing idle ones, before the container runs short of memory,
        // which the kernel handles by killing a worker.
        memory_limit_bytes: 128 * MIB,
        // proxy-init drains both nginx on SIGQUIT (the image's stop signal);
        // a request may wait up to about 2 s for the webapp.
        stop_grace_period: Duration::from_secs(WEBAPP_SHUTDOWN_GRACE_SECS + 5),
        // nginx finishes in-flight requests on SIGQUIT, not on SIGTERM;
        // proxy-init passes it on, to the front nginx first.
        stop_signal: "SIGQUIT",
        // nginx keeps its connections to the replicas (nginx/back.conf), but
        // each reload of the back nginx opens them anew. When it opened one
        // per request (before keep-alive), a few seconds of load used up the
        // ~28k local ports per replica with TIME_WAIT sockets and throughput
        // collapsed (measured: from 3,500 to 310 requests/s on the second 8 s
        // oha run); reusing TIME_WAIT ports and a wider port range keep any
        // burst of new connections from doing that again.
        sysctls: vec![
            ("net.ipv4.tcp_tw_reuse", "1"),
            ("net.ipv4.ip_local_port_range", "1024 65535"),
        ],
        ..Service::hardened(
            PROXY,
            Image {
                repository: "webstack/proxy",
                variable: "WEBSTACK_PROXY_IMAGE",
            },
            &["/usr/local/bin/httpcheck", "http://127.0.0.1/nginx/health"],
        )
    };

    Stack {
        services: vec![db, webapp, proxy],
        networks: vec![
            Network {
                name: EDGE,
                internal: false,
                host_address: true,
            },
            Network {
                name: FRONTEND,
                internal: true,
                host_address: false,
            },
            Network {
                name: BACKEND,
                internal: true,
                host_address: false,
            },
        ],
        volumes: vec![Volume {
            name: DB_DATA_VOLUME,
        }],
        secrets: vec![
            Secret {
                name: REDIS_PASSWORD_SECRET,
                file_from_root: ".secrets/redis_password",
            },
            Secret {
                name: REDIS_CONFIG_SECRET,
                file_from_root: ".secrets/redis_config",
            },
        ],
    }
}

/// Docker's duration syntax, in whole seconds ("15s").
pub fn docker_duration(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_describes_exactly_the_services_the_suites_know() {
        let names: Vec<&str> = stack()
            .services
            .iter()
            .map(|service| service.name)
            .collect();
        assert_eq!(names, ServiceName::ALL.map(ServiceName::name));
    }

    #[test]
    fn webapp_stop_grace_period_is_longer_than_its_lame_duck_and_shutdown_grace() {
        let stack = stack();
        let webapp = stack
            .services
            .iter()
            .find(|service| service.name == WEBAPP)
            .expect("the stack has a webapp service");
        assert!(
            webapp.stop_grace_period
                > WEBAPP_LAME_DUCK + Duration::from_secs(WEBAPP_SHUTDOWN_GRACE_SECS)
        );
    }

    #[test]
    fn the_lame_duck_outlasts_a_lookup_a_probe_and_a_reload() {
        // A lookup interval, proxy-init's 500 ms probe, and a reload whose
        // old workers finish requests retried for up to 1.5 s (back.conf).
        assert!(WEBAPP_LAME_DUCK >= 2 * PROXY_RESOLVE_INTERVAL + Duration::from_secs(2));
    }

    #[test]
    fn only_the_proxy_publishes_ports_and_the_db_shares_no_network_with_it() {
        let stack = stack();
        for service in &stack.services {
            assert_eq!(
                !service.published_ports.is_empty(),
                service.name == PROXY,
                "{} publishes ports",
                service.name
            );
        }
        let networks_of = |name: &str| {
            stack
                .services
                .iter()
                .find(|service| service.name == name)
                .map(|service| service.networks.clone())
                .expect("service exists")
        };
        assert!(networks_of(DB)
            .iter()
            .all(|network| !networks_of(PROXY).contains(network)));
        assert!(stack
            .networks
            .iter()
            .any(|network| network.name == BACKEND && network.internal));
    }

    #[test]
    fn db_and_webapp_are_only_on_networks_without_a_host_address() {
        let stack = stack();
        for service in stack
            .services
            .iter()
            .filter(|service| service.name != PROXY)
        {
            for name in &service.networks {
                let network = stack
                    .networks
                    .iter()
                    .find(|network| network.name == *name)
                    .expect("declared network");
                assert!(
                    network.internal && !network.host_address,
                    "{} is on {name}, which the host can reach",
                    service.name
                );
            }
        }
    }

    #[test]
    fn every_service_keeps_the_hardening_and_is_found_by_name() -> anyhow::Result<()> {
        let stack = stack();
        for name in [DB, WEBAPP, PROXY] {
            let service = stack.service(name)?;
            assert_eq!(service.user, NONROOT_USER, "{name}");
            assert!(service.read_only_root_filesystem, "{name}");
            assert_eq!(service.restart, Restart::UnlessStopped, "{name}");
            assert!(
                service.memory_limit_bytes > 0 && service.pids_limit > 0,
                "{name}"
            );
            assert!(
                service.secrets.iter().all(|mount| mount.uid == NONROOT_ID
                    && mount.gid == NONROOT_ID
                    && mount.mode == 0o400),
                "{name}: secrets readable by the non-root user only"
            );
        }
        assert!(stack.service("cache").is_err());
        Ok(())
    }

    #[test]
    fn tmpfs_mounts_render_in_compose_syntax_and_in_bytes() {
        let tmp = Tmpfs {
            target: "/tmp",
            size_mib: 16,
        };
        assert_eq!(tmp.compose_spec(), "/tmp:size=16m,mode=1777");
        assert_eq!(tmp.size_bytes(), 16 * 1024 * 1024);
    }
}
