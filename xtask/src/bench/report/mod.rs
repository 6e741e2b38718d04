//! The benchmark report: what one `cargo xtask bench` run measured, as the
//! JSON document written to `target/bench/results.json` and the Markdown table
//! written to `target/bench/results.md` (and printed).
//!
//! The types here are plain data so the rendering can be tested from a fixed
//! input without Docker or a load tool.

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one run measured. Serialised as-is to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Version of this document's shape; bump when a field changes meaning.
    pub schema_version: u32,
    /// Seconds since the Unix epoch when the run started.
    pub started_at_unix_secs: u64,
    pub settings: Settings,
    /// One row per measurement, in the order they ran. The first is the proxy
    /// ceiling every other row is compared with.
    pub rows: Vec<Row>,
    pub counter_check: CounterCheck,
    /// The same check across each HTTPS row (`GET /` over TLS and HTTP/2),
    /// in the order they ran; empty when they were not measured.
    #[serde(default)]
    pub https_counter_checks: Vec<RowCounterCheck>,
    /// How the `GET /` row's hits spread over the webapp replicas (from
    /// `/api/replicas` before and after): shows the proxy's balancing.
    pub hits_per_replica: BTreeMap<String, u64>,
    /// The targets for `GET /`, evaluated (reported, never asserted).
    pub targets: Vec<TargetCheck>,
}

/// 2: fixed-rate `GET /` rows (`hit_counter_fixed_rate`), `latency_ms.p99_9`,
/// CPU time and µs per request of every container and of the Docker host
/// processes (`host_processes`) per row.
/// 3: the HTTPS rows (`https_new_connections`, `https_keep_alive`, `http2`),
/// each row's `ratio_to_plain_get`, `settings.https_base_url` and
/// `https_counter_checks`.
pub const SCHEMA_VERSION: u32 = 3;

/// The fixed-rate (open-loop) `GET /` rows: these fractions of the
/// closed-loop `GET /` rate measured earlier in the same run.
pub const FIXED_RATE_FRACTIONS: [f64; 3] = [0.25, 0.5, 0.75];

/// How the run was configured, so a result can be reproduced and compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub base_url: String,
    pub compose_project: String,
    pub connections: u32,
    /// Requests per row when the run used a fixed count.
    pub requests_per_row: Option<u64>,
    /// Seconds per HTTP row when the run used a fixed duration.
    pub duration_secs_per_row: Option<u64>,
    /// Number of webapp containers that were running during the run.
    pub webapp_replicas: u32,
    /// Where the HTTPS rows went (the project redeployed with
    /// `--tls self-signed`); `None` when they were not measured (`--url`).
    #[serde(default)]
    pub https_base_url: Option<String>,
    pub http_load_tool: String,
    pub redis_load_tool: String,
    pub smoke: bool,
}

/// Which measurement a row is. The serialised names are stable identifiers
/// for scripts that read `results.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// nginx answering by itself: the ceiling for anything proxied.
    ProxyCeiling,
    /// `GET /` through the proxy: one Redis round trip per request (the
    /// counting script: both counters, once per `Idempotency-Key`).
    HitCounter,
    /// `GET /` at a fixed request rate (open loop), a fraction of the
    /// `HitCounter` row's rate; latency counted from when each request was
    /// due, so a stalled request does not hide the ones queued behind it.
    HitCounterFixedRate,
    /// `GET /api/hits` through the proxy: one Redis GET per request.
    HitsReadOnly,
    /// Redis's own INCR rate from inside the backend network.
    RedisIncr,
    /// `GET /` over HTTPS with a new connection (TCP and TLS handshake) for
    /// every request: what a handshake costs.
    HttpsNewConnections,
    /// `GET /` over HTTPS, HTTP/1.1, connections kept alive.
    HttpsKeepAlive,
    /// `GET /` over HTTPS with HTTP/2 (ALPN `h2`), connections kept alive.
    Http2,
}

impl RowKind {
    /// Every row a complete report has, in the order the bench runs them.
    pub const ALL: [RowKind; 8] = [
        RowKind::ProxyCeiling,
        RowKind::HitCounter,
        RowKind::HitCounterFixedRate,
        RowKind::HitsReadOnly,
        RowKind::RedisIncr,
        RowKind::HttpsNewConnections,
        RowKind::HttpsKeepAlive,
        RowKind::Http2,
    ];

