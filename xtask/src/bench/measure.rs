//! The measuring half of `cargo xtask bench`: one [`Run`] against a
//! prepared stack turns each step (warm-up, the proxy ceiling, `GET /`
//! closed and open loop, `GET /api/hits`, Redis INCR, then with the front
//! redeployed on HTTPS `GET /` with a new connection per request, kept
//! alive and over HTTP/2) into a [`Row`] with the sampler running, and
//! [`measure`] puts the rows into a [`Report`].

use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{
    http::{self, Endpoint},
    https,
    oha::{self, Amount, Load},
    redis_row::{self, BenchmarkBinary, RedisTarget},
    report::{
        self, CounterCheck, Report, Row, RowCounterCheck, RowKind, Settings, FIXED_RATE_FRACTIONS,
    },
    sampler::{self, Sampler, WatchedContainer, WatchedProcesses},
};
use crate::compose;
use crate::docker::deployment::Deployment;
use crate::images::pins;

/// The running stack a benchmark measures.
#[derive(Debug, Clone)]
pub struct StackUnderTest {
    /// The proxy's published port, e.g. `http://127.0.0.1:8070`.
    pub base_url: String,
    /// Compose project: its containers are sampled, its db is the Redis row's target.
    pub compose_project: String,
    /// The stack's Redis password file; missing means no password.
    pub redis_password_file: PathBuf,
    /// Whether the bench deploys the project's front again on HTTPS for the
    /// HTTPS rows: not for a stack given by `--url`.
    pub https_rows: bool,
}

impl StackUnderTest {
    /// The stack `cargo xtask up` (or `e2e`) runs as `compose_project` on `port`.
    pub fn compose(compose_project: &str, port: u16) -> StackUnderTest {
        StackUnderTest {
            base_url: format!("http://127.0.0.1:{port}"),
            compose_project: compose_project.to_string(),
            redis_password_file: default_password_file(),
            https_rows: true,
        }
    }
}

pub(super) fn default_password_file() -> PathBuf {
    crate::secrets::secrets_dir().join(crate::stack::REDIS_PASSWORD_SECRET)
}

/// Seconds of load per fixed-rate `GET /` row (requests = rate × seconds),
/// and for `--smoke`.
const FIXED_RATE_ROW_SECS: f64 = 10.0;
const SMOKE_FIXED_RATE_ROW_SECS: f64 = 1.0;

pub(super) fn webapp_replicas(sh: &Shell, deployment: &dyn Deployment) -> anyhow::Result<u32> {
    Ok(deployment.containers(sh, crate::stack::WEBAPP)?.len() as u32)
}

/// Every row, in order, against a prepared stack; the counter checked
/// across the closed-loop `GET /` row, and across each HTTPS row.
pub(super) fn measure(
    sh: &Shell,
    oha: &PathBuf,
    stack: &StackUnderTest,
    connections: u32,
    amount: Amount,
    smoke: bool,
) -> anyhow::Result<Report> {
    let started_at_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let mut run = Run::prepare(sh, oha, stack, connections, amount, smoke)?;
    run.warm_up(&[
        (RowKind::ProxyCeiling, "/nginx/ceiling"),
        (RowKind::HitCounter, "/"),
    ])?;
    let ceiling = run.http_row(RowKind::ProxyCeiling, "/nginx/ceiling", amount, None)?;
    let replicas_before = http::read_hits_per_replica(&run.target.endpoint)?;
    let (hit_counter, counter_check) = run.counted_row(RowKind::HitCounter)?;
    let hits_per_replica = http::hits_between(
        &replicas_before,
        &http::read_hits_per_replica(&run.target.endpoint)?,
    );
    let fixed_rate_rows = run.fixed_rate_rows(hit_counter.requests_per_sec)?;
    let hits_read = run.http_row(RowKind::HitsReadOnly, "/api/hits", amount, None)?;
    let redis = run.redis_row(ceiling.requests_finished)?;
    let mut settings = run.settings();
    let mut rows = [
        vec![ceiling, hit_counter],
        fixed_rate_rows,
        vec![hits_read, redis],
    ]
    .concat();
    let mut https_counter_checks = Vec::new();
    if stack.https_rows {
        let plain_port = url_port(&stack.base_url).unwrap_or(crate::stack::DEFAULT_HOST_PORT);
        let front = https::redeploy_on_https(sh, &stack.compose_project, plain_port)?;
        run.target = Target::new(sh, stack, &front.base_url, Some(front.ca_certificate()))?;
        run.warm_up(&[(RowKind::HttpsKeepAlive, "/")])?;
        for kind in RowKind::HTTPS {
            let (row, check) = run.counted_row(kind)?;
            rows.push(row);
            https_counter_checks.push(RowCounterCheck { row: kind, check });
        }
        settings.https_base_url = Some(front.base_url);
    } else {
        eprintln!("bench: no HTTPS rows for a stack given by --url");
    }
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        started_at_unix_secs,
        settings,
        rows,
        counter_check,
        https_counter_checks,
        hits_per_replica,
        targets: Vec::new(),
    };
    report.finish();
    Ok(report)
}

