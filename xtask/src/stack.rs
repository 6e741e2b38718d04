//! The one typed description of the stack (proxy → webapp → db) that every
//! deploy file is rendered from: `deploy/compose.yaml` by
//! [`crate::render::render_compose`], `deploy/stack.yaml` by the Swarm
//! renderer.
//!
//! It states intent (networks, secrets, hardening, health, limits) once, in
//! terms neither file format owns; each renderer maps it onto what its tool
//! understands, and leaves out what that tool ignores or rejects.

mod services;
#[cfg(test)]
mod tests;

use std::time::Duration;

use stack_contract::service::Service as ServiceName;

/// Host port the proxy publishes when none is given.
pub const DEFAULT_HOST_PORT: u16 = 8070;

/// The environment variable the deploy files read the host port from
/// (`${WEBSTACK_PORT:-8070}`), so one file serves any port.
pub const PORT_VARIABLE: &str = "WEBSTACK_PORT";

/// The host port HTTPS is published on with `--tls`, unless `WEBSTACK_HTTPS_PORT` says
/// otherwise (443 on a server).
pub const DEFAULT_HTTPS_HOST_PORT: u16 = 8443;
pub const HTTPS_PORT_VARIABLE: &str = "WEBSTACK_HTTPS_PORT";

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
/// nginx/proxy/src/bin/proxy-init/).
pub const PROXY_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// The port the webapp listens on inside the stack.
pub const WEBAPP_PORT: u16 = 5000;

/// Service names: also the DNS names the services find each other by.
/// Defined once, in `stack_contract::service`, which the suites read too.
pub const DB: &str = ServiceName::Db.name();
pub const WEBAPP: &str = ServiceName::Webapp.name();
pub const BALANCER: &str = ServiceName::Balancer.name();
pub const PROXY: &str = ServiceName::Proxy.name();

/// Network names. Only `edge` has an address on the host, which the
/// proxy's published port needs; `frontend` (balancer ↔ webapp) and
/// `backend` (webapp ↔ db) are internal and addressless on the host, so
/// neither the webapp nor the db can be reached from the host, only through
/// the proxy. The proxy is on `edge` alone: a container that publishes a
/// port must be on no internal network (see [`services::proxy`]).
pub const EDGE: &str = "edge";
pub const FRONTEND: &str = "frontend";
pub const BACKEND: &str = "backend";

/// Named volume holding Redis's append-only file.
pub const DB_DATA_VOLUME: &str = "db-data";

/// Named volume, in memory, holding the unix socket the front nginx (proxy)
/// reaches the back nginx (balancer) on, and where both mount it
/// (`/run/proxy/back.sock` in nginx/nginx.conf, nginx/back.conf and
/// proxy-init).
pub const PROXY_SOCKET_VOLUME: &str = "proxy-socket";
pub const PROXY_SOCKET_DIR: &str = "/run/proxy";

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
    pub storage: VolumeStorage,
}

/// Where a named volume keeps its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeStorage {
    /// The engine's default: a directory on the node's disk, kept until the
    /// volume is removed.
    Disk,
    /// A tmpfs the engine mounts for the volume (the local driver's
    /// `type: tmpfs`), empty whenever no container uses it, owned by the
    /// non-root user with mode 0700: for files only the stack's containers
    /// share, such as a unix socket.
    Memory { size_mib: u64 },
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
}

#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub volume: &'static str,
    pub target: &'static str,
    /// Mounted read-only: the container reads what another service writes.
    pub read_only: bool,
}

/// An image reference that a deployment may override through an environment
/// variable (the Swarm deploy pins content-derived tags this way), defaulting
/// to the stable `:local` tag.
#[derive(Debug, Clone)]
pub struct Image {
    pub repository: &'static str,
    pub variable: &'static str,
}

/// The services whose image xtask builds, each image named after its
/// service and carrying its settings; the balancer runs the proxy's image
/// in its other role.
pub const IMAGE_SERVICES: [&str; 3] = [DB, WEBAPP, PROXY];

