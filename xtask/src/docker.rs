//! What every Docker-driving command needs first: a reachable engine, and
//! names and ports that do not collide with anything else on that engine.

use std::net::TcpListener;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// How long commands wait for a deployment to become healthy (Compose) or
/// converge (Swarm): images are loaded by then, so this is start-up plus a
/// few healthcheck intervals, with room for a busy machine.
pub const HEALTHY_TIMEOUT_SECS: u64 = 180;

/// Fails with how to start Docker when the engine does not answer.
pub fn require_docker(sh: &Shell) -> anyhow::Result<()> {
    let format = "{{.Server.Version}}";
    let output = cmd!(sh, "docker version --format {format}")
        .quiet()
        .ignore_status()
        .output();
    match output {
        Err(error) => bail!(
            "the docker CLI could not be run ({error}): install Docker Engine (your distribution's package, or https://docs.docker.com/engine/install/)"
        ),
        Ok(output) if !output.status.success() => bail!(
            "the Docker engine is not reachable ({}): start it (`systemctl start docker`, or `dockerd &` without systemd), \
             and check DOCKER_HOST and that this user may use /var/run/docker.sock",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

/// Refuses to start `name` under one orchestrator while containers of the
/// same name run under the other. A Compose project and a Swarm stack of one
/// name use the same local volume for Redis (`<name>_db-data`), and two
/// redis-servers appending to one file would corrupt it.
pub fn require_no_other_deployment(
    sh: &Shell,
    name: &str,
    starting: Orchestrator,
) -> anyhow::Result<()> {
    let (label, other, remove) = match starting {
        Orchestrator::Compose => (
            "com.docker.stack.namespace",
            "Swarm stack",
            format!("cargo xtask swarm rm -p {name}"),
        ),
        Orchestrator::Swarm => (
            "com.docker.compose.project",
            "Compose project",
            format!("cargo xtask down -p {name}"),
        ),
    };
    let filter = format!("label={label}={name}");
    let running = cmd!(sh, "docker ps --quiet --filter {filter}")
        .quiet()
        .read()
        .with_context(|| format!("list the containers of {other} {name}"))?;
    if !running.trim().is_empty() {
        bail!(
            "a {other} named {name} is running and would share its Redis volume {name}_db-data: \
             remove it first (`{remove}`; its data stays) or pick another name"
        );
    }
    Ok(())
}

/// Who runs the containers of a deployment.
#[derive(Debug, Clone, Copy)]
pub enum Orchestrator {
    Compose,
    Swarm,
}

/// A port nothing listens on right now, on every interface (where Docker
/// publishes). The kernel picks it; the tiny window until Docker binds it is
/// acceptable for a test run.
pub fn free_host_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("0.0.0.0", 0)).context("find a free host port")?;
    Ok(listener.local_addr().context("read the free port")?.port())
}

/// Eight hex digits from the clock, the process id and the standard
/// library's per-process random hasher keys: enough to keep the projects,
/// stacks and containers of concurrent runs on one engine apart.
pub fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs the docker CLI (not an engine); cargo xtask ci runs it"]
    fn unreachable_docker_is_reported_with_how_to_start_it() {
        let sh = Shell::new().expect("shell");
        sh.set_var(
            "DOCKER_HOST",
            "unix:///nonexistent/webstack-test-docker.sock",
        );
        let error = require_docker(&sh).expect_err("no engine listens on that socket");
        let message = format!("{error:#}");
        assert!(
            message.contains("not reachable") && message.contains("systemctl start docker"),
            "{message}"
        );
    }

    #[test]
    fn unique_suffixes_differ_between_calls() {
        assert_ne!(unique_suffix(), unique_suffix());
    }
}
