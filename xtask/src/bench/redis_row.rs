//! The Redis row: INCR throughput measured from inside the stack's backend
//! network, with `redis-benchmark` run in a throw-away container of the db
//! image itself (same libraries, same network path as the webapp's).
//!
//! The db image ships `redis-server` and `redis-cli` but not necessarily
//! `redis-benchmark`. All three come from the same pinned Debian package
//! (redis-tools) and link the same libraries, so when the image lacks it the
//! binary from the host tools' unpacked copy of that package is mounted in
//! read-only. The benchmark uses its own database number and key, so the
//! application's data is never touched, and the key is read back and deleted
//! afterwards: its value proves every INCR counted.

use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::report::{Latency, Row, RowKind};

/// Not the application's database (0): the benchmark key can never collide
/// with or be counted as application data.
const BENCHMARK_DATABASE: &str = "15";
const BENCHMARK_KEY: &str = "webstack:bench:incr";

/// Where and how to reach the stack's Redis from a sibling container.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    /// The image the running db container was started from.
    pub image: String,
    /// A Docker network the db container is on (the backend network).
    pub network: String,
    /// The db's name on that network (the Compose service name).
    pub host: String,
    pub password: Option<String>,
}

/// Where `redis-benchmark` comes from for the throw-away container.
#[derive(Debug, Clone)]
pub enum BenchmarkBinary {
    /// Already in the db image at this path.
    InImage(String),
    /// A host file with the same build, mounted into the container read-only.
    Mounted(PathBuf),
}

/// Path the mounted binary gets inside the container.
const MOUNTED_BINARY_PATH: &str = "/usr/local/bin/redis-benchmark";

/// Runs INCR `requests` times over `connections` connections and returns the row.
pub fn run_redis_row(
    sh: &Shell,
    target: &RedisTarget,
    binary: &BenchmarkBinary,
    connections: u32,
    requests: u64,
) -> anyhow::Result<Row> {
    let suffix = crate::docker::unique_suffix();
    // Start from zero so the value read back is this run's count only.
    redis_cli(
        sh,
        target,
        &format!("webstack-bench-redis-reset-{suffix}"),
        "DEL",
    )?;

    let (mount_args, entrypoint): (Vec<String>, String) = match binary {
        BenchmarkBinary::InImage(path) => (Vec::new(), path.clone()),
        BenchmarkBinary::Mounted(host_path) => (
            vec![
                String::from("--volume"),
                format!("{}:{MOUNTED_BINARY_PATH}:ro", host_path.display()),
            ],
            String::from(MOUNTED_BINARY_PATH),
        ),
    };
    // redis-benchmark reads no password from the environment, so it takes
    // `-a`; the container is local, short-lived and removed afterwards.
    let auth_args: Vec<String> = match &target.password {
        Some(password) => vec![String::from("-a"), password.clone()],
        None => Vec::new(),
    };
    let name = format!("webstack-bench-redis-{suffix}");
    let (image, network, host) = (&target.image, &target.network, &target.host);
    let connections_text = connections.to_string();
    let requests_text = requests.to_string();
    let csv = cmd!(
        sh,
        "docker run --rm --name {name} --network {network} {mount_args...} --entrypoint {entrypoint} {image}
            -h {host} {auth_args...} --dbnum {BENCHMARK_DATABASE} -c {connections_text} -n {requests_text}
            --csv INCR {BENCHMARK_KEY}"
    )
    .quiet()
    .ignore_stderr()
    .read()
    .context("run redis-benchmark in a container of the db image on the backend network")?;

    let counted = redis_cli(
        sh,
        target,
        &format!("webstack-bench-redis-read-{suffix}"),
        "GETDEL",
    )?;
    let counted: u64 = if counted.trim().is_empty() {
        0
    } else {
        counted
            .trim()
            .parse()
            .with_context(|| format!("GETDEL {BENCHMARK_KEY} answered {counted:?}"))?
    };
    let mut row = parse_redis_benchmark_csv(&csv, connections, requests, counted)?;
    row.target = format!("INCR {BENCHMARK_KEY} (database {BENCHMARK_DATABASE}) on {host}:6379 from network {network}");
    Ok(row)
}

