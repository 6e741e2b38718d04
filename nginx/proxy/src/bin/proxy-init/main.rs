//! `proxy-init`: the proxy image's main process, in one of two roles, each a container of its
//! own, so the container that publishes the stack's port is on the `edge` network alone.
//!
//! - `proxy-init front` (the `proxy` service) runs the **front** nginx (`nginx.conf`), which
//!   holds the clients' connections: limits, JSON errors, the access log. It is reloaded only
//!   when its certificate is renewed in place (`PROXY_TLS_RELOAD=on`, with the `acme`
//!   service): a reload lets requests in progress finish, closes idle kept-alive connections
//!   (HTTP/2 ones with a GOAWAY), and serves new ones with the new certificate; a client
//!   connection is never closed under a request otherwise. It passes requests over
//!   keep-alive connections on a unix socket ([`BACK_SOCKET`], on a volume both containers
//!   mount) to the back nginx.
//! - `proxy-init back` (the `balancer` service, on the internal `frontend` network alone) runs
//!   the **back** nginx (`back.conf`), which keeps keep-alive connections to every replica,
//!   listed in an `upstream` block that includes [`SERVERS_FILE`]. Every
//!   `PROXY_RESOLVE_INTERVAL_MS` this program looks up `PROXY_UPSTREAM` (`webapp:5000`); when
//!   the set of addresses changed, it rewrites the file and reloads the back nginx (SIGHUP).
//!   nginx 1.26 cannot re-resolve the names of an `upstream` block itself (`server … resolve`
//!   came in 1.27.3).
//!
//! Why two containers: a container that publishes a port and is also on an internal network
//! gets, while the engine re-attaches its networks at a restart, a moment in which the
//! published port leads to its address on the internal network; the host has no route there,
//! so Docker's userland proxy followed the default route off the machine (docs/hardening.md).
//!
//! A replica that is shutting down leaves the list before it stops serving: the webapp answers
//! `/readyz` with 503 `{"status":"stopping"}` from SIGTERM on and serves on for a lame-duck
//! period (`WEBAPP_LAME_DUCK_MS`, 5 s), and every lookup asks each address's `/readyz`
//! ([`probe_replicas`], [`servers_to_list`], in `replicas.rs`). Under Compose a stopping
//! container stays in Docker's DNS until it has exited; under Swarm it leaves at once; either
//! way it is out of the list, and the back nginx reloaded, within a lookup interval and a
//! probe, well inside its lame-duck period, so no request and no retry reaches it once it stops
//! accepting. Only that answer counts: a replica
//! that does not answer, or answers 503 because Redis is unreachable (which every replica would
//! say at once), stays listed; and if every replica says "stopping", all stay listed.
//! A new replica joins the list once its `/readyz` has answered 200, which also opens its
//! first Redis connection: no request waits for a replica that is still starting.
//!
//! A reload closes the back's idle connections from the front. nginx retries a request that
//! fails on such a cached keep-alive connection by itself, without counting it as a try, so
//! a reload costs no client request; the clients' own connections stay with the front.
//!
//! Signals: SIGQUIT (the image's stop signal) drains: nginx finishes its requests, then exits.
//! SIGTERM and SIGINT stop it at once. If nginx exits on its own, proxy-init exits 1, so the
//! orchestrator restarts the container. `proxy-init -t` tests both configurations, as
//! `nginx -t` does.

mod replicas;
mod tls;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::replicas::{
    describe, describe_left_out, look_up, probe_replicas, servers_to_list, write_servers, Lookup,
    SERVERS_FILE,
};
use crate::tls::{Fingerprint, FrontTls, TLS_SETTINGS_FILE};

/// Where the back nginx listens for the front (nginx/back.conf, nginx/nginx.conf): a
/// directory on a volume both containers mount.
const BACK_SOCKET: &str = "/run/proxy/back.sock";
/// The front's configuration, which is also what a plain `nginx` in the image would read.
const FRONT_CONFIG: &str = "nginx.conf";
/// The front's configuration when it serves HTTPS (`PROXY_TLS=on`).
const FRONT_TLS_CONFIG: &str = "nginx-tls.conf";
const BACK_CONFIG: &str = "back.conf";