    /// The rows measured against the front on HTTPS, in the order they run.
    pub const HTTPS: [RowKind; 3] = [
        RowKind::HttpsNewConnections,
        RowKind::HttpsKeepAlive,
        RowKind::Http2,
    ];

    pub fn is_https(self) -> bool {
        RowKind::HTTPS.contains(&self)
    }

    /// How many rows of this kind a complete report has, with or without
    /// the HTTPS rows.
    pub fn expected_rows(self, with_https: bool) -> usize {
        match self {
            RowKind::HitCounterFixedRate => FIXED_RATE_FRACTIONS.len(),
            kind if kind.is_https() && !with_https => 0,
            _ => 1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RowKind::ProxyCeiling => "proxy ceiling",
            RowKind::HitCounter => "GET / (hit counter)",
            RowKind::HitCounterFixedRate => "GET / at a fixed rate",
            RowKind::HitsReadOnly => "GET /api/hits (read)",
            RowKind::RedisIncr => "Redis INCR",
            RowKind::HttpsNewConnections => "GET / HTTPS, new connections",
            RowKind::HttpsKeepAlive => "GET / HTTPS, kept alive",
            RowKind::Http2 => "GET / HTTP/2",
        }
    }
}

/// One measurement with one load tool against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub kind: RowKind,
    /// What was requested, e.g. `GET http://127.0.0.1:8070/` or the Redis command.
    pub target: String,
    pub connections: u32,
    /// Requests the tool finished (whatever their outcome).
    pub requests_finished: u64,
    /// Requests answered with a 2xx status (for Redis: without an error reply).
    pub successful: u64,
    pub non_2xx: u64,
    /// Connection-level failures: refused, reset, timed out.
    pub socket_errors: u64,
    /// Error messages and their counts, as the load tool reported them.
    pub error_details: Vec<(String, u64)>,
    pub duration_secs: f64,
    pub requests_per_sec: f64,
    pub latency_ms: Latency,
    /// This row's requests/s divided by the proxy ceiling's.
    pub ratio_to_ceiling: f64,
    /// HTTPS rows: this row's requests/s divided by the plain `GET /` row's.
    #[serde(default)]
    pub ratio_to_plain_get: Option<f64>,
    /// Memory and CPU of each of the stack's containers while this row ran.
    pub containers: Vec<ContainerUsage>,
    /// Fixed-rate rows: the rate asked of the load tool, requests/s.
    #[serde(default)]
    pub offered_rate_per_sec: Option<f64>,
    /// Fixed-rate rows: the offered rate as a fraction of the closed-loop
    /// `GET /` rate of the same run.
    #[serde(default)]
    pub fraction_of_max: Option<f64>,
    /// CPU of the Docker processes on the host that carry this stack's
    /// traffic and logs, while this row ran.
    #[serde(default)]
    pub host_processes: Vec<ProcessUsage>,
}

impl Row {
    /// CPU µs per request of every container and host process group together.
    pub fn cpu_us_per_request(&self) -> f64 {
        let containers = self
            .containers
            .iter()
            .map(|container| container.cpu_us_per_request);
        let processes = self
            .host_processes
            .iter()
            .map(|process| process.cpu_us_per_request);
        containers.chain(processes).sum()
    }

    /// The row's name in tables: its kind, and for fixed-rate rows the rate.
    pub fn label(&self) -> String {
        match (self.kind, self.fraction_of_max) {
            (RowKind::HitCounterFixedRate, Some(fraction)) => {
                format!("GET / at {:.0} % of max", fraction * 100.0)
            }
            (kind, _) => kind.label().to_string(),
        }
    }
}

/// Latency percentiles in milliseconds. `p90` is absent for tools that do not
/// report it (redis-benchmark reports p50, p95, p99 and max).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: Option<f64>,
    pub p95: f64,
    pub p99: f64,
    /// p99.9, from tools that report it (oha).
    #[serde(default)]
    pub p99_9: Option<f64>,
    pub max: f64,
}

