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

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::poll::{self, Look};
use stack_tests::netguard::Ipv4Net;
use xshell::{cmd, Shell};

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

/// Everything of a cluster found on this machine, named by the prefix.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub namespaces: Vec<String>,
    pub host_link: bool,
    pub processes: Vec<(u32, String)>,
    pub cgroups: Vec<PathBuf>,
    pub base_dir: bool,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && !self.host_link
            && self.processes.is_empty()
            && self.cgroups.is_empty()
            && !self.base_dir
    }

    pub fn describe(&self) -> String {
        let mut text = String::new();
        for namespace in &self.namespaces {
            let _ = write!(text, "\n  network namespace {namespace}");
        }
        if self.host_link {
            let _ = write!(text, "\n  link {HOST_LINK}");
        }
        for (pid, command) in &self.processes {
            let _ = write!(text, "\n  process {pid}: {command}");
        }
        for cgroup in &self.cgroups {
            let _ = write!(text, "\n  cgroup {}", cgroup.display());
        }
        if self.base_dir {
            let _ = write!(text, "\n  directory {BASE_DIR}");
        }
        text
    }
}

/// Namespaces of ours in `ip netns list` output ("name (id: 3)" or "name").
pub fn our_namespaces(ip_netns_list: &str) -> Vec<String> {
    ip_netns_list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NODE_PREFIX) || *name == HUB_NAMESPACE)
        .map(str::to_owned)
        .collect()
}

/// Whether a process's command line (NUL-separated, as in /proc/PID/cmdline)
/// is one this command started: it names a path under [`BASE_DIR`].
/// dockerd, its containerd, their shims and the node start scripts all do.
pub fn is_our_process(cmdline: &[u8]) -> bool {
    let base = format!("{BASE_DIR}/");
    cmdline
        .split(|byte| *byte == 0)
        .any(|argument| String::from_utf8_lossy(argument).contains(&base))
}

fn our_processes() -> Vec<(u32, String)> {
    let own_pid = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if is_our_process(&cmdline) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, text.trim().to_owned()));
        }
    }
    found.sort();
    found
}

/// Cgroup directories of the nodes' containers (`--cgroup-parent`), deepest
/// first so they can be removed in that order.
fn our_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for controller in controllers.filter_map(Result::ok) {
        let Ok(children) = std::fs::read_dir(controller.path()) else {
            continue;
        };
        for child in children.filter_map(Result::ok) {
            if child.file_name().to_string_lossy().starts_with(NODE_PREFIX) {
                collect_dirs_deepest_first(&child.path(), &mut found);
            }
        }
    }
    found
}

/// The processes in these cgroup directories (`cgroup.procs`).
fn processes_in_cgroups(cgroups: &[PathBuf]) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroups
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| parse_pids(&text))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// One pid a line, as in `cgroup.procs`.
pub fn parse_pids(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

fn collect_dirs_deepest_first(dir: &Path, found: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                collect_dirs_deepest_first(&entry.path(), found);
            }
        }
    }
    found.push(dir.to_path_buf());
}

pub fn find_leftovers(sh: &Shell) -> anyhow::Result<Leftovers> {
    let namespaces = cmd!(sh, "ip netns list")
        .quiet()
        .read()
        .context("list network namespaces (ip netns list)")?;
    Ok(Leftovers {
        namespaces: our_namespaces(&namespaces),
        host_link: Path::new("/sys/class/net").join(HOST_LINK).exists(),
        processes: our_processes(),
        cgroups: our_cgroups(),
        base_dir: Path::new(BASE_DIR).exists(),
    })
}

/// Routes of the host that overlap the cluster's network (none may).
fn check_subnet_is_free() -> anyhow::Result<()> {
    let host = stack_tests::netguard::HostNetwork::read().map_err(anyhow::Error::msg)?;
    if let Some(route) = host
        .routes
        .iter()
        .find(|route| !route.is_default() && route.destination.overlaps(&SUBNET))
    {
        bail!("the cluster's network {SUBNET} is already routed on this host ({route}): it cannot be used here");
    }
    Ok(())
}

