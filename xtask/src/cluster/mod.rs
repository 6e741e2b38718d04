//! `cargo xtask cluster up|down|status|link`: a Docker Swarm of several
//! hosts on this one machine, to test what only several hosts show (the
//! overlay network between nodes, placement, drain, losing a node).
//!
//! Each node is a host of its own: a network namespace with its own address
//! on a private network, its own `dockerd` (the host's binary) with its own
//! data root, exec root, socket, containerd, `/etc/docker` and hostname.
//! Node 1 is the manager, the others join as workers.
//!
//! ```text
//!  host ── webstack-host ══ webstack-up ─┐ namespace webstack-hub
//!  198.18.0.1/24   (veth pair)           ├ bridge webstack-br
//!                       webstack-n1 ═ eth0 198.18.0.11  namespace webstack-node-1 (manager)
//!                       webstack-n2 ═ eth0 198.18.0.12  namespace webstack-node-2
//!                       ...
//! ```
//!
//! The bridge lives in a namespace of its own: the host engine sets the
//! FORWARD policy to DROP and bridged packets pass iptables, so a bridge in
//! the host's namespace would drop node-to-node traffic unless the host's
//! firewall were changed, which this command never does. The network,
//! 198.18.0.0/24, is in the benchmarking range (RFC 2544): outside Docker's
//! address pools and 10.0.0.0/8, and reached from the host only through the
//! veth pair, so the network guard accepts it and nothing leaves the machine.
//!
//! Every object carries the `webstack-` prefix and lives under
//! [`BASE_DIR`], which is how `cluster down` finds what is left after a
//! crash half-way: it removes whatever of that it finds, in an order that
//! leaves nothing behind, and can run any number of times.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use stack_contract::netguard::Ipv4Net;
use xshell::{cmd, Shell};

mod engines;
mod gossip;
mod network;
mod registry;
mod teardown;

use engines::engine_answers;
pub use engines::up;
pub use gossip::overlay_report;
use gossip::{gossip_shortfalls, wait_for_whole_gossip};
pub use network::connect_all_links;
use network::set_link;
pub use registry::ensure_registry;
pub use teardown::{down, find_leftovers};

/// Where every node keeps its files (data root, exec root, socket, logs).
pub const BASE_DIR: &str = "/var/lib/webstack-cluster";
/// The name prefix of every namespace, hostname and cgroup this makes.
pub const NODE_PREFIX: &str = "webstack-node-";
/// The namespace holding the bridge.
pub const HUB_NAMESPACE: &str = "webstack-hub";
const BRIDGE: &str = "webstack-br";
/// The host's end of the veth pair to the hub, and its peer on the bridge.
const HOST_LINK: &str = "webstack-host";
const HOST_LINK_PEER: &str = "webstack-up";
/// Each node's link on the bridge is `webstack-n<i>`; inside the node it is `eth0`.
const NODE_LINK_PREFIX: &str = "webstack-n";

/// The cluster's own network, its host address and the first node's.
pub const SUBNET: Ipv4Net = Ipv4Net {
    address: Ipv4Addr::new(198, 18, 0, 0),
    prefix: 24,
};
const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const FIRST_NODE_HOST_PART: u8 = 11;
pub const MAX_NODES: u8 = 9;

/// Overlay networks of the cluster's swarm are carved from here (Swarm's
/// default pool is 10.0.0.0/8); they exist only inside the nodes.
const OVERLAY_POOL: &str = "198.18.128.0/17";
const OVERLAY_POOL_MASK: &str = "24";

/// One simulated host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// 1-based; node 1 is the manager.
    pub index: u8,
}

