//! Slow readers from many addresses at the front nginx: the attack that once
//! took the proxy to its memory limit and got a worker OOM-killed, replayed.
//!
//! 4,000 connections, 125 from each of 32 client addresses (so within every
//! per-address limit), each pipelining `GET`s of a 64 KiB cache value and
//! reading 256 bytes every 4 s. The clients sit on the proxy container's own
//! loopback, 127.0.0.2 to 127.0.0.33, and connect to 127.0.0.1:80 in its
//! network namespace: nginx sees 32 addresses, as it would 32 remote
//! machines, and no Docker userland proxy stands between.

use super::*;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Client addresses, 127.0.0.2 onwards.
const CLIENT_ADDRESSES: u8 = 32;
/// Under the 256 requests in progress an address may have (front-server.conf):
/// nginx works through a connection's pipelined requests one at a time.
const CONNECTIONS_PER_ADDRESS: usize = 125;
const PIPELINED_GETS: usize = 8;
/// What a slow reader reads at a time, and how often.
const READ_BYTES: usize = 256;
const READ_EVERY: Duration = Duration::from_secs(4);
/// How long the readers read: twice nginx's send_timeout (10 s).
const ATTACK: Duration = Duration::from_secs(20);
/// The connections are opened over this long, as clients arrive, rather
/// than in one burst.
const CONNECTING: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The cache's largest value.
const VALUE_BYTES: usize = 64 * 1024;
/// `/proc/net/sockstat` counts TCP memory in pages.
const SOCKSTAT_PAGE_BYTES: u64 = 4096;
/// Bystander requests during the attack, and the bound on each answer: it
/// catches a hang, it does not measure speed.
const BYSTANDER_REQUESTS: usize = 20;
const BYSTANDER_BOUND: Duration = Duration::from_secs(5);
/// What the proxy's log must not say after the attack.
const FORBIDDEN_IN_LOG: [&str; 8] = [
    "[crit]",
    "[alert]",
    "[emerg]",
    "No space left",
    "buffered to a temporary file",
    "worker_connections are not enough",
    "exited on signal",
    // The back nginx's listen backlog was full.
    "Resource temporarily unavailable",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn slow_readers_from_32_addresses_leave_the_proxy_within_its_memory_and_kill_no_worker() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    let since = unix_now().floor() - 1.0;
    let proxy = stack.single(Service::Proxy);
    let pid = proxy.state.pid;
    assert_ne!(pid, 0, "the proxy container runs");
    let target = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 80));
    netguard::check_destination(target.ip(), &[]).unwrap_or_else(|refused| panic!("{refused}"));
    let open_files = stack_tests::netns::raise_open_files_limit();
    let connections = usize::from(CLIENT_ADDRESSES) * CONNECTIONS_PER_ADDRESS;
    assert!(
        open_files > connections as u64 + 256,
        "{connections} connections need more open files than this process may have ({open_files})"
    );

    // The largest value the cache takes, under a key of this test's own.
    let key = format!("e2e-slow-readers-{}", std::process::id());
    let cache_url = format!("{}/api/cache/{key}", stack.url);
    let stored = client
        .put(format!("{cache_url}?ttl=120"))
        .body(vec![b'v'; VALUE_BYTES])
        .send()
        .await
        .expect("PUT the 64 KiB value");
    assert_eq!(stored.status().as_u16(), 204, "PUT the 64 KiB value");

    // What must not change, and what the memory is measured against.
    let cgroup = MemoryCgroup::of_process(pid);
    let limit = cgroup.limit_bytes();
    let oom_kills_before = cgroup.oom_kills();
    let limit_hits_before = cgroup.limit_hits();
    let processes_before = container_pids(&proxy.id);
    let workers_before = nginx_workers(&processes_before);
    assert!(
        !workers_before.is_empty(),
        "no nginx worker among the proxy's processes {processes_before:?}"
    );
    let tcp_before = host_tcp_memory().0;

    // The sockets, created in the proxy's network namespace (a socket stays
    // in the namespace of the thread that created it).
    let sockets = stack_tests::netns::in_network_namespace_of(pid, move || {
        (0..connections)
            .map(|_| TcpSocket::new_v4())
            .collect::<std::io::Result<Vec<TcpSocket>>>()
    })
    .expect("create the sockets in the proxy's network namespace");

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, cgroup) = (sampling.clone(), cgroup.clone());
        std::thread::spawn(move || sample(&cgroup, pid, &sampling))
    };

    let started = tokio::time::Instant::now();
    let deadline = started + ATTACK;
    let request =
        format!("GET /api/cache/{key} HTTP/1.1\r\nHost: localhost\r\n\r\n").repeat(PIPELINED_GETS);
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, socket)| {
            let request = request.clone();
            let address =
                Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(CLIENT_ADDRESSES)) as u8);
            let start = started + CONNECTING.mul_f64(index as f64 / connections as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(start).await;
                slow_reader(socket, address, target, request, deadline).await
            })
        })
        .collect();

    // The bystander, through the published port, while the readers read.
    let bystander = {
        let url = format!("{}/", stack.url);
        tokio::spawn(async move { bystander(&url, started).await })
    };

    let mut outcomes = Vec::with_capacity(connections);
    for reader in readers {
        outcomes.push(reader.await.expect("slow reader task"));
    }
    let bystander_answers = bystander.await.expect("bystander task");
    // At the deadline, every reader still holding its connection: nginx's
    // side of them, and the kernel's TCP memory.
    let at_deadline = port_80_states(pid);
    let (tcp_at_deadline, orphans_at_deadline) = host_tcp_memory();
    sampling.store(false, Ordering::Relaxed);
    let peaks = sampler.join().expect("sampler thread");

    // Close every connection (unread data: the kernel resets them at once)
    // and wait until nginx's side of them is gone too.
    let mut tally_end: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_statuses: BTreeMap<String, usize> = BTreeMap::new();
    let (mut read_anything, mut saw_503, mut bytes_read) = (0, 0, 0);
    for outcome in outcomes {
        *tally_end.entry(outcome.end.to_string()).or_default() += 1;
        *first_statuses
            .entry(outcome.first_status.unwrap_or_else(|| "none".into()))
            .or_default() += 1;
        read_anything += usize::from(outcome.bytes > 0);
        saw_503 += usize::from(outcome.saw_503);
        bytes_read += outcome.bytes;
        drop(outcome.stream);
    }
    let closing = Instant::now();
    let left = loop {
        let states = port_80_states(pid);
        let left: usize = states
            .iter()
            .filter(|(state, _)| **state != "TIME_WAIT")
            .map(|(_, count)| count)
            .sum();
        if left == 0 || closing.elapsed() > Duration::from_secs(10) {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let closed_after = closing.elapsed();
    let (tcp_after, _) = host_tcp_memory();

    // The proxy answers again, and the test's key goes.
    let recovered = wait_for_200(&client, &format!("{}/", stack.url)).await;
    let deleted = client
        .delete(&cache_url)
        .send()
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| error.to_string());

    let processes_after = container_pids(&proxy.id);
    let workers_after = nginx_workers(&processes_after);
    let oom_kills_after = cgroup.oom_kills();
    let limit_hits_after = cgroup.limit_hits();
    let log = log_since(&proxy.id, since);
    let log_problems: Vec<&str> = log
        .lines()
        .filter(|line| FORBIDDEN_IN_LOG.iter().any(|bad| line.contains(bad)))
        .collect();
    // The back nginx's complaints meanwhile, by level: it must have had the
    // connections the front's requests in progress need.
    let balancer_log = log_since(&stack.single(Service::Balancer).id, since);
    let mut balancer_complaints: BTreeMap<&str, usize> = BTreeMap::new();
    for line in balancer_log.lines() {
        if let Some(level) = ["[warn]", "[error]", "[crit]", "[alert]", "[emerg]"]
            .into_iter()
            .find(|level| line.contains(level))
        {
            *balancer_complaints.entry(level).or_default() += 1;
        }
    }

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let pages_mib = |pages: u64| mib(pages * SOCKSTAT_PAGE_BYTES);
    let mut bystander_tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (outcome, _) in &bystander_answers {
        *bystander_tally.entry(outcome.as_str()).or_default() += 1;
    }
    let slowest_bystander = bystander_answers
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "[e2e] {connections} slow readers ({CONNECTIONS_PER_ADDRESS} from each of {CLIENT_ADDRESSES} addresses, {PIPELINED_GETS} pipelined GETs of {} KiB, {READ_BYTES} bytes read every {READ_EVERY:?}) for {ATTACK:?}",
        VALUE_BYTES / 1024
    );
    eprintln!(
        "[e2e] proxy memory: peak {:.1} MiB at {:.1?} of the limit's {:.0} MiB ({} samples every {SAMPLE_EVERY:?}; the kernel's peak since the container started {}), reached the limit {} times, OOM kills {oom_kills_before} before and {oom_kills_after} after",
        mib(peaks.memory_bytes),
        peaks.memory_at,
        mib(limit),
        peaks.samples,
        cgroup
            .kernel_peak_bytes()
            .map_or("unknown".to_string(), |peak| format!("{:.1} MiB", mib(peak))),
        limit_hits_after.saturating_sub(limit_hits_before)
    );
    eprintln!(
        "[e2e] host TCP memory: {:.1} MiB before, peak {:.1} MiB at {:.1?} ({} orphaned sockets at most), {:.1} MiB at the deadline with {orphans_at_deadline} orphans, {:.1} MiB after closing",
        pages_mib(tcp_before),
        pages_mib(peaks.tcp_pages),
        peaks.tcp_at,
        peaks.orphans,
        pages_mib(tcp_at_deadline),
        pages_mib(tcp_after),
    );
    eprintln!(
        "[e2e] connections: {read_anything} read something ({bytes_read} bytes in all), {saw_503} saw a 503, first status lines {first_statuses:?}; as the readers saw them end {tally_end:?}"
    );
    eprintln!(
        "[e2e] nginx's side of 127.0.0.1:80: at most {} established at once; at the deadline {at_deadline:?} (FIN_WAIT1: closed by nginx, its FIN queued behind an answer the reader never read far enough to get); {left:?} left {closed_after:.1?} after the readers closed",
        peaks.established
    );
    eprintln!(
        "[e2e] bystander's {} GET / during the attack: {bystander_tally:?}, slowest {slowest_bystander:.2?}; GET / afterwards {recovered:?}; DELETE of the key {deleted:?}",
        bystander_answers.len()
    );
    eprintln!(
        "[e2e] proxy processes {processes_before:?} → {processes_after:?}, workers {workers_before:?} → {workers_after:?}; log problems: {log_problems:#?}; the balancer's log meanwhile: {balancer_complaints:?}"
    );

    for level in ["[crit]", "[alert]", "[emerg]"] {
        assert!(
            !balancer_complaints.contains_key(level),
            "the balancer's log: {balancer_complaints:?}"
        );
    }
    assert!(
        read_anything >= 1_000,
        "only {read_anything} of {connections} connections read a byte: the attack did not reach nginx, the test proved nothing ({tally_end:?})"
    );
    assert_eq!(
        workers_after, workers_before,
        "the proxy's nginx workers changed: one was killed"
    );
    assert_eq!(
        processes_after, processes_before,
        "the proxy's processes changed"
    );
    assert_eq!(
        oom_kills_after, oom_kills_before,
        "the kernel OOM-killed a process of the proxy"
    );
    assert!(
        peaks.memory_bytes < limit,
        "the proxy's memory peaked at {:.1} MiB, its limit is {:.1} MiB",
        mib(peaks.memory_bytes),
        mib(limit)
    );
    assert_eq!(
        limit_hits_after, limit_hits_before,
        "the proxy's memory reached its limit (the cgroup's count of hits)"
    );
    assert!(
        log_problems.is_empty(),
        "the proxy's log: {log_problems:#?}"
    );
    for (outcome, took) in &bystander_answers {
        assert!(
            outcome == "200" || outcome == JSON_503_WITH_RETRY,
            "a bystander's GET /: {outcome} after {took:.2?} (all: {bystander_tally:?})"
        );
    }
    assert_eq!(recovered, Ok(200), "GET / after the attack");
    assert_eq!(deleted, Ok(204), "DELETE the test's key");
}

