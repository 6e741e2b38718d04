//! `cluster down` and what it finds: every namespace, engine, process,
//! cgroup, mount and file of a cluster, also after a crash half-way.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::*;
use crate::poll;

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

pub(super) fn our_processes() -> Vec<(u32, String)> {
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
pub(super) fn our_cgroups() -> Vec<PathBuf> {
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
pub(super) fn processes_in_cgroups(cgroups: &[PathBuf]) -> Vec<u32> {
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

pub(super) fn collect_dirs_deepest_first(dir: &Path, found: &mut Vec<PathBuf>) {
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

/// How long the stack's tasks get to stop once their services are removed.
pub(super) const TASKS_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an engine gets to exit after SIGTERM before it is killed.
pub(super) const ENGINE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long processes naming our directory get to exit after SIGTERM and
/// two rounds of SIGKILL, two seconds apart.
const PROCESSES_STOP_TIMEOUT: Duration = Duration::from_secs(6);
/// How long the processes in our cgroups get after SIGKILL.
const CGROUP_PROCESSES_STOP_TIMEOUT: Duration = Duration::from_millis(1500);

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
    remove_services(sh, &running);
    remove_containers(sh, &running);
    leave_swarm(sh, &running);
    stop_engines(sh, &nodes);
    stop_processes_left(sh);
    remove_network_and_files(sh)?;
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

/// Every service of the swarm, through a manager whose engine answers.
fn remove_services(sh: &Shell, running: &[&Node]) {
    let Some(manager) = running.iter().find(|node| node.is_manager()) else {
        return;
    };
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

/// Waits for each running engine's containers to stop (their services
/// are gone), then removes whatever is left of them.
fn remove_containers(sh: &Shell, running: &[&Node]) {
    let deadline = Instant::now() + TASKS_STOP_TIMEOUT;
    for node in running {
        let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
        // What still runs at the deadline is removed by force below.
        poll::until_true(
            deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(500),
            || {
                cmd!(sh, "docker ps --quiet")
                    .quiet()
                    .ignore_status()
                    .read()
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
            },
        );
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
}

/// Workers first: the manager leaving last keeps the others' leave clean.
fn leave_swarm(sh: &Shell, running: &[&Node]) {
    for node in running.iter().rev() {
        let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
        let _ = cmd!(sh, "docker swarm leave --force")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .ignore_status()
            .run();
    }
}

/// The engines, by pidfile: SIGTERM, then a wait for them to exit.
fn stop_engines(sh: &Shell, nodes: &[Node]) {
    let pids: Vec<u32> = nodes.iter().filter_map(engine_pid).collect();
    signal(sh, "TERM", &pids);
    // An engine still running then is killed with the other processes left.
    poll::until_true(ENGINE_STOP_TIMEOUT, Duration::from_millis(200), || {
        !pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    });
}

/// Processes that outlive their engine: containerd-shims (dockerd stops
/// its containerd, but the shims of containers still running are
/// re-parented and stay), and the containers of an engine that died, in
/// the cgroups under the nodes' `--cgroup-parent`. Anything naming our
/// directory, and every process in our cgroups, is ours.
fn stop_processes_left(sh: &Shell) {
    // SIGTERM first, SIGKILL at each later look; whatever survives it all
    // is reported by `find_leftovers`.
    let mut signal_name = "TERM";
    poll::until_true(PROCESSES_STOP_TIMEOUT, Duration::from_secs(2), || {
        let remaining: Vec<u32> = our_processes().into_iter().map(|(pid, _)| pid).collect();
        signal(sh, signal_name, &remaining);
        signal_name = "KILL";
        remaining.is_empty()
    });
    let mut announced = false;
    poll::until_true(
        CGROUP_PROCESSES_STOP_TIMEOUT,
        Duration::from_millis(500),
        || {
            let in_cgroups = processes_in_cgroups(&our_cgroups());
            if !announced && !in_cgroups.is_empty() {
                eprintln!(
                    "cluster: stopping {} container process(es) whose engine is gone",
                    in_cgroups.len()
                );
                announced = true;
            }
            signal(sh, "KILL", &in_cgroups);
            in_cgroups.is_empty()
        },
    );
    for cgroup in our_cgroups() {
        // Deepest first; a directory with a live process in it stays, and
        // `find_leftovers` reports it.
        let _ = std::fs::remove_dir(&cgroup);
    }
}

/// The namespaces (and with them the links and the bridge), the host's
/// end of the veth pair, and the cluster's directory.
fn remove_network_and_files(sh: &Shell) -> anyhow::Result<()> {
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
    Ok(())
}

pub(super) fn mounts_of_ours() -> anyhow::Result<bool> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(mountinfo.lines().any(|line| {
        line.contains(BASE_DIR) || line.contains(NODE_PREFIX) || line.contains(HUB_NAMESPACE)
    }))
}

pub(super) fn signal(sh: &Shell, signal: &str, pids: &[u32]) {
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

/// The pid in a node's pidfile, if that process still runs dockerd of ours.
pub(super) fn engine_pid(node: &Node) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(node.pidfile())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    is_our_process(&cmdline).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