impl Node {
    pub fn name(&self) -> String {
        format!("{NODE_PREFIX}{}", self.index)
    }
    pub fn address(&self) -> Ipv4Addr {
        let [a, b, c, _] = SUBNET.address.octets();
        Ipv4Addr::new(a, b, c, FIRST_NODE_HOST_PART + self.index - 1)
    }
    /// The node's port on the hub's bridge.
    pub fn hub_link(&self) -> String {
        format!("{NODE_LINK_PREFIX}{}", self.index)
    }
    pub fn dir(&self) -> PathBuf {
        Path::new(BASE_DIR).join(format!("node-{}", self.index))
    }
    pub fn socket(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }
    /// The `DOCKER_HOST` value that reaches this node's engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    fn pidfile(&self) -> PathBuf {
        self.dir().join("dockerd.pid")
    }
    fn log(&self) -> PathBuf {
        self.dir().join("dockerd.log")
    }
    pub fn is_manager(&self) -> bool {
        self.index == 1
    }
}

/// The nodes of a cluster of `count` nodes.
pub fn nodes(count: u8) -> anyhow::Result<Vec<Node>> {
    if count == 0 || count > MAX_NODES {
        bail!("a cluster has 1 to {MAX_NODES} nodes, not {count}");
    }
    Ok((1..=count).map(|index| Node { index }).collect())
}

/// The nodes of the cluster that is up, from the directories under
/// [`BASE_DIR`] (each node has one from the moment it is made).
pub fn existing_nodes() -> Vec<Node> {
    let mut found: Vec<Node> = std::fs::read_dir(BASE_DIR)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| node_index_of_dir(&entry.file_name().to_string_lossy()))
                .map(|index| Node { index })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|node| node.index);
    found
}

fn node_index_of_dir(name: &str) -> Option<u8> {
    name.strip_prefix("node-")?
        .parse()
        .ok()
        .filter(|index| (1..=MAX_NODES).contains(index))
}

/// The manager's `DOCKER_HOST`, failing with what to do when no cluster is up.
pub fn manager() -> anyhow::Result<Node> {
    let manager = Node { index: 1 };
    if !manager.socket().exists() {
        bail!(
            "no cluster is up ({} is missing): start one with `cargo xtask cluster up`",
            manager.socket().display()
        );
    }
    Ok(manager)
}

/// Simulated multi-host Swarm: N engines in network namespaces.
#[derive(clap::Args)]
pub struct Cluster {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// Start N engines, each in its own network namespace, and form a swarm (node 1 manages).
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
    },
    /// Remove every namespace, link, engine, cgroup and directory `up` made (also after a crash).
    Down,
    /// Show the nodes: namespace, engine, swarm state, link; with a stack,
    /// also each node's view of its overlay networks.
    Status {
        /// A stack deployed to the cluster (`swarm deploy --cluster -p NAME`).
        #[arg(long = "project", short = 'p', alias = "stack", value_name = "NAME")]
        stack: Option<String>,
    },
    /// Whether every node's gossip (Docker's NetworkDB) counts every other
    /// node in, as the peers of the `ingress` network, which every node of
    /// a swarm joins. After a node comes back from a cut, wait for this
    /// before placing tasks on it (docs/swarm.md, "A node that returns").
    Gossip {
        /// Wait up to this many seconds for it, then fail naming what is missing.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
    },
    /// Cut a node off the network, or connect it again (its link on the bridge down or up).
    Link {
        /// Node number (1 is the manager).
        node: u8,
        #[arg(value_enum)]
        state: LinkState,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LinkState {
    Up,
    Down,
}

impl Cluster {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self.command {
            ClusterCommand::Up { nodes } => up(sh, nodes),
            ClusterCommand::Down => down(sh),
            ClusterCommand::Status { stack } => status(sh, stack.as_deref()),
            ClusterCommand::Gossip { wait } => wait_for_whole_gossip(sh, Duration::from_secs(wait)),
            ClusterCommand::Link { node, state } => set_link(sh, node, state),
        }
    }
}

fn require_root(sh: &Shell) -> anyhow::Result<()> {
    let uid = cmd!(sh, "id -u").quiet().read().context("run id -u")?;
    if uid.trim() != "0" {
        bail!(
            "`cargo xtask cluster` creates network namespaces and starts engines: run it as root"
        );
    }
    Ok(())
}