/// How a slow reader's connection ended, as the reader saw it.
#[derive(Debug)]
enum End {
    ConnectFailed(String),
    WriteFailed(String),
    /// nginx closed it, and the reader got the FIN.
    Eof,
    Reset,
    ReadFailed(String),
    /// Still open at the deadline.
    Open,
}

impl std::fmt::Display for End {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ConnectFailed(error) => write!(formatter, "connect failed: {error}"),
            End::WriteFailed(error) => write!(formatter, "write failed: {error}"),
            End::Eof => write!(formatter, "closed by nginx"),
            End::Reset => write!(formatter, "reset by nginx"),
            End::ReadFailed(error) => write!(formatter, "read failed: {error}"),
            End::Open => write!(formatter, "open at the deadline"),
        }
    }
}

struct ReaderOutcome {
    bytes: usize,
    /// The first answer's status line.
    first_status: Option<String>,
    saw_503: bool,
    end: End,
    /// Kept open until the test has looked at nginx's side of it.
    stream: Option<TcpStream>,
}

/// One slow reader: connects from `address`, sends `request` (the pipelined
/// GETs), then reads at most 256 bytes every 4 s until `deadline`, the end
/// of the connection or an error.
async fn slow_reader(
    socket: TcpSocket,
    address: Ipv4Addr,
    target: std::net::SocketAddr,
    request: String,
    deadline: tokio::time::Instant,
) -> ReaderOutcome {
    let mut outcome = ReaderOutcome {
        bytes: 0,
        first_status: None,
        saw_503: false,
        end: End::Open,
        stream: None,
    };
    if let Err(error) = socket.bind(std::net::SocketAddr::from((address, 0))) {
        outcome.end = End::ConnectFailed(format!("bind {address}: {error}"));
        return outcome;
    }
    let mut stream = match tokio::time::timeout_at(deadline, socket.connect(target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            outcome.end = End::ConnectFailed(error.kind().to_string());
            return outcome;
        }
        Err(_) => {
            outcome.end = End::ConnectFailed("not connected by the deadline".into());
            return outcome;
        }
    };
    if let Err(error) = stream.write_all(request.as_bytes()).await {
        outcome.end = End::WriteFailed(error.kind().to_string());
        return outcome;
    }
    let mut received = Vec::new();
    let mut chunk = [0u8; READ_BYTES];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                outcome.end = End::Eof;
                break;
            }
            Ok(Ok(read)) => received.extend_from_slice(&chunk[..read]),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                outcome.end = End::Reset;
                break;
            }
            Ok(Err(error)) => {
                outcome.end = End::ReadFailed(error.kind().to_string());
                break;
            }
        }
        let next = tokio::time::Instant::now() + READ_EVERY;
        if next >= deadline {
            // No read left before the deadline: at the deadline, whether
            // nginx closed the connection meanwhile, without reading on.
            tokio::time::sleep_until(deadline).await;
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::ZERO, stream.peek(&mut byte)).await {
                Ok(Ok(0)) => outcome.end = End::Eof,
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    outcome.end = End::Reset
                }
                Ok(Err(error)) => outcome.end = End::ReadFailed(error.kind().to_string()),
                Ok(Ok(_)) | Err(_) => {}
            }
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    outcome.bytes = received.len();
    // A few KiB at most: 256 bytes every 4 s.
    let text = String::from_utf8_lossy(&received);
    outcome.first_status = text
        .split("\r\n")
        .next()
        .filter(|line| line.starts_with("HTTP/"))
        .map(|line| line.split(' ').take(2).collect::<Vec<_>>().join(" "));
    outcome.saw_503 = text.contains("HTTP/1.1 503 ");
    outcome.stream = Some(stream);
    outcome
}

