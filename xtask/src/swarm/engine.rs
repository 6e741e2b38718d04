//! The Docker engine's place in a swarm: probe it, create a single-node swarm
//! when there is none, and leave it again only if xtask created it.
//!
//! Whether xtask created the swarm is recorded as labels on the swarm node
//! itself rather than in a file: the record survives `cargo clean` and a
//! fresh checkout, and it disappears together with the swarm.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::poll::{self, Look};
use xshell::{cmd, Shell};

/// Node label: this swarm was created by `cargo xtask` (so it may leave it).
const CREATED_BY_XTASK_LABEL: &str = "webstack.swarm-created-by-xtask";

/// Node label: `docker_gwbridge` did not exist before xtask created the swarm.
/// The engine creates that bridge network for swarm containers and keeps it
/// after `docker swarm leave`; xtask removes it to leave the engine as it
/// found it.
const GWBRIDGE_CREATED_LABEL: &str = "webstack.gwbridge-created-by-xtask";

const GWBRIDGE_NETWORK: &str = "docker_gwbridge";

pub use crate::docker::{require_docker, swarm_info, LocalNodeState};

/// What [`ensure_manager`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmOrigin {
    /// The engine already was a manager of a swarm.
    AlreadyManager,
    /// The engine was in no swarm; xtask created a single-node one.
    CreatedNow,
}

/// Makes sure the engine is a swarm manager: creates a single-node swarm
/// when it is in none (and says so), fails clearly when it is a worker or
/// its swarm is unusable.
pub fn ensure_manager(sh: &Shell) -> anyhow::Result<SwarmOrigin> {
    require_docker(sh)?;
    let info = swarm_info(sh)?;
    match info.local_node_state {
        LocalNodeState::Active if info.control_available => Ok(SwarmOrigin::AlreadyManager),
        LocalNodeState::Active => bail!(
            "this Docker engine is a worker in a swarm, and only managers can deploy stacks: \
             run the command against a manager (e.g. DOCKER_HOST=ssh://manager-host), \
             or `docker swarm leave` on this engine first"
        ),
        LocalNodeState::Inactive => {
            create_single_node_swarm(sh)?;
            Ok(SwarmOrigin::CreatedNow)
        }
        LocalNodeState::Locked => bail!(
            "this engine's swarm is locked (autolock): unlock it with `docker swarm unlock`, then run the command again"
        ),
        other => bail!(
            "this engine's swarm is in state {other:?} ({}): wait for it to settle or fix it with `docker swarm` commands, \
             then run the command again",
            info.error
        ),
    }
}

fn network_exists(sh: &Shell, name: &str) -> bool {
    cmd!(sh, "docker network inspect {name}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

fn create_single_node_swarm(sh: &Shell) -> anyhow::Result<()> {
    let gwbridge_existed = network_exists(sh, GWBRIDGE_NETWORK);
    eprintln!(
        "swarm: this Docker engine is in no swarm: creating a single-node swarm \
         (`cargo xtask swarm rm` leaves it again once no stack is left)"
    );
    // Loopback only: a single-node swarm needs no other host to reach its
    // management (2377) or gossip (7946) ports, so none are opened to the
    // network. Multi-node users create their swarm themselves.
    cmd!(
        sh,
        "docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .context("create a single-node swarm (docker swarm init)")?;
    let node_id = swarm_info(sh)?.node_id;
    let mut labels = vec![format!("{CREATED_BY_XTASK_LABEL}=true")];
    if !gwbridge_existed {
        labels.push(format!("{GWBRIDGE_CREATED_LABEL}=true"));
    }
    for label in labels {
        cmd!(sh, "docker node update --label-add {label} {node_id}")
            .quiet()
            .ignore_stdout()
            .run()
            .context("record on the swarm node that xtask created the swarm")?;
    }
    Ok(())
}

fn node_labels(sh: &Shell) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let format = "{{json .Spec.Labels}}";
    let json = cmd!(sh, "docker node inspect --format {format} self")
        .quiet()
        .read()
        .context("read this swarm node's labels")?;
    match serde_json::from_str(&json).context("parse the node's labels")? {
        serde_json::Value::Object(labels) => Ok(labels),
        _ => Ok(serde_json::Map::new()),
    }
}

/// Whether the engine's swarm was created by xtask (false without a swarm).
pub fn swarm_created_by_xtask(sh: &Shell) -> anyhow::Result<bool> {
    let info = swarm_info(sh)?;
    if !info.is_manager() {
        return Ok(false);
    }
    Ok(node_labels(sh)?.contains_key(CREATED_BY_XTASK_LABEL))
}

/// Leaves the swarm if xtask created it and no service is left in it (some
/// other stack may have been deployed since), then removes the
/// `docker_gwbridge` network the swarm brought. Says what it did.
pub fn leave_swarm_if_created_by_xtask(sh: &Shell) -> anyhow::Result<()> {
    if !swarm_created_by_xtask(sh)? {
        return Ok(());
    }
    let remaining = cmd!(sh, "docker service ls --quiet")
        .quiet()
        .read()
        .context("list the swarm's services")?;
    let remaining = remaining.split_whitespace().count();
    if remaining > 0 {
        eprintln!(
            "swarm: xtask created this swarm, but {remaining} service(s) of other stacks still run in it: staying in the swarm"
        );
        return Ok(());
    }
    let remove_gwbridge = node_labels(sh)?.contains_key(GWBRIDGE_CREATED_LABEL);
    eprintln!("swarm: leaving the single-node swarm xtask created");
    cmd!(sh, "docker swarm leave --force")
        .quiet()
        .ignore_stdout()
        .run()
        .context("leave the swarm (docker swarm leave --force)")?;
    if remove_gwbridge {
        remove_gwbridge_network(sh)?;
    }
    Ok(())
}

/// Removes `docker_gwbridge`, retrying while the engine still detaches the
/// last swarm endpoints from it.
fn remove_gwbridge_network(sh: &Shell) -> anyhow::Result<()> {
    poll::until(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            if !network_exists(sh, GWBRIDGE_NETWORK) {
                return Ok(Look::Ready(()));
            }
            let output = cmd!(sh, "docker network rm {GWBRIDGE_NETWORK}")
                .quiet()
                .ignore_status()
                .output()
                .context("remove the docker_gwbridge network")?;
            Ok(if output.status.success() {
                Look::Ready(())
            } else {
                Look::NotYet(String::from_utf8_lossy(&output.stderr).trim().to_owned())
            })
        },
        |refusal, _| {
            anyhow!(
                "could not remove the docker_gwbridge network the swarm created: {refusal}; \
                 remove it with `docker network rm docker_gwbridge` once no container uses it"
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs the docker CLI (not an engine); cargo xtask ci runs it"]
    fn swarm_commands_report_an_unreachable_docker_first() {
        let sh = Shell::new().expect("shell");
        sh.set_var(
            "DOCKER_HOST",
            "unix:///nonexistent/webstack-test-docker.sock",
        );
        // The swarm commands probe the engine before anything else.
        let error = ensure_manager(&sh).expect_err("no engine listens on that socket");
        assert!(format!("{error:#}").contains("not reachable"));
    }
}