/// One bench run against one stack: what every row needs, and the rows.
struct Run<'a> {
    sh: &'a Shell,
    oha: &'a PathBuf,
    stack: &'a StackUnderTest,
    connections: u32,
    amount: Amount,
    smoke: bool,
    /// Where the HTTP rows go: the plain front, then the front on HTTPS.
    target: Target,
    redis_target: RedisTarget,
    benchmark_binary: BenchmarkBinary,
    /// The pinned package redis-benchmark comes from.
    benchmark_package: String,
    replicas: u32,
}

impl<'a> Run<'a> {
    fn prepare(
        sh: &'a Shell,
        oha: &'a PathBuf,
        stack: &'a StackUnderTest,
        connections: u32,
        amount: Amount,
        smoke: bool,
    ) -> anyhow::Result<Run<'a>> {
        let deployment = deployment(sh, stack)?;
        let target = Target::new(sh, stack, &stack.base_url, None)?;
        let redis_target = redis_target(sh, &deployment, &stack.redis_password_file)?;
        let (benchmark_binary, benchmark_package) =
            redis_benchmark_binary(sh, &redis_target.image)?;
        let replicas = webapp_replicas(sh, &deployment)?;
        Ok(Run {
            sh,
            oha,
            stack,
            connections,
            amount,
            smoke,
            target,
            redis_target,
            benchmark_binary,
            benchmark_package,
            replicas,
        })
    }

    /// Not measured: the webapp's Redis pool fills, nginx's workers and the
    /// kernel's socket buffers are in use before the first row.
    fn warm_up(&self, rows: &[(RowKind, &str)]) -> anyhow::Result<()> {
        let warm_up = Amount::Requests(if self.smoke { 200 } else { 5_000 });
        for (kind, path) in rows {
            oha::run_http_row(self.sh, self.oha, &self.load(*kind, path, warm_up, None))
                .with_context(|| format!("warm up {path}"))?;
        }
        Ok(())
    }

    /// What oha is asked for one row against the current target.
    fn load(&self, kind: RowKind, path: &str, amount: Amount, rate: Option<f64>) -> Load<'_> {
        Load {
            kind,
            url: format!("{}{path}", self.target.endpoint.base_url()),
            ca_certificate: self.target.ca_certificate.as_deref(),
            connections: self.connections,
            amount,
            rate,
        }
    }

    /// One oha row, closed loop or at a fixed `rate`, with the sampler running.
    fn http_row(
        &self,
        kind: RowKind,
        path: &str,
        amount: Amount,
        rate: Option<f64>,
    ) -> anyhow::Result<Row> {
        match rate {
            Some(rate) => eprintln!("bench: {} (GET {path} at {rate:.0}/s)", kind.label()),
            None => eprintln!("bench: {} (GET {path})", kind.label()),
        }
        let load = self.load(kind, path, amount, rate);
        self.sampled(|| oha::run_http_row(self.sh, self.oha, &load))
    }

    /// A closed-loop `GET /` row with the shared counter read before and
    /// after it: it must rise by exactly the row's 2xx answers (a fixed
    /// request count, or `-w` for a duration, leaves nothing in flight).
    fn counted_row(&self, kind: RowKind) -> anyhow::Result<(Row, CounterCheck)> {
        let endpoint = &self.target.endpoint;
        let before = http::read_hit_counter(endpoint)
            .with_context(|| format!("read the hit counter before {}", kind.label()))?;
        let row = self.http_row(kind, "/", self.amount, None)?;
        let after = http::read_hit_counter(endpoint)
            .with_context(|| format!("read the hit counter after {}", kind.label()))?;
        let check = CounterCheck::new(before, after, row.successful);
        Ok((row, check))
    }

    /// Runs one row's load with the sampler running, and adds what the
    /// containers and the Docker host processes spent meanwhile.
    fn sampled(&self, load: impl FnOnce() -> anyhow::Result<Row>) -> anyhow::Result<Row> {
        let watched = &self.target.watched;
        let sampler = Sampler::start(&watched.containers, &watched.processes);
        let row = load();
        let usage = sampler.finish()?;
        let mut row = row?;
        row.containers = usage.containers;
        row.host_processes = usage.host_processes;
        Ok(row)
    }

    /// Open loop: `GET /` at fractions of the closed-loop rate just measured.
    fn fixed_rate_rows(&self, closed_loop_rate: f64) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(FIXED_RATE_FRACTIONS.len());
        for fraction in FIXED_RATE_FRACTIONS {
            let rate = (closed_loop_rate * fraction).max(1.0);
            let row_amount = match self.amount {
                Amount::Requests(_) => {
                    let seconds = if self.smoke {
                        SMOKE_FIXED_RATE_ROW_SECS
                    } else {
                        FIXED_RATE_ROW_SECS
                    };
                    Amount::Requests((rate * seconds).round().max(1.0) as u64)
                }
                Amount::Duration(seconds) => Amount::Duration(seconds),
            };
            let mut row =
                self.http_row(RowKind::HitCounterFixedRate, "/", row_amount, Some(rate))?;
            row.fraction_of_max = Some(fraction);
            rows.push(row);
        }
        Ok(rows)
    }

    /// redis-benchmark's INCR inside the backend network, as many requests
    /// as the rows (or, in a timed run, as the ceiling row finished).
    fn redis_row(&self, ceiling_requests: u64) -> anyhow::Result<Row> {
        let redis_requests = match self.amount {
            Amount::Requests(requests) => requests,
            Amount::Duration(_) => ceiling_requests.max(1),
        };
        eprintln!(
            "bench: {} (redis-benchmark in the db image)",
            RowKind::RedisIncr.label()
        );
        self.sampled(|| {
            redis_row::run_redis_row(
                self.sh,
                &self.redis_target,
                &self.benchmark_binary,
                self.connections,
                redis_requests,
            )
        })
    }

    fn settings(&self) -> Settings {
        Settings {
            base_url: self.stack.base_url.clone(),
            compose_project: self.stack.compose_project.clone(),
            connections: self.connections,
            requests_per_row: match self.amount {
                Amount::Requests(requests) => Some(requests),
                Amount::Duration(_) => None,
            },
            duration_secs_per_row: match self.amount {
                Amount::Requests(_) => None,
                Amount::Duration(seconds) => Some(seconds),
            },
            webapp_replicas: self.replicas,
            https_base_url: None,
            http_load_tool: format!("oha {}", oha::OHA_VERSION),
            redis_load_tool: redis_benchmark_version(
                &self.redis_target,
                &self.benchmark_binary,
                &self.benchmark_package,
            ),
            smoke: self.smoke,
        }
    }
}