pub fn up(sh: &Shell, count: u8) -> anyhow::Result<()> {
    require_root(sh)?;
    let nodes = nodes(count)?;
    let leftovers = find_leftovers(sh)?;
    if !leftovers.is_empty() {
        bail!(
            "a cluster (or what is left of one) exists already:{}\nremove it with `cargo xtask cluster down`",
            leftovers.describe()
        );
    }
    check_subnet_is_free()?;
    let started = Instant::now();
    let outcome = (|| {
        create_hub(sh)?;
        for node in &nodes {
            create_node_network(sh, node)?;
            start_engine(node)?;
        }
        for node in &nodes {
            wait_for_engine(sh, node)?;
        }
        eprintln!(
            "cluster: {count} engine(s) answer after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        form_swarm(sh, &nodes)
    })();
    if let Err(error) = outcome {
        eprintln!("cluster: up failed ({error:#}); removing what it made");
        if let Err(cleanup) = down(sh) {
            eprintln!("cluster: cleaning up failed as well: {cleanup:#}");
        }
        return Err(error);
    }
    let manager = &nodes[0];
    eprintln!(
        "cluster: {count} node(s) up in {:.1}s; manager {} at {}\n  export DOCKER_HOST={}\n  `cargo xtask swarm deploy --cluster` deploys the stack to it, `cargo xtask cluster down` removes it all",
        started.elapsed().as_secs_f64(),
        manager.name(),
        manager.address(),
        manager.docker_host()
    );
    Ok(())
}

fn create_hub(sh: &Shell) -> anyhow::Result<()> {
    let host_address = format!("{HOST_ADDRESS}/{}", SUBNET.prefix);
    let hub = HUB_NAMESPACE;
    cmd!(sh, "ip netns add {hub}").quiet().run()?;
    cmd!(sh, "ip -n {hub} link set lo up").quiet().run()?;
    cmd!(sh, "ip -n {hub} link add {BRIDGE} type bridge")
        .quiet()
        .run()?;
    cmd!(sh, "ip -n {hub} link set {BRIDGE} up").quiet().run()?;
    cmd!(
        sh,
        "ip link add {HOST_LINK} type veth peer name {HOST_LINK_PEER} netns {hub}"
    )
    .quiet()
    .run()?;
    cmd!(
        sh,
        "ip -n {hub} link set {HOST_LINK_PEER} master {BRIDGE} up"
    )
    .quiet()
    .run()?;
    cmd!(sh, "ip addr add {host_address} dev {HOST_LINK}")
        .quiet()
        .run()?;
    cmd!(sh, "ip link set {HOST_LINK} up").quiet().run()?;
    Ok(())
}

fn create_node_network(sh: &Shell, node: &Node) -> anyhow::Result<()> {
    let name = node.name();
    let link = node.hub_link();
    let hub = HUB_NAMESPACE;
    let address = format!("{}/{}", node.address(), SUBNET.prefix);
    cmd!(sh, "ip netns add {name}").quiet().run()?;
    cmd!(
        sh,
        "ip -n {hub} link add {link} type veth peer name eth0 netns {name}"
    )
    .quiet()
    .run()?;
    cmd!(sh, "ip -n {hub} link set {link} master {BRIDGE} up")
        .quiet()
        .run()?;
    cmd!(sh, "ip -n {name} link set lo up").quiet().run()?;
    cmd!(sh, "ip -n {name} addr add {address} dev eth0")
        .quiet()
        .run()?;
    cmd!(sh, "ip -n {name} link set eth0 up").quiet().run()?;
    Ok(())
}

/// The daemon configuration of a node. `bridge: none`: no default bridge
/// (nothing uses it); the overlay networks and `docker_gwbridge` are all a
/// swarm needs.
const DAEMON_JSON: &str = r#"{
  "storage-driver": "overlay2",
  "bridge": "none",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"}
}
"#;

/// The script a node's engine starts with, inside the node's network
/// namespace and a private mount and UTS namespace. It mounts a sysfs of the
/// node's network namespace (dockerd reads its links there) while keeping
/// the host's cgroup mounts, gives the node its own `/etc/docker`,
/// `/run/docker` and `/run/containerd` (else dockerd would use the host
/// engine's containerd and key) and its own hostname, then runs dockerd.
pub fn start_script(node: &Node) -> String {
    let dir = node.dir();
    let dir = dir.display();
    let name = node.name();
    format!(
        r#"set -e
mount --rbind /sys/fs/cgroup {dir}/cgroup-stage
mount -t sysfs sysfs /sys
mount --move {dir}/cgroup-stage /sys/fs/cgroup
mount --bind {dir}/etc-docker /etc/docker
mount --bind {dir}/run-docker /run/docker
mount --bind {dir}/run-containerd /run/containerd
hostname {name}
# No registry: without this every task first tries a pull and waits for DNS to time out.
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
exec dockerd --config-file {dir}/daemon.json --data-root {dir}/data --exec-root {dir}/exec \
  --pidfile {dir}/dockerd.pid -H unix://{dir}/docker.sock --cgroup-parent /{name}
"#
    )
}

