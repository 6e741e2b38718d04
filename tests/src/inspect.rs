//! The docker CLI calls the suites read Docker's state with, parsed into
//! the contract's typed structs (`stack_contract::docker`, which xtask
//! reads with too). Each panics with what failed: a suite cannot go on
//! without the answer.

use std::process::Command;

use stack_contract::docker::{parse_node_rows, Container, Network, NodeRow, Service, Task};

use crate::harness::docker;

/// `docker inspect --type container` of `ids` (none: none).
pub fn containers(ids: &[&str]) -> Vec<Container> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--type", "container"];
    args.extend_from_slice(ids);
    serde_json::from_str(&docker(&args)).expect("docker inspect gives container JSON")
}

/// `docker network inspect <name or id>`.
pub fn network(name: &str) -> Network {
    let mut networks: Vec<Network> =
        serde_json::from_str(&docker(&["network", "inspect", name])).expect("network JSON");
    assert_eq!(networks.len(), 1, "network inspect {name}");
    networks.remove(0)
}

/// `docker service inspect <service>`.
pub fn service(name: &str) -> Service {
    let mut services: Vec<Service> =
        serde_json::from_str(&docker(&["service", "inspect", name])).expect("service JSON");
    assert_eq!(services.len(), 1, "service inspect {name}");
    services.remove(0)
}

/// `docker inspect --type task` of `ids` (none: none).
pub fn tasks(ids: &[&str]) -> Vec<Task> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--type", "task"];
    args.extend_from_slice(ids);
    serde_json::from_str(&docker(&args)).expect("task inspect JSON")
}

/// `docker inspect --type task` of `ids`, leaving out tasks that vanished
/// between listing and inspecting (then this look sees none of them, and a
/// caller that polls looks again).
pub fn tasks_still_there(ids: &[&str]) -> Vec<Task> {
    if ids.is_empty() {
        return Vec::new();
    }
    let output = Command::new("docker")
        .args(["inspect", "--type", "task"])
        .args(ids)
        .output()
        .expect("docker inspect");
    serde_json::from_slice(&output.stdout).unwrap_or_default()
}

/// The ids of the tasks Swarm wants running for `service` (`docker service
/// ps --filter desired-state=running`).
pub fn desired_running_task_ids(service: &str) -> Vec<String> {
    docker(&[
        "service",
        "ps",
        "--quiet",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        service,
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// `docker node ls`: the swarm's nodes as the manager sees them.
pub fn node_rows() -> Vec<NodeRow> {
    parse_node_rows(&docker(&["node", "ls", "--format", "{{json .}}"]))
        .unwrap_or_else(|error| panic!("{error}"))
}
