//! Samples memory (RSS) and CPU of the stack's containers while a benchmark
//! row runs, from their cgroup files, in a background thread.
//!
//! The Docker processes on the host that carry the stack's traffic and logs
//! (docker-proxy of its published port, the containerd-shim of each of its
//! containers, dockerd) are sampled for CPU too, from `/proc/<pid>/stat`.
//!
//! cgroup files rather than `docker stats`: one `docker stats --no-stream`
//! call takes about two seconds (it waits for two readings), longer than a
//! smoke row, while reading a cgroup file takes microseconds. The files are
//! found the way the kernel describes them, not from a guessed layout:
//! `/proc/<container pid>/cgroup` gives each controller's cgroup path and
//! `/proc/self/mountinfo` where that hierarchy is mounted. Both cgroup v1
//! (this machine: `memory` and `cpuacct` controllers) and v2 (unified) work.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use xshell::Shell;

use super::report::{ContainerUsage, ProcessUsage};
use crate::docker::deployment::Deployment;

/// Often enough to catch a peak within a short smoke row, rarely enough that
/// reading ~10 files costs nothing next to the load.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// Where one container's memory and CPU counters live.
#[derive(Debug, Clone)]
pub struct WatchedContainer {
    pub name: String,
    pub service: String,
    /// The container's main process on the host (its parent is the
    /// container's containerd-shim).
    pub pid: u32,
    /// `memory.stat`: resident anonymous memory (`total_rss` in v1, `anon` in v2).
    memory_stat: PathBuf,
    cpu: CpuCounter,
}

/// A group of host processes whose CPU time is summed, e.g. every
/// containerd-shim of the stack.
#[derive(Debug, Clone)]
pub struct WatchedProcesses {
    pub name: String,
    pids: Vec<u32>,
}

/// What one row used: each container, and each group of host processes.
pub struct Usage {
    pub containers: Vec<ContainerUsage>,
    pub host_processes: Vec<ProcessUsage>,
}

/// The Docker processes on the host that work for the stack: the
/// docker-proxy processes publishing `published_port` (none when traffic
/// does not go through the userland proxy), the containerd-shim parent of
/// each container, and dockerd (which serves every container on the
/// machine, so other projects' activity shows up in it too).
pub fn docker_host_processes(
    containers: &[WatchedContainer],
    published_port: Option<u16>,
) -> Vec<WatchedProcesses> {
    let mut proxies = Vec::new();
    let mut daemons = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
                continue;
            };
            match comm.trim_end() {
                "dockerd" => daemons.push(pid),
                "docker-proxy" => {
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if published_port.is_some_and(|port| proxies_port(&cmdline, port)) {
                        proxies.push(pid);
                    }
                }
                _ => {}
            }
        }
    }
    let mut shims: Vec<u32> = containers
        .iter()
        .filter_map(|container| {
            let stat = fs::read_to_string(format!("/proc/{}/stat", container.pid)).ok()?;
            parse_stat(&stat).map(|stat| stat.parent)
        })
        .collect();
    shims.sort_unstable();
    shims.dedup();
    let daemons = the_engines_daemon(daemons);
    [
        ("docker-proxy", proxies),
        ("containerd-shim", shims),
        ("dockerd", daemons),
    ]
    .into_iter()
    .map(|(name, pids)| WatchedProcesses {
        name: name.to_string(),
        pids,
    })
    .collect()
}

/// The dockerd the docker CLI talks to, when several run on the machine
/// (e.g. extra engines with their own `--pidfile` and socket): the one whose
/// pid is in the default pidfile, `/var/run/docker.pid`, unless `DOCKER_HOST`
/// points the CLI elsewhere. Otherwise every dockerd found.
fn the_engines_daemon(daemons: Vec<u32>) -> Vec<u32> {
    if daemons.len() <= 1 || std::env::var_os("DOCKER_HOST").is_some() {
        return daemons;
    }
    let default_daemon = fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .filter(|pid| daemons.contains(pid));
    match default_daemon {
        Some(pid) => vec![pid],
        None => daemons,
    }
}

/// Whether a docker-proxy command line (NUL-separated) publishes `port`:
/// `docker-proxy -proto tcp -host-ip 127.0.0.1 -host-port 8070 ...`.
fn proxies_port(cmdline: &[u8], port: u16) -> bool {
    let port = port.to_string();
    let arguments: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
    arguments
        .windows(2)
        .any(|pair| pair[0] == b"-host-port" && pair[1] == port.as_bytes())
}