/// A bystander's answer the proxy may give while it is full.
const JSON_503_WITH_RETRY: &str = "503 JSON with Retry-After";

/// `BYSTANDER_REQUESTS` GET / spread over the attack, each on a connection
/// of its own: each answer's outcome and how long it took.
async fn bystander(url: &str, started: tokio::time::Instant) -> Vec<(String, Duration)> {
    let client = stack_tests::harness::http_client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("build the HTTP client");
    let mut answers = Vec::new();
    for request in 0..BYSTANDER_REQUESTS {
        // From 1 s in (the readers are connecting) to 3 s before the end.
        let at = started
            + Duration::from_secs(1)
            + (ATTACK - Duration::from_secs(4)).mul_f64(request as f64 / BYSTANDER_REQUESTS as f64);
        tokio::time::sleep_until(at).await;
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(BYSTANDER_BOUND, answer(&client, url)).await {
            Ok(outcome) => outcome,
            Err(_) => format!("no answer within {BYSTANDER_BOUND:?}"),
        };
        answers.push((outcome, sent.elapsed()));
    }
    answers
}

/// "200", [`JSON_503_WITH_RETRY`], or what else came.
async fn answer(client: &reqwest::Client, url: &str) -> String {
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(error) => return format!("error: {error}"),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = match response.text().await {
        Ok(body) => body,
        Err(error) => return format!("{status}, then error: {error}"),
    };
    match status {
        200 => "200".into(),
        503 if retry_after.is_some()
            && serde_json::from_str::<Value>(&body).is_ok_and(|json| {
                json["error"]
                    .as_str()
                    .is_some_and(|error| !error.is_empty())
            }) =>
        {
            JSON_503_WITH_RETRY.into()
        }
        _ => format!("{status} (Retry-After {retry_after:?}): {body:?}"),
    }
}

