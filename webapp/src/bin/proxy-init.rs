//! `proxy-init`: the proxy image's main process. It runs two nginx masters and keeps the second
//! one's list of webapp replicas equal to what Docker's DNS says, so nginx can hold keep-alive
//! connections to replicas that come and go.
//!
//! - The **front** nginx (`nginx.conf`) holds the clients' connections: limits, JSON errors,
//!   the access log. It is never reloaded, so no client connection is ever closed under it.
//!   It passes requests over keep-alive connections on a unix socket to the back nginx.
//! - The **back** nginx (`back.conf`) keeps keep-alive connections to every replica, listed in
//!   an `upstream` block that includes [`SERVERS_FILE`]. Every `PROXY_RESOLVE_INTERVAL_MS` this
//!   program looks up `PROXY_UPSTREAM` (`webapp:5000`); when the set of addresses changed, it
//!   rewrites the file and reloads the back nginx (SIGHUP). nginx 1.26 cannot re-resolve the
//!   names of an `upstream` block itself (`server … resolve` came in 1.27.3).
//!
//! A replica that is shutting down leaves the list before it stops serving: the webapp answers
//! `/readyz` with 503 `{"status":"stopping"}` from SIGTERM on and serves on for a lame-duck
//! period (`WEBAPP_LAME_DUCK_MS`, 5 s), and every lookup asks each address's `/readyz`
//! ([`probe_replicas`], [`servers_to_list`]). Under Compose a stopping container stays in Docker's DNS until it
//! has exited; under Swarm it leaves at once; either way it is out of the list, and the back
//! nginx reloaded, within a lookup interval and a probe, well inside its lame-duck period, so no
//! request and no retry reaches it once it stops accepting. Only that answer counts: a replica
//! that does not answer, or answers 503 because Redis is unreachable (which every replica would
//! say at once), stays listed; and if every replica says "stopping", all stay listed.
//! A new replica joins the list once its `/readyz` has answered 200, which also opens its
//! first Redis connection: no request waits for a replica that is still starting.
//!
//! A reload closes the back's idle connections from the front. nginx retries a request that
//! fails on such a cached keep-alive connection by itself, without counting it as a try, so
//! a reload costs no client request; the clients' own connections stay with the front.
//!
//! Signals: SIGQUIT (the image's stop signal) drains: the front finishes its requests, then
//! the back. SIGTERM and SIGINT stop both at once. If either nginx exits on its own, the other
//! is stopped and proxy-init exits 1, so the orchestrator restarts the container.
//! `proxy-init -t` tests both configurations, as `nginx -t` does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// The server list the back nginx includes (nginx/back.conf); on the container's tmpfs.
const SERVERS_FILE: &str = "/tmp/nginx-webapp-servers.conf";
/// Where the back nginx listens for the front (nginx/back.conf, nginx/nginx.conf).
const BACK_SOCKET: &str = "/tmp/nginx-back.sock";
/// The front's configuration, which is also what a plain `nginx` in the image would read.
const FRONT_CONFIG: &str = "nginx.conf";
const BACK_CONFIG: &str = "back.conf";
/// A lookup that takes longer than this keeps the last known servers.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the `/readyz` probe of one replica may take; one that has not answered by then
/// stays listed (nginx's own timeouts deal with a replica that does not answer).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The part of a `/readyz` answer the probe reads: status line, headers and a small JSON body.
const PROBE_READ_LIMIT: u64 = 4096;
/// How long the back nginx may take to create its socket before the front starts anyway.
const BACK_START_TIMEOUT: Duration = Duration::from_secs(5);

/// What proxy-init reads from its environment; every variable has a default that fits the
/// image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// `PROXY_UPSTREAM`: the replicas' name and port, looked up through the system resolver.
    upstream: String,
    /// `PROXY_RESOLVE_INTERVAL_MS`: how often it is looked up.
    resolve_interval: Duration,
    /// `PROXY_NGINX`: the nginx binary.
    nginx: PathBuf,
    /// `PROXY_CONFIG_DIR`: where nginx.conf and back.conf are.
    config_dir: PathBuf,
}

