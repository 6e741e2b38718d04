//! `cargo xtask swarm deploy`: the stack on Docker Swarm, from nothing to
//! every replica running and healthy, on plain HTTP or, with `--tls`, HTTPS.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{bail, Context};
use xshell::Shell;

use super::tls::StackTls;
use super::{engine, SwarmStack, DEFAULT_PORT, DEFAULT_STACK_NAME};
use crate::docker::deployment::Deployment;
use crate::images::Platform;
use crate::push::{PushTarget, PushedImage};
use crate::stack::StackImages;

/// How long a first deploy may take to converge by default: image loads are
/// done by then, so this covers start periods and health checks.
pub const DEFAULT_CONVERGE_TIMEOUT_SECS: u64 = crate::docker::HEALTHY_TIMEOUT_SECS;

/// Deploy the stack to Docker Swarm (creating a single-node swarm if the
/// engine is in none), wait until every replica runs and is healthy.
#[derive(clap::Args)]
pub struct SwarmDeploy {
    /// Stack name; services become NAME_proxy, NAME_webapp, NAME_db.
    #[arg(long = "project", short = 'p', alias = "stack", value_name = "NAME", env = "WEBSTACK_PROJECT", default_value = DEFAULT_STACK_NAME)]
    pub stack: String,
    /// Host port the proxy publishes.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Seconds to wait for every service to converge.
    #[arg(long, default_value_t = DEFAULT_CONVERGE_TIMEOUT_SECS)]
    pub timeout_secs: u64,
    /// Deploy to the cluster of `cargo xtask cluster up` instead of the
    /// engine DOCKER_HOST names: the images are pushed to the cluster's own
    /// registry (started if need be) and each node pulls them, by digest.
    #[arg(long)]
    pub cluster: bool,
    /// Push the images to this registry (REGISTRY/PREFIX, as `cargo xtask
    /// push` takes it; credentials from Docker's config.json) and deploy
    /// them by digest, so that every node pulls them. With --cluster: the
    /// cluster's own registry, always (no value).
    #[arg(long, value_name = "REGISTRY/PREFIX", num_args = 0..=1, default_missing_value = "")]
    pub registry: Option<String>,
    /// With --registry or --cluster: the platforms pushed, under one index
    /// per image.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Platform::ALL)]
    pub platform: Vec<Platform>,
    /// With --registry: a PEM file of CA certificates to trust besides the
    /// system's roots.
    #[arg(long, value_name = "PATH", requires = "registry")]
    pub ca_file: Option<std::path::PathBuf>,
    /// With --registry: plain HTTP to a registry that is not on loopback.
    #[arg(long, requires = "registry")]
    pub insecure_http: bool,
    /// Deploy the images the stack runs instead of building them (a stack
    /// that does not run yet: the `:local` ones loaded in Docker), e.g. to
    /// change only its HTTPS settings.
    #[arg(long, conflicts_with_all = ["cluster", "registry"])]
    pub skip_images: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Host port HTTPS is published on, with `--tls` (port 80 of the proxy,
    /// `--port`, then answers ACME challenges and redirects everything else
    /// there).
    #[arg(long, env = crate::stack::HTTPS_PORT_VARIABLE, default_value_t = crate::stack::DEFAULT_HTTPS_HOST_PORT)]
    pub https_port: u16,
}

impl SwarmDeploy {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let registry = match self.registry.as_deref() {
            _ if self.cluster => None,
            None => None,
            Some("") => bail!(
                "--registry needs REGISTRY/PREFIX (only with --cluster does it default to the cluster's registry)"
            ),
            Some(target) => Some(PushTarget {
                ca_file: self.ca_file.clone(),
                insecure_http: self.insecure_http,
                ..PushTarget::parse(target)?
            }),
        };
        let platforms = self.platform.clone();
        // The certificate is made or checked before anything else happens
        // (and before a swarm is created for nothing).
        if self.tls.tls != crate::tls::TlsSource::Off && self.https_port == self.port {
            bail!(
                "--https-port {} is --port too: give the two ports different numbers",
                self.https_port
            );
        }
        let tls = StackTls::prepare(&self.tls, self.https_port)?;
        if self.cluster {
            let manager = crate::cluster::manager()?;
            sh.set_var("DOCKER_HOST", manager.docker_host());
            engine::require_docker(sh)?;
            if matches!(self.registry.as_deref(), Some(value) if !value.is_empty()) {
                bail!(
                    "--cluster deploys from the cluster's own registry (its nodes reach nothing else): drop the registry's name, or --cluster"
                )
            }
            let target = Target::Registry {
                push: cluster_registry()?,
                platforms,
                cluster: true,
            };
            deploy_and_wait(
                sh,
                &self.stack,
                self.port,
                Duration::from_secs(self.timeout_secs),
                &target,
                tls.clone(),
            )?;
            eprintln!(
                "swarm: stack {} is up on the cluster: {} (DOCKER_HOST={} for docker commands)",
                self.stack,
                url(
                    &manager.address().to_string(),
                    self.port,
                    tls.as_ref().map(|tls| tls.https_port)
                ),
                manager.docker_host()
            );
            return Ok(());
        }
        // Before a swarm is created for nothing.
        engine::require_docker(sh)?;
        let remove_project = format!("cargo xtask down -p {}", self.stack);
        crate::docker::require_no_other_deployment(
            sh,
            &SwarmStack::new(&self.stack, self.port),
            &remove_project,
        )?;
        engine::ensure_manager(sh)?;
        let target = match registry {
            Some(push) => Target::Registry {
                push,
                platforms,
                cluster: false,
            },
            None if self.skip_images => Target::AsDeployed,
            None => Target::ThisEngine,
        };
        deploy_and_wait(
            sh,
            &self.stack,
            self.port,
            Duration::from_secs(self.timeout_secs),
            &target,
            tls.clone(),
        )?;
        eprintln!(
            "swarm: stack {} is up: {} (`cargo xtask swarm status -p {}`, \
             `cargo xtask swarm rm -p {}` to remove it)",
            self.stack,
            url(
                "localhost",
                self.port,
                tls.as_ref().map(|tls| tls.https_port)
            ),
            self.stack,
            self.stack
        );
        Ok(())
    }
}