/// Until `GET url` answers 200 (a generous bound), the last status or error.
async fn wait_for_200(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    let waiting = Instant::now();
    loop {
        let outcome = get(client, url).await.map(|(status, _)| status);
        if outcome == Ok(200) || waiting.elapsed() > Duration::from_secs(15) {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The nginx workers among a container's processes.
fn nginx_workers(pids: &[String]) -> Vec<String> {
    pids.iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("worker process"))
        })
        .cloned()
        .collect()
}

/// The highest figures the sampler saw.
struct Peaks {
    memory_bytes: u64,
    memory_at: Duration,
    tcp_pages: u64,
    tcp_at: Duration,
    orphans: u64,
    /// nginx's established connections on 127.0.0.1:80.
    established: usize,
    samples: usize,
}

/// Samples the proxy's memory and the host's TCP memory every
/// `SAMPLE_EVERY` (and nginx's connections every fourth time) until
/// `sampling` goes false.
fn sample(cgroup: &MemoryCgroup, pid: u32, sampling: &AtomicBool) -> Peaks {
    let started = Instant::now();
    let mut peaks = Peaks {
        memory_bytes: 0,
        memory_at: Duration::ZERO,
        tcp_pages: 0,
        tcp_at: Duration::ZERO,
        orphans: 0,
        established: 0,
        samples: 0,
    };
    while sampling.load(Ordering::Relaxed) {
        let memory = cgroup.usage_bytes();
        if memory > peaks.memory_bytes {
            peaks.memory_bytes = memory;
            peaks.memory_at = started.elapsed();
        }
        let (tcp, orphans) = host_tcp_memory();
        if tcp > peaks.tcp_pages {
            peaks.tcp_pages = tcp;
            peaks.tcp_at = started.elapsed();
        }
        peaks.orphans = peaks.orphans.max(orphans);
        if peaks.samples.is_multiple_of(4) {
            let established = port_80_states(pid).get("ESTABLISHED").copied().unwrap_or(0);
            peaks.established = peaks.established.max(established);
        }
        peaks.samples += 1;
        std::thread::sleep(SAMPLE_EVERY);
    }
    peaks
}

