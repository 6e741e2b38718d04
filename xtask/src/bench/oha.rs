//! The HTTP load tool: `oha`, built once per machine with `cargo install
//! --locked` at a pinned version into a cache outside the clone (so every
//! later clone and `cargo clean` reuse it), run with JSON output and parsed
//! into a report row.
//!
//! oha rather than wrk or a load generator of our own: it is on crates.io (so
//! `cargo` alone installs it, as the Nix devShell does from nixpkgs), keeps
//! connections alive like a browser, takes a fixed request count (so the
//! counter check is exact) and prints machine-readable JSON.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use xshell::{cmd, Shell};

use super::report::{Latency, Row, RowKind};
use crate::images::pins;

/// Pinned so every machine measures with the same tool. 1.16.0 was the newest
/// release on crates.io when the bench was written (`cargo info oha`).
pub const OHA_VERSION: &str = pins::OHA.version;

/// The oha binary: one on `PATH` at the pinned version (the Nix dev shell's,
/// if nixpkgs has that version), else the cached build (see
/// [`crate::tool_cache_dir`]), built there first if missing or if it is not the
/// file that build recorded. The first build compiles oha (a few minutes on
/// two cores); later runs, from any clone, reuse it.
pub fn ensure_oha(sh: &Shell) -> anyhow::Result<PathBuf> {
    if is_pinned_version(sh, Path::new("oha")) {
        return Ok(PathBuf::from("oha"));
    }
    let usable = |installed: &Path| is_pinned_version(sh, installed);
    let pin = pins::Pin::Crate {
        sh,
        tool: &pins::OHA,
        usable: &usable,
    };
    pins::ensure(&pin)
}

/// Whether `program --version` runs and names the pinned version.
fn is_pinned_version(sh: &Shell, program: &Path) -> bool {
    cmd!(sh, "{program} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .is_ok_and(|version| version.split_whitespace().any(|word| word == OHA_VERSION))
}

/// How much load one row gets.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    Requests(u64),
    /// Seconds; requests still in flight at the deadline are waited for
    /// (`-w`), so the counter check stays exact.
    Duration(u64),
}

/// One run of oha: which row it is (which also says how it talks: HTTP/1.1
/// with kept-alive connections, a new connection per request, or HTTP/2),
/// where to, how many requests at once, how many, and at what rate.
pub struct Load<'a> {
    pub kind: RowKind,
    pub url: String,
    /// For an `https://` URL: the CA the stack's certificate chains to.
    pub ca_certificate: Option<&'a Path>,
    pub connections: u32,
    pub amount: Amount,
    /// Requests/s for an open-loop row; `None` for closed loop.
    pub rate: Option<f64>,
}

/// Runs oha and turns its JSON summary into a row (ratio and containers
/// are filled in by the caller).
///
/// With a `rate` (requests/s) the load is open loop: oha starts requests on
/// that schedule whatever the answers do (`-q`), and with
/// `--latency-correction` counts each request's latency from when it was due
/// rather than from when a connection was free to send it, so a stall shows
/// in the latencies of every request it delayed (no coordinated omission).
pub fn run_http_row(sh: &Shell, oha: &PathBuf, load: &Load) -> anyhow::Result<Row> {
    let url = &load.url;
    let arguments = arguments(load);
    let output = cmd!(sh, "{oha} {arguments...}")
        .quiet()
        .read()
        .with_context(|| format!("run oha against {url}"))?;
    let mut row = parse_oha_json(&output, load.kind, format!("GET {url}"), load.connections)?;
    row.offered_rate_per_sec = load.rate;
    Ok(row)
}

/// oha's command line for `load`.
fn arguments(load: &Load) -> Vec<String> {
    let mut arguments: Vec<String> = [
        "--no-tui",
        "--output-format",
        "json",
        "-c",
        &load.connections.to_string(),
    ]
    .map(String::from)
    .to_vec();
    match load.amount {
        Amount::Requests(requests) => {
            arguments.extend([String::from("-n"), requests.to_string()]);
        }
        Amount::Duration(seconds) => arguments.extend([
            String::from("-z"),
            format!("{seconds}s"),
            String::from("-w"),
        ]),
    }
    if let Some(rate) = load.rate {
        arguments.extend([
            String::from("-q"),
            format!("{:.0}", rate.max(1.0)),
            String::from("--latency-correction"),
        ]);
    }
    match load.kind {
        // `Connection: close` on every request, and a new connection for
        // the next: a TCP and a TLS handshake per request.
        RowKind::HttpsNewConnections => arguments.push(String::from("--disable-keepalive")),
        // One stream at a time on each connection (oha's `-p 1`), so as
        // many requests are in flight as in every other row.
        RowKind::Http2 => arguments.push(String::from("--http2")),
        _ => {}
    }
    if let Some(ca) = load.ca_certificate {
        arguments.extend([String::from("--cacert"), ca.display().to_string()]);
    }
    arguments.push(load.url.clone());
    arguments
}