/// Resource use of one container during one row, from its cgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    pub name: String,
    /// Compose service name (`proxy`, `webapp`, `db`).
    pub service: String,
    /// Largest resident set (anonymous memory, not page cache) seen.
    pub peak_rss_mib: f64,
    /// CPU time used divided by wall time, in percent of one core.
    pub mean_cpu_percent: f64,
    pub samples: u32,
    /// CPU time used while the row ran, milliseconds.
    #[serde(default)]
    pub cpu_ms: f64,
    /// `cpu_ms` per request the row finished, microseconds.
    #[serde(default)]
    pub cpu_us_per_request: f64,
}

/// CPU of a group of host processes (from `/proc/<pid>/stat`) during one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// `docker-proxy`, `containerd-shim` or `dockerd`.
    pub name: String,
    /// How many processes the group had (e.g. one shim per container).
    pub processes: u32,
    /// CPU time used while the row ran, milliseconds (10 ms resolution).
    pub cpu_ms: f64,
    /// `cpu_ms` per request the row finished, microseconds.
    pub cpu_us_per_request: f64,
}

/// Whether the shared counter rose by exactly the number of successful
/// `GET /` requests while it was under load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterCheck {
    pub before: u64,
    pub after: u64,
    pub successful_hit_requests: u64,
    pub passed: bool,
}

/// A [`CounterCheck`] across one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowCounterCheck {
    pub row: RowKind,
    #[serde(flatten)]
    pub check: CounterCheck,
}

impl CounterCheck {
    pub fn new(before: u64, after: u64, successful_hit_requests: u64) -> CounterCheck {
        let passed = after.checked_sub(before) == Some(successful_hit_requests);
        CounterCheck {
            before,
            after,
            successful_hit_requests,
            passed,
        }
    }
}

/// One of the targets for `GET /` and what this run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// The targets for `GET /` on a 2-core machine at 64 connections (docs/bench.md).
const TARGET_MIN_RATIO_TO_CEILING: f64 = 0.5;
const TARGET_MAX_P99_MS: f64 = 5.0;
const TARGET_MAX_WEBAPP_RSS_MIB: f64 = 20.0;

impl Report {
    pub fn row(&self, kind: RowKind) -> Option<&Row> {
        self.rows.iter().find(|row| row.kind == kind)
    }

    /// Fills in each row's ratio to the ceiling row and evaluates the targets.
    /// Called once all rows are measured.
    pub fn finish(&mut self) {
        let ceiling = self
            .row(RowKind::ProxyCeiling)
            .map(|row| row.requests_per_sec);
        let plain_get = self
            .row(RowKind::HitCounter)
            .map(|row| row.requests_per_sec);
        for row in &mut self.rows {
            row.ratio_to_ceiling = match ceiling {
                Some(ceiling) if ceiling > 0.0 => row.requests_per_sec / ceiling,
                _ => 0.0,
            };
            row.ratio_to_plain_get = match plain_get {
                Some(plain) if plain > 0.0 && row.kind.is_https() => {
                    Some(row.requests_per_sec / plain)
                }
                _ => None,
            };
            let per_request = |cpu_ms: f64| -> f64 {
                if row.requests_finished > 0 {
                    cpu_ms * 1000.0 / row.requests_finished as f64
                } else {
                    0.0
                }
            };
            for container in &mut row.containers {
                container.cpu_us_per_request = per_request(container.cpu_ms);
            }
            for process in &mut row.host_processes {
                process.cpu_us_per_request = per_request(process.cpu_ms);
            }
        }
        self.targets = evaluate_targets(self);
    }

