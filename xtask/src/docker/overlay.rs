//! What each engine of a swarm believes about an overlay network: the
//! nodes attached to it (its gossip peers) and the task endpoints on it, as
//! `docker network inspect --verbose` prints them from the engine's
//! NetworkDB. Containers on a node reach a task on another node only when
//! that node's NetworkDB has the task's endpoint (its MAC and host) and the
//! other node has theirs, so two engines whose views differ are two engines
//! whose containers cannot talk, whatever `docker node ls` says.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use xshell::{cmd, Shell};

/// One engine's view of one overlay network: `docker network inspect
/// --verbose`, typed in the contract with every other network.
pub use stack_contract::docker::Network as OverlayView;
/// A task endpoint as one engine knows it.
pub use stack_contract::docker::OverlayEndpoint as Endpoint;

/// `docker network inspect --verbose NETWORK` on the engine the shell
/// points at; `None` when that engine does not have the network (it runs
/// no task on it, or never heard of it).
pub fn overlay_view(sh: &Shell, network: &str) -> anyhow::Result<Option<OverlayView>> {
    let output = cmd!(sh, "docker network inspect --verbose {network}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run docker network inspect --verbose {network}"))?;
    if !output.status.success() {
        return Ok(None);
    }
    let mut views: Vec<OverlayView> = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("parse docker network inspect --verbose {network}"))?;
    Ok(views.pop().filter(|view| view.peers.is_some()))
}

