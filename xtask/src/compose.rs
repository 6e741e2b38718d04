//! The Compose stack: `cargo xtask up`, `down`, `status`, `logs`, `scale`,
//! and the plumbing they share with `cargo xtask e2e`.
//!
//! Works with `docker compose` (v2 plugin) and the standalone
//! `docker-compose` 1.29 Debian ships: the project name is always passed with
//! `-p` (1.29 has no top-level `name:`), and health is polled here through
//! `docker inspect` rather than with `up --wait` (1.29 has none).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::docker::deployment::Deployment;
use crate::docker::{
    self, Condition, Container, Orchestrator, COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL,
};
use crate::stack::StackImages;
use crate::stack::{self, DEFAULT_HOST_PORT, PORT_VARIABLE, PROXY, WEBAPP};

/// Compose project name when none is given: containers become
/// `webstack_webapp_1` (1.29) or `webstack-webapp-1` (v2).
pub const DEFAULT_PROJECT: &str = "webstack";

/// Log lines shown for a service that failed to come up.
const FAILURE_LOG_LINES: &str = "40";

use crate::docker::HEALTHY_TIMEOUT_SECS as DEFAULT_HEALTHY_TIMEOUT_SECS;

/// Chooses the Compose implementation for every command: `v1` (a
/// `docker-compose` 1.x on PATH), `v2` (the `docker compose` plugin, else the
/// pinned Compose v2 from the lock), or `auto` (v2 if it can be had, else v1).
pub const COMPOSE_VARIABLE: &str = "WEBSTACK_COMPOSE";

/// Which Compose implementation runs the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeTool {
    /// `docker compose`, the v2 CLI plugin.
    Plugin,
    /// A standalone program: `docker-compose` 1.x on PATH, or the pinned v2.
    Standalone { program: PathBuf, v2: bool },
}

impl ComposeTool {
    /// As `WEBSTACK_COMPOSE` asks (default `auto`).
    pub fn detect(sh: &Shell) -> anyhow::Result<ComposeTool> {
        let wanted = sh.var(COMPOSE_VARIABLE).unwrap_or_default();
        match wanted.as_str() {
            "v1" => Self::v1(sh),
            "v2" => Self::v2(sh),
            "" | "auto" => Self::v2(sh).or_else(|v2_error| {
                Self::v1(sh).map_err(|v1_error| {
                    anyhow::anyhow!(
                        "no Compose found: {v2_error:#}; and {v1_error:#}. Install Docker's Compose plugin, or let xtask fetch the pinned one (it needs Debian's archive)"
                    )
                })
            }),
            other => bail!("{COMPOSE_VARIABLE}={other:?}: use v1, v2 or auto"),
        }
    }

    /// The `docker compose` plugin, else the pinned Compose v2.
    pub fn v2(sh: &Shell) -> anyhow::Result<ComposeTool> {
        let plugin = cmd!(sh, "docker compose version --short")
            .quiet()
            .ignore_stderr()
            .read();
        if plugin.is_ok_and(|version| version.trim_start_matches('v').starts_with('2')) {
            return Ok(ComposeTool::Plugin);
        }
        let program = crate::images::pinned_compose_v2()
            .context("get the pinned Compose v2 (no `docker compose` plugin is installed)")?;
        Ok(ComposeTool::Standalone { program, v2: true })
    }

    /// `docker-compose` 1.x on PATH.
    pub fn v1(sh: &Shell) -> anyhow::Result<ComposeTool> {
        let version = cmd!(sh, "docker-compose version --short")
            .quiet()
            .ignore_stderr()
            .read()
            .context("`docker-compose` (Compose 1.x) is not on PATH")?;
        if !version.trim().starts_with("1.") {
            bail!(
                "`docker-compose` on PATH is version {}, not 1.x",
                version.trim()
            );
        }
        Ok(ComposeTool::Standalone {
            program: PathBuf::from("docker-compose"),
            v2: false,
        })
    }

