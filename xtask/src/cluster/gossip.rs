//! What each node's engine knows of the others: gossip peers, and the
//! overlay endpoints compared with the tasks the manager says run.

use std::time::{Duration, Instant};

use anyhow::bail;
use xshell::Shell;

use super::*;
use crate::poll::{self, Look};

/// The overlay network every node of a swarm is part of, whatever runs on
/// it: its peers are the nodes that node's gossip counts in.
pub(super) const EVERY_NODES_NETWORK: &str = "ingress";

/// What each node's gossip lacks: one line per node that does not count
/// every node of the cluster among its peers (or whose engine does not say).
pub(super) fn gossip_shortfalls(sh: &Shell) -> Vec<String> {
    let nodes = existing_nodes();
    let everyone: std::collections::BTreeSet<String> = nodes
        .iter()
        .map(|node| node.address().to_string())
        .collect();
    let mut shortfalls = Vec::new();
    for node in &nodes {
        let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
        match crate::docker::overlay::overlay_view(sh, EVERY_NODES_NETWORK) {
            Ok(Some(view)) => {
                let peers = view.peer_addresses();
                let missing: Vec<&str> = everyone.difference(&peers).map(String::as_str).collect();
                if !missing.is_empty() {
                    shortfalls.push(format!(
                        "{} does not gossip with {}",
                        node.name(),
                        missing.join(", ")
                    ));
                }
            }
            Ok(None) => shortfalls.push(format!(
                "{} has no {EVERY_NODES_NETWORK} network (not in the swarm?)",
                node.name()
            )),
            Err(error) => shortfalls.push(format!("{}: {error:#}", node.name())),
        }
    }
    shortfalls
}

/// How long the gossip must stay whole before `cluster gossip --wait`
/// trusts it: right after a node's agent reconnects, its engine removes
/// and re-creates its network attachments (`ingress` among them), which
/// briefly breaks a view that was already whole.
pub(super) const GOSSIP_STABLE_FOR: Duration = Duration::from_secs(3);

/// `cluster gossip --wait`: polls until every node's gossip has counted
/// every node in for [`GOSSIP_STABLE_FOR`], printing how long that took,
/// or fails with what is missing.
pub(super) fn wait_for_whole_gossip(sh: &Shell, timeout: Duration) -> anyhow::Result<()> {
    if existing_nodes().is_empty() {
        bail!("no cluster is up (`cargo xtask cluster up` starts one)");
    }
    let started = Instant::now();
    let mut whole_since: Option<Instant> = None;
    let whole_at = poll::until(
        timeout,
        Duration::from_millis(500),
        || {
            let shortfalls = gossip_shortfalls(sh);
            if !shortfalls.is_empty() {
                whole_since = None;
                return Ok(Look::NotYet(shortfalls));
            }
            let since = *whole_since.get_or_insert_with(Instant::now);
            Ok(
                if since.elapsed() >= GOSSIP_STABLE_FOR || timeout.is_zero() {
                    Look::Ready(since)
                } else {
                    Look::NotYet(Vec::new())
                },
            )
        },
        |shortfalls, waited| {
            anyhow::anyhow!(
                "the nodes' gossip is not whole after {:.1}s:\n  {}",
                waited.as_secs_f64(),
                if shortfalls.is_empty() {
                    format!("it became whole only in the last {GOSSIP_STABLE_FOR:?}")
                } else {
                    shortfalls.join("\n  ")
                }
            )
        },
    )?;
    println!(
        "every node gossips with every other (whole {:.1}s after the first look, and since)",
        whole_at.duration_since(started).as_secs_f64()
    );
    Ok(())
}

/// Each node's view of the overlay networks of `stack` (its gossip peers
/// and the task endpoints it knows), checked against the tasks Swarm runs:
/// what shows that containers on two nodes cannot reach each other
/// although Swarm counts both nodes Ready. Nodes whose engine does not
/// answer, or that have no part in a network, are left out.
pub fn overlay_report(sh: &Shell, stack: &str) -> Vec<String> {
    let running = match running_endpoints_of(sh, stack) {
        Ok(running) => running,
        Err(error) => return vec![format!("the manager's tasks of {stack}: {error:#}")],
    };
    let mut lines = Vec::new();
    for network in crate::stack::stack().networks {
        let name = format!("{stack}_{}", network.name);
        let expected = running.get(&name).cloned().unwrap_or_default();
        let mut complete = 0;
        for node in existing_nodes() {
            let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
            match crate::docker::overlay::overlay_view(sh, &name) {
                Ok(Some(view)) => {
                    lines.push(crate::docker::overlay::describe(&node.name(), &view));
                    let shortfalls =
                        crate::docker::overlay::shortfalls(&node.name(), &name, &view, &expected);
                    complete += usize::from(shortfalls.is_empty());
                    lines.extend(shortfalls);
                }
                Ok(None) => {}
                Err(error) => lines.push(format!("{}: {name}: {error:#}", node.name())),
            }
        }
        lines.push(format!(
            "{name}: {complete} node(s) know every one of the {} running endpoint(s)",
            expected.len()
        ));
    }
    lines
}

/// The manager's account of where the stack's running tasks are, per network.
pub(super) fn running_endpoints_of(
    sh: &Shell,
    stack: &str,
) -> anyhow::Result<
    std::collections::BTreeMap<
        String,
        std::collections::BTreeSet<crate::docker::overlay::Endpoint>,
    >,
> {
    let manager = manager()?;
    let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
    let nodes = crate::docker::inspect_swarm_nodes(sh)?
        .into_iter()
        .map(|node| (node.id, node.status.addr))
        .collect();
    let mut tasks = Vec::new();
    for service in crate::docker::stack_services(sh, stack)? {
        tasks.extend(crate::docker::service_tasks(sh, &service.spec.name)?);
    }
    Ok(crate::docker::overlay::running_endpoints(&tasks, &nodes))
}
