//! What the end-to-end suites share, whichever orchestrator runs the stack:
//! the docker CLI, an HTTP client, the greeting's parts, and a load
//! generator that records each request's start, duration and outcome.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A generous bound per request: it catches a hang, it does not measure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs docker; panics with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let output = docker_output(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs docker and returns whatever happened (for commands expected to fail).
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run docker {args:?}: {error} (is Docker installed?)"))
}

/// The HTTP client of the suites, with [`REQUEST_TIMEOUT`].
///
/// It connects only where the URL says, which the suites have checked with
/// [`crate::netguard`]: no proxy from `HTTP_PROXY`/`ALL_PROXY` (it would carry
/// the request off the machine) and no redirect (its target was never
/// checked).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build the HTTP client")
}

/// Status (or the error) and body of one GET.
pub async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|error| error.to_string())?;
    Ok((status, body))
}

/// The shared counter, read through `GET {base_url}/api/hits`.
pub async fn read_hits(client: &reqwest::Client, base_url: &str) -> u64 {
    let (status, body) = get(client, &format!("{base_url}/api/hits"))
        .await
        .expect("GET /api/hits answers");
    assert_eq!(status, 200, "GET /api/hits: {body}");
    let parsed: serde_json::Value = serde_json::from_str(&body).expect("GET /api/hits gives JSON");
    parsed["hits"].as_u64().expect("a hits number")
}

/// "Hello from <replica>! I have been seen <n> times." → (replica, n).
pub fn parse_greeting(body: &str) -> (String, u64) {
    let rest = body
        .strip_prefix("Hello from ")
        .unwrap_or_else(|| panic!("not a greeting: {body:?}"));
    let (replica, rest) = rest
        .split_once("! I have been seen ")
        .unwrap_or_else(|| panic!("not a greeting: {body:?}"));
    let count = rest
        .trim_end_matches(" times.")
        .parse()
        .unwrap_or_else(|_| panic!("no count in {body:?}"));
    (replica.to_string(), count)
}

/// One request of a load run: when it started, how long it took, and its
/// status or error.
pub struct Timed {
    pub started: Instant,
    pub took: Duration,
    pub result: Result<u16, String>,
}

/// `workers` clients sending `GET url` back to back, on the test's
/// (multi-threaded) runtime, until [`ClosedLoad::stop`].
pub struct ClosedLoad {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Timed>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl ClosedLoad {
    pub fn start(client: &reqwest::Client, url: &str, workers: usize) -> ClosedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes: Arc<Mutex<Vec<Timed>>> = Arc::default();
        let workers = (0..workers)
            .map(|_| {
                let (client, url, outcomes, stop) = (
                    client.clone(),
                    url.to_string(),
                    outcomes.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = get(&client, &url).await.map(|(status, _)| status);
                        let took = started.elapsed();
                        outcomes.lock().expect("outcomes lock").push(Timed {
                            started,
                            took,
                            result,
                        });
                    }
                })
            })
            .collect();
        ClosedLoad {
            stop,
            outcomes,
            workers,
        }
    }

    /// Stops the clients, waits for their last requests, returns every outcome.
    pub async fn stop(self) -> Vec<Timed> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        std::mem::take(&mut *self.outcomes.lock().expect("outcomes lock"))
    }
}

/// Outcomes counted by status, or by error text.
pub fn tally(outcomes: &[Timed]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for outcome in outcomes {
        let key = match &outcome.result {
            Ok(status) => status.to_string(),
            Err(error) => error.clone(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_greeting_gives_its_replica_and_count() {
        assert_eq!(
            parse_greeting("Hello from 3f2a! I have been seen 42 times."),
            ("3f2a".to_string(), 42)
        );
    }

    #[test]
    fn outcomes_are_tallied_by_status_and_error() {
        let now = Instant::now();
        let timed = |result| Timed {
            started: now,
            took: Duration::ZERO,
            result,
        };
        let counts = tally(&[timed(Ok(200)), timed(Ok(200)), timed(Err("reset".into()))]);
        assert_eq!(counts["200"], 2);
        assert_eq!(counts["reset"], 1);
    }
}