const USAGE: &str = "usage: proxy-init front|back|acme|-t  (front: the nginx clients talk to; back: the nginx that picks a webapp replica, and its lookups; acme: the certificate renewer, /usr/local/bin/acme; -t: test both nginx configurations and exit)";

/// The `acme` service's program, which `proxy-init acme` becomes (nginx/acme/).
const ACME_PROGRAM: &str = "/usr/local/bin/acme";

/// How often the front looks at a certificate that is renewed in place (`PROXY_TLS_RELOAD`).
const CERTIFICATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What the process runs, from its one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Front,
    Back,
    Acme,
    TestConfigurations,
}

impl Role {
    fn from_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Role, String> {
        let role = match arguments.next().as_deref() {
            Some("front") => Role::Front,
            Some("back") => Role::Back,
            Some("acme") => Role::Acme,
            Some("-t") => Role::TestConfigurations,
            _ => return Err(USAGE.to_owned()),
        };
        match arguments.next() {
            None => Ok(role),
            Some(_) => Err(USAGE.to_owned()),
        }
    }
}

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
    /// `PROXY_TLS` and the rest of [`FrontTls`]: HTTPS at the front, or none.
    front_tls: Option<FrontTls>,
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
            front_tls: FrontTls::from_lookup(&variable)?,
        })
    }
}

fn nginx_command(settings: &Settings, config: &str) -> Command {
    let mut command = Command::new(&settings.nginx);
    command
        .arg("-c")
        .arg(settings.config_dir.join(config))
        .args(["-e", "stderr"]);
    command
}