    /// "v1" or "v2", for messages and reports.
    pub fn generation(&self) -> &'static str {
        match self {
            ComposeTool::Standalone { v2: false, .. } => "v1",
            _ => "v2",
        }
    }

    /// The program and its leading arguments: `docker` + `compose`, or the
    /// standalone program.
    pub fn program_and_leading_arguments(&self) -> (PathBuf, &'static [&'static str]) {
        match self {
            ComposeTool::Plugin => (PathBuf::from("docker"), &["compose"]),
            ComposeTool::Standalone { program, .. } => (program.clone(), &[]),
        }
    }
}

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
    webapp_replicas: usize,
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
        })
    }

    /// Pins every service to the content-tagged image just built, so two
    /// builds on one engine (two checkouts, a test run beside a user's
    /// stack) never swap each other's images through the shared `:local` tag.
    pub fn pin_images(&mut self, images: &StackImages) -> anyhow::Result<()> {
        self.image_pins.clear();
        for service in stack::stack().services {
            self.image_pins.push((
                service.image.variable.to_string(),
                images.for_service(service.name)?.to_string(),
            ));
        }
        Ok(())
    }

    /// `docker compose -p NAME -f FILE ARGS...` with the port and image variables set.
    pub fn command<'a>(&self, sh: &'a Shell, args: &[&str]) -> xshell::Cmd<'a> {
        let (program, leading) = self.tool.program_and_leading_arguments();
        let name = &self.name;
        let file = &self.file;
        cmd!(sh, "{program} {leading...} -p {name} -f {file} {args...}")
            .env(PORT_VARIABLE, self.port.to_string())
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
    /// Compose starts db → webapp → proxy, each once the previous is
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
                if container.running() && container.network_settings.networks.is_empty() {
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
            &expected_containers(self.webapp_replicas),
            timeout,
        )?;
        let replicas = self
            .containers(sh, WEBAPP)?
            .iter()
            .map(|container| crate::docker::serving::replica_name(&container.id))
            .collect();
        crate::docker::serving::wait_until_every_replica_serves(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port),
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
        self.command(sh, &args)
            .run()
            .with_context(|| format!("remove project {}", self.name))?;
        Ok(())
    }
}