/// The parts of oha's `--output-format json` the report uses. Latencies are
/// in seconds.
#[derive(Deserialize)]
struct OhaOutput {
    summary: OhaSummary,
    #[serde(rename = "latencyPercentiles")]
    latency_percentiles: std::collections::BTreeMap<String, Option<f64>>,
    #[serde(rename = "statusCodeDistribution")]
    status_code_distribution: std::collections::BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution")]
    error_distribution: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct OhaSummary {
    /// Wall time of the whole run, seconds.
    total: f64,
    /// Slowest request, seconds; null when nothing finished.
    slowest: Option<f64>,
}

fn parse_oha_json(
    json: &str,
    kind: RowKind,
    target: String,
    connections: u32,
) -> anyhow::Result<Row> {
    let output: OhaOutput = serde_json::from_str(json).with_context(|| {
        format!(
            "parse oha's JSON output: {}",
            json.chars().take(400).collect::<String>()
        )
    })?;
    let mut successful = 0;
    let mut non_2xx = 0;
    for (status, count) in &output.status_code_distribution {
        if status.starts_with('2') {
            successful += count;
        } else {
            non_2xx += count;
        }
    }
    let socket_errors: u64 = output.error_distribution.values().sum();
    let requests_finished = successful + non_2xx + socket_errors;
    let percentile_ms = |name: &str| -> anyhow::Result<f64> {
        output
            .latency_percentiles
            .get(name)
            .copied()
            .flatten()
            .map(|seconds| seconds * 1000.0)
            .with_context(|| format!("oha's JSON has no latencyPercentiles.{name}"))
    };
    let duration_secs = output.summary.total;
    Ok(Row {
        kind,
        target,
        connections,
        requests_finished,
        successful,
        non_2xx,
        socket_errors,
        error_details: output.error_distribution.into_iter().collect(),
        duration_secs,
        requests_per_sec: if duration_secs > 0.0 {
            requests_finished as f64 / duration_secs
        } else {
            0.0
        },
        latency_ms: Latency {
            p50: percentile_ms("p50")?,
            p90: Some(percentile_ms("p90")?),
            p95: percentile_ms("p95")?,
            p99: percentile_ms("p99")?,
            p99_9: Some(percentile_ms("p99.9")?),
            max: output.summary.slowest.unwrap_or(0.0) * 1000.0,
        },
        ratio_to_ceiling: 0.0,
        ratio_to_plain_get: None,
        containers: Vec::new(),
        offered_rate_per_sec: None,
        fraction_of_max: None,
        host_processes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `oha --output-format json` run of oha 1.16.0.
    const OHA_JSON: &str = r#"{
      "summary": {"successRate": 0.999, "total": 2.0, "slowest": 0.0125, "fastest": 0.0001,
                  "average": 0.002, "requestsPerSec": 5000.0, "totalData": 100, "sizePerRequest": 10,
                  "sizePerSec": 50.0},
      "latencyPercentiles": {"p10": 0.0005, "p25": 0.0008, "p50": 0.001, "p75": 0.0015,
                             "p90": 0.002, "p95": 0.0025, "p99": 0.004, "p99.9": 0.01, "p99.99": 0.012},
      "statusCodeDistribution": {"200": 9990, "503": 3},
      "errorDistribution": {"connection closed before message completed": 7}
    }"#;

    #[test]
    fn oha_json_becomes_a_row_with_milliseconds_and_split_outcomes() -> anyhow::Result<()> {
        let row = parse_oha_json(OHA_JSON, RowKind::HitCounter, String::from("GET /"), 64)?;

        assert_eq!(row.successful, 9990);
        assert_eq!(row.non_2xx, 3);
        assert_eq!(row.socket_errors, 7);
        assert_eq!(row.requests_finished, 10_000);
        assert_eq!(row.requests_per_sec, 5000.0);
        assert_eq!(
            row.latency_ms,
            Latency {
                p50: 1.0,
                p90: Some(2.0),
                p95: 2.5,
                p99: 4.0,
                p99_9: Some(10.0),
                max: 12.5
            }
        );
        assert_eq!(
            row.error_details,
            vec![(
                String::from("connection closed before message completed"),
                7
            )]
        );
        Ok(())
    }

    #[test]
    fn https_rows_trust_the_runs_ca_and_pick_their_protocol() {
        let ca = Path::new("/tmp/run/ca/ca.pem");
        let load = |kind| Load {
            kind,
            url: String::from("https://127.0.0.1:8443/"),
            ca_certificate: Some(ca),
            connections: 64,
            amount: Amount::Requests(1000),
            rate: None,
        };
        let tail = |kind| arguments(&load(kind))[7..].join(" ");

        assert_eq!(
            arguments(&load(RowKind::HttpsKeepAlive)).join(" "),
            "--no-tui --output-format json -c 64 -n 1000 --cacert /tmp/run/ca/ca.pem https://127.0.0.1:8443/"
        );
        assert_eq!(
            tail(RowKind::HttpsNewConnections),
            "--disable-keepalive --cacert /tmp/run/ca/ca.pem https://127.0.0.1:8443/"
        );
        assert_eq!(
            tail(RowKind::Http2),
            "--http2 --cacert /tmp/run/ca/ca.pem https://127.0.0.1:8443/"
        );
    }

    #[test]
    fn open_loop_rows_start_requests_on_schedule_and_correct_latency() {
        let load = Load {
            kind: RowKind::HitCounterFixedRate,
            url: String::from("http://127.0.0.1:8070/"),
            ca_certificate: None,
            connections: 64,
            amount: Amount::Duration(10),
            rate: Some(761.6),
        };

        assert_eq!(
            arguments(&load).join(" "),
            "--no-tui --output-format json -c 64 -z 10s -w -q 762 --latency-correction http://127.0.0.1:8070/"
        );
    }

    #[test]
    fn oha_json_without_percentiles_is_an_error_naming_the_field() {
        let json = r#"{"summary": {"total": 1.0, "slowest": null}, "latencyPercentiles": {},
                       "statusCodeDistribution": {}, "errorDistribution": {}}"#;

        let error = parse_oha_json(json, RowKind::ProxyCeiling, String::new(), 1)
            .err()
            .map(|error| format!("{error:#}"));

        assert_eq!(
            error.as_deref(),
            Some("oha's JSON has no latencyPercentiles.p50")
        );
    }
}
