//! `cluster up`: each node's engine, started in its own namespaces, and the
//! swarm they form.

use std::time::Duration;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::network::{check_subnet_is_free, create_hub, create_node_network};
use super::*;
use crate::docker::{swarm_nodes, NodeStatus};
use crate::poll::{self, Look};

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

/// The daemon configuration of a node. `bridge: none`: no default bridge
/// (nothing uses it); the overlay networks and `docker_gwbridge` are all a
/// swarm needs. The cluster network is an insecure-registry range: the
/// cluster's registry (`registry.rs`) speaks plain HTTP on it.
pub(super) const DAEMON_JSON: &str = r#"{
  "storage-driver": "overlay2",
  "bridge": "none",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"},
  "insecure-registries": ["198.18.0.0/24"]
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
exec dockerd --config-file {dir}/daemon.json --data-root {dir}/data --exec-root {dir}/exec \
  --pidfile {dir}/dockerd.pid -H unix://{dir}/docker.sock --cgroup-parent /{name}
"#
    )
}

pub(super) fn start_engine(node: &Node) -> anyhow::Result<()> {
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

pub(super) const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn wait_for_engine(sh: &Shell, node: &Node) -> anyhow::Result<()> {
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

pub(super) fn form_swarm(sh: &Shell, nodes: &[Node]) -> anyhow::Result<()> {
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
            let ready = rows
                .iter()
                .filter(|row| row.status == NodeStatus::Ready)
                .count();
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

pub(super) fn engine_answers(sh: &Shell, node: &Node) -> bool {
    let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
    cmd!(sh, "docker version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Tasks pull their images from the cluster's registry.
        assert!(!script.contains("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"));
        assert!(script.contains("--config-file /var/lib/webstack-cluster/node-2/daemon.json"));
    }
}