/// Where clients reach the stack: on `https_port` when it serves HTTPS, and
/// then the plain port redirects there.
pub fn url(host: &str, port: u16, https_port: Option<u16>) -> String {
    match https_port {
        Some(https_port) => {
            format!("https://{host}:{https_port}/ (http://{host}:{port}/ redirects there)")
        }
        None => format!("http://{host}:{port}/"),
    }
}

/// Where a stack goes.
pub enum Target {
    /// The engine the shell points at (a single-node swarm, or a real
    /// cluster's manager whose nodes get the images some other way).
    ThisEngine,
    /// The same, with the images the stack runs (`--skip-images`).
    AsDeployed,
    /// The images pushed to a registry and deployed by digest: every node
    /// pulls what it runs. `cluster`: the shell points at the simulated
    /// cluster's manager.
    Registry {
        push: PushTarget,
        platforms: Vec<Platform>,
        cluster: bool,
    },
}

/// The simulated cluster's own registry (started if it is not running),
/// as a push target: plain HTTP on the cluster's network, no credentials.
pub fn cluster_registry() -> anyhow::Result<PushTarget> {
    let program = crate::images::pins::ensure(&crate::images::pins::REGISTRY)?;
    let address = crate::cluster::ensure_registry(&program)?;
    Ok(PushTarget {
        insecure_http: true,
        ..PushTarget::parse(&format!("{address}/{}", crate::images::REPOSITORY_PREFIX))?
    })
}

/// The pushed images by digest, as the stack's three images.
fn images_by_digest(pushed: &[PushedImage]) -> anyhow::Result<StackImages> {
    let reference = |name: &str| {
        pushed
            .iter()
            .find(|image| image.name == name)
            .map(|image| image.reference_by_digest.clone())
            .with_context(|| format!("the push returned no {name} image"))
    };
    Ok(StackImages {
        webapp: reference(crate::stack::WEBAPP)?,
        db: reference(crate::stack::DB)?,
        proxy: reference(crate::stack::PROXY)?,
    })
}