/// Sends `signal` to a child tokio has not reaped yet (it gives no id for a reaped one, whose
/// pid may belong to another process by now). Until it is reaped an exited child keeps its
/// pid, so kill(2) has no failure to report.
fn send_signal(child: &Child, signal: Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let Some(pid) = pid {
        let _ = kill_process(pid, signal);
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
    let role = match Role::from_arguments(std::env::args().skip(1)) {
        Ok(role) => role,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    if role == Role::Acme {
        // Becomes the program, which reads its own environment, and is PID 1 in its place.
        let error =
            std::os::unix::process::CommandExt::exec(&mut std::process::Command::new(ACME_PROGRAM));
        eprintln!("proxy-init: cannot run {ACME_PROGRAM}: {error}");
        return ExitCode::FAILURE;
    }
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
    let outcome = runtime.block_on(async {
        match role {
            Role::TestConfigurations => test_configurations(&settings).await,
            Role::Front => run_front(&settings).await,
            Role::Back => run_back(&settings).await,
            Role::Acme => Err("proxy-init acme runs the acme program".to_owned()),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("proxy-init: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy-init -t`: `nginx -t` of the back (with the servers of one lookup, or none) and of the
/// front (the HTTPS one too with `PROXY_TLS=on`).
async fn test_configurations(settings: &Settings) -> Result<ExitCode, String> {
    write_first_servers(settings).await?;
    let front = front_config(settings)?;
    let configs = if front == FRONT_CONFIG {
        vec![BACK_CONFIG, FRONT_CONFIG]
    } else {
        vec![BACK_CONFIG, FRONT_CONFIG, front]
    };
    for config in configs {
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

/// The signals proxy-init acts on.
struct Signals {
    quit: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Listens before nginx starts, so no signal is missed.
    fn listen() -> Result<Signals, String> {
        let stream = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|error| format!("cannot listen for {name}: {error}"))
        };
        Ok(Signals {
            quit: stream(SignalKind::quit(), "SIGQUIT")?,
            terminate: stream(SignalKind::terminate(), "SIGTERM")?,
            interrupt: stream(SignalKind::interrupt(), "SIGINT")?,
        })
    }
}

/// What ended the wait on an nginx: a signal to pass on, or its own exit.
enum Event {
    Quit,
    Stop,
    Exited(std::io::Result<std::process::ExitStatus>),
}

/// Waits for a signal or for `nginx` to exit.
async fn next_event(signals: &mut Signals, nginx: &mut Child) -> Event {
    tokio::select! {
        _ = signals.quit.recv() => Event::Quit,
        _ = signals.terminate.recv() => Event::Stop,
        _ = signals.interrupt.recv() => Event::Stop,
        status = nginx.wait() => Event::Exited(status),
    }
}

/// Passes a signal on and waits for nginx; or reports its own exit as a failure, so the
/// container is restarted.
async fn finish(event: Event, which: &str, nginx: &mut Child) -> ExitCode {
    match event {
        // nginx finishes its requests, then exits.
        Event::Quit => {
            send_signal(nginx, Signal::QUIT);
            let _ = nginx.wait().await;
            ExitCode::SUCCESS
        }
        Event::Stop => {
            send_signal(nginx, Signal::TERM);
            let _ = nginx.wait().await;
            ExitCode::SUCCESS
        }
        Event::Exited(status) => {
            let status = match status {
                Ok(status) => status.to_string(),
                Err(error) => format!("cannot wait for it: {error}"),
            };
            eprintln!("proxy-init: the {which} nginx exited ({status}); stopping");
            ExitCode::FAILURE
        }
    }
}

/// The front's configuration: nginx.conf, or nginx-tls.conf with its settings written first.
fn front_config(settings: &Settings) -> Result<&'static str, String> {
    let Some(tls) = &settings.front_tls else {
        return Ok(FRONT_CONFIG);
    };
    // A few hundred bytes on a tmpfs, before nginx starts: no need to leave the thread.
    std::fs::write(TLS_SETTINGS_FILE, tls.nginx_settings())
        .map_err(|error| format!("write {TLS_SETTINGS_FILE}: {error}"))?;
    Ok(FRONT_TLS_CONFIG)
}

/// `proxy-init front`: the front nginx, until a signal or its exit; with a certificate renewed
/// in place, a reload of it each time the certificate changes.
async fn run_front(settings: &Settings) -> Result<ExitCode, String> {
    let mut signals = Signals::listen()?;
    let watched = settings
        .front_tls
        .as_ref()
        .filter(|tls| tls.reload_on_change);
    let mut fingerprint = match watched {
        None => Vec::new(),
        Some(tls) => match wait_for_certificate(tls, &mut signals).await {
            Some(fingerprint) => fingerprint,
            None => return Ok(ExitCode::SUCCESS),
        },
    };
    let config = front_config(settings)?;
    let mut front = nginx_command(settings, config).spawn().map_err(|error| {
        format!(
            "start the front nginx ({}): {error}",
            settings.nginx.display()
        )
    })?;
    let serving = match &settings.front_tls {
        None => "HTTP on port 80".to_owned(),
        Some(tls) => format!(
            "HTTPS on port 443 ({}{}), and on port 80 ACME challenges and redirects",
            tls.certificate.display(),
            if tls.reload_on_change {
                ", reloaded when it changes"
            } else {
                ""
            }
        ),
    };
    eprintln!(
        "proxy-init: the front nginx serves {serving} and passes requests to the back on unix:{BACK_SOCKET}"
    );
    let Some(tls) = watched else {
        let event = next_event(&mut signals, &mut front).await;
        return Ok(finish(event, "front", &mut front).await);
    };
    let mut ticks = tokio::time::interval(CERTIFICATE_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = ticks.tick() => None,
            event = next_event(&mut signals, &mut front) => Some(event),
        };
        if let Some(event) = event {
            return Ok(finish(event, "front", &mut front).await);
        }
        let now = tls.fingerprint();
        // A file missing for a moment (being replaced) is not a new certificate.
        if now != fingerprint && now.iter().all(Option::is_some) {
            eprintln!(
                "proxy-init: {} changed; reloading the front nginx (connections in progress finish on the old certificate)",
                tls.certificate.display()
            );
            send_signal(&front, Signal::HUP);
            fingerprint = now;
        }
    }
}

/// Waits until the certificate and key renewed in place both exist (the `acme` service writes
/// a provisional pair first); `None` when a signal said to stop meanwhile.
async fn wait_for_certificate(tls: &FrontTls, signals: &mut Signals) -> Option<Fingerprint> {
    let mut said = false;
    loop {
        let fingerprint = tls.fingerprint();
        if fingerprint.iter().all(Option::is_some) {
            return Some(fingerprint);
        }
        if !said {
            eprintln!(
                "proxy-init: waiting for {} and {} (the acme service writes them)",
                tls.certificate.display(),
                tls.key.display()
            );
            said = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(CERTIFICATE_CHECK_INTERVAL) => {}
            _ = signals.quit.recv() => return None,
            _ = signals.terminate.recv() => return None,
            _ = signals.interrupt.recv() => return None,
        }
    }
}

/// `proxy-init back`: the back nginx, and the lookups that keep its replicas equal to DNS.
async fn run_back(settings: &Settings) -> Result<ExitCode, String> {
    let mut signals = Signals::listen()?;
    let mut current = write_first_servers(settings).await?;
    eprintln!(
        "proxy-init: {} is {}; looking it up every {:?}",
        settings.upstream,
        describe(&current),
        settings.resolve_interval
    );

    // The socket's directory is a volume that outlives the container: a socket left by an
    // nginx that did not exit cleanly would make the bind fail.
    match std::fs::remove_file(BACK_SOCKET) {
        Ok(()) => eprintln!("proxy-init: removed {BACK_SOCKET}, left by an earlier back nginx"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(format!("remove the old {BACK_SOCKET}: {error}")),
    }
    let mut back = nginx_command(settings, BACK_CONFIG)
        .spawn()
        .map_err(|error| {
            format!(
                "start the back nginx ({}): {error}",
                settings.nginx.display()
            )
        })?;

    let mut ticks = tokio::time::interval(settings.resolve_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<String> = None;
    loop {
        let event = tokio::select! {
            _ = ticks.tick() => None,
            event = next_event(&mut signals, &mut back) => Some(event),
        };
        if let Some(event) = event {
            return Ok(finish(event, "back", &mut back).await);
        }
        let found = match look_up(&settings.upstream).await {
            Lookup::Found(addresses) => addresses,
            Lookup::NoSuchName => BTreeSet::new(),
            Lookup::Failed(message) => {
                // Said once per kind of failure, not every interval.
                if last_failure.as_deref() != Some(message.as_str()) {
                    eprintln!(
                        "proxy-init: looking up {} failed ({message}); keeping {}",
                        settings.upstream,
                        describe(&current)
                    );
                    last_failure = Some(message);
                }
                continue;
            }
        };
        last_failure = None;
        let answers = probe_replicas(&found).await;
        let listed = servers_to_list(&current, &answers);
        if listed == current {
            continue;
        }
        match write_servers(&settings.upstream, &listed) {
            Ok(()) => {
                eprintln!(
                    "proxy-init: {} is now {} (not listed: {}); reloading the back nginx",
                    settings.upstream,
                    describe(&listed),
                    describe_left_out(&answers, &listed)
                );
                send_signal(&back, Signal::HUP);
                current = listed;
            }
            Err(error) => eprintln!(
                "proxy-init: write {SERVERS_FILE}: {error}; keeping {}",
                describe(&current)
            ),
        }
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
        assert_eq!(settings.front_tls, None);
    }

    #[test]
    fn the_role_is_the_one_argument() {
        let role = |arguments: &[&str]| {
            Role::from_arguments(arguments.iter().map(|argument| argument.to_string()))
        };
        assert_eq!(role(&["front"]), Ok(Role::Front));
        assert_eq!(role(&["back"]), Ok(Role::Back));
        assert_eq!(role(&["acme"]), Ok(Role::Acme));
        assert_eq!(role(&["-t"]), Ok(Role::TestConfigurations));
        for wrong in [&[][..], &["both"], &["front", "back"], &["-T"]] {
            assert_eq!(role(wrong), Err(USAGE.to_owned()), "{wrong:?}");
        }
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
}
