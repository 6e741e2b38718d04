//! What the end-to-end suites share, whichever orchestrator runs the stack:
//! the docker CLI, an HTTP client, the greeting's parts, a closed-loop load
//! that records each request's start, duration and outcome, and a
//! fixed-rate load that checks it really sent the rate asked.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// [`stack_contract::netguard`]: no proxy from `HTTP_PROXY`/`ALL_PROXY` (it would carry
/// the request off the machine) and no redirect (its target was never
/// checked).
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("build the HTTP client")
}

/// [`http_client`]'s settings, for a client that needs one more of its own.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Built with the rest of the workspace (`cargo test --workspace`), reqwest
    // gets the features xtask's registry client turns on, rustls without a
    // crypto provider, and then wants a process-wide provider even for
    // plain HTTP: install ring's (no-op when one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
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

/// A plain-HTTP `GET url` with `Host: localhost` to a stack serving HTTPS: the status and the
/// `Location` it answers with (a 308 to HTTPS), which the suites' client does not follow.
pub async fn https_redirect(url: &str) -> (u16, Option<String>) {
    let answer = http_client()
        .get(url)
        .header("host", "localhost")
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (answer.status().as_u16(), location)
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

/// What [`concurrent_get_root_counts_each_request_once`] saw.
pub struct CounterCheck {
    pub elapsed: Duration,
    /// Answers by status, or by error text.
    pub outcomes: BTreeMap<String, usize>,
    pub before: u64,
    pub after: u64,
}

/// The check both orchestrators must pass: `requests` concurrent `GET /`
/// all answer 200 and raise the shared counter by exactly `requests`.
pub async fn concurrent_get_root_counts_each_request_once(
    client: &reqwest::Client,
    base_url: &str,
    requests: usize,
) -> CounterCheck {
    let url = format!("{base_url}/");
    let before = read_hits(client, base_url).await;
    let started = Instant::now();
    let in_flight: Vec<_> = (0..requests)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for request in in_flight {
        let outcome = match request.await.expect("request task") {
            Ok((status, _)) => status.to_string(),
            Err(error) => format!("error: {error}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let after = read_hits(client, base_url).await;
    assert_eq!(
        outcomes.get("200"),
        Some(&requests),
        "{requests} concurrent GET /, answers: {outcomes:?}"
    );
    assert_eq!(
        i128::from(after) - i128::from(before),
        requests as i128,
        "{requests} answers 200, but the counter went from {before} to {after}"
    );
    CounterCheck {
        elapsed,
        outcomes,
        before,
        after,
    }
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

/// How far the rate a [`FixedRateLoad`] really sent may fall from the rate
/// asked before a step proves nothing.
pub const RATE_TOLERANCE: f64 = 0.10;
/// A load stops by itself after this long, whatever happens to the test.
pub const LOAD_MAX_DURATION: Duration = Duration::from_secs(300);
/// Failures kept in full for assertion messages.
const FAILURES_KEPT: usize = 10;

/// `GET url` at a fixed rate (an open loop: a slow answer does not slow
/// the sending), on the test's multi-threaded runtime, until
/// [`FixedRateLoad::stop`] or [`LOAD_MAX_DURATION`].
pub struct FixedRateLoad {
    per_second: f64,
    stop: Arc<AtomicBool>,
    counts: Arc<RateCounts>,
    first_failures: Arc<Mutex<Vec<String>>>,
    started: Instant,
    driver: tokio::task::JoinHandle<()>,
}

struct RateCounts {
    sent: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    /// Milliseconds from the start to the first and the last failure
    /// (`u64::MAX` and 0 while there is none).
    first_failure_ms: AtomicU64,
    last_failure_ms: AtomicU64,
    /// When each failed request was sent, from the start (failures are few).
    failures_sent_at: Mutex<Vec<Duration>>,
}

/// What a [`FixedRateLoad`] did.
#[derive(Debug, Clone, Default)]
pub struct RateReport {
    pub asked_per_second: f64,
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Successes that took at least the `slow` bound given to `start`.
    pub slow: u64,
    pub seconds: f64,
    /// Seconds from the start to the first and the last failure.
    pub failures_between: Option<(f64, f64)>,
    pub first_failures: Vec<String>,
    /// When each failed request was sent, from the start of the load.
    pub failures_sent_at: Vec<Duration>,
}

impl RateReport {
    /// Failed requests sent at or after `since` (from the start of the load).
    pub fn failed_sent_since(&self, since: Duration) -> usize {
        self.failures_sent_at
            .iter()
            .filter(|sent| **sent >= since)
            .count()
    }

    pub fn realised_per_second(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    /// A generator that stalled (while the test waited on Docker, say) sent
    /// fewer requests than asked, and "no request failed" would then hide
    /// failures it never had a chance to see.
    pub fn assert_rate_held(&self, what: &str) {
        let (realised, asked) = (self.realised_per_second(), self.asked_per_second);
        assert!(
            (realised - asked).abs() <= asked * RATE_TOLERANCE,
            "{what}: the load sent {realised:.1} requests/s, asked {asked:.1} (more than {:.0} % apart): \
             the generator stalled, so the step proves nothing",
            RATE_TOLERANCE * 100.0
        );
    }
}

impl FixedRateLoad {
    pub fn start(client: &reqwest::Client, url: &str, per_second: f64, slow: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(RateCounts {
            sent: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            first_failure_ms: AtomicU64::new(u64::MAX),
            last_failure_ms: AtomicU64::new(0),
            failures_sent_at: Mutex::default(),
        });
        let first_failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let started = Instant::now();
        let driver = {
            let (stop, counts, first_failures) =
                (stop.clone(), counts.clone(), first_failures.clone());
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
                // Catch up after a stall, so the rate check sees the
                // sender, not the scheduler.
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut in_flight = tokio::task::JoinSet::new();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_MAX_DURATION {
                    ticks.tick().await;
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    let (client, url, counts, first_failures) = (
                        client.clone(),
                        url.clone(),
                        counts.clone(),
                        first_failures.clone(),
                    );
                    in_flight.spawn(async move {
                        let sent_at = Instant::now();
                        let outcome = match get(&client, &url).await {
                            Ok((200, _)) => Ok(()),
                            Ok((status, body)) => Err(format!("status {status}: {body}")),
                            Err(error) => Err(error),
                        };
                        match outcome {
                            Ok(()) => {
                                counts.succeeded.fetch_add(1, Ordering::Relaxed);
                                if sent_at.elapsed() >= slow {
                                    counts.slow.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(error) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                counts
                                    .failures_sent_at
                                    .lock()
                                    .expect("failures lock")
                                    .push(sent_at - started);
                                let at = started.elapsed();
                                let at_ms = at.as_millis() as u64;
                                counts.first_failure_ms.fetch_min(at_ms, Ordering::Relaxed);
                                counts.last_failure_ms.fetch_max(at_ms, Ordering::Relaxed);
                                let mut kept = first_failures.lock().expect("failures lock");
                                if kept.len() < FAILURES_KEPT {
                                    kept.push(format!("at {:.1}s: {error}", at.as_secs_f64()));
                                }
                            }
                        }
                    });
                    while in_flight.try_join_next().is_some() {}
                }
                while in_flight.join_next().await.is_some() {}
            })
        };
        FixedRateLoad {
            per_second,
            stop,
            counts,
            first_failures,
            started,
            driver,
        }
    }

    /// When the load started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops sending, waits for the answers still due.
    pub async fn stop(self) -> RateReport {
        let seconds = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        self.driver.await.expect("load driver panicked");
        let counts = &self.counts;
        let failed = counts.failed.load(Ordering::Relaxed);
        RateReport {
            asked_per_second: self.per_second,
            sent: counts.sent.load(Ordering::Relaxed),
            succeeded: counts.succeeded.load(Ordering::Relaxed),
            failed,
            slow: counts.slow.load(Ordering::Relaxed),
            seconds,
            failures_between: (failed > 0).then(|| {
                (
                    counts.first_failure_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                    counts.last_failure_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                )
            }),
            first_failures: self.first_failures.lock().expect("failures lock").clone(),
            failures_sent_at: std::mem::take(
                &mut *counts.failures_sent_at.lock().expect("failures lock"),
            ),
        }
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

    fn report(sent: u64, seconds: f64) -> RateReport {
        RateReport {
            asked_per_second: 100.0,
            sent,
            seconds,
            ..RateReport::default()
        }
    }

    #[test]
    fn a_rate_within_ten_percent_of_the_asked_one_holds() {
        report(950, 10.0).assert_rate_held("slightly slow");
        report(1_090, 10.0).assert_rate_held("slightly fast");
    }

    #[test]
    #[should_panic(expected = "the generator stalled")]
    fn a_load_that_sent_a_fifth_too_little_stalled() {
        report(800, 10.0).assert_rate_held("stalled step");
    }

    #[test]
    fn failures_are_counted_by_when_they_were_sent() {
        let report = RateReport {
            failures_sent_at: vec![Duration::from_secs(1), Duration::from_secs(3)],
            ..RateReport::default()
        };
        assert_eq!(report.failed_sent_since(Duration::from_secs(2)), 1);
        assert_eq!(report.failed_sent_since(Duration::from_secs(3)), 1);
        assert_eq!(report.failed_sent_since(Duration::ZERO), 2);
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