fn status(sh: &Shell, stack: Option<&str>) -> anyhow::Result<()> {
    let nodes = existing_nodes();
    if nodes.is_empty() {
        println!("No cluster is up (`cargo xtask cluster up` starts one).");
        let leftovers = find_leftovers(sh)?;
        if !leftovers.is_empty() {
            println!(
                "Left over from an earlier one (`cargo xtask cluster down` removes them):{}",
                leftovers.describe()
            );
        }
        return Ok(());
    }
    println!(
        "{:<18} {:<14} {:<8} {:<6} {:<8}",
        "NODE", "ADDRESS", "ENGINE", "LINK", "ROLE"
    );
    for node in &nodes {
        let link = node.hub_link();
        let hub = HUB_NAMESPACE;
        let link_state = cmd!(sh, "ip -n {hub} -br link show {link}")
            .quiet()
            .ignore_stderr()
            .read()
            .map(|line| if line.contains("UP") { "up" } else { "down" })
            .unwrap_or("none");
        println!(
            "{:<18} {:<14} {:<8} {:<6} {:<8}",
            node.name(),
            node.address().to_string(),
            if engine_answers(sh, node) {
                "answers"
            } else {
                "silent"
            },
            link_state,
            if node.is_manager() {
                "manager"
            } else {
                "worker"
            }
        );
    }
    let manager = &nodes[0];
    if engine_answers(sh, manager) {
        let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
        println!();
        cmd!(sh, "docker node ls").run()?;
        println!();
        let gossip = gossip_shortfalls(sh);
        if gossip.is_empty() {
            println!("Gossip: every node counts every other in.");
        } else {
            println!("Gossip (wait before placing tasks on these nodes):");
            for line in gossip {
                println!("  {line}");
            }
        }
        println!();
        println!("export DOCKER_HOST={}", manager.docker_host());
    }
    if let Some(stack) = stack {
        println!();
        println!("Overlay networks of stack {stack}, as each node's engine sees them:");
        for line in overlay_report(sh, stack) {
            println!("  {line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_consecutive_addresses_in_the_cluster_network_and_short_link_names() {
        let three = nodes(3).expect("three nodes");
        assert_eq!(three[0].address(), Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(three[2].address(), Ipv4Addr::new(198, 18, 0, 13));
        assert!(three[0].is_manager() && !three[1].is_manager());
        for node in nodes(MAX_NODES).expect("max nodes") {
            assert!(SUBNET.contains(node.address()));
            assert_ne!(node.address(), HOST_ADDRESS);
            // Linux interface names are at most 15 bytes.
            assert!(node.hub_link().len() <= 15, "{}", node.hub_link());
            // A unix socket path is at most 107 bytes.
            assert!(node.socket().as_os_str().len() < 100);
        }
        assert!(HOST_LINK.len() <= 15 && HOST_LINK_PEER.len() <= 15 && BRIDGE.len() <= 15);
        assert!(nodes(0).is_err());
        assert!(nodes(MAX_NODES + 1).is_err());
    }

    #[test]
    fn the_cluster_network_is_outside_dockers_pools_and_ten_slash_eight() {
        let pools: [Ipv4Net; 3] = [
            "172.16.0.0/12".parse().expect("net"),
            "192.168.0.0/16".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ];
        let overlay: Ipv4Net = OVERLAY_POOL.parse().expect("net");
        for pool in pools {
            assert!(!pool.overlaps(&SUBNET), "{pool}");
            assert!(!pool.overlaps(&overlay), "{pool}");
        }
        assert!(!overlay.overlaps(&SUBNET));
    }

    #[test]
    fn node_directories_are_recognised() {
        assert_eq!(node_index_of_dir("node-3"), Some(3));
        assert_eq!(node_index_of_dir("node-0"), None);
        assert_eq!(node_index_of_dir("node-x"), None);
        assert_eq!(node_index_of_dir("other"), None);
    }
}
