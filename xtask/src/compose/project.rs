//! One Compose project of the stack, as a [`Deployment`]: start, health,
//! serving, containers, published port, removal.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use xshell::{cmd, Shell};

use super::{default_replicas, ComposeTool, FAILURE_LOG_LINES};
use crate::docker::deployment::Deployment;
use crate::docker::{
    self, Condition, Container, Orchestrator, COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL,
};
use crate::poll::{self, Look};
use crate::stack::StackImages;
use crate::stack::{self, PORT_VARIABLE, PROXY, WEBAPP};

/// One Compose project of this stack: tool, project name, file and host port.
#[derive(Debug, Clone)]
pub struct ComposeProject {
    pub tool: ComposeTool,
    pub name: String,
    pub file: PathBuf,
    /// Substituted for `${WEBSTACK_PORT}` in the file.
    pub port: u16,
    /// `WEBSTACK_*_IMAGE` variable → image, substituted in the file.
    image_pins: Vec<(String, String)>,
    /// The webapp replicas it runs (or is to run): what
    /// [`Deployment::wait_ready`] waits for.
    pub(super) webapp_replicas: usize,
    /// HTTPS at the front: deployed with `deploy/compose.tls.yaml` over the file too.
    pub tls: bool,
    /// With `tls`, the certificate comes from the `acme` service: `deploy/compose.acme.yaml`
    /// instead of `deploy/compose.tls.yaml`.
    pub acme: bool,
    /// Substituted for `${WEBSTACK_HTTPS_PORT}` in that file.
    pub https_port: u16,
    /// `${WEBSTACK_TLS_DIR}` of that file, when not the environment's: a run's own
    /// certificate (the end-to-end HTTPS pass, the bench's HTTPS rows).
    pub tls_dir: Option<PathBuf>,
}

/// How the front (the proxy) serves: what [`ComposeProject::redeploy_front`] deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Front {
    Plain,
    /// HTTPS on host port `port`, with the certificate and key in `tls_dir` (`None`: the
    /// directory the environment names, where `up --tls` wrote them).
    Https {
        port: u16,
        tls_dir: Option<PathBuf>,
    },
}

impl ComposeProject {
    /// The project as it runs: its services keep the images their
    /// containers run (so `scale` adds replicas of the same build, whatever
    /// `:local` points at now); a project with no containers uses the file's
    /// defaults until [`ComposeProject::pin_images`].
    pub fn new(sh: &Shell, name: &str, port: u16) -> anyhow::Result<ComposeProject> {
        let containers = project_containers(sh, name)?;
        let webapps = containers
            .iter()
            .filter(|container| service_of(container) == WEBAPP)
            .count();
        Ok(ComposeProject {
            tool: ComposeTool::detect(sh)?,
            name: name.to_string(),
            file: crate::render::compose_file_path(),
            port,
            image_pins: running_images(&containers),
            webapp_replicas: if webapps == 0 {
                default_replicas() as usize
            } else {
                webapps
            },
            https_port: std::env::var(stack::HTTPS_PORT_VARIABLE)
                .ok()
                .and_then(|port| port.parse().ok())
                .unwrap_or(stack::DEFAULT_HTTPS_HOST_PORT),
            tls: containers.iter().any(|container| {
                service_of(container) == PROXY
                    && container.label(stack::TLS_LABEL.0).is_some_and(|value| {
                        value == stack::TLS_LABEL.1 || value == stack::ACME_LABEL.1
                    })
            }),
            acme: containers.iter().any(|container| {
                service_of(container) == PROXY
                    && container.label(stack::ACME_LABEL.0) == Some(stack::ACME_LABEL.1)
            }),
            tls_dir: None,
        })
    }

    /// How the running proxy serves: HTTPS on the host port it publishes 443 on, or plain.
    pub fn running_front(&self, sh: &Shell) -> Front {
        if !self.tls {
            return Front::Plain;
        }
        Front::Https {
            port: proxy_host_port(sh, &self.name, &https_container_port())
                .unwrap_or(self.https_port),
            tls_dir: None,
        }
    }