/// Everything after the swarm exists: secret, stack file, images, deploy,
/// convergence, and then the TLS secret versions no longer used removed.
/// Returns the images built or pushed (none with [`Target::AsDeployed`]).
/// Shared with `e2e --swarm`.
pub fn deploy_and_wait(
    sh: &Shell,
    stack: &str,
    port: u16,
    timeout: Duration,
    target: &Target,
    tls: Option<StackTls>,
) -> anyhow::Result<Option<StackImages>> {
    // On the cluster the ports are bound in the manager's own network
    // namespace, where nothing else runs.
    if !matches!(target, Target::Registry { cluster: true, .. }) {
        check_port_is_free(sh, stack, port, "--port")?;
        if let Some(tls) = &tls {
            check_port_is_free(sh, stack, tls.https_port, "--https-port")?;
        }
    }
    super::prepare_files()?;
    let images = match target {
        Target::ThisEngine => Some(StackImages::from_built(
            &crate::images::ensure_images(sh).context("build and load the images")?,
        )?),
        Target::AsDeployed => None,
        Target::Registry {
            push, platforms, ..
        } => {
            let built = crate::images::multi_platform_images(sh, platforms)?;
            let pushed = crate::push::push_images(sh, push, &built)?;
            Some(images_by_digest(&pushed)?)
        }
    };
    match &images {
        Some(images) => eprintln!(
            "swarm: deploying stack {stack} (webapp {}, db {}, proxy {})",
            images.webapp, images.db, images.proxy
        ),
        None => eprintln!("swarm: deploying stack {stack} with the images it runs"),
    }
    let mut deployment = match target {
        Target::Registry { cluster: true, .. } => SwarmStack::new(stack, port)
            .reached_at(crate::cluster::manager()?.address(), crate::cluster::SUBNET),
        _ => SwarmStack::new(stack, port),
    };
    let services = super::stack_services(sh, stack)?;
    let served_https = super::proxy_service(stack, &services).is_some_and(super::tls::serves_https);
    match &tls {
        Some(tls) => match tls.certificate {
            super::tls::Certificate::Secrets => eprintln!(
                "swarm: HTTPS on port {}, the certificate and key as the secrets {}",
                tls.https_port,
                tls.secret_names(stack)?.join(" and ")
            ),
            super::tls::Certificate::Acme => eprintln!(
                "swarm: HTTPS on port {}, the certificate from the acme service (its settings from {}, the CA's root as the secret {})",
                tls.https_port,
                tls.dir.join(crate::stack::ACME_ENV_FILE).display(),
                tls.secret_names(stack)?.join(" and ")
            ),
        },
        None if served_https => eprintln!(
            "swarm: stack {stack} served HTTPS: this deploy (without --tls) turns it back to plain HTTP"
        ),
        None => {}
    }
    deployment.tls = tls;
    let replicas = crate::stack::stack()
        .service(crate::stack::WEBAPP)?
        .replicas;
    deployment.deploy(sh, images.as_ref(), replicas)?;
    deployment.wait_ready(sh, timeout)?;
    super::tls::remove_unused_secrets(sh, stack)?;
    Ok(images)
}

/// Fails early, with what to do, when another program holds the port; the
/// stack's own proxy holding it (a redeploy) is fine.
fn check_port_is_free(sh: &Shell, stack: &str, port: u16, flag: &str) -> anyhow::Result<()> {
    let already_ours = super::stack_services(sh, stack)?
        .iter()
        .any(|service| service.published_ports().contains(&port));
    if already_ours {
        return Ok(());
    }
    // The proxy publishes in host mode, on every address of the host.
    if let Err(error) = TcpListener::bind(("0.0.0.0", port)) {
        bail!("host port {port} is taken ({error}): stop what uses it, or pass {flag} with a free port");
    }
    Ok(())
}