/// Where a row's load goes, and what the sampler watches meanwhile.
struct Target {
    endpoint: Endpoint,
    /// For HTTPS: the CA the front's certificate chains to.
    ca_certificate: Option<PathBuf>,
    watched: Watched,
}

impl Target {
    /// The front at `base_url`, and the stack's containers and Docker host
    /// processes as they run now (a redeployed proxy is a new container,
    /// and HTTPS goes through the docker-proxy of another port).
    fn new(
        sh: &Shell,
        stack: &StackUnderTest,
        base_url: &str,
        ca_certificate: Option<&Path>,
    ) -> anyhow::Result<Target> {
        let containers = sampler::stack_containers(sh, &deployment(sh, stack)?)?;
        Ok(Target {
            endpoint: Endpoint::new(base_url, ca_certificate)?,
            ca_certificate: ca_certificate.map(Path::to_path_buf),
            watched: Watched {
                processes: sampler::docker_host_processes(&containers, url_port(base_url)),
                containers,
            },
        })
    }
}

/// What the sampler watches during every row: the stack's containers and
/// the Docker host processes working for them.
struct Watched {
    containers: Vec<WatchedContainer>,
    processes: Vec<WatchedProcesses>,
}

/// The Compose project of the stack under test.
fn deployment(sh: &Shell, stack: &StackUnderTest) -> anyhow::Result<compose::ComposeProject> {
    let port = url_port(&stack.base_url).unwrap_or(crate::stack::DEFAULT_HOST_PORT);
    compose::ComposeProject::new(sh, &stack.compose_project, port)
}