    /// Deploys the running project's proxy again with its front as `front` says, leaving every
    /// other container as it runs (`up --no-deps proxy`: not even one whose image tag moved
    /// meanwhile), and waits until every replica serves through it.
    pub fn redeploy_front(
        &mut self,
        sh: &Shell,
        front: Front,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match front {
            Front::Plain => {
                self.tls = false;
                self.tls_dir = None;
            }
            Front::Https { port, tls_dir } => {
                self.tls = true;
                self.https_port = port;
                self.tls_dir = tls_dir;
            }
        }
        prepare_files()?;
        self.command(sh, &["up", "--detach", "--no-deps", PROXY])
            .run()
            .with_context(|| format!("deploy the proxy of project {} again", self.name))?;
        self.wait_ready(sh, timeout)
    }

    /// Pins every service to the content-tagged image just built, so two
    /// builds on one engine (two checkouts, a test run beside a user's
    /// stack) never swap each other's images through the shared `:local` tag.
    pub fn pin_images(&mut self, images: &StackImages) -> anyhow::Result<()> {
        self.image_pins = images.variables()?;
        Ok(())
    }

    /// `docker compose -p NAME -f FILE ARGS...` with the port and image variables set.
    pub fn command<'a>(&self, sh: &'a Shell, args: &[&str]) -> xshell::Cmd<'a> {
        let (program, leading) = self.tool.program_and_leading_arguments();
        let name = &self.name;
        let file = &self.file;
        let tls: Vec<String> = match (self.tls, self.acme) {
            (false, _) => Vec::new(),
            (true, false) => vec![
                "-f".to_owned(),
                crate::render::compose_tls_file_path().display().to_string(),
            ],
            (true, true) => vec![
                "-f".to_owned(),
                crate::render::compose_acme_file_path()
                    .display()
                    .to_string(),
            ],
        };
        let mut command = cmd!(
            sh,
            "{program} {leading...} -p {name} -f {file} {tls...} {args...}"
        );
        if let Some(tls_dir) = &self.tls_dir {
            command = command.env(stack::TLS_DIR_VARIABLE, tls_dir);
        }
        if self.tls && !self.acme {
            // Missing files leave the label empty; Compose then says which secret file
            // it cannot find.
            let dir = self.tls_dir.clone().unwrap_or_else(crate::tls::tls_dir);
            let files = stack::front_tls().secret_files;
            if let Ok(version) = crate::tls::files_version(&dir, &files, "") {
                command = command.env(stack::TLS_VERSION_VARIABLE, version);
            }
        }
        command
            .env(PORT_VARIABLE, self.port.to_string())
            .env(stack::HTTPS_PORT_VARIABLE, self.https_port.to_string())
            .envs(
                self.image_pins
                    .iter()
                    .map(|(variable, image)| (variable, image)),
            )
    }
}

impl Deployment for ComposeProject {
    fn name(&self) -> &str {
        &self.name
    }

    fn orchestrator(&self) -> Orchestrator {
        Orchestrator::Compose
    }

    /// `up --detach --remove-orphans --scale webapp=N` with these images;
    /// Compose starts db → webapp → balancer → proxy, each once the previous is
    /// healthy. On failure prints what each container that is not healthy
    /// said.
    fn deploy(
        &mut self,
        sh: &Shell,
        images: Option<&StackImages>,
        webapp_replicas: u32,
    ) -> anyhow::Result<()> {
        if let Some(images) = images {
            self.pin_images(images)?;
        }
        prepare_files()?;
        self.webapp_replicas = webapp_replicas as usize;
        let scale = format!("{WEBAPP}={webapp_replicas}");
        let outcome = self
            .command(
                sh,
                &["up", "--detach", "--remove-orphans", "--scale", &scale],
            )
            .run();
        if let Err(error) = outcome {
            // Compose stops at the first dependency that turned unhealthy;
            // show what every container that is not healthy said.
            for container in project_containers(sh, &self.name)? {
                if container.condition() != Condition::Healthy {
                    print_container_logs(sh, &container);
                }
                if container.is_running() && container.network_settings.networks.is_empty() {
                    eprintln!(
                        "up: {} runs without any network: the engine dropped its network endpoints (Docker 20.10 does that to containers starting while it leaves a swarm); run `cargo xtask down` and `cargo xtask up` again",
                        container.short_name()
                    );
                }
            }
            return Err(error).context(format!(
                "start project {} (the logs of containers that are not healthy are above)",
                self.name
            ));
        }
        Ok(())
    }