    /// Problems that make this report incomplete or malformed: a missing row,
    /// a row without requests, latencies out of order, an HTTPS row with
    /// errors (over TLS an error means a wrong port, trust or redirect rather
    /// than load), a missing counter check. Empty means usable.
    pub fn shape_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let with_https = self.settings.https_base_url.is_some();
        for kind in RowKind::ALL {
            let matching = self.rows.iter().filter(|row| row.kind == kind).count();
            let expected = kind.expected_rows(with_https);
            if matching != expected {
                let wanted = if expected == 1 {
                    String::from("one")
                } else {
                    expected.to_string()
                };
                problems.push(format!(
                    "expected {wanted} {kind:?} row(s), found {matching}"
                ));
            }
        }
        for row in &self.rows {
            let label = row.label();
            if row.requests_finished == 0 {
                problems.push(format!("{label}: no requests finished"));
            }
            if !(row.requests_per_sec.is_finite() && row.requests_per_sec > 0.0) {
                problems.push(format!("{label}: requests/s is {}", row.requests_per_sec));
            }
            let latency = &row.latency_ms;
            let ordered = [latency.p50, latency.p95, latency.p99, latency.max]
                .windows(2)
                .all(|pair| pair[0] <= pair[1]);
            if !ordered || latency.p50 < 0.0 {
                problems.push(format!(
                    "{label}: latency percentiles out of order: {latency:?}"
                ));
            }
            if row.kind != RowKind::RedisIncr && row.containers.is_empty() {
                problems.push(format!("{label}: no container samples"));
            }
            if row.kind == RowKind::HitCounterFixedRate && row.offered_rate_per_sec.is_none() {
                problems.push(format!("{label}: no offered rate"));
            }
            if row.kind.is_https() {
                if row.non_2xx > 0 || row.socket_errors > 0 {
                    problems.push(format!(
                        "{label}: {} non-2xx, {} socket errors {:?}",
                        row.non_2xx, row.socket_errors, row.error_details
                    ));
                }
                if !self
                    .https_counter_checks
                    .iter()
                    .any(|check| check.row == row.kind)
                {
                    problems.push(format!("{label}: no counter check"));
                }
            }
        }
        problems
    }
}

/// p99 of `GET /` at half its closed-loop rate, open loop.
fn open_loop_target(report: &Report) -> TargetCheck {
    let half = report.rows.iter().find(|row| {
        row.kind == RowKind::HitCounterFixedRate
            && row
                .fraction_of_max
                .is_some_and(|fraction| (fraction - 0.5).abs() < 1e-9)
    });
    TargetCheck {
        name: String::from("p99 at 50 % of max, open loop"),
        target: format!("≤ {TARGET_MAX_P99_MS} ms"),
        measured: half
            .map(|row| format!("{} ms", milliseconds(row.latency_ms.p99)))
            .unwrap_or_else(|| String::from("not measured")),
        met: half.is_some_and(|row| row.latency_ms.p99 <= TARGET_MAX_P99_MS),
    }
}

fn evaluate_targets(report: &Report) -> Vec<TargetCheck> {
    let Some(hits) = report.row(RowKind::HitCounter) else {
        return Vec::new();
    };
    let webapp_peak_rss = hits
        .containers
        .iter()
        .filter(|container| container.service == "webapp")
        .map(|container| container.peak_rss_mib)
        .fold(None, |peak: Option<f64>, rss| {
            Some(peak.map_or(rss, |peak| peak.max(rss)))
        });
    vec![
        TargetCheck {
            name: String::from("throughput"),
            target: format!(
                "≥ {:.0} % of proxy ceiling",
                TARGET_MIN_RATIO_TO_CEILING * 100.0
            ),
            measured: format!("{:.0} %", hits.ratio_to_ceiling * 100.0),
            met: hits.ratio_to_ceiling >= TARGET_MIN_RATIO_TO_CEILING,
        },
        open_loop_target(report),
        TargetCheck {
            name: String::from("webapp RSS per replica"),
            target: format!("≤ {TARGET_MAX_WEBAPP_RSS_MIB} MiB"),
            measured: webapp_peak_rss
                .map(|rss| format!("{rss:.1} MiB"))
                .unwrap_or_else(|| String::from("not sampled")),
            met: webapp_peak_rss.is_some_and(|rss| rss <= TARGET_MAX_WEBAPP_RSS_MIB),
        },
        TargetCheck {
            name: String::from("errors"),
            target: String::from("0 non-2xx, 0 socket errors"),
            measured: format!(
                "{} non-2xx, {} socket errors",
                hits.non_2xx, hits.socket_errors
            ),
            met: hits.non_2xx == 0 && hits.socket_errors == 0,
        },
    ]
}

pub(super) fn milliseconds(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.1}")
    }
}