/// The port of `http://host:port`, if the URL names one.
pub(super) fn url_port(base_url: &str) -> Option<u16> {
    let authority = base_url.split_once("://")?.1.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// The running db container's image, backend network and password.
fn redis_target(
    sh: &Shell,
    deployment: &dyn Deployment,
    password_file: &Path,
) -> anyhow::Result<RedisTarget> {
    let name = deployment.name();
    let Some(db) = deployment
        .containers(sh, crate::stack::DB)?
        .into_iter()
        .next()
    else {
        bail!("{name:?} has no running db container: start the stack with `cargo xtask up`");
    };
    let image = db.config.image.clone();
    // The db is meant to be on the backend network only; prefer one named so.
    let networks: Vec<&String> = db.network_settings.networks.keys().collect();
    let Some(network) = networks
        .iter()
        .find(|network| network.ends_with(crate::stack::BACKEND))
        .or_else(|| networks.first())
    else {
        bail!("the db container of {name:?} is on no Docker network");
    };
    Ok(RedisTarget {
        image,
        network: network.to_string(),
        host: String::from("db"),
        password: redis_password(password_file)?,
    })
}

/// The generated Redis password, if the stack uses one.
fn redis_password(path: &Path) -> anyhow::Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let password = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(Some(password.trim_end_matches(['\n', '\r']).to_string()))
}

/// The package redis-benchmark comes from, and where it is in it.
const REDIS_BENCHMARK_PACKAGE: &str = "redis-tools";
const REDIS_BENCHMARK_PATH: &str = "usr/bin/redis-benchmark";

/// redis-benchmark from the db image if it has one, else the same file from
/// the pinned redis-tools package (the one the image's redis-cli and
/// redis-server come from) mounted in; with the package it is from.
fn redis_benchmark_binary(sh: &Shell, image: &str) -> anyhow::Result<(BenchmarkBinary, String)> {
    let pin = pins::Pin::ImagePackage {
        image: crate::stack::DB,
        package: REDIS_BENCHMARK_PACKAGE,
        path: REDIS_BENCHMARK_PATH,
    };
    let path = pins::ensure(&pin).context("the pinned redis-benchmark")?;
    let package = pins::package_of(&pin)?;
    let in_image = format!("/{REDIS_BENCHMARK_PATH}");
    let probe = cmd!(
        sh,
        "docker run --rm --entrypoint {in_image} {image} --version"
    )
    .quiet()
    .ignore_stderr()
    .ignore_stdout()
    .run();
    if probe.is_ok() {
        return Ok((BenchmarkBinary::InImage(in_image), package));
    }
    Ok((BenchmarkBinary::Mounted(path), package))
}

fn redis_benchmark_version(
    target: &RedisTarget,
    binary: &BenchmarkBinary,
    package: &str,
) -> String {
    match binary {
        BenchmarkBinary::InImage(_) => format!("redis-benchmark ({package}) in {}", target.image),
        BenchmarkBinary::Mounted(_) => {
            format!("redis-benchmark ({package}) mounted into {}", target.image)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_port_reads_the_port_of_a_base_url() {
        assert_eq!(url_port("http://127.0.0.1:8070"), Some(8070));
        assert_eq!(url_port("http://127.0.0.1:18914/x"), Some(18914));
        assert_eq!(url_port("http://localhost"), None);
    }
}