fn start_engine(node: &Node) -> anyhow::Result<()> {
    let dir = node.dir();
    for sub in [
        "data",
        "exec",
        "etc-docker",
        "run-docker",
        "run-containerd",
        "cgroup-stage",
    ] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
    }
    for mount_point in ["/etc/docker", "/run/docker", "/run/containerd"] {
        std::fs::create_dir_all(mount_point).with_context(|| format!("create {mount_point}"))?;
    }
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    write("daemon.json", DAEMON_JSON)?;
    write("start.sh", &start_script(node))?;
    let log = std::fs::File::create(node.log())
        .with_context(|| format!("create {}", node.log().display()))?;
    let log_err = log.try_clone().context("duplicate the log file handle")?;
    let namespace = format!("--net=/run/netns/{}", node.name());
    // setsid --fork: the engine is not this process's child (so it never
    // lingers as a zombie of a long-running xtask), outlives it and ignores
    // its terminal.
    let status = Command::new("setsid")
        .args(["--fork", "nsenter"])
        .arg(namespace)
        .args([
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
        ])
        .arg(dir.join("start.sh"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .with_context(|| format!("start the engine of {}", node.name()))?;
    if !status.success() {
        bail!(
            "starting the engine of {} failed ({status}); see {}",
            node.name(),
            node.log().display()
        );
    }
    Ok(())
}

const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(60);

fn wait_for_engine(sh: &Shell, node: &Node) -> anyhow::Result<()> {
    let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
    poll::until(
        ENGINE_START_TIMEOUT,
        Duration::from_millis(200),
        || {
            let answered = cmd!(sh, "docker version")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok();
            Ok(if answered {
                Look::Ready(())
            } else {
                Look::NotYet(())
            })
        },
        |(), _| {
            let log = std::fs::read_to_string(node.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            anyhow::anyhow!(
                "the engine of {} did not answer within {}s; the end of {}:\n{}",
                node.name(),
                ENGINE_START_TIMEOUT.as_secs(),
                node.log().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        },
    )
}

fn form_swarm(sh: &Shell, nodes: &[Node]) -> anyhow::Result<()> {
    let manager = &nodes[0];
    let advertise = manager.address().to_string();
    let listen = format!("{advertise}:2377");
    {
        let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
        cmd!(
            sh,
            "docker swarm init --advertise-addr {advertise} --listen-addr {listen} --default-addr-pool {OVERLAY_POOL} --default-addr-pool-mask-length {OVERLAY_POOL_MASK}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .context("docker swarm init on the manager")?;
    }
    let token = {
        let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
        cmd!(sh, "docker swarm join-token --quiet worker")
            .quiet()
            .read()
            .context("read the worker join token")?
    };
    let manager_address = format!("{}:2377", manager.address());
    let token = token.trim();
    for worker in &nodes[1..] {
        let _engine = sh.push_env("DOCKER_HOST", worker.docker_host());
        let advertise = worker.address().to_string();
        let listen = format!("{advertise}:2377");
        cmd!(
            sh,
            "docker swarm join --token {token} --advertise-addr {advertise} --listen-addr {listen} {manager_address}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("join {} to the swarm", worker.name()))?;
    }
    // Every node Ready, as the manager sees it.
    let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
    poll::until(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let rows = swarm_nodes(sh)?;
            let ready = rows.iter().filter(|row| row.status == "Ready").count();
            Ok(if ready == nodes.len() {
                Look::Ready(())
            } else {
                Look::NotYet((ready, rows))
            })
        },
        |(ready, rows), _| {
            let states: Vec<String> = rows
                .iter()
                .map(|row| format!("{} {}", row.hostname, row.status))
                .collect();
            anyhow::anyhow!(
                "only {ready} of {} nodes are Ready in the swarm: {}",
                nodes.len(),
                states.join(", ")
            )
        },
    )
}

/// Sets every node's link up again (after a test cut one off); best effort.
pub fn connect_all_links(sh: &Shell) {
    let hub = HUB_NAMESPACE;
    for node in existing_nodes() {
        let link = node.hub_link();
        let _ = cmd!(sh, "ip -n {hub} link set {link} up")
            .quiet()
            .ignore_stderr()
            .ignore_status()
            .run();
    }
}

pub use crate::docker::swarm_nodes;

fn engine_answers(sh: &Shell, node: &Node) -> bool {
    let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
    cmd!(sh, "docker version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// The pid in a node's pidfile, if that process still runs dockerd of ours.
fn engine_pid(node: &Node) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(node.pidfile())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    is_our_process(&cmdline).then_some(pid)
}

/// How long the stack's tasks get to stop once their services are removed.
const TASKS_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an engine gets to exit after SIGTERM before it is killed.
const ENGINE_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes everything of the cluster, whatever state it is in. In order:
/// services (so no container shim outlives its engine), swarm membership,
/// engines (SIGTERM by pidfile, their containerd follows), any process still
/// naming our directory, cgroups, namespaces and links, directories.
pub fn down(sh: &Shell) -> anyhow::Result<()> {
    require_root(sh)?;
    let started = Instant::now();
    let nodes = existing_nodes();
    let running: Vec<&Node> = nodes
        .iter()
        .filter(|node| engine_answers(sh, node))
        .collect();
    if let Some(manager) = running.iter().find(|node| node.is_manager()) {
        let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
        let services = cmd!(sh, "docker service ls --quiet")
            .quiet()
            .ignore_status()
            .read()
            .unwrap_or_default();
        let services: Vec<&str> = services.split_whitespace().collect();
        if !services.is_empty() {
            eprintln!("cluster: removing {} service(s)", services.len());
            let _ = cmd!(sh, "docker service rm {services...}")
                .quiet()
                .ignore_stdout()
                .ignore_status()
                .run();
        }
    }
    // Wait for the containers of every node to stop.
    let deadline = Instant::now() + TASKS_STOP_TIMEOUT;
    for node in &running {
        let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
        while Instant::now() < deadline {
            let containers = cmd!(sh, "docker ps --quiet")
                .quiet()
                .ignore_status()
                .read()
                .unwrap_or_default();
            if containers.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let leftover = cmd!(sh, "docker ps --all --quiet")
            .quiet()
            .ignore_status()
            .read()
            .unwrap_or_default();
        let leftover: Vec<&str> = leftover.split_whitespace().collect();
        if !leftover.is_empty() {
            let _ = cmd!(sh, "docker rm --force {leftover...}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .ignore_status()
                .run();
        }
    }
    // Workers first: the manager leaving last keeps the others' leave clean.
    for node in running.iter().rev() {
        let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
        let _ = cmd!(sh, "docker swarm leave --force")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .ignore_status()
            .run();
    }
    // Engines: SIGTERM, wait, SIGKILL what is left.
    let pids: Vec<u32> = nodes.iter().filter_map(engine_pid).collect();
    signal(sh, "TERM", &pids);
    let deadline = Instant::now() + ENGINE_STOP_TIMEOUT;
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    // dockerd stops its containerd; shims of containers that were still
    // running are re-parented and would stay: anything still naming our
    // directory is ours and goes now.
    for attempt in 0..3 {
        let remaining: Vec<u32> = our_processes().into_iter().map(|(pid, _)| pid).collect();
        if remaining.is_empty() {
            break;
        }
        signal(sh, if attempt == 0 { "TERM" } else { "KILL" }, &remaining);
        std::thread::sleep(Duration::from_secs(2));
    }
    // Containers of an engine that died (crashed, killed) still run, in
    // the cgroups under the nodes' `--cgroup-parent`: every process there
    // is a container of ours.
    for attempt in 0..3 {
        let in_cgroups = processes_in_cgroups(&our_cgroups());
        if in_cgroups.is_empty() {
            break;
        }
        if attempt == 0 {
            eprintln!(
                "cluster: stopping {} container process(es) whose engine is gone",
                in_cgroups.len()
            );
        }
        signal(sh, "KILL", &in_cgroups);
        std::thread::sleep(Duration::from_millis(500));
    }
    for cgroup in our_cgroups() {
        // Deepest first; a directory with a live process in it stays, and
        // is reported below.
        let _ = std::fs::remove_dir(&cgroup);
    }
    let namespaces = cmd!(sh, "ip netns list")
        .quiet()
        .read()
        .context("ip netns list")?;
    for namespace in our_namespaces(&namespaces) {
        cmd!(sh, "ip netns delete {namespace}")
            .quiet()
            .run()
            .with_context(|| format!("delete network namespace {namespace}"))?;
    }
    if Path::new("/sys/class/net").join(HOST_LINK).exists() {
        // Deleting the hub namespace deletes its end, and so this one, a
        // moment later; do not wait for that.
        let _ = cmd!(sh, "ip link delete {HOST_LINK}")
            .quiet()
            .ignore_stderr()
            .ignore_status()
            .run();
    }
    if Path::new(BASE_DIR).exists() {
        std::fs::remove_dir_all(BASE_DIR).with_context(|| format!("remove {BASE_DIR}"))?;
    }
    let leftovers = find_leftovers(sh)?;
    if !leftovers.is_empty() {
        bail!(
            "cluster down could not remove everything:{}\nrun `cargo xtask cluster down` again",
            leftovers.describe()
        );
    }
    if mounts_of_ours()? {
        bail!("mounts naming {BASE_DIR} or {NODE_PREFIX} remain in /proc/self/mountinfo");
    }
    eprintln!(
        "cluster: down; nothing of it is left ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn mounts_of_ours() -> anyhow::Result<bool> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(mountinfo.lines().any(|line| {
        line.contains(BASE_DIR) || line.contains(NODE_PREFIX) || line.contains(HUB_NAMESPACE)
    }))
}

fn signal(sh: &Shell, signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let flag = format!("-{signal}");
    let _ = cmd!(sh, "kill {flag} {pids...}")
        .quiet()
        .ignore_stderr()
        .ignore_status()
        .run();
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

/// The overlay network every node of a swarm is part of, whatever runs on
/// it: its peers are the nodes that node's gossip counts in.
const EVERY_NODES_NETWORK: &str = "ingress";

/// What each node's gossip lacks: one line per node that does not count
/// every node of the cluster among its peers (or whose engine does not say).
fn gossip_shortfalls(sh: &Shell) -> Vec<String> {
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
const GOSSIP_STABLE_FOR: Duration = Duration::from_secs(3);

/// `cluster gossip --wait`: polls until every node's gossip has counted
/// every node in for [`GOSSIP_STABLE_FOR`], printing how long that took,
/// or fails with what is missing.
fn wait_for_whole_gossip(sh: &Shell, timeout: Duration) -> anyhow::Result<()> {
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
fn running_endpoints_of(
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

fn set_link(sh: &Shell, index: u8, state: LinkState) -> anyhow::Result<()> {
    require_root(sh)?;
    let node = existing_nodes()
        .into_iter()
        .find(|node| node.index == index)
        .with_context(|| format!("there is no node {index} (`cargo xtask cluster status`)"))?;
    let link = node.hub_link();
    let hub = HUB_NAMESPACE;
    let state = match state {
        LinkState::Up => "up",
        LinkState::Down => "down",
    };
    cmd!(sh, "ip -n {hub} link set {link} {state}")
        .quiet()
        .run()
        .with_context(|| format!("set the link of {} {state}", node.name()))?;
    eprintln!("cluster: {} link {state}", node.name());
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
    fn leftover_namespaces_are_found_by_prefix_only() {
        let listed =
            "webstack-node-2 (id: 3)\nwebstack-hub (id: 0)\nsomeone-else\nwebstack-node-1\n";
        assert_eq!(
            our_namespaces(listed),
            vec!["webstack-node-2", "webstack-hub", "webstack-node-1"]
        );
        assert!(our_namespaces("").is_empty());
    }

    #[test]
    fn our_processes_are_those_naming_the_cluster_directory() {
        assert!(is_our_process(
            b"dockerd\0--data-root\0/var/lib/webstack-cluster/node-1/data\0"
        ));
        assert!(is_our_process(
            b"containerd-shim-runc-v2\0-address\0/var/lib/webstack-cluster/node-2/exec/containerd/containerd.sock\0"
        ));
        assert!(!is_our_process(b"/usr/sbin/dockerd\0-H\0fd://\0"));
        assert!(!is_our_process(b"less\0/var/lib/webstack-clusterfoo\0"));
    }

    #[test]
    fn cgroup_procs_are_read_one_pid_a_line() {
        assert_eq!(parse_pids("12\n345\n\n"), vec![12, 345]);
        assert!(parse_pids("").is_empty());
    }

    #[test]
    fn node_directories_are_recognised() {
        assert_eq!(node_index_of_dir("node-3"), Some(3));
        assert_eq!(node_index_of_dir("node-0"), None);
        assert_eq!(node_index_of_dir("node-x"), None);
        assert_eq!(node_index_of_dir("other"), None);
    }

    #[test]
    fn the_start_script_keeps_cgroups_and_isolates_the_node() {
        let script = start_script(&Node { index: 2 });
        let sysfs = script.find("mount -t sysfs").expect("sysfs");
        let stage = script.find("mount --rbind /sys/fs/cgroup").expect("stage");
        let back = script.find("mount --move").expect("move back");
        assert!(stage < sysfs && sysfs < back);
        for private in ["/etc/docker", "/run/docker", "/run/containerd"] {
            assert!(script.contains(&format!("etc-docker {private}")) || script.contains(private));
        }
        assert!(script.contains("hostname webstack-node-2"));
        assert!(script.contains("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"));
        assert!(script.contains("--config-file /var/lib/webstack-cluster/node-2/daemon.json"));
    }
}