impl Settings {
    fn from_lookup(variable: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let upstream = variable("PROXY_UPSTREAM").unwrap_or_else(|| "webapp:5000".to_owned());
        match upstream.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(format!("PROXY_UPSTREAM={upstream:?} is not HOST:PORT")),
        }
        let interval = variable("PROXY_RESOLVE_INTERVAL_MS").unwrap_or_else(|| "1000".to_owned());
        let resolve_interval = match interval.parse::<u64>() {
            Ok(milliseconds @ 100..=60_000) => Duration::from_millis(milliseconds),
            _ => {
                return Err(format!(
                    "PROXY_RESOLVE_INTERVAL_MS={interval:?} is not a whole number of milliseconds from 100 to 60000"
                ))
            }
        };
        Ok(Settings {
            upstream,
            resolve_interval,
            nginx: variable("PROXY_NGINX")
                .unwrap_or_else(|| "/usr/sbin/nginx".to_owned())
                .into(),
            config_dir: variable("PROXY_CONFIG_DIR")
                .unwrap_or_else(|| "/etc/nginx".to_owned())
                .into(),
        })
    }
}

/// The body of [`SERVERS_FILE`] for these addresses. An `upstream` block needs at least one
/// server: with no replica it names one marked `down`, so nginx answers 502 at once instead of
/// waiting for a connection.
fn servers_config(upstream: &str, addresses: &BTreeSet<SocketAddr>) -> String {
    let mut config = format!("# Written by proxy-init: the addresses of {upstream}.\n");
    if addresses.is_empty() {
        config.push_str("# None at the last lookup: every request gets 502 at once.\n");
        config.push_str("server 127.0.0.1:9 down;\n");
    }
    for address in addresses {
        // A replica that failed (refused, timed out) is skipped for 2 s: a frozen one costs
        // a request per nginx worker every 2 s rather than every third request.
        config.push_str(&format!("server {address} max_fails=1 fail_timeout=2s;\n"));
    }
    config
}

/// What one lookup of the replicas' name found.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Found(BTreeSet<SocketAddr>),
    /// The name does not exist (no replica is running): a certain answer, not a failure.
    NoSuchName,
    /// The resolver did not answer usefully; the last known servers stay.
    Failed(String),
}

async fn look_up(upstream: &str) -> Lookup {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(upstream)).await {
        Ok(Ok(addresses)) => Lookup::Found(addresses.collect()),
        Ok(Err(error)) => classify_lookup_error(&error.to_string()),
        Err(_) => Lookup::Failed(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    }
}

/// glibc's getaddrinfo says "Name or service not known" (EAI_NONAME) for a name the DNS server
/// says does not exist, which Docker's DNS answers for a service with no running replica.
fn classify_lookup_error(message: &str) -> Lookup {
    if message.contains("Name or service not known") {
        Lookup::NoSuchName
    } else {
        Lookup::Failed(message.to_owned())
    }
}

/// What a replica's `/readyz` said at one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// 200: it serves, Redis included.
    Ready,
    /// 503 `"status":"stopping"`: it is in its lame-duck period and about to stop accepting.
    Stopping,
    /// Anything else: refused, no answer within [`PROBE_TIMEOUT`], or not ready (Redis
    /// unreachable, which every replica would say at once).
    Unknown,
}

/// Asks one replica's `/readyz`, within [`PROBE_TIMEOUT`].
async fn probe_readiness(address: SocketAddr) -> Readiness {
    let probe = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: proxy-init\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream
            .take(PROBE_READ_LIMIT)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        Some(classify_readiness(&answer))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Some(readiness)) => readiness,
        Ok(None) | Err(_) => Readiness::Unknown,
    }
}