/// What each image runs: the model holds only what comes after it
/// (`Service::command`, given in the deploy files).
pub fn entrypoint(service: &str) -> anyhow::Result<Vec<String>> {
    let parts: &[&str] = match service {
        WEBAPP => &["/usr/local/bin/webapp"],
        DB => &["/usr/bin/redis-server"],
        // Runs the front nginx, or the back nginx and its lookups of the
        // replicas (nginx/proxy/src/bin/proxy-init/).
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

/// The three image references one deployment uses (the balancer runs the
/// proxy's image).
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
        let mut variables = Vec::new();
        for service in stack().services {
            let variable = (
                service.image.variable.to_string(),
                self.for_service(service.name)?.to_string(),
            );
            if !variables.contains(&variable) {
                variables.push(variable);
            }
        }
        Ok(variables)
    }

    /// The image for a service of the stack description.
    pub fn for_service(&self, service: &str) -> anyhow::Result<&str> {
        match service {
            WEBAPP => Ok(&self.webapp),
            DB => Ok(&self.db),
            PROXY | BALANCER => Ok(&self.proxy),
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

/// The node label that marks the node the proxy and the balancer run on:
/// the proxy publishes its port there (the address users are given), and
/// the two share the socket's volume, which is local to a node. `swarm
/// deploy` puts it on the manager it deploys to when no node carries it yet.
pub const PROXY_NODE_LABEL: &str = "webstack.proxy";

/// Where Swarm places a service's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Spread over the nodes, evenly, with no cap per node: when a node is
    /// lost or drained, the others take its replicas.
    Spread,
    /// Only on the node carrying [`DB_NODE_LABEL`]`=true`.
    LabelledDbNode,
    /// Only on the node carrying [`PROXY_NODE_LABEL`]`=true`.
    LabelledProxyNode,
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
    /// The image's working directory (the image carries it).
    pub working_dir: &'static str,
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
    /// How much of its log the engine keeps.
    pub logs: LogRetention,
    /// Where Docker's embedded DNS server sends the names it does not know:
    /// [`NO_EXTERNAL_DNS`] for every service.
    pub external_dns: &'static [&'static str],
}

/// The log the engine keeps for each container: the `local` driver (lines
/// stored as written, with no JSON escaping added, older files compressed),
/// `files` files of at most `max_size_mib` MiB before compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    pub max_size_mib: u32,
    pub files: u32,
}

/// No container of the stack needs a name from outside it. Docker's
/// embedded DNS server (127.0.0.11) answers the stack's own names and
/// forwards any other to the container's external servers; before Engine
/// 26.0 it does so even from an `internal` network (CVE-2024-29018), from
/// the host's resolvers. Naming the container's own loopback as the only
/// external server keeps every such query inside the container, where
/// nothing answers it, whatever the engine version (docs/hardening.md).
pub const NO_EXTERNAL_DNS: &[&str] = &["127.0.0.1"];

const MIB: u64 = 1024 * 1024;

/// The proxy's open files limit; nginx/nginx.conf's `worker_rlimit_nofile`
/// says the same (a test checks).
pub const PROXY_OPEN_FILES_LIMIT: u32 = 16384;

/// Healthcheck cadence shared by all services: frequent enough that a stack
/// is up in seconds (four services start one after the other), cheap
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
    /// replica, 100 MiB of log, no DNS server outside the stack. Each service below says only where it differs.
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
            working_dir: "/",
            read_only_root_filesystem: true,
            tmpfs: Vec::new(),
            memory_limit_bytes: 64 * MIB,
            cpu_limit_hundredths: 100,
            pids_limit: 64,
            open_files_limit: None,
            stop_grace_period: Duration::from_secs(10),
            stop_signal: "SIGTERM",
            sysctls: Vec::new(),
            logs: LogRetention {
                max_size_mib: 20,
                files: 5,
            },
            external_dns: NO_EXTERNAL_DNS,
        }
    }
}