/// The fields of `/proc/<pid>/stat` the sampler uses.
struct ProcessStat {
    parent: u32,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

/// Parses `pid (comm) state ppid … utime stime …`; comm may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcessStat> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcessStat {
        parent,
        cpu_ticks: utime + stime,
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`,
/// 100 on Linux unless the kernel says otherwise).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// CPU ticks of each pid that still exists (None for one that is gone).
fn read_process_ticks(group: &WatchedProcesses) -> Vec<Option<u64>> {
    group
        .pids
        .iter()
        .map(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .map(|stat| stat.cpu_ticks)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum CpuCounter {
    /// cgroup v1 `cpuacct.usage`: nanoseconds.
    CpuacctUsageNanoseconds(PathBuf),
    /// cgroup v2 `cpu.stat`, line `usage_usec`: microseconds.
    CpuStatUsageMicroseconds(PathBuf),
}

/// The running containers of every service of a deployment, with their
/// cgroup files.
pub fn stack_containers(
    sh: &Shell,
    deployment: &dyn Deployment,
) -> anyhow::Result<Vec<WatchedContainer>> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    let mut containers = Vec::new();
    for service in crate::stack::stack().services {
        for container in deployment.containers(sh, service.name)? {
            let name = container.short_name();
            let pid = container.state.pid;
            if pid == 0 {
                bail!("container {name} has no main process (is it running?)");
            }
            let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .with_context(|| format!("read the cgroups of container {name} (pid {pid})"))?;
            let (memory_stat, cpu) = cgroup_files(&cgroups, &mounts).with_context(|| {
                format!("find the memory and CPU cgroup files of container {name}")
            })?;
            containers.push(WatchedContainer {
                name: name.to_string(),
                service: service.name.to_string(),
                pid,
                memory_stat,
                cpu,
            });
        }
    }
    if containers.is_empty() {
        bail!(
            "no running containers in {:?}: start the stack with `cargo xtask up` or pass the right --project",
            deployment.name()
        );
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(containers)
}

/// Maps a process's `/proc/<pid>/cgroup` to its `memory.stat` and CPU usage
/// file, using the cgroup mounts listed in `mountinfo`.
fn cgroup_files(cgroups: &str, mountinfo: &str) -> anyhow::Result<(PathBuf, CpuCounter)> {
    let mut memory_dir = None;
    let mut cpuacct_dir = None;
    let mut unified_dir = None;
    for line in cgroups.lines() {
        // hierarchy-id:controller-list:path
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            unified_dir = mounted_path(mountinfo, None, path);
        }
        for controller in controllers.split(',') {
            match controller {
                "memory" => memory_dir = mounted_path(mountinfo, Some("memory"), path),
                "cpuacct" => cpuacct_dir = mounted_path(mountinfo, Some("cpuacct"), path),
                _ => {}
            }
        }
    }
    match (memory_dir, cpuacct_dir, unified_dir) {
        (Some(memory), Some(cpuacct), _) => Ok((
            memory.join("memory.stat"),
            CpuCounter::CpuacctUsageNanoseconds(cpuacct.join("cpuacct.usage")),
        )),
        (_, _, Some(unified)) if unified.join("memory.stat").exists() => Ok((
            unified.join("memory.stat"),
            CpuCounter::CpuStatUsageMicroseconds(unified.join("cpu.stat")),
        )),
        _ => bail!("no mounted memory and cpuacct (cgroup v1) or unified (cgroup v2) hierarchy holds this process; is /sys/fs/cgroup mounted?"),
    }
}

/// Where cgroup `path` of the hierarchy with `controller` (None: the v2
/// unified hierarchy) is visible, from mountinfo lines such as
/// `35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory`.
fn mounted_path(mountinfo: &str, controller: Option<&str>, path: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((mount_fields, filesystem_fields)) = line.split_once(" - ") else {
            continue;
        };
        let mount_fields: Vec<&str> = mount_fields.split(' ').collect();
        let filesystem_fields: Vec<&str> = filesystem_fields.split(' ').collect();
        let (Some(root), Some(mount_point)) = (mount_fields.get(3), mount_fields.get(4)) else {
            continue;
        };
        let matches = match (controller, filesystem_fields.first()) {
            (None, Some(&"cgroup2")) => true,
            (Some(controller), Some(&"cgroup")) => filesystem_fields
                .get(2)
                .is_some_and(|options| options.split(',').any(|option| option == controller)),
            _ => false,
        };
        if !matches {
            continue;
        }
        // A mount of a sub-tree (root other than "/") only shows paths below it.
        let relative = if *root == "/" {
            Some(path)
        } else {
            path.strip_prefix(root)
        };
        if let Some(relative) = relative {
            return Some(Path::new(mount_point).join(relative.trim_start_matches('/')));
        }
    }
    None
}

fn read_rss_bytes(memory_stat: &Path) -> anyhow::Result<u64> {
    let text = fs::read_to_string(memory_stat)
        .with_context(|| format!("read {}", memory_stat.display()))?;
    // v1: total_rss includes child cgroups; v2: anon.
    for key in ["total_rss", "anon"] {
        if let Some(value) = stat_value(&text, key) {
            return Ok(value);
        }
    }
    bail!("{} has neither total_rss nor anon", memory_stat.display())
}

fn read_cpu_nanoseconds(counter: &CpuCounter) -> anyhow::Result<u64> {
    match counter {
        CpuCounter::CpuacctUsageNanoseconds(path) => fs::read_to_string(path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parse {}", path.display())),
        CpuCounter::CpuStatUsageMicroseconds(path) => {
            let text =
                fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            stat_value(&text, "usage_usec")
                .map(|microseconds| microseconds * 1000)
                .with_context(|| format!("{} has no usage_usec", path.display()))
        }
    }
}

fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

/// A running background sampler; `finish` stops it and returns the usage.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<anyhow::Result<Usage>>,
}

impl Sampler {
    /// Returns once the thread has read where the counters start and taken
    /// its first sample, so the measured window is exactly from here to
    /// `finish`, however late a loaded machine runs the thread.
    pub fn start(containers: &[WatchedContainer], processes: &[WatchedProcesses]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let containers = containers.to_vec();
        let processes = processes.to_vec();
        let stop_flag = Arc::clone(&stop);
        let (started, ready) = std::sync::mpsc::channel();
        let handle = thread::spawn(move || {
            sample_until_stopped(&containers, &processes, &stop_flag, started)
        });
        // An error ends the thread before it sends, and `finish` returns it.
        let _ = ready.recv();
        Sampler { stop, handle }
    }

    pub fn finish(self) -> anyhow::Result<Usage> {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the thread from its pause so the measured window ends now.
        self.handle.thread().unpark();
        match self.handle.join() {
            Ok(result) => result,
            Err(_) => bail!("the container sampling thread panicked"),
        }
    }
}

fn sample_until_stopped(
    containers: &[WatchedContainer],
    processes: &[WatchedProcesses],
    stop: &AtomicBool,
    started: std::sync::mpsc::Sender<()>,
) -> anyhow::Result<Usage> {
    let ticks_per_second = clock_ticks_per_second();
    let window_started = Instant::now();
    let cpu_at_start = containers
        .iter()
        .map(|container| read_cpu_nanoseconds(&container.cpu))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let ticks_at_start: Vec<Vec<Option<u64>>> = processes.iter().map(read_process_ticks).collect();
    let mut peak_rss = vec![0u64; containers.len()];
    let mut samples = 0u32;
    let mut sample = |peak_rss: &mut [u64]| -> anyhow::Result<()> {
        for (peak, container) in peak_rss.iter_mut().zip(containers) {
            *peak = (*peak).max(read_rss_bytes(&container.memory_stat)?);
        }
        samples += 1;
        Ok(())
    };
    sample(&mut peak_rss)?;
    // `start` waits for this; it may have gone (a panic), which changes nothing here.
    let _ = started.send(());
    loop {
        // park_timeout rather than sleep: `finish` unparks, so the window
        // ends when the row does, not up to one interval later.
        thread::park_timeout(SAMPLE_INTERVAL);
        // Sample once more after the stop flag, so a row shorter than the
        // interval still gets a reading taken under load.
        let stopping = stop.load(Ordering::Relaxed);
        sample(&mut peak_rss)?;
        if stopping {
            break;
        }
    }
    let elapsed_nanoseconds = window_started.elapsed().as_nanos().max(1) as f64;
    let mut usage = Vec::with_capacity(containers.len());
    for ((container, start), peak) in containers.iter().zip(cpu_at_start).zip(peak_rss) {
        let used = read_cpu_nanoseconds(&container.cpu)?.saturating_sub(start);
        usage.push(ContainerUsage {
            name: container.name.clone(),
            service: container.service.clone(),
            peak_rss_mib: peak as f64 / (1024.0 * 1024.0),
            mean_cpu_percent: used as f64 / elapsed_nanoseconds * 100.0,
            samples,
            cpu_ms: used as f64 / 1e6,
            // Per request: filled in once the row's request count is known.
            cpu_us_per_request: 0.0,
        });
    }
    let host_processes = processes
        .iter()
        .zip(ticks_at_start)
        .map(|(group, start)| {
            // A process that ended (or started) during the row counts nothing.
            let ticks: u64 = read_process_ticks(group)
                .into_iter()
                .zip(start)
                .filter_map(|(end, start)| Some(end?.saturating_sub(start?)))
                .sum();
            ProcessUsage {
                name: group.name.clone(),
                processes: group.pids.len() as u32,
                cpu_ms: ticks as f64 * 1000.0 / ticks_per_second as f64,
                cpu_us_per_request: 0.0,
            }
        })
        .collect();
    Ok(Usage {
        containers: usage,
        host_processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn cgroup_v1_files_come_from_the_memory_and_cpuacct_mounts() -> anyhow::Result<()> {
        let cgroups = "4:memory:/docker/abc\n2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/\n";

        let (memory_stat, cpu) = cgroup_files(cgroups, MOUNTINFO_V1)?;

        assert_eq!(
            memory_stat,
            PathBuf::from("/sys/fs/cgroup/memory/docker/abc/memory.stat")
        );
        let CpuCounter::CpuacctUsageNanoseconds(cpu) = cpu else {
            panic!("expected cpuacct.usage, got {cpu:?}");
        };
        assert_eq!(
            cpu,
            PathBuf::from("/sys/fs/cgroup/cpuacct/docker/abc/cpuacct.usage")
        );
        Ok(())
    }

    #[test]
    fn combined_cpu_cpuacct_controllers_are_matched_by_mount_options() {
        let mountinfo =
            "30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";

        let path = mounted_path(mountinfo, Some("cpuacct"), "/docker/abc");

        assert_eq!(
            path,
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/docker/abc"))
        );
    }

    #[test]
    fn a_sub_tree_mount_strips_its_root_from_the_cgroup_path() {
        let mountinfo = "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

        assert_eq!(
            mounted_path(mountinfo, Some("memory"), "/outer/docker/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/docker/abc"))
        );
        assert_eq!(
            mounted_path(mountinfo, Some("memory"), "/elsewhere/abc"),
            None
        );
    }

    #[test]
    fn stat_values_are_read_by_exact_key() {
        let stat = "rss 100\ntotal_rss_huge 7\ntotal_rss 4096\n";

        assert_eq!(stat_value(stat, "total_rss"), Some(4096));
        assert_eq!(stat_value(stat, "anon"), None);
    }

    #[test]
    fn sampler_reads_this_machines_own_cgroup_files() -> anyhow::Result<()> {
        // Real files: the cgroup of this test process stands in for a container.
        let cgroups = fs::read_to_string("/proc/self/cgroup")?;
        let mounts = fs::read_to_string("/proc/self/mountinfo")?;
        let (memory_stat, cpu) = cgroup_files(&cgroups, &mounts)?;
        let container = WatchedContainer {
            name: String::from("this-test"),
            service: String::from("test"),
            pid: std::process::id(),
            memory_stat,
            cpu,
        };
        let this_process = WatchedProcesses {
            name: String::from("this-process"),
            pids: vec![std::process::id()],
        };

        let sampler = Sampler::start(
            std::slice::from_ref(&container),
            std::slice::from_ref(&this_process),
        );
        let busy_until = Instant::now() + Duration::from_millis(300);
        let mut spin = 0u64;
        while Instant::now() < busy_until {
            spin = spin.wrapping_add(1);
        }
        let Usage {
            containers: usage,
            host_processes,
        } = sampler.finish()?;

        assert!(spin > 0);
        assert_eq!(usage.len(), 1);
        assert!(usage[0].samples >= 2, "{usage:?}");
        assert!(usage[0].peak_rss_mib > 0.0, "{usage:?}");
        assert!(usage[0].mean_cpu_percent > 0.0, "{usage:?}");
        assert!(usage[0].cpu_ms > 0.0, "{usage:?}");
        // 300 ms of spinning, in 10 ms ticks (fewer when other work shares the cores).
        assert_eq!(host_processes.len(), 1);
        assert!(host_processes[0].cpu_ms > 0.0, "{host_processes:?}");
        Ok(())
    }

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (odd (name) x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1234 1000 200";

        let parsed = parse_stat(stat).map(|stat| (stat.parent, stat.cpu_ticks));

        assert_eq!(parsed, Some((17, 300)));
    }

    #[test]
    fn docker_proxy_is_matched_by_its_host_port_argument() {
        let cmdline = b"/usr/bin/docker-proxy\0-proto\0tcp\0-host-ip\x00127.0.0.1\0-host-port\08070\0-container-ip\x00172.18.0.2\0-container-port\x008070\0";

        assert!(proxies_port(cmdline, 8070));
        assert!(!proxies_port(cmdline, 80));
    }
}