/// One `redis-cli` command on the benchmark key, in a container of the db
/// image; the password travels in the environment (REDISCLI_AUTH), not argv.
fn redis_cli(
    sh: &Shell,
    target: &RedisTarget,
    name: &str,
    command: &str,
) -> anyhow::Result<String> {
    let (image, network, host) = (&target.image, &target.network, &target.host);
    let _password = target
        .password
        .as_ref()
        .map(|password| sh.push_env("REDISCLI_AUTH", password));
    let environment_args: Vec<&str> = if target.password.is_some() {
        vec!["--env", "REDISCLI_AUTH"]
    } else {
        Vec::new()
    };
    cmd!(
        sh,
        "docker run --rm --name {name} --network {network} {environment_args...} --entrypoint /usr/bin/redis-cli {image}
            -h {host} -n {BENCHMARK_DATABASE} {command} {BENCHMARK_KEY}"
    )
    .quiet()
    .read()
    .with_context(|| format!("run redis-cli {command} {BENCHMARK_KEY} in a container of {image}"))
}

/// Parses `redis-benchmark --csv` output:
/// a header line, then `"INCR …","rps","avg","min","p50","p95","p99","max"`.
/// `counted` is the key's value afterwards: requests that did not increment
/// it failed (redis-benchmark prints no error count in CSV mode).
fn parse_redis_benchmark_csv(
    csv: &str,
    connections: u32,
    requests: u64,
    counted: u64,
) -> anyhow::Result<Row> {
    let Some(line) = csv.lines().find(|line| line.starts_with("\"INCR")) else {
        bail!("redis-benchmark printed no INCR result (wrong password or db unreachable?): {csv}");
    };
    let numbers = line
        .split(',')
        .skip(1)
        .map(|field| field.trim_matches('"').parse::<f64>())
        .collect::<Result<Vec<f64>, _>>()
        .with_context(|| format!("malformed redis-benchmark CSV line {line:?}"))?;
    let [requests_per_sec, _average, _minimum, p50, p95, p99, max] = numbers[..] else {
        bail!("expected 7 numbers in redis-benchmark CSV line {line:?}");
    };
    if counted > requests {
        bail!("the benchmark key counted {counted} INCRs but only {requests} were sent: was another benchmark running?");
    }
    Ok(Row {
        kind: RowKind::RedisIncr,
        target: String::new(),
        connections,
        requests_finished: requests,
        successful: counted,
        non_2xx: 0,
        socket_errors: requests - counted,
        error_details: Vec::new(),
        duration_secs: if requests_per_sec > 0.0 {
            requests as f64 / requests_per_sec
        } else {
            0.0
        },
        requests_per_sec,
        latency_ms: Latency {
            p50,
            p90: None,
            p95,
            p99,
            p99_9: None,
            max,
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

    /// Real output of redis-benchmark 7.0.15 with `--csv INCR webstack:bench:incr`.
    const CSV: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"INCR webstack:bench:incr\",\"43010.75\",\"0.781\",\"0.128\",\"0.679\",\"1.335\",\"4.103\",\"5.527\"\n";

    #[test]
    fn redis_benchmark_csv_becomes_a_row_without_p90() -> anyhow::Result<()> {
        let row = parse_redis_benchmark_csv(CSV, 64, 20_000, 20_000)?;

        assert_eq!(row.requests_per_sec, 43010.75);
        assert_eq!(
            row.latency_ms,
            Latency {
                p50: 0.679,
                p90: None,
                p95: 1.335,
                p99: 4.103,
                p99_9: None,
                max: 5.527
            }
        );
        assert_eq!((row.successful, row.socket_errors), (20_000, 0));
        Ok(())
    }

    #[test]
    fn increments_missing_from_the_key_count_as_errors() -> anyhow::Result<()> {
        let row = parse_redis_benchmark_csv(CSV, 64, 20_000, 19_990)?;

        assert_eq!((row.successful, row.socket_errors), (19_990, 10));
        Ok(())
    }

    #[test]
    fn output_without_an_incr_line_says_what_probably_went_wrong() {
        let error = parse_redis_benchmark_csv("NOAUTH Authentication required.\n", 64, 10, 0)
            .err()
            .map(|error| error.to_string());

        assert!(error.is_some_and(|error| error.contains("wrong password")));
    }
}