/// HTTPS at the front (`--tls`): what `deploy/compose.tls.yaml` and `deploy/stack.tls.yaml`
/// add to the proxy service of the plain files, which they are deployed with: the HTTPS port,
/// the switch that makes proxy-init run nginx-tls.conf, and the certificate and key as
/// secrets (never in an image).
pub struct FrontTls {
    pub service: &'static str,
    /// A label on the proxy's containers, so later commands (`scale`, `down`) know to deploy
    /// with the overlay too.
    pub label: (&'static str, &'static str),
    /// A label whose value is the certificate's version, so that a new certificate and key
    /// change the proxy's configuration and Compose replaces it (a changed secret file
    /// alone does not): `None` where the certificate changes under a running proxy (ACME).
    pub version_label: Option<(&'static str, String)>,
    pub https_port: PublishedPort,
    pub environment: Vec<(&'static str, String)>,
    pub secrets: Vec<SecretMount>,
    /// Each secret's file name, in `${WEBSTACK_TLS_DIR}` (`.secrets/tls/` by default).
    pub secret_files: Vec<(&'static str, &'static str)>,
}

/// Where the TLS deploy files find the certificate and key: `.secrets/tls/` (git-ignored)
/// unless this variable names another directory (the end-to-end run's own).
pub const TLS_DIR_VARIABLE: &str = "WEBSTACK_TLS_DIR";
pub const DEFAULT_TLS_DIR_FROM_ROOT: &str = ".secrets/tls";

pub const TLS_CERTIFICATE_SECRET: &str = "tls_certificate";
pub const TLS_LABEL: (&str, &str) = ("webstack.tls", "on");
pub const TLS_KEY_SECRET: &str = "tls_key";

/// Under Swarm a secret cannot change, so the two TLS secrets are named by version,
/// `<stack>_tls_certificate_<version>`: a renewed certificate becomes new secrets beside the
/// old ones (which `swarm deploy` removes once the proxy no longer uses them). The stack file
/// names them through these variables, which `docker stack deploy` interpolates: the stack's
/// name (the variable the xtask commands read it from too; Swarm does not prefix a secret
/// that has a `name:`) and the version, which xtask sets to a short sha256 of the
/// certificate and key.
pub const STACK_NAME_VARIABLE: &str = "WEBSTACK_PROJECT";
/// The stack's (and the Compose project's) name when none is given.
pub const DEFAULT_NAME: &str = "webstack";
pub const TLS_VERSION_VARIABLE: &str = "WEBSTACK_TLS_VERSION";
pub const TLS_VERSION_LABEL: &str = "webstack.tls.version";

/// The Swarm name of a versioned TLS secret (each part may be a `${...}` of the stack file).
pub fn versioned_secret_name(stack: &str, secret: &str, version: &str) -> String {
    format!("{stack}_{secret}_{version}")
}

pub fn front_tls() -> FrontTls {
    FrontTls {
        service: PROXY,
        label: TLS_LABEL,
        version_label: Some((TLS_VERSION_LABEL, format!("${{{TLS_VERSION_VARIABLE}:-}}"))),
        https_port: PublishedPort {
            variable: HTTPS_PORT_VARIABLE,
            default_host_port: DEFAULT_HTTPS_HOST_PORT,
            container_port: 443,
        },
        environment: vec![
            ("PROXY_TLS", "on".to_string()),
            // Where port 80 redirects to: the port clients reach HTTPS on.
            (
                "PROXY_HTTPS_PORT",
                format!("${{{HTTPS_PORT_VARIABLE}:-{DEFAULT_HTTPS_HOST_PORT}}}"),
            ),
        ],
        secrets: vec![
            SecretMount::for_nonroot(TLS_CERTIFICATE_SECRET),
            SecretMount::for_nonroot(TLS_KEY_SECRET),
        ],
        secret_files: vec![
            (TLS_CERTIFICATE_SECRET, "certificate.pem"),
            (TLS_KEY_SECRET, "key.pem"),
        ],
    }
}

/// `--tls acme`: what `deploy/compose.acme.yaml` adds to the plain file. The front serves
/// HTTPS as with `--tls`, from the certificate the `acme` service gets and renews on the `acme`
/// volume, which the front mounts read-only and reloads itself for when it changes.
pub struct FrontAcme {
    /// The front's additions, as for [`front_tls`], without secrets.
    pub front: FrontTls,
    pub front_volumes: Vec<VolumeMount>,
    /// The `acme` service (nginx/acme/), on the proxy image.
    pub service: Service,
    pub volume: Volume,
    /// The service's settings (`ACME_*`), a file `--tls acme` writes in `${WEBSTACK_TLS_DIR}`.
    pub env_file: &'static str,
    /// Each secret's file name, in `${WEBSTACK_TLS_DIR}`: the CA's root, when it is not one
    /// of Mozilla's (a test CA); an empty file otherwise.
    pub secret_files: Vec<(&'static str, &'static str)>,
}

pub const ACME: &str = "acme";
pub const ACME_VOLUME: &str = "acme";
pub const ACME_DIR: &str = "/run/acme";
pub const ACME_LABEL: (&str, &str) = ("webstack.tls", "acme");
pub const ACME_ENV_FILE: &str = "acme.env";
pub const ACME_CA_SECRET: &str = "acme_ca";
pub const ACME_CA_FILE: &str = "acme-ca.pem";

pub fn front_acme() -> FrontAcme {
    let plain = front_tls();
    let mut environment = plain.environment;
    environment.extend([
        (
            "PROXY_TLS_CERTIFICATE",
            format!("{ACME_DIR}/live/fullchain.pem"),
        ),
        ("PROXY_TLS_KEY", format!("{ACME_DIR}/live/key.pem")),
        ("PROXY_TLS_RELOAD", "on".to_string()),
    ]);
    FrontAcme {
        front: FrontTls {
            label: ACME_LABEL,
            version_label: None,
            environment,
            secrets: Vec::new(),
            secret_files: Vec::new(),
            ..plain
        },
        front_volumes: vec![VolumeMount {
            volume: ACME_VOLUME,
            target: ACME_DIR,
            read_only: true,
        }],
        service: services::acme(),
        volume: Volume {
            name: ACME_VOLUME,
            storage: VolumeStorage::Disk,
        },
        env_file: ACME_ENV_FILE,
        secret_files: vec![(ACME_CA_SECRET, ACME_CA_FILE)],
    }
}

/// The stack: the single source of `deploy/compose.yaml` and
/// `deploy/stack.yaml`.
pub fn stack() -> Stack {
    Stack {
        services: vec![
            services::db(),
            services::webapp(),
            services::balancer(),
            services::proxy(),
        ],
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
        volumes: vec![
            Volume {
                name: DB_DATA_VOLUME,
                storage: VolumeStorage::Disk,
            },
            Volume {
                name: PROXY_SOCKET_VOLUME,
                storage: VolumeStorage::Memory { size_mib: 1 },
            },
        ],
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
