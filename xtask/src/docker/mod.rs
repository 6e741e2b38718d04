//! The one place that runs the docker CLI for what it reports: a reachable
//! engine, names and ports that do not collide with anything else on it,
//! and `docker inspect`-style JSON parsed into the typed structs of
//! `stack_contract::docker` (shared with the end-to-end suites). Compose, Swarm, the bench and the e2e drivers read containers,
//! services, tasks and the swarm's state through here, and see one
//! deployment through [`deployment::Deployment`] whichever orchestrator runs
//! it.

pub mod deployment;
pub mod overlay;
pub mod serving;

use std::net::TcpListener;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use xshell::{cmd, Shell};

pub use stack_contract::docker::{
    parse_node_rows, without_digest, Condition, Container, LocalNodeState, NodeRow, NodeStatus,
    Service, SwarmInfo, SwarmNode, Task, TaskState, UpdateState, UpdateStatus,
};

/// The label Compose (both versions) puts on every container of a project.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label Compose puts on every container: its service.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";
/// The label `docker stack deploy` puts on every object of a stack.
pub const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label Swarm puts on every task container: its service's full name.
pub const SWARM_SERVICE_LABEL: &str = "com.docker.swarm.service.name";

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
/// redis-servers appending to one file would corrupt it. `remove_other` is
/// the command that removes the other one, for the error.
pub fn require_no_other_deployment(
    sh: &Shell,
    starting: &dyn deployment::Deployment,
    remove_other: &str,
) -> anyhow::Result<()> {
    let name = starting.name();
    let (label, other) = match starting.orchestrator() {
        Orchestrator::Compose => (STACK_NAMESPACE_LABEL, "Swarm stack"),
        Orchestrator::Swarm => (COMPOSE_PROJECT_LABEL, "Compose project"),
    };
    let filter = format!("label={label}={name}");
    let running = cmd!(sh, "docker ps --quiet --filter {filter}")
        .quiet()
        .read()
        .with_context(|| format!("list the containers of {other} {name}"))?;
    if !running.trim().is_empty() {
        bail!(
            "a {other} named {name} is running and would share its Redis volume {name}_db-data: \
             remove it first (`{remove_other}`; its data stays) or pick another name"
        );
    }
    Ok(())
}

/// The ids `docker <args…> --quiet` lists, one per line.
pub fn list_ids(sh: &Shell, args: &[&str], what: &str) -> anyhow::Result<Vec<String>> {
    let listed = cmd!(sh, "docker {args...}")
        .quiet()
        .read()
        .with_context(|| format!("list {what} (docker {})", args.join(" ")))?;
    Ok(listed.split_whitespace().map(str::to_owned).collect())
}

/// `docker inspect --type KIND IDS…`, parsed. Objects that went away
/// between listing and inspecting (a container scaled away, a task pruned
/// from the history) are left out; any other failure is an error.
pub fn inspect<T: DeserializeOwned>(
    sh: &Shell,
    kind: &str,
    ids: &[String],
) -> anyhow::Result<Vec<T>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let output = cmd!(sh, "docker inspect --type {kind} {ids...}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run docker inspect --type {kind}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let only_vanished = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .all(|line| line.contains("No such"));
    if !output.status.success() && !only_vanished {
        bail!("docker inspect --type {kind} failed: {}", stderr.trim());
    }
    let json = String::from_utf8_lossy(&output.stdout);
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&json)
        .with_context(|| format!("parse the output of docker inspect --type {kind}"))
}

/// Every container (running or not, with `all`) carrying each of the
/// `labels` (`name=value`), inspected, sorted by name.
pub fn containers_labelled(
    sh: &Shell,
    labels: &[String],
    all: bool,
) -> anyhow::Result<Vec<Container>> {
    let mut args = vec!["ps", "--quiet"];
    if all {
        args.push("--all");
    }
    let filters: Vec<String> = labels
        .iter()
        .map(|label| format!("label={label}"))
        .collect();
    for filter in &filters {
        args.extend(["--filter", filter]);
    }
    let ids = list_ids(sh, &args, "containers")?;
    let mut containers: Vec<Container> = inspect(sh, "container", &ids)?;
    containers.sort_by(|left, right| left.name.cmp(&right.name));
    Ok(containers)
}

/// One container on this engine, or `None` when it is not here (gone, or
/// on another node of a swarm).
pub fn local_container(sh: &Shell, id: &str) -> Option<Container> {
    inspect(sh, "container", &[id.to_owned()])
        .ok()?
        .into_iter()
        .next()
}

/// The engine's place in a swarm (`docker info`'s Swarm section).
pub fn swarm_info(sh: &Shell) -> anyhow::Result<SwarmInfo> {
    let format = "{{json .Swarm}}";
    let json = cmd!(sh, "docker info --format {format}")
        .quiet()
        .read()
        .context("ask the Docker engine about its swarm (docker info)")?;
    serde_json::from_str(&json).context("parse the Swarm section of `docker info`")
}

/// Every node of the swarm, inspected (ids, hostnames, addresses).
pub fn inspect_swarm_nodes(sh: &Shell) -> anyhow::Result<Vec<SwarmNode>> {
    let ids = list_ids(sh, &["node", "ls", "--quiet"], "the swarm's nodes")?;
    inspect(sh, "node", &ids)
}

/// The swarm's nodes as the manager sees them.
pub fn swarm_nodes(sh: &Shell) -> anyhow::Result<Vec<NodeRow>> {
    let format = "{{json .}}";
    let text = cmd!(sh, "docker node ls --format {format}")
        .quiet()
        .read()
        .context("list the swarm's nodes")?;
    parse_node_rows(&text).map_err(anyhow::Error::msg)
}

/// Every service of Swarm stack `stack`, inspected, sorted by name.
pub fn stack_services(sh: &Shell, stack: &str) -> anyhow::Result<Vec<Service>> {
    let filter = format!("label={STACK_NAMESPACE_LABEL}={stack}");
    let ids = list_ids(
        sh,
        &["service", "ls", "--quiet", "--filter", &filter],
        &format!("the services of stack {stack}"),
    )?;
    let mut services: Vec<Service> = inspect(sh, "service", &ids)?;
    services.sort_by(|left, right| left.spec.name.cmp(&right.spec.name));
    Ok(services)
}

/// One Swarm service, inspected.
pub fn service(sh: &Shell, name: &str) -> anyhow::Result<Service> {
    inspect::<Service>(sh, "service", &[name.to_owned()])?
        .pop()
        .with_context(|| format!("there is no service {name}"))
}

/// Every task Swarm still remembers for a service (running ones and the
/// recent history), inspected.
pub fn service_tasks(sh: &Shell, service: &str) -> anyhow::Result<Vec<Task>> {
    let ids = list_ids(
        sh,
        &["service", "ps", "--quiet", "--no-trunc", service],
        &format!("the tasks of service {service}"),
    )?;
    inspect(sh, "task", &ids)
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
