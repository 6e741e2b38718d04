//! "Ready" means serving: a deployment is ready when every webapp replica
//! answers through the published proxy, not when the orchestrator reports
//! its containers healthy. Between the two lies the proxy finding the
//! replicas (proxy-init looks `webapp` up in Docker's DNS every second, and
//! on a multi-node swarm the DNS records of other nodes' tasks arrive by
//! gossip), and, across nodes, the overlay network carrying the traffic.
//!
//! `GET /readyz` through the proxy answers `{"replica": NAME, "status":
//! "ready"}` from the replica nginx picked, after a Redis PING: so one
//! answer from each replica proves proxy → replica → Redis for that
//! replica, without counting a hit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use serde::Deserialize;

use crate::poll::{self, Look};

/// Bounds one probe: a replica answers `/readyz` within about 1 s (its
/// Redis deadline), and nginx gives up on one after 1.5 s of retries.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a wait for serving gets at least, even when converging used up
/// the deployment's whole timeout.
pub const MIN_SERVING_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between probes: round robin moves to the next replica per request.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The JSON body of a ready replica's `/readyz`.
#[derive(Debug, Deserialize)]
struct ReadyAnswer {
    replica: String,
    status: String,
}

/// What the probes have seen so far: the replicas that answered ready,
/// and the last other answer (for the error when time runs out).
#[derive(Debug, Default)]
pub struct ServingProgress {
    pub answered: BTreeMap<String, u64>,
    pub last_other_answer: Option<String>,
    pub probes: u64,
}

impl ServingProgress {
    /// Records one probe's outcome: the status and body, or why there was none.
    pub fn record(&mut self, outcome: Result<(u16, String), String>) {
        self.probes += 1;
        match outcome {
            Ok((200, body)) => match serde_json::from_str::<ReadyAnswer>(&body) {
                Ok(answer) if answer.status == "ready" => {
                    *self.answered.entry(answer.replica).or_default() += 1;
                }
                _ => self.last_other_answer = Some(format!("200 with {body:?}")),
            },
            Ok((status, body)) => {
                self.last_other_answer = Some(format!("{status} with {}", body.trim()));
            }
            Err(error) => self.last_other_answer = Some(error),
        }
    }

    /// The probes so far, the replicas that answered ready, and the last
    /// other answer: what a wait that timed out says it saw.
    pub fn describe(&self) -> String {
        format!(
            "{} probe(s); answered ready: {:?}; last other answer: {}",
            self.probes,
            self.answered,
            self.last_other_answer.as_deref().unwrap_or("none")
        )
    }

    /// The wanted replicas that have not answered ready yet.
    pub fn missing<'a>(&self, wanted: &'a BTreeSet<String>) -> Vec<&'a str> {
        wanted
            .iter()
            .filter(|replica| !self.answered.contains_key(*replica))
            .map(String::as_str)
            .collect()
    }
}

/// How the proxy is reached: plain HTTP, or HTTPS (`--tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    /// The probe does not check the certificate: it asks the stack's own proxy whether the
    /// replicas serve, and a certificate for a server's public name (`--tls files`) does not
    /// name the loopback address it asks on.
    Https,
}

/// Waits until `GET /readyz` through the proxy at `proxy` has answered ready
/// from every replica in `replicas` (their hostnames: the first 12
/// characters of the container ids). `own_networks` are the networks the
/// network guard accepts besides loopback.
pub fn wait_until_every_replica_serves(
    proxy: SocketAddr,
    scheme: Scheme,
    replicas: &BTreeSet<String>,
    own_networks: &[stack_contract::netguard::Ipv4Net],
    timeout: Duration,
) -> anyhow::Result<()> {
    stack_contract::netguard::check_destination(proxy.ip(), own_networks)
        .map_err(anyhow::Error::msg)?;
    let agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(PROBE_TIMEOUT))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(scheme == Scheme::Https)
                .build(),
        )
        .build()
        .new_agent();
    let url = match scheme {
        Scheme::Http => format!("http://{proxy}/readyz"),
        Scheme::Https => format!("https://{proxy}/readyz"),
    };
    let started = Instant::now();
    let mut progress = ServingProgress::default();
    let probes = poll::until(
        timeout,
        PROBE_INTERVAL,
        || {
            progress.record(probe_ready(&agent, &url));
            let missing = progress.missing(replicas);
            Ok(if missing.is_empty() {
                Look::Ready(progress.probes)
            } else {
                Look::NotYet((missing.join(", "), progress.describe()))
            })
        },
        |(missing, seen), _| {
            anyhow!(
                "replica(s) {missing} did not answer GET /readyz through the proxy at {proxy} within {}s \
                 ({seen}): the proxy has not found them, or they cannot reach Redis",
                timeout.as_secs(),
            )
        },
    )?;
    eprintln!(
        "{} replica(s) answer through the proxy at {proxy} ({probes} probe(s), {:.1}s)",
        replicas.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One `GET /readyz`: its status and body, or why there was none.
fn probe_ready(agent: &ureq::Agent, url: &str) -> Result<(u16, String), String> {
    agent
        .get(url)
        .call()
        .map_err(|error| error.to_string())
        .and_then(|mut response| {
            let status = response.status().as_u16();
            response
                .body_mut()
                .read_to_string()
                .map(|body| (status, body))
                .map_err(|error| error.to_string())
        })
}

/// The hostname a container's process sees, and so the replica name the
/// webapp reports: Docker sets it to the first 12 characters of the id.
pub fn replica_name(container_id: &str) -> String {
    container_id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn only_ready_answers_naming_a_replica_count() {
        let mut progress = ServingProgress::default();
        progress.record(Ok((200, r#"{"replica":"aaa","status":"ready"}"#.into())));
        progress.record(Ok((503, r#"{"error":"Redis did not answer"}"#.into())));
        progress.record(Ok((200, r#"{"status":"live"}"#.into())));
        progress.record(Err("connection refused".into()));
        assert_eq!(progress.missing(&wanted(&["aaa", "bbb"])), vec!["bbb"]);
        assert_eq!(progress.probes, 4);
        assert_eq!(
            progress.last_other_answer.as_deref(),
            Some("connection refused")
        );
        progress.record(Ok((200, r#"{"replica":"bbb","status":"ready"}"#.into())));
        assert!(progress.missing(&wanted(&["aaa", "bbb"])).is_empty());
    }

    #[test]
    fn a_502_is_kept_as_the_last_other_answer() {
        let mut progress = ServingProgress::default();
        progress.record(Ok((502, "{\"error\":\"bad gateway\"}\n".into())));
        assert_eq!(
            progress.last_other_answer.as_deref(),
            Some("502 with {\"error\":\"bad gateway\"}")
        );
        assert_eq!(progress.missing(&wanted(&["x"])), vec!["x"]);
    }

    #[test]
    fn replica_names_are_the_first_twelve_characters_of_the_id() {
        assert_eq!(replica_name("3f2a9c1b7d0e55aa"), "3f2a9c1b7d0e");
        assert_eq!(replica_name("short"), "short");
    }
}
