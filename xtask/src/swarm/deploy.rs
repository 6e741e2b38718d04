//! `cargo xtask swarm deploy`: the stack on Docker Swarm, from nothing to
//! every replica running and healthy.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{bail, Context};
use xshell::Shell;

use super::{engine, StackImages, DEFAULT_PORT, DEFAULT_STACK_NAME};

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
}

impl SwarmDeploy {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        // Before a swarm is created for nothing.
        engine::require_docker(sh)?;
        crate::docker::require_no_other_deployment(
            sh,
            &self.stack,
            crate::docker::Orchestrator::Swarm,
        )?;
        engine::ensure_manager(sh)?;
        deploy_and_wait(
            sh,
            &self.stack,
            self.port,
            Duration::from_secs(self.timeout_secs),
        )?;
        eprintln!(
            "swarm: stack {} is up: http://localhost:{}/ (`cargo xtask swarm status -p {}`, \
             `cargo xtask swarm rm -p {}` to remove it)",
            self.stack, self.port, self.stack, self.stack
        );
        Ok(())
    }
}

/// Everything after the swarm exists: secret, stack file, images, deploy,
/// convergence. Returns the images deployed. Shared with `e2e --swarm`.
pub fn deploy_and_wait(
    sh: &Shell,
    stack: &str,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<StackImages> {
    check_port_is_free(sh, stack, port)?;
    super::prepare_files()?;
    let images = StackImages::from_built(
        &crate::images::ensure_images(sh).context("build and load the images")?,
    )?;
    let tasks_before = super::known_task_ids(sh, stack)?;
    eprintln!(
        "swarm: deploying stack {stack} (webapp {}, db {}, proxy {})",
        images.webapp, images.db, images.proxy
    );
    super::deploy_stack(sh, stack, port, &images)?;
    super::wait_until_converged(sh, stack, &tasks_before, timeout)?;
    Ok(images)
}

/// Fails early, with what to do, when another program holds the port; the
/// stack's own proxy holding it (a redeploy) is fine.
fn check_port_is_free(sh: &Shell, stack: &str, port: u16) -> anyhow::Result<()> {
    let already_ours = super::stack_services(sh, stack)?
        .iter()
        .any(|service| service.published_host_port() == Some(port));
    if already_ours {
        return Ok(());
    }
    // The proxy publishes in host mode, on every address of the host.
    if let Err(error) = TcpListener::bind(("0.0.0.0", port)) {
        bail!("host port {port} is taken ({error}): stop what uses it, or pass --port with a free port");
    }
    Ok(())
}