    /// Healthy, then serving: every webapp replica answers through the
    /// published proxy (proxy-init finds new replicas within a second).
    fn wait_ready(&self, sh: &Shell, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        wait_until_healthy(
            sh,
            &self.name,
            &expected_containers(self.webapp_replicas, self.tls && self.acme),
            timeout,
        )?;
        let replicas = self
            .containers(sh, WEBAPP)?
            .iter()
            .map(|container| crate::docker::serving::replica_name(&container.id))
            .collect();
        let (port, scheme) = if self.tls {
            (self.https_port, crate::docker::serving::Scheme::Https)
        } else {
            (self.port, crate::docker::serving::Scheme::Http)
        };
        crate::docker::serving::wait_until_every_replica_serves(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            scheme,
            &replicas,
            &[],
            timeout
                .saturating_sub(started.elapsed())
                .max(crate::docker::serving::MIN_SERVING_TIMEOUT),
        )
        .with_context(|| format!("project {} is healthy but does not serve", self.name))
    }

    fn containers(&self, sh: &Shell, service: &str) -> anyhow::Result<Vec<Container>> {
        let labels = [
            format!("{COMPOSE_PROJECT_LABEL}={}", self.name),
            format!("{COMPOSE_SERVICE_LABEL}={service}"),
        ];
        docker::containers_labelled(sh, &labels, false)
            .with_context(|| format!("read the {service} containers of project {}", self.name))
    }

    fn published_port(&self, sh: &Shell) -> anyhow::Result<Option<u16>> {
        Ok(published_proxy_port(sh, &self.name))
    }

    fn remove(&self, sh: &Shell, volumes: bool) -> anyhow::Result<()> {
        // Compose checks that secret files exist even when removing.
        prepare_files()?;
        let mut args = vec!["down", "--remove-orphans"];
        if volumes {
            args.push("--volumes");
        }
        let down = self
            .command(sh, &args)
            .run()
            .with_context(|| format!("remove project {}", self.name));
        let Err(error) = down else {
            return Ok(());
        };
        match networks_kept_by_the_engine(sh, &self.name)? {
            Some(kept) => {
                eprintln!(
                    "compose: warning: every container of {} is gone, but Docker keeps its network(s) {}: \
                     the engine reports an endpoint of a container that no longer exists (a Docker 20.10 bug, \
                     moby/moby#43286); they hold nothing and go away with `docker network prune` after the \
                     engine restarts",
                    self.name,
                    kept.join(", ")
                );
                if volumes {
                    remove_project_volumes(sh, &self.name)?;
                }
                Ok(())
            }
            None => Err(error),
        }
    }
}

/// After a failed `down`: the project's networks that are left, when that
/// is all that is left and the engine refuses each for "active endpoints"
/// that no container holds (the engine's stale-endpoint bug); `None` when
/// anything else is wrong.
fn networks_kept_by_the_engine(sh: &Shell, project: &str) -> anyhow::Result<Option<Vec<String>>> {
    if !project_containers(sh, project)?.is_empty() {
        return Ok(None);
    }
    let filter = format!("label={COMPOSE_PROJECT_LABEL}={project}");
    let format = "{{.Name}}";
    let networks = cmd!(sh, "docker network ls --filter {filter} --format {format}")
        .quiet()
        .read()
        .with_context(|| format!("list the networks of {project}"))?;
    let mut kept = Vec::new();
    for network in networks.split_whitespace() {
        let removal = cmd!(sh, "docker network rm {network}")
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("docker network rm {network}"))?;
        if removal.status.success() {
            continue;
        }
        if !String::from_utf8_lossy(&removal.stderr).contains("has active endpoints") {
            return Ok(None);
        }
        kept.push(network.to_owned());
    }
    Ok((!kept.is_empty()).then_some(kept))
}

