//! `cargo xtask swarm rm`: remove a stack, wait until Swarm has really
//! removed it, keep or drop its data, and leave the swarm if xtask created it.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::poll::{self, Look};
use xshell::{cmd, Shell};

use super::{engine, DEFAULT_STACK_NAME, STACK_NAMESPACE_LABEL};

/// Remove the stack; its data volume only with --volumes. Leaves the swarm
/// if xtask created it and no other stack runs in it.
#[derive(clap::Args)]
pub struct SwarmRm {
    /// Stack name given to `swarm deploy`.
    #[arg(long = "project", short = 'p', alias = "stack", value_name = "NAME", env = "WEBSTACK_PROJECT", default_value = DEFAULT_STACK_NAME)]
    pub stack: String,
    /// Also delete the stack's volumes (the Redis data: the counter restarts at 0).
    #[arg(long)]
    pub volumes: bool,
}

impl SwarmRm {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        engine::require_docker(sh)?;
        let info = engine::swarm_info(sh)?;
        if info.local_node_state != engine::LocalNodeState::Active {
            eprintln!("swarm: this engine is in no swarm, so there is no stack to remove");
            return Ok(());
        }
        if !info.control_available {
            bail!("this engine is a swarm worker: run `cargo xtask swarm rm` against a manager of the swarm");
        }
        remove_stack(sh, &self.stack, self.volumes)?;
        engine::leave_swarm_if_created_by_xtask(sh)
    }
}

/// How long Swarm gets to stop the tasks and delete the networks of a stack.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(120);

/// Removes the stack and waits until its services, containers and networks
/// are gone; deletes its volumes when `drop_volumes`, else says they are kept.
pub fn remove_stack(sh: &Shell, stack: &str, drop_volumes: bool) -> anyhow::Result<()> {
    let filter = format!("label={STACK_NAMESPACE_LABEL}={stack}");
    if leftovers(sh, &filter)?.is_empty() {
        eprintln!("swarm: no stack named {stack} is deployed");
    } else {
        eprintln!("swarm: removing stack {stack}");
        cmd!(sh, "docker stack rm {stack}")
            .quiet()
            .run()
            .with_context(|| format!("docker stack rm {stack}"))?;
        // `docker stack rm` returns before the tasks have stopped; networks
        // and volumes can only go once the containers are gone.
        let started = Instant::now();
        poll::until(
            REMOVAL_TIMEOUT,
            Duration::from_millis(500),
            || {
                let remaining = leftovers(sh, &filter)?;
                Ok(if remaining.is_empty() {
                    Look::Ready(())
                } else {
                    Look::NotYet(remaining)
                })
            },
            |remaining, waited| {
                anyhow!(
                    "stack {stack} was not fully removed after {}s, still there: {}; \
                     run `cargo xtask swarm rm -p {stack}` again",
                    waited.as_secs(),
                    remaining.join(", ")
                )
            },
        )?;
        eprintln!(
            "swarm: stack {stack} removed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let volumes = cmd!(sh, "docker volume ls --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the stack's volumes")?;
    let volumes: Vec<&str> = volumes.split_whitespace().collect();
    if volumes.is_empty() {
        return Ok(());
    }
    if !drop_volumes {
        eprintln!(
            "swarm: kept the data volume(s) {}: the next `swarm deploy` of {stack} reuses them (`swarm rm --volumes` deletes them)",
            volumes.join(", ")
        );
        return Ok(());
    }
    for volume in volumes {
        remove_volume(sh, volume)?;
        eprintln!("swarm: deleted volume {volume}");
    }
    Ok(())
}

/// Services, containers, networks and secrets (every version of the TLS
/// ones too) still carrying the stack's label.
fn leftovers(sh: &Shell, filter: &str) -> anyhow::Result<Vec<String>> {
    let mut remaining = Vec::new();
    let services = cmd!(sh, "docker service ls --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the stack's services")?;
    let containers = cmd!(sh, "docker ps --all --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the stack's containers")?;
    let networks = cmd!(sh, "docker network ls --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the stack's networks")?;
    let secrets = cmd!(sh, "docker secret ls --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the stack's secrets")?;
    for (kind, ids) in [
        ("service", services),
        ("container", containers),
        ("network", networks),
        ("secret", secrets),
    ] {
        for id in ids.split_whitespace() {
            remaining.push(format!("{kind} {id}"));
        }
    }
    Ok(remaining)
}

/// Deletes a volume, retrying briefly: the engine releases a volume a
/// moment after the last container using it is gone.
fn remove_volume(sh: &Shell, volume: &str) -> anyhow::Result<()> {
    poll::until(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let output = cmd!(sh, "docker volume rm {volume}")
                .quiet()
                .ignore_status()
                .output()
                .with_context(|| format!("docker volume rm {volume}"))?;
            Ok(if output.status.success() {
                Look::Ready(())
            } else {
                Look::NotYet(String::from_utf8_lossy(&output.stderr).trim().to_owned())
            })
        },
        |refusal, _| anyhow!("could not delete volume {volume}: {refusal}"),
    )
}