/// The endpoints Swarm says should be on each overlay network: every
/// running task of `tasks` with its address on each network it is
/// attached to, and its node's address (`nodes`: node id → address).
pub fn running_endpoints(
    tasks: &[crate::docker::Task],
    nodes: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<Endpoint>> {
    let mut endpoints: BTreeMap<String, BTreeSet<Endpoint>> = BTreeMap::new();
    let running = tasks.iter().filter(|task| {
        task.desired_state == crate::docker::TaskState::Running
            && task.status.state == crate::docker::TaskState::Running
    });
    for task in running {
        let host = nodes.get(&task.node_id).cloned().unwrap_or_default();
        for attachment in &task.networks_attachments {
            for address in &attachment.addresses {
                let address = address.split('/').next().unwrap_or(address);
                endpoints
                    .entry(attachment.network.spec.name.clone())
                    .or_default()
                    .insert(Endpoint {
                        address: address.to_owned(),
                        host: host.clone(),
                    });
            }
        }
    }
    endpoints
}

/// Where one engine's view of `network` falls short of what Swarm runs on
/// it (`running`): a host of a running task it does not gossip with, a
/// running task's endpoint it does not know (its containers cannot reach
/// that task), and, less harmful, endpoints of tasks that no longer run.
/// Empty when the view is complete. Right after a task starts or stops,
/// gossip takes a moment to spread it: a difference that lasts is the one
/// that matters.
pub fn shortfalls(
    node: &str,
    network: &str,
    view: &OverlayView,
    running: &BTreeSet<Endpoint>,
) -> Vec<String> {
    let show = |endpoints: Vec<&Endpoint>| {
        endpoints
            .iter()
            .map(|endpoint| format!("{} (on {})", endpoint.address, endpoint.host))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = Vec::new();
    let hosts: BTreeSet<&str> = running
        .iter()
        .map(|endpoint| endpoint.host.as_str())
        .collect();
    let peers = view.peer_addresses();
    let not_peers: Vec<&str> = hosts
        .into_iter()
        .filter(|host| !host.is_empty() && !peers.contains(*host))
        .collect();
    if !not_peers.is_empty() {
        lines.push(format!(
            "{node} does not gossip with {} on {network}, although tasks run there",
            not_peers.join(", ")
        ));
    }
    let known = view.endpoints();
    let unknown: Vec<&Endpoint> = running.difference(&known).collect();
    if !unknown.is_empty() {
        lines.push(format!(
            "{node} does not know the running task endpoint(s) {} on {network}: its containers cannot reach them",
            show(unknown)
        ));
    }
    let stale: Vec<&Endpoint> = known.difference(running).collect();
    if !stale.is_empty() {
        lines.push(format!(
            "{node} still has endpoint(s) {} on {network} of tasks that do not run",
            show(stale)
        ));
    }
    lines
}

/// One view as lines for a report: peers, then endpoints with their hosts.
pub fn describe(node: &str, view: &OverlayView) -> String {
    let peers: Vec<String> = view.peer_addresses().into_iter().collect();
    let endpoints: Vec<String> = view
        .endpoints()
        .into_iter()
        .map(|endpoint| format!("{}@{}", endpoint.address, endpoint.host))
        .collect();
    format!(
        "{node}: {} peers [{}], endpoints [{}]",
        view.name,
        peers.join(", "),
        endpoints.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from `docker network inspect --verbose` of Docker 20.10 on
    /// the simulated cluster.
    const MANAGER_VIEW: &str = r#"[{
        "Name": "exp_backend", "Id": "p020dz810ztxzurt28p38kuir", "Scope": "swarm", "Driver": "overlay",
        "Peers": [{"Name": "d7e62fc20557", "IP": "198.18.0.12"}, {"Name": "e8db10b0ac70", "IP": "198.18.0.11"}],
        "Services": {
            "exp_db": {"VIP": "<nil>", "Ports": [], "LocalLBIndex": 256, "Tasks": [
                {"Name": "exp_db.1.getyx", "EndpointID": "0bbafa", "EndpointIP": "198.18.129.5", "Info": {"Host IP": "198.18.0.11"}}]},
            "exp_webapp": {"VIP": "<nil>", "Ports": [], "LocalLBIndex": 257, "Tasks": [
                {"Name": "exp_webapp.3.ryo4n", "EndpointID": "5d6da3", "EndpointIP": "198.18.129.28", "Info": {"Host IP": "198.18.0.12"}}]}
        }
    }]"#;

    fn view(json: &str) -> OverlayView {
        let mut views: Vec<OverlayView> = serde_json::from_str(json).expect("network JSON");
        views.pop().expect("one network")
    }

    #[test]
    fn a_view_lists_its_peers_and_the_hosts_of_its_endpoints() {
        let manager = view(MANAGER_VIEW);
        assert_eq!(
            manager.peer_addresses(),
            BTreeSet::from(["198.18.0.11".to_owned(), "198.18.0.12".to_owned()])
        );
        assert!(manager.endpoints().contains(&Endpoint {
            address: "198.18.129.5".into(),
            host: "198.18.0.11".into()
        }));
        assert_eq!(manager.endpoints().len(), 2);
        assert!(describe("node-1", &manager).contains("198.18.129.28@198.18.0.12"));
    }

    fn endpoint(address: &str, host: &str) -> Endpoint {
        Endpoint {
            address: address.into(),
            host: host.into(),
        }
    }

    #[test]
    fn a_complete_view_has_no_shortfalls_and_a_rejoined_nodes_gaps_are_named() {
        let running = BTreeSet::from([
            endpoint("198.18.129.5", "198.18.0.11"),
            endpoint("198.18.129.28", "198.18.0.12"),
        ]);
        assert!(shortfalls("node-1", "exp_backend", &view(MANAGER_VIEW), &running).is_empty());

        let rejoined = r#"[{"Name": "exp_backend",
            "Peers": [{"Name": "ed4dd0233a8b", "IP": "198.18.0.13"}],
            "Services": {"exp_webapp": {"Tasks": [
                {"Name": "exp_webapp.1.x", "EndpointIP": "198.18.129.40", "Info": {"Host IP": "198.18.0.13"}}]}}}]"#;
        let lines = shortfalls("node-3", "exp_backend", &view(rejoined), &running).join("\n");
        assert!(
            lines.contains("node-3 does not gossip with 198.18.0.11, 198.18.0.12 on exp_backend"),
            "{lines}"
        );
        assert!(
            lines.contains("node-3 does not know the running task endpoint(s) 198.18.129.28 (on 198.18.0.12), 198.18.129.5 (on 198.18.0.11)"),
            "{lines}"
        );
        assert!(
            lines.contains("node-3 still has endpoint(s) 198.18.129.40 (on 198.18.0.13)"),
            "{lines}"
        );
    }

    #[test]
    fn running_endpoints_come_from_running_tasks_attachments_and_their_nodes() {
        let task = |state: &str, address: &str| -> crate::docker::Task {
            serde_json::from_str(&format!(
                r#"{{"ID": "t", "DesiredState": "running", "Status": {{"State": "{state}"}},
                    "Spec": {{"ContainerSpec": {{"Image": "webstack/webapp:x"}}}}, "NodeID": "n2",
                    "NetworksAttachments": [{{"Network": {{"Spec": {{"Name": "exp_backend"}}}}, "Addresses": ["{address}/24"]}}]}}"#
            ))
            .expect("task JSON")
        };
        let nodes = BTreeMap::from([("n2".to_owned(), "198.18.0.12".to_owned())]);
        let endpoints = running_endpoints(
            &[
                task("running", "198.18.129.7"),
                task("starting", "198.18.129.8"),
            ],
            &nodes,
        );
        assert_eq!(
            endpoints["exp_backend"],
            BTreeSet::from([endpoint("198.18.129.7", "198.18.0.12")])
        );
    }

    #[test]
    fn a_network_without_peers_is_no_part_of_the_engine() {
        let detached = view(r#"[{"Name": "exp_backend", "Peers": null, "Services": null}]"#);
        assert!(detached.peers.is_none());
        assert!(detached.endpoints().is_empty());
    }
}
