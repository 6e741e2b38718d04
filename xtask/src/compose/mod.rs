//! The Compose stack: `cargo xtask up`, `down`, `status`, `logs`, `scale`,
//! and the plumbing they share with `cargo xtask e2e`.
//!
//! Works with `docker compose` (v2 plugin) and the standalone
//! `docker-compose` 1.29 Debian ships: the project name is always passed with
//! `-p` (1.29 has no top-level `name:`), and health is polled here through
//! `docker inspect` rather than with `up --wait` (1.29 has none).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::Shell;

mod project;
mod tool;

pub use project::{prepare_files, project_containers, published_proxy_port, ComposeProject, Front};
use project::{require_free_https_port, require_free_port, service_of};
pub use tool::{ComposeTool, COMPOSE_VARIABLE};

use crate::docker::deployment::Deployment;
use crate::docker::{self, require_docker, HEALTHY_TIMEOUT_SECS as DEFAULT_HEALTHY_TIMEOUT_SECS};
use crate::stack::StackImages;
use crate::stack::{self, DEFAULT_HOST_PORT, PORT_VARIABLE, WEBAPP};

/// Compose project name when none is given: containers become
/// `webstack_webapp_1` (1.29) or `webstack-webapp-1` (v2).
pub const DEFAULT_PROJECT: &str = stack::DEFAULT_NAME;

/// Log lines shown for a service that failed to come up.
const FAILURE_LOG_LINES: &str = "40";

/// The webapp replicas the model asks for, when `--replicas` is not given.
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
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Host port HTTPS is published on, with `--tls` (port 80 of the proxy, `--port`, then
    /// answers ACME challenges and redirects everything else there).
    #[arg(long, env = stack::HTTPS_PORT_VARIABLE, default_value_t = stack::DEFAULT_HTTPS_HOST_PORT)]
    pub https_port: u16,
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
        let remove_stack = format!("cargo xtask swarm rm -p {}", self.project);
        docker::require_no_other_deployment(sh, &project, &remove_stack)?;
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
        project.tls = self.tls.prepare()?.is_some();
        project.acme = self.tls.tls == crate::tls::TlsSource::Acme;
        project.https_port = self.https_port;
        if project.tls {
            require_free_https_port(sh, &self.project, self.https_port)?;
        }

        eprintln!(
            "up: starting project {} with {} webapp replica(s) (services start in order db → webapp → balancer → proxy, each once the previous is healthy)",
            self.project, self.replicas
        );
        let started = Instant::now();
        project.deploy(sh, images.as_ref(), self.replicas)?;
        project.wait_ready(sh, Duration::from_secs(self.timeout_secs))?;
        eprintln!(
            "up: healthy and serving after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if project.tls {
            println!("https://localhost:{}", self.https_port);
        } else {
            println!("http://localhost:{}", self.port);
        }
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
    /// db, webapp, balancer, proxy, or acme (with `--tls acme`); all services when omitted.
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
        // Only the webapp: --no-deps and --no-recreate leave db, balancer
        // and proxy (and the replicas that stay) untouched; the balancer
        // finds the new set through DNS.
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