/// A 200 is ready; a 503 whose JSON body has `"status":"stopping"` (webapp/src/routes/health.rs)
/// is stopping; anything else tells nothing.
fn classify_readiness(answer: &[u8]) -> Readiness {
    let text = String::from_utf8_lossy(answer);
    if !text.starts_with("HTTP/1.") {
        return Readiness::Unknown;
    }
    match text.split(' ').nth(1) {
        Some("200") => Readiness::Ready,
        Some("503") if text.contains(r#""status":"stopping""#) => Readiness::Stopping,
        _ => Readiness::Unknown,
    }
}

/// Asks every address's `/readyz` at once.
async fn probe_replicas(addresses: &BTreeSet<SocketAddr>) -> BTreeMap<SocketAddr, Readiness> {
    let mut probes = tokio::task::JoinSet::new();
    for &address in addresses {
        probes.spawn(async move { (address, probe_readiness(address).await) });
    }
    let mut answers = BTreeMap::new();
    while let Some(probed) = probes.join_next().await {
        if let Ok((address, readiness)) = probed {
            answers.insert(address, readiness);
        }
    }
    answers
}

/// The servers to list, from the addresses found and what each said: never one that is
/// stopping; one listed before stays whatever else it says (passive checks deal with a sick
/// one); a new one joins once it has answered ready, so a replica still starting (its first
/// Redis connection not yet open) gets no request it would answer late. When that leaves none,
/// every address not stopping is listed, and when every one is stopping, all of them (they still
/// serve for their lame-duck period): better than none.
fn servers_to_list(
    listed: &BTreeSet<SocketAddr>,
    answers: &BTreeMap<SocketAddr, Readiness>,
) -> BTreeSet<SocketAddr> {
    let said = |address: &SocketAddr| answers.get(address).copied().unwrap_or(Readiness::Unknown);
    let not_stopping: BTreeSet<SocketAddr> = answers
        .keys()
        .filter(|address| said(address) != Readiness::Stopping)
        .copied()
        .collect();
    let serving: BTreeSet<SocketAddr> = not_stopping
        .iter()
        .filter(|address| listed.contains(address) || said(address) == Readiness::Ready)
        .copied()
        .collect();
    if !serving.is_empty() {
        serving
    } else if !not_stopping.is_empty() {
        not_stopping
    } else {
        answers.keys().copied().collect()
    }
}

/// Writes the server list through a temporary file, so nginx never reads half of it.
fn write_servers(upstream: &str, addresses: &BTreeSet<SocketAddr>) -> std::io::Result<()> {
    let temporary = format!("{SERVERS_FILE}.new");
    std::fs::write(&temporary, servers_config(upstream, addresses))?;
    std::fs::rename(&temporary, SERVERS_FILE)
}

/// The addresses found but not listed, each with what it said (stopping, or not yet ready).
fn describe_left_out(
    answers: &BTreeMap<SocketAddr, Readiness>,
    listed: &BTreeSet<SocketAddr>,
) -> String {
    let left_out: Vec<String> = answers
        .iter()
        .filter(|(address, _)| !listed.contains(address))
        .map(|(address, readiness)| match readiness {
            Readiness::Stopping => format!("{address} stopping"),
            Readiness::Ready | Readiness::Unknown => format!("{address} not ready yet"),
        })
        .collect();
    if left_out.is_empty() {
        "none".to_owned()
    } else {
        left_out.join(", ")
    }
}

fn describe(addresses: &BTreeSet<SocketAddr>) -> String {
    if addresses.is_empty() {
        return "none".to_owned();
    }
    let listed: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
    listed.join(" ")
}

fn nginx_command(settings: &Settings, config: &str) -> Command {
    let mut command = Command::new(&settings.nginx);
    command
        .arg("-c")
        .arg(settings.config_dir.join(config))
        .args(["-e", "stderr"]);
    command
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("proxy-init: {message}");
            return ExitCode::from(2);
        }
    };
    let test_only = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("-t") => true,
        Some(_) => {
            eprintln!("usage: proxy-init [-t]  (-t: test both nginx configurations and exit)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("proxy-init: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = if test_only {
        runtime.block_on(test_configurations(&settings))
    } else {
        runtime.block_on(supervise(&settings))
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("proxy-init: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy-init -t`: `nginx -t` of the back (with the servers of one lookup, or none) and of the
/// front.
async fn test_configurations(settings: &Settings) -> Result<ExitCode, String> {
    write_first_servers(settings).await?;
    for config in [BACK_CONFIG, FRONT_CONFIG] {
        let status = nginx_command(settings, config)
            .arg("-t")
            .status()
            .await
            .map_err(|error| format!("run {}: {error}", settings.nginx.display()))?;
        if !status.success() {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The server list before nginx starts: what one lookup finds, or none (the replicas may not
/// be up yet; the next lookups catch up).
async fn write_first_servers(settings: &Settings) -> Result<BTreeSet<SocketAddr>, String> {
    let addresses = match look_up(&settings.upstream).await {
        Lookup::Found(addresses) => addresses,
        Lookup::NoSuchName | Lookup::Failed(_) => BTreeSet::new(),
    };
    write_servers(&settings.upstream, &addresses)
        .map_err(|error| format!("write {SERVERS_FILE}: {error}"))?;
    Ok(addresses)
}

async fn supervise(settings: &Settings) -> Result<ExitCode, String> {
    let signal_stream = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|error| format!("cannot listen for {name}: {error}"))
    };
    let mut quit = signal_stream(SignalKind::quit(), "SIGQUIT")?;
    let mut terminate = signal_stream(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = signal_stream(SignalKind::interrupt(), "SIGINT")?;

    let mut current = write_first_servers(settings).await?;
    eprintln!(
        "proxy-init: {} is {}; looking it up every {:?}",
        settings.upstream,
        describe(&current),
        settings.resolve_interval
    );

    // A socket left by an nginx that did not exit cleanly would make the bind fail.
    let _ = std::fs::remove_file(BACK_SOCKET);
    let mut back = nginx_command(settings, BACK_CONFIG)
        .spawn()
        .map_err(|error| {
            format!(
                "start the back nginx ({}): {error}",
                settings.nginx.display()
            )
        })?;
    wait_for_socket(Path::new(BACK_SOCKET), BACK_START_TIMEOUT).await;
    let mut front = match nginx_command(settings, FRONT_CONFIG).spawn() {
        Ok(front) => front,
        Err(error) => {
            send_signal(&back, libc::SIGTERM);
            let _ = back.wait().await;
            return Err(format!("start the front nginx: {error}"));
        }
    };

    let mut ticks = tokio::time::interval(settings.resolve_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let found = match look_up(&settings.upstream).await {
                    Lookup::Found(addresses) => addresses,
                    Lookup::NoSuchName => BTreeSet::new(),
                    Lookup::Failed(message) => {
                        // Said once per kind of failure, not every interval.
                        if last_failure.as_deref() != Some(message.as_str()) {
                            eprintln!("proxy-init: looking up {} failed ({message}); keeping {}", settings.upstream, describe(&current));
                            last_failure = Some(message);
                        }
                        continue;
                    }
                };
                last_failure = None;
                let answers = probe_replicas(&found).await;
                let listed = servers_to_list(&current, &answers);
                if listed != current {
                    match write_servers(&settings.upstream, &listed) {
                        Ok(()) => {
                            eprintln!(
                                "proxy-init: {} is now {} (not listed: {}); reloading the back nginx",
                                settings.upstream, describe(&listed), describe_left_out(&answers, &listed)
                            );
                            send_signal(&back, libc::SIGHUP);
                            current = listed;
                        }
                        Err(error) => eprintln!("proxy-init: write {SERVERS_FILE}: {error}; keeping {}", describe(&current)),
                    }
                }
            }
            _ = quit.recv() => {
                // The front finishes its requests, which need the back; then the back.
                send_signal(&front, libc::SIGQUIT);
                let _ = front.wait().await;
                send_signal(&back, libc::SIGQUIT);
                let _ = back.wait().await;
                return Ok(ExitCode::SUCCESS);
            }
            _ = terminate.recv() => return Ok(stop_both(&mut front, &mut back).await),
            _ = interrupt.recv() => return Ok(stop_both(&mut front, &mut back).await),
            status = front.wait() => return Ok(one_exited("front", status, &mut back).await),
            status = back.wait() => return Ok(one_exited("back", status, &mut front).await),
        }
    }
}

async fn stop_both(front: &mut Child, back: &mut Child) -> ExitCode {
    send_signal(front, libc::SIGTERM);
    send_signal(back, libc::SIGTERM);
    let _ = front.wait().await;
    let _ = back.wait().await;
    ExitCode::SUCCESS
}

/// One nginx exited on its own: stop the other, and fail, so the container is restarted.
async fn one_exited(
    which: &str,
    status: std::io::Result<std::process::ExitStatus>,
    other: &mut Child,
) -> ExitCode {
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for it: {error}"),
    };
    eprintln!("proxy-init: the {which} nginx exited ({status}); stopping");
    send_signal(other, libc::SIGTERM);
    let _ = other.wait().await;
    ExitCode::FAILURE
}

async fn wait_for_socket(path: &Path, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !path.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(variables: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_lookup(|name| {
            variables
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_fit_the_image() {
        let settings = settings(&[]).unwrap();
        assert_eq!(settings.upstream, "webapp:5000");
        assert_eq!(settings.resolve_interval, Duration::from_secs(1));
        assert_eq!(settings.nginx, PathBuf::from("/usr/sbin/nginx"));
        assert_eq!(settings.config_dir, PathBuf::from("/etc/nginx"));
    }

    #[test]
    fn bad_settings_name_their_variable() {
        for (variable, value) in [
            ("PROXY_UPSTREAM", "webapp"),
            ("PROXY_UPSTREAM", ":5000"),
            ("PROXY_UPSTREAM", "webapp:http"),
            ("PROXY_RESOLVE_INTERVAL_MS", "0"),
            ("PROXY_RESOLVE_INTERVAL_MS", "1s"),
            ("PROXY_RESOLVE_INTERVAL_MS", "60001"),
        ] {
            let error = settings(&[(variable, value)]).unwrap_err();
            assert!(error.starts_with(variable), "{error}");
        }
    }

    #[test]
    fn servers_are_listed_in_a_stable_order_with_passive_health_checks() {
        let addresses: BTreeSet<SocketAddr> = ["10.0.1.9:5000", "10.0.1.10:5000"]
            .iter()
            .map(|address| address.parse().unwrap())
            .collect();

        let config = servers_config("webapp:5000", &addresses);

        assert_eq!(
            config,
            "# Written by proxy-init: the addresses of webapp:5000.\n\
             server 10.0.1.9:5000 max_fails=1 fail_timeout=2s;\n\
             server 10.0.1.10:5000 max_fails=1 fail_timeout=2s;\n"
        );
    }

    #[test]
    fn no_replica_is_one_server_marked_down() {
        let config = servers_config("webapp:5000", &BTreeSet::new());

        let servers: Vec<&str> = config
            .lines()
            .filter(|line| line.starts_with("server "))
            .collect();
        assert_eq!(servers, ["server 127.0.0.1:9 down;"]);
    }

    #[test]
    fn stopping_replicas_leave_and_new_ones_join_once_ready() {
        use Readiness::{Ready, Stopping, Unknown};
        let (a, b, c, d) = (
            "10.0.1.9:5000".parse().unwrap(),
            "10.0.1.10:5000".parse().unwrap(),
            "10.0.1.11:5000".parse().unwrap(),
            "10.0.1.12:5000".parse().unwrap(),
        );
        let listed = BTreeSet::from([a, b, c]);
        // b stops; c is not ready (Redis?) yet stays; d is new and ready.
        let answers = BTreeMap::from([(a, Ready), (b, Stopping), (c, Unknown), (d, Ready)]);
        assert_eq!(
            servers_to_list(&listed, &answers),
            BTreeSet::from([a, c, d])
        );
        // A new replica that has not answered ready yet waits.
        let answers = BTreeMap::from([(a, Ready), (d, Unknown)]);
        assert_eq!(servers_to_list(&listed, &answers), BTreeSet::from([a]));
        // Never none because of what they say: not ready (Redis down at start), or all stopping.
        let answers = BTreeMap::from([(c, Unknown), (d, Unknown)]);
        assert_eq!(
            servers_to_list(&BTreeSet::new(), &answers),
            BTreeSet::from([c, d])
        );
        let answers = BTreeMap::from([(a, Stopping), (b, Stopping)]);
        assert_eq!(servers_to_list(&listed, &answers), BTreeSet::from([a, b]));
        assert_eq!(servers_to_list(&listed, &BTreeMap::new()), BTreeSet::new());
    }

    #[test]
    fn only_a_503_saying_stopping_is_stopping_and_only_a_200_is_ready() {
        let stopping = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"error\":\"shutting down\",\"replica\":\"a\",\"status\":\"stopping\"}";
        assert_eq!(classify_readiness(stopping), Readiness::Stopping);
        let redis_down = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"error\":\"redis unavailable, retry shortly\"}";
        assert_eq!(classify_readiness(redis_down), Readiness::Unknown);
        let ready = b"HTTP/1.1 200 OK\r\n\r\n{\"replica\":\"a\",\"status\":\"ready\"}";
        assert_eq!(classify_readiness(ready), Readiness::Ready);
        assert_eq!(classify_readiness(b""), Readiness::Unknown);
    }

    #[test]
    fn a_name_that_does_not_exist_means_no_replica_other_errors_keep_the_servers() {
        assert_eq!(
            classify_lookup_error(
                "failed to lookup address information: Name or service not known"
            ),
            Lookup::NoSuchName
        );
        assert!(matches!(
            classify_lookup_error(
                "failed to lookup address information: Temporary failure in name resolution"
            ),
            Lookup::Failed(_)
        ));
    }
}