/// The project's volumes, for a `down --volumes` that stopped at a network
/// the engine would not let go (docker-compose 1.29 removes volumes last).
fn remove_project_volumes(sh: &Shell, project: &str) -> anyhow::Result<()> {
    let filter = format!("label={COMPOSE_PROJECT_LABEL}={project}");
    let volumes = cmd!(sh, "docker volume ls --quiet --filter {filter}")
        .quiet()
        .read()
        .with_context(|| format!("list the volumes of {project}"))?;
    for volume in volumes.split_whitespace() {
        cmd!(sh, "docker volume rm {volume}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("remove volume {volume} of {project}"))?;
    }
    Ok(())
}

/// The image each service's containers of project `name` run, as
/// `WEBSTACK_*_IMAGE` variable → image reference.
pub(super) fn running_images(containers: &[Container]) -> Vec<(String, String)> {
    let model = stack::stack();
    let mut pins: Vec<(String, String)> = Vec::new();
    for container in containers {
        let Ok(described) = model.service(service_of(container)) else {
            continue;
        };
        let variable = described.image.variable.to_string();
        if !pins.iter().any(|(known, _)| *known == variable) {
            pins.push((variable, container.config.image.clone()));
        }
    }
    pins
}

/// Makes sure the checked-in Compose file is the rendered one and the
/// secrets it names exist.
pub fn prepare_files() -> anyhow::Result<crate::secrets::RedisSecretFiles> {
    let stack = stack::stack();
    let rendered = crate::render::render_compose(&stack)?;
    crate::render::write_file(&crate::render::compose_file_path(), &rendered)?;
    for (path, rendered) in crate::render::tls_overlays()? {
        crate::render::write_file(&path, &rendered)?;
    }
    crate::secrets::ensure_redis_secrets()
}

/// Every container (running or not) of a Compose project, sorted by name.
pub fn project_containers(sh: &Shell, project: &str) -> anyhow::Result<Vec<Container>> {
    docker::containers_labelled(sh, &[format!("{COMPOSE_PROJECT_LABEL}={project}")], true)
        .with_context(|| format!("read the containers of project {project}"))
}

/// The Compose service a container belongs to.
pub(super) fn service_of(container: &Container) -> &str {
    container.label(COMPOSE_SERVICE_LABEL).unwrap_or("?")
}

/// The host port the proxy publishes, as the model names it.
pub(super) fn proxy_container_port() -> String {
    let model = stack::stack();
    let port = model
        .service(PROXY)
        .ok()
        .and_then(|proxy| proxy.published_ports.first())
        .map_or(80, |published| published.container_port);
    format!("{port}/tcp")
}

/// The host port the project's proxy publishes, if it runs.
pub fn published_proxy_port(sh: &Shell, project: &str) -> Option<u16> {
    proxy_host_port(sh, project, &proxy_container_port())
}

/// The host port the project's proxy publishes `container_port` (`443/tcp`) on, if it runs.
fn proxy_host_port(sh: &Shell, project: &str, container_port: &str) -> Option<u16> {
    let labels = [
        format!("{COMPOSE_PROJECT_LABEL}={project}"),
        format!("{COMPOSE_SERVICE_LABEL}={PROXY}"),
    ];
    let containers = docker::containers_labelled(sh, &labels, false).ok()?;
    containers
        .iter()
        .find_map(|proxy| proxy.host_port(container_port))
}

/// Prints the last log lines of a container (for failures).
pub fn print_container_logs(sh: &Shell, container: &Container) {
    let id = &container.id;
    eprintln!(
        "---- last {FAILURE_LOG_LINES} log lines of {} ----",
        container.short_name()
    );
    let _ = cmd!(sh, "docker logs --tail {FAILURE_LOG_LINES} {id}")
        .quiet()
        .run();
    eprintln!("---- end of {} ----", container.short_name());
}

/// Pause between two looks at the project's containers.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Waits until the project runs exactly `expected` containers per service,
/// all healthy. Prints one progress line whenever the picture changes; fails,
/// with the culprit's last log lines, as soon as a container turns unhealthy
/// or exits, or at the timeout.
pub fn wait_until_healthy(
    sh: &Shell,
    project: &str,
    expected: &[(&str, usize)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut shown = poll::Progress::new("  ");
    poll::until(
        timeout,
        HEALTH_POLL_INTERVAL,
        || {
            let containers = project_containers(sh, project)?;
            let (all_healthy, report) = health_report(sh, &containers, expected)?;
            shown.show(&report);
            Ok(if all_healthy {
                Look::Ready(())
            } else {
                Look::NotYet((containers, report))
            })
        },
        |(containers, report), _| {
            for container in &containers {
                if container.condition() != Condition::Healthy {
                    print_container_logs(sh, container);
                }
            }
            anyhow!(
                "the stack was not healthy after {}s ({report}); logs of the containers that were not are above",
                timeout.as_secs()
            )
        },
    )
}

/// Whether every service of `expected` runs its count of containers, all
/// healthy, and the line that says how many are; fails, with the culprit's
/// last log lines, when a container has failed or lost its networks.
fn health_report(
    sh: &Shell,
    containers: &[Container],
    expected: &[(&str, usize)],
) -> anyhow::Result<(bool, String)> {
    let mut all_healthy = true;
    let mut report = Vec::new();
    for (service, count) in expected {
        let of_service: Vec<&Container> = containers
            .iter()
            .filter(|container| service_of(container) == *service)
            .collect();
        let healthy = of_service
            .iter()
            .filter(|container| container.condition() == Condition::Healthy)
            .count();
        let running = of_service
            .iter()
            .filter(|container| container.is_running())
            .count();
        all_healthy &= healthy == *count && running == *count;
        report.push(format!("{service} {healthy}/{count} healthy"));
        for container in &of_service {
            if container.is_running() && container.network_settings.networks.is_empty() {
                bail!(
                    "{} ({service}) runs without any network: the engine dropped its network endpoints, which Docker 20.10 does to containers when it leaves a swarm (`docker swarm leave`) while they start; run `cargo xtask down` and `cargo xtask up` again",
                    container.short_name()
                );
            }
            let condition = container.condition();
            // A container scaled away is "exited (0)"-free: Compose removes
            // it. Any other stopped container of the stack is a failure.
            if condition.failed() {
                print_container_logs(sh, container);
                bail!(
                    "{} ({service}) is {condition}: its last log lines are above; `cargo xtask logs {service}` shows more",
                    container.short_name()
                );
            }
        }
    }
    Ok((all_healthy, report.join(", ")))
}

/// Fails when the host port is taken by something other than this project.
pub(super) fn require_free_port(sh: &Shell, project: &str, port: u16) -> anyhow::Result<()> {
    if published_proxy_port(sh, project) == Some(port) {
        return Ok(());
    }
    require_free(port, "--port")
}

/// The proxy's HTTPS port in the container, as Docker names it (`443/tcp`).
fn https_container_port() -> String {
    format!("{}/tcp", stack::front_tls().https_port.container_port)
}

/// The HTTPS port (`--https-port`) is free, or this project's proxy publishes it already.
pub(super) fn require_free_https_port(sh: &Shell, project: &str, port: u16) -> anyhow::Result<()> {
    if proxy_host_port(sh, project, &https_container_port()) == Some(port) {
        return Ok(());
    }
    require_free(port, "--https-port")
}

fn require_free(port: u16, flag: &str) -> anyhow::Result<()> {
    if let Err(error) = TcpListener::bind(("0.0.0.0", port)) {
        bail!("host port {port} is not available ({error}): pick another with `{flag}`, or see what listens there with `ss -ltnp 'sport = :{port}'`");
    }
    Ok(())
}

pub(super) fn expected_containers(replicas: usize, acme: bool) -> Vec<(&'static str, usize)> {
    let mut expected: Vec<(&'static str, usize)> = stack::stack()
        .services
        .iter()
        .map(|service| {
            let count = if service.name == WEBAPP {
                replicas
            } else {
                service.replicas as usize
            };
            (service.name, count)
        })
        .collect();
    if acme {
        expected.push((stack::ACME, 1));
    }
    expected
}
