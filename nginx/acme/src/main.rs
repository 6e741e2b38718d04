//! `acme`: the stack's `acme` service (`cargo xtask up --tls acme`), the proxy image's program
//! that gets the front's certificate from an ACME CA and renews it, so a server renews by
//! itself, with no cron job and no xtask on it.
//!
//! - At start, with no certificate yet, it installs a provisional self-signed one, so the front
//!   nginx can start and serve the CA's challenges on port 80.
//! - It then asks the CA (`ACME_DIRECTORY`) for a certificate for `ACME_DOMAINS` (HTTP-01: the
//!   answers go to the state volume's `webroot/`, which the front serves), and points `live/`
//!   at it; proxy-init in the `proxy` container sees `live/` change and reloads the front
//!   (SIGHUP: new connections get the new certificate, requests in progress finish).
//! - It renews when a third of the certificate's lifetime is left (day 60 of Let's Encrypt's
//!   90), and at once when the domains asked for are not the certificate's.
//! - When the CA fails, the certificate in use keeps serving; it logs one line saying what
//!   failed, until when the current certificate is valid, and when it tries again, with a wait
//!   that doubles from `ACME_RETRY_SECS` to `ACME_RETRY_MAX_SECS`.
//!
//! `store.rs` is the state volume, `issue.rs` one order, `config.rs` the settings.

mod config;
mod issue;
mod store;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Settings;
use crate::store::{Current, Store};

/// The longest sleep between two looks at the certificate: a changed clock or a certificate
/// replaced by hand is noticed within it.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    let settings = match Settings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("acme: {message}");
            return ExitCode::from(2);
        }
    };
    match std::env::args().nth(1).as_deref() {
        None => {}
        // The container's healthcheck: healthy once a certificate is live.
        Some("health") => return health(&settings),
        Some(_) => {
            eprintln!("usage: acme [health]  (settings from ACME_* variables; health: exit 0 once a certificate is live)");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("acme: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // ring for the HTTPS to the CA (instant-acme's rustls takes the process's provider).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match runtime.block_on(run(&settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("acme: {message}");
            ExitCode::FAILURE
        }
    }
}

fn health(settings: &Settings) -> ExitCode {
    match Store::at(&settings.state_dir).current() {
        Ok(Some(current)) => {
            println!("serving {}", describe_current(&current));
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("no certificate yet");
            ExitCode::FAILURE
        }
        Err(message) => {
            println!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Renews until SIGTERM or SIGINT (it is PID 1 of its container, so nothing else stops it).
async fn run(settings: &Settings) -> Result<(), String> {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|error| format!("listen for SIGTERM: {error}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|error| format!("listen for SIGINT: {error}"))?;
    let store = Store::open(&settings.state_dir)?;
    if store.current()?.is_none() {
        store.install_provisional(&settings.domains)?;
        eprintln!(
            "acme: no certificate yet: the front starts with a provisional self-signed one for {}",
            settings.domains.join(", ")
        );
    }
    eprintln!(
        "acme: certificates for {} from {}",
        settings.domains.join(", "),
        settings.directory
    );
    let mut retry = settings.retry_first;
    loop {
        let wait = match renew_if_due(settings, &store).await {
            Ok(next_due) => {
                retry = settings.retry_first;
                next_due
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .min(LONGEST_SLEEP)
            }
            Err(message) => {
                let serving = match store.current() {
                    Ok(Some(current)) => describe_current(&current),
                    Ok(None) => "no certificate".to_owned(),
                    Err(error) => error,
                };
                eprintln!(
                    "acme: renewal failed: {message}; still serving {serving}; next try in {}s",
                    retry.as_secs()
                );
                let wait = retry;
                retry = (retry * 2).min(settings.retry_max);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}

/// Gets a new certificate if the current one is due; returns when the next one is due.
async fn renew_if_due(settings: &Settings, store: &Store) -> Result<SystemTime, String> {
    let current = store.current()?;
    if let Some(current) = &current {
        let due = current.renewal_due(&settings.domains);
        if due > SystemTime::now() {
            return Ok(due);
        }
    }
    let account = issue::account(settings, store).await?;
    let (chain, key) = issue::certificate(&account, settings, store).await?;
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.{:03}",
        since_epoch.as_secs(),
        since_epoch.subsec_millis()
    );
    store.install(&name, &chain, &key)?;
    let installed = store
        .current()?
        .ok_or("the certificate just installed is not live")?;
    eprintln!(
        "acme: new certificate {}; renewal due in {}s",
        describe_current(&installed),
        installed
            .renewal_due(&settings.domains)
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs()
    );
    Ok(installed.renewal_due(&settings.domains))
}

fn describe_current(current: &Current) -> String {
    let left = current
        .not_after
        .duration_since(SystemTime::now())
        .map(|left| format!("valid {}s more", left.as_secs()))
        .unwrap_or_else(|_| "expired".to_owned());
    format!("{} for {} ({left})", current.name, current.names.join(", "))
}