/// The host's TCP memory in pages and its orphaned sockets, from the
/// `TCP: inuse N orphan N tw N alloc N mem N` line of /proc/net/sockstat
/// (both counts are the whole host's, whichever namespace reads them).
fn host_tcp_memory() -> (u64, u64) {
    let sockstat = read_file("/proc/net/sockstat");
    let line = sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .unwrap_or_else(|| panic!("no TCP line in /proc/net/sockstat: {sockstat}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        fields
            .iter()
            .position(|field| *field == name)
            .and_then(|at| fields.get(at + 1))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("mem"), field("orphan"))
}

/// nginx's side of the connections to 127.0.0.1:80 in the network namespace
/// of process `pid`, counted by TCP state (from its /proc/<pid>/net/tcp).
fn port_80_states(pid: u32) -> BTreeMap<&'static str, usize> {
    let mut states = BTreeMap::new();
    for line in read_file(&format!("/proc/{pid}/net/tcp")).lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        // 127.0.0.1:80, in the kernel's byte order, and not the listener.
        if *local != "0100007F:0050" || *state == "0A" {
            continue;
        }
        let name = match *state {
            "01" => "ESTABLISHED",
            "03" => "SYN_RECV",
            "04" => "FIN_WAIT1",
            "05" => "FIN_WAIT2",
            "06" => "TIME_WAIT",
            "07" => "CLOSE",
            "08" => "CLOSE_WAIT",
            "09" => "LAST_ACK",
            "0B" => "CLOSING",
            _ => "other",
        };
        *states.entry(name).or_default() += 1;
    }
    states
}

fn read_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

fn read_number(path: &Path) -> u64 {
    let text = read_file(&path.to_string_lossy());
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: not a number: {text:?}", path.display()))
}