/// The image each service's containers of project `name` run, as
/// `WEBSTACK_*_IMAGE` variable → image reference.
fn running_images(containers: &[Container]) -> Vec<(String, String)> {
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

pub use crate::docker::require_docker;

/// Makes sure the checked-in Compose file is the rendered one and the
/// secrets it names exist.
pub fn prepare_files() -> anyhow::Result<crate::secrets::RedisSecretFiles> {
    let stack = stack::stack();
    let rendered = crate::render::render_compose(&stack)?;
    crate::render::write_file(&crate::render::compose_file_path(), &rendered)?;
    crate::secrets::ensure_redis_secrets()
}

/// Every container (running or not) of a Compose project, sorted by name.
pub fn project_containers(sh: &Shell, project: &str) -> anyhow::Result<Vec<Container>> {
    docker::containers_labelled(sh, &[format!("{COMPOSE_PROJECT_LABEL}={project}")], true)
        .with_context(|| format!("read the containers of project {project}"))
}

/// The Compose service a container belongs to.
fn service_of(container: &Container) -> &str {
    container.label(COMPOSE_SERVICE_LABEL).unwrap_or("?")
}

/// The host port the proxy publishes, as the model names it.
fn proxy_container_port() -> String {
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
    let labels = [
        format!("{COMPOSE_PROJECT_LABEL}={project}"),
        format!("{COMPOSE_SERVICE_LABEL}={PROXY}"),
    ];
    let containers = docker::containers_labelled(sh, &labels, false).ok()?;
    containers
        .iter()
        .find_map(|proxy| proxy.host_port(&proxy_container_port()))
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
    let started = Instant::now();
    let mut last_report = String::new();
    loop {
        let containers = project_containers(sh, project)?;
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
                .filter(|container| container.running())
                .count();
            all_healthy &= healthy == *count && running == *count;
            report.push(format!("{service} {healthy}/{count} healthy"));
            for container in &of_service {
                if container.running() && container.network_settings.networks.is_empty() {
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
        let report = report.join(", ");
        if report != last_report {
            eprintln!("  [{:>3}s] {report}", started.elapsed().as_secs());
            last_report = report;
        }
        if all_healthy {
            return Ok(());
        }
        if started.elapsed() > timeout {
            for container in &containers {
                if container.condition() != Condition::Healthy {
                    print_container_logs(sh, container);
                }
            }
            bail!(
                "the stack was not healthy after {}s ({last_report}); logs of the containers that were not are above",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Fails when the host port is taken by something other than this project.
fn require_free_port(sh: &Shell, project: &str, port: u16) -> anyhow::Result<()> {
    if published_proxy_port(sh, project) == Some(port) {
        return Ok(());
    }
    if let Err(error) = TcpListener::bind(("0.0.0.0", port)) {
        bail!("host port {port} is not available ({error}): pick another with `--port`, or see what listens there with `ss -ltnp 'sport = :{port}'`");
    }
    Ok(())
}

fn expected_containers(replicas: usize) -> Vec<(&'static str, usize)> {
    stack::stack()
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
        .collect()
}

fn default_replicas() -> u32 {
    stack::stack()
        .service(WEBAPP)
        .map_or(1, |service| service.replicas)
}

/// Build the images if needed, start the stack and wait until it is healthy.
#[derive(clap::Args)]
pub struct Up {
    /// Number of webapp replicas.
    #[arg(long, default_value_t = default_replicas())]
    pub replicas: u32,
    /// Host port the proxy publishes.
    #[arg(long, env = PORT_VARIABLE, default_value_t = DEFAULT_HOST_PORT)]
    pub port: u16,
    /// Compose project name.
    #[arg(long, short = 'p', env = "WEBSTACK_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
    /// Use the images already loaded in Docker instead of building them.
    #[arg(long)]
    pub skip_images: bool,
    /// Seconds to wait for every service to be healthy.
    #[arg(long, default_value_t = DEFAULT_HEALTHY_TIMEOUT_SECS)]
    pub timeout_secs: u64,
    /// Images already built and loaded by the caller (not a flag).
    #[arg(skip)]
    pub images: Option<StackImages>,
}

impl Up {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.replicas == 0 {
            bail!("--replicas must be at least 1: the proxy needs a webapp to send requests to");
        }
        require_docker(sh)?;
        let mut project = ComposeProject::new(sh, &self.project, self.port)?;
        docker::require_no_other_deployment(sh, &project)?;
        let images = match self.images {
            Some(images) => Some(images),
            None if self.skip_images => None,
            None => {
                eprintln!("up: building and loading the images");
                let built =
                    crate::images::ensure_images(sh).context("build and load the images")?;
                Some(StackImages::from_built(&built)?)
            }
        };
        let secrets = prepare_files()?;
        eprintln!(
            "up: the Redis password is in {}",
            secrets.password_file.display()
        );
        require_free_port(sh, &self.project, self.port)?;

        eprintln!(
            "up: starting project {} with {} webapp replica(s) (services start in order db → webapp → proxy, each once the previous is healthy)",
            self.project, self.replicas
        );
        let started = Instant::now();
        project.deploy(sh, images.as_ref(), self.replicas)?;
        project.wait_ready(sh, Duration::from_secs(self.timeout_secs))?;
        eprintln!(
            "up: healthy and serving after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        println!("http://localhost:{}", self.port);
        Ok(())
    }
}

/// Stop and remove the stack's containers and networks.
#[derive(clap::Args)]
pub struct Down {
    /// Also remove the data volume (resets the counter) .
    #[arg(long)]
    pub volumes: bool,
    /// Compose project name.
    #[arg(long, short = 'p', env = "WEBSTACK_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
}

impl Down {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        require_docker(sh)?;
        let port = published_proxy_port(sh, &self.project).unwrap_or(DEFAULT_HOST_PORT);
        ComposeProject::new(sh, &self.project, port)?.remove(sh, self.volumes)?;
        Ok(())
    }
}

/// Fails, naming the command that creates them, when the secret files the
/// Compose file names do not exist: then no project was started from this
/// checkout, and nothing must be generated just to read.
fn require_existing_secrets(project: &str) -> anyhow::Result<()> {
    let dir = crate::secrets::secrets_dir();
    for name in crate::secrets::SECRET_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "{} does not exist, so no stack was started from this checkout; `cargo xtask up -p {project}` starts one",
                path.display()
            );
        }
    }
    Ok(())
}

/// Show each container of the stack with its health.
#[derive(clap::Args)]
pub struct Status {
    /// Compose project name.
    #[arg(long, short = 'p', env = "WEBSTACK_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
}

impl Status {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        require_docker(sh)?;
        let containers = project_containers(sh, &self.project)?;
        if containers.is_empty() {
            println!(
                "project {} is not running: start it with `cargo xtask up`",
                self.project
            );
            return Ok(());
        }
        println!("{:<36} {:<8} {:<14} ID", "CONTAINER", "SERVICE", "HEALTH");
        for container in &containers {
            println!(
                "{:<36} {:<8} {:<14} {}",
                container.short_name(),
                service_of(container),
                container.condition().to_string(),
                container.short_id()
            );
        }
        if let Some(port) = published_proxy_port(sh, &self.project) {
            println!("\nhttp://localhost:{port}");
        }
        Ok(())
    }
}

/// Show the logs of the stack or of one service.
#[derive(clap::Args)]
pub struct Logs {
    /// db, webapp or proxy; all services when omitted.
    pub service: Option<String>,
    /// Keep following new lines.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Lines from the end of each container's log.
    #[arg(long, default_value = "100")]
    pub tail: String,
    /// Compose project name.
    #[arg(long, short = 'p', env = "WEBSTACK_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
}

impl Logs {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        require_docker(sh)?;
        let port = published_proxy_port(sh, &self.project).unwrap_or(DEFAULT_HOST_PORT);
        let project = ComposeProject::new(sh, &self.project, port)?;
        // Read-only: no secret is generated and no file rewritten. Compose
        // parses the secrets' paths even for `logs`, and a project started
        // from this checkout has them.
        require_existing_secrets(&self.project)?;
        let tail = format!("--tail={}", self.tail);
        let mut args = vec!["logs", "--no-color", tail.as_str()];
        if self.follow {
            args.push("--follow");
        }
        if let Some(service) = &self.service {
            args.push(service);
        }
        project
            .command(sh, &args)
            .run()
            .with_context(|| format!("show the logs of project {}", self.project))?;
        Ok(())
    }
}

/// Change the number of webapp replicas of a running stack.
#[derive(clap::Args)]
pub struct Scale {
    /// New number of webapp replicas.
    pub replicas: u32,
    /// Compose project name.
    #[arg(long, short = 'p', env = "WEBSTACK_PROJECT", default_value = DEFAULT_PROJECT)]
    pub project: String,
    /// Seconds to wait for the new replicas to be healthy.
    #[arg(long, default_value_t = DEFAULT_HEALTHY_TIMEOUT_SECS)]
    pub timeout_secs: u64,
}

impl Scale {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.replicas == 0 {
            bail!("scale to at least 1 replica; `cargo xtask down` stops the stack");
        }
        require_docker(sh)?;
        let Some(port) = published_proxy_port(sh, &self.project) else {
            bail!(
                "project {} is not running: start it with `cargo xtask up --replicas {}`",
                self.project,
                self.replicas
            );
        };
        let mut project = ComposeProject::new(sh, &self.project, port)?;
        prepare_files()?;
        let scale = format!("{WEBAPP}={}", self.replicas);
        // Only the webapp: --no-deps and --no-recreate leave db and proxy
        // (and the replicas that stay) untouched; nginx finds the new set
        // through DNS.
        project
            .command(
                sh,
                &[
                    "up",
                    "--detach",
                    "--no-deps",
                    "--no-recreate",
                    "--scale",
                    &scale,
                    WEBAPP,
                ],
            )
            .run()
            .with_context(|| format!("scale {WEBAPP} of project {}", self.project))?;
        project.webapp_replicas = self.replicas as usize;
        project.wait_ready(sh, Duration::from_secs(self.timeout_secs))?;
        eprintln!(
            "scale: {} webapp replica(s) healthy and serving",
            self.replicas
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_compose_choice_is_refused_naming_the_variable_and_the_choices() {
        let sh = Shell::new().expect("shell");
        sh.set_var(COMPOSE_VARIABLE, "v3");
        let message = format!(
            "{:#}",
            ComposeTool::detect(&sh).expect_err("v3 is no choice")
        );
        assert!(message.contains("WEBSTACK_COMPOSE=\"v3\""), "{message}");
        assert!(message.contains("v1, v2 or auto"), "{message}");
    }

    #[test]
    fn the_standalone_v1_and_the_plugin_name_their_generation_and_program() {
        let v1 = ComposeTool::Standalone {
            program: PathBuf::from("docker-compose"),
            v2: false,
        };
        assert_eq!(v1.generation(), "v1");
        assert_eq!(
            v1.program_and_leading_arguments().0,
            PathBuf::from("docker-compose")
        );
        let plugin = ComposeTool::Plugin;
        assert_eq!(plugin.generation(), "v2");
        assert_eq!(
            plugin.program_and_leading_arguments(),
            (PathBuf::from("docker"), &["compose"][..])
        );
    }
}