/// The `name N` line of a flat-keyed cgroup file.
fn keyed_number(path: &Path, name: &str) -> u64 {
    let text = read_file(&path.to_string_lossy());
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in {}: {text:?}", path.display()))
}

/// A container's memory cgroup directory, cgroup v1 or v2.
#[derive(Clone)]
enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

impl MemoryCgroup {
    /// The memory cgroup of process `pid`, from its /proc/<pid>/cgroup and
    /// where this process sees the hierarchies mounted.
    fn of_process(pid: u32) -> MemoryCgroup {
        let cgroups = read_file(&format!("/proc/{pid}/cgroup"));
        let mountinfo = read_file("/proc/self/mountinfo");
        let mut unified = None;
        for line in cgroups.lines() {
            // hierarchy-id:controller-list:path
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers
                .split(',')
                .any(|controller| controller == "memory")
            {
                if let Some(directory) = mounted_path(&mountinfo, Some("memory"), path) {
                    return MemoryCgroup::V1(directory);
                }
            } else if controllers.is_empty() {
                unified = mounted_path(&mountinfo, None, path);
            }
        }
        match unified {
            // A hybrid host mounts a v2 hierarchy without the memory controller.
            Some(directory) if directory.join("memory.current").exists() => {
                MemoryCgroup::V2(directory)
            }
            _ => panic!("no memory cgroup (v1 or v2) of pid {pid} is mounted: {cgroups}"),
        }
    }

    fn usage_bytes(&self) -> u64 {
        match self {
            MemoryCgroup::V1(directory) => read_number(&directory.join("memory.usage_in_bytes")),
            MemoryCgroup::V2(directory) => read_number(&directory.join("memory.current")),
        }
    }

    fn limit_bytes(&self) -> u64 {
        match self {
            MemoryCgroup::V1(directory) => read_number(&directory.join("memory.limit_in_bytes")),
            MemoryCgroup::V2(directory) => {
                let max = read_file(&directory.join("memory.max").to_string_lossy());
                max.trim().parse().unwrap_or(u64::MAX)
            }
        }
    }

    /// Processes of the cgroup the kernel's OOM killer killed.
    fn oom_kills(&self) -> u64 {
        match self {
            MemoryCgroup::V1(directory) => {
                keyed_number(&directory.join("memory.oom_control"), "oom_kill")
            }
            MemoryCgroup::V2(directory) => {
                keyed_number(&directory.join("memory.events"), "oom_kill")
            }
        }
    }

    /// How often the cgroup's memory reached its limit (and the kernel had to
    /// reclaim, or kill): v1 `memory.failcnt`, v2 `memory.events` `max`.
    fn limit_hits(&self) -> u64 {
        match self {
            MemoryCgroup::V1(directory) => read_number(&directory.join("memory.failcnt")),
            MemoryCgroup::V2(directory) => keyed_number(&directory.join("memory.events"), "max"),
        }
    }

    /// The kernel's own peak since the cgroup was created, where it keeps one.
    fn kernel_peak_bytes(&self) -> Option<u64> {
        let path = match self {
            MemoryCgroup::V1(directory) => directory.join("memory.max_usage_in_bytes"),
            MemoryCgroup::V2(directory) => directory.join("memory.peak"),
        };
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

/// Where cgroup `path` of the hierarchy with `controller` (None: the v2
/// hierarchy) is visible, from mountinfo lines such as
/// `35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory`.
fn mounted_path(mountinfo: &str, controller: Option<&str>, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount_fields, filesystem_fields) = line.split_once(" - ")?;
        let mount_fields: Vec<&str> = mount_fields.split(' ').collect();
        let filesystem_fields: Vec<&str> = filesystem_fields.split(' ').collect();
        let (root, mount_point) = (mount_fields.get(3)?, mount_fields.get(4)?);
        let matches = match (controller, filesystem_fields.first()) {
            (None, Some(&"cgroup2")) => true,
            (Some(controller), Some(&"cgroup")) => filesystem_fields
                .get(2)
                .is_some_and(|options| options.split(',').any(|option| option == controller)),
            _ => false,
        };
        if !matches {
            return None;
        }
        // A mount of a sub-tree (root other than "/") shows only paths below it.
        let relative = if *root == "/" {
            path
        } else {
            path.strip_prefix(root)?
        };
        Some(Path::new(mount_point).join(relative.trim_start_matches('/')))
    })
}
