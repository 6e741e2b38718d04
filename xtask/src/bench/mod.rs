//! `cargo xtask bench`: throughput, latency and memory of the stack through
//! the proxy, with the proxy's and Redis's own ceilings measured in the same
//! run, with the same load tool settings.
//!
//! Rows, in order: nginx answering `/nginx/ceiling` by itself (the ceiling of
//! anything proxied through the same published port), `GET /` (one Redis
//! script call per request, which counts it once), `GET /` open loop at 25, 50 and 75 % of the rate
//! just measured, `GET /api/hits` (one Redis GET), and Redis's INCR rate from
//! inside the backend network. While `GET /` runs, the shared counter must
//! rise by exactly the number of successful responses. Every row also gets
//! the CPU per request of each container and of the Docker host processes
//! working for the stack (docker-proxy, containerd-shim, dockerd).
//!
//! Results go to `target/bench/`: `results.json`, `results.md` (also printed)
//! and `latency.svg`.

mod chart;
mod http;
mod markdown;
mod oha;
mod redis_row;
pub mod report;
mod sampler;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::compose;
use crate::docker::deployment::Deployment;
use crate::docker::HEALTHY_TIMEOUT_SECS;

use self::{
    oha::Amount,
    redis_row::{BenchmarkBinary, RedisTarget},
    report::{CounterCheck, Report, Row, RowKind, Settings, FIXED_RATE_FRACTIONS},
    sampler::{Sampler, WatchedContainer, WatchedProcesses},
};

/// The reference load: 64 concurrent connections.
const DEFAULT_CONNECTIONS: u32 = 64;
/// Requests per row by default: seconds per row at the rates the 2-core
/// reference machine reaches, so a whole run stays under two minutes even
/// for a slow configuration, while connection set-up is noise.
const DEFAULT_REQUESTS_PER_ROW: u64 = 20_000;
/// Requests per row for `--smoke`: a few seconds in total, enough to produce
/// every row, meaningless as a measurement.
const SMOKE_REQUESTS_PER_ROW: u64 = 1_000;

/// Seconds of load per fixed-rate `GET /` row (requests = rate × seconds),
/// and for `--smoke`.
const FIXED_RATE_ROW_SECS: f64 = 10.0;
const SMOKE_FIXED_RATE_ROW_SECS: f64 = 1.0;

/// Measure the stack: proxy ceiling, `GET /`, `GET /api/hits`, Redis INCR.
#[derive(clap::Args, Debug)]
pub struct Bench {
    /// Base URL of a running stack's proxy [default: the published port of
    /// the running --project]. Without --url, when the project is not
    /// running, the bench starts it (`cargo xtask up`) and removes it
    /// afterwards.
    #[arg(long)]
    url: Option<String>,
    /// Compose project: its containers are sampled and its db is the target
    /// of the Redis row.
    #[arg(long, short = 'p', env = "WEBSTACK_PROJECT", default_value = compose::DEFAULT_PROJECT)]
    project: String,
    /// Concurrent connections, the same for every row.
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS)]
    connections: u32,
    /// Requests per row [default: 20000].
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Seconds per HTTP row instead of a request count (the Redis row then
    /// sends as many requests as the proxy ceiling row finished).
    #[arg(long)]
    duration: Option<u64>,
    /// Webapp replicas [default: 1 when the bench starts the stack, else as
    /// many as run]. A running stack is scaled to this many for the run and
    /// back afterwards.
    #[arg(long)]
    replicas: Option<u32>,
    /// A few seconds in total at the default connection count: checks that
    /// every row works and the counter is exact, measures nothing. Results go
    /// to target/bench/smoke/. Without --url it starts a stack of its own
    /// under a unique project name and a free port, and removes it.
    #[arg(long, conflicts_with_all = ["requests", "duration", "connections", "output_dir"])]
    smoke: bool,
    /// File with the stack's Redis password, for the Redis row
    /// [default: .secrets/redis_password, what `cargo xtask up` generates].
    #[arg(long)]
    redis_password_file: Option<PathBuf>,
    /// Where results.json, results.md and latency.svg go.
    #[arg(long, default_value = "target/bench")]
    output_dir: PathBuf,
    /// Only make sure the load tool is built (into its cache) and print its
    /// path; `cargo xtask ci` runs this in the background.
    #[arg(long, hide = true)]
    load_tool_only: bool,
}

/// The running stack a benchmark measures.
#[derive(Debug, Clone)]
pub struct StackUnderTest {
    /// The proxy's published port, e.g. `http://127.0.0.1:8070`.
    pub base_url: String,
    /// Compose project: its containers are sampled, its db is the Redis row's target.
    pub compose_project: String,
    /// The stack's Redis password file; missing means no password.
    pub redis_password_file: PathBuf,
}

impl StackUnderTest {
    /// The stack `cargo xtask up` (or `e2e`) runs as `compose_project` on `port`.
    pub fn compose(compose_project: &str, port: u16) -> StackUnderTest {
        StackUnderTest {
            base_url: format!("http://127.0.0.1:{port}"),
            compose_project: compose_project.to_string(),
            redis_password_file: default_password_file(),
        }
    }
}

fn default_password_file() -> PathBuf {
    crate::secrets::secrets_dir().join(crate::stack::REDIS_PASSWORD_SECRET)
}

/// What the bench changed to get the stack it measures, undone afterwards.
enum Preparation {
    /// A stack that was up stays as it was.
    None,
    /// Scaled a running stack's webapp; scale back to this many.
    Scaled { original_replicas: u32 },
    /// Started the project; remove it (and its volume if it created it).
    Started { created_volume: bool },
}

impl Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.load_tool_only {
            println!("{}", oha::ensure_oha(sh)?.display());
            return Ok(());
        }
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.replicas == Some(0) {
            bail!("--replicas must be at least 1");
        }
        let amount = match (self.requests, self.duration) {
            (Some(0), _) => bail!("--requests must be at least 1"),
            (_, Some(0)) => bail!("--duration must be at least 1 second"),
            (Some(requests), _) => Amount::Requests(requests),
            (None, Some(seconds)) => Amount::Duration(seconds),
            (None, None) => Amount::Requests(DEFAULT_REQUESTS_PER_ROW),
        };
        crate::docker::require_docker(sh)?;
        // Before any stack is started or scaled: a missing load tool fails fast.
        let oha = oha::ensure_oha(sh)?;

        let (stack, preparation) = self.prepare_stack(sh)?;
        let outcome = self.measure_prepared(sh, &oha, &stack, amount);
        let cleanup = undo_preparation(sh, &stack.compose_project, preparation);
        let report = outcome?;
        cleanup?;
        print!("{}", report.to_markdown());
        check_report(&report)
    }

    fn measure_prepared(
        &self,
        sh: &Shell,
        oha: &PathBuf,
        stack: &StackUnderTest,
        amount: Amount,
    ) -> anyhow::Result<Report> {
        // Test traffic stays on this machine: the bench's own URLs are on
        // loopback and checked; a --url is the user's explicit choice.
        if self.url.is_none() {
            stack_contract::netguard::check_url(&stack.base_url, &[])
                .map_err(anyhow::Error::msg)?;
        }
        if !stack_answers(&stack.base_url) {
            bail!(
                "nothing answers at {}/nginx/health: is --url right? `cargo xtask status -p {}` shows the stack",
                stack.base_url,
                stack.compose_project
            );
        }
        eprintln!(
            "bench: measuring the stack at {} (project {})",
            stack.base_url, stack.compose_project
        );
        if self.smoke {
            return smoke(sh, oha, stack);
        }
        let report = measure(sh, oha, stack, self.connections, amount, false)?;
        write_results(&report, &project_relative(&self.output_dir))?;
        Ok(report)
    }

    /// Finds the stack to measure, scaling or starting it as asked.
    fn prepare_stack(&self, sh: &Shell) -> anyhow::Result<(StackUnderTest, Preparation)> {
        let password_file = self
            .redis_password_file
            .as_deref()
            .map(project_relative)
            .unwrap_or_else(default_password_file);
        // A smoke run without --url always gets a fresh stack of its own, so
        // it tests today's images and never adds load to someone's stack.
        let running_port = if self.smoke && self.url.is_none() {
            None
        } else {
            compose::published_proxy_port(sh, &self.project)
        };
        let running_url = match (&self.url, running_port) {
            (Some(url), _) => Some(url.trim_end_matches('/').to_string()),
            (None, Some(port)) => Some(format!("http://127.0.0.1:{port}")),
            (None, None) => None,
        };
        if let Some(base_url) = running_url {
            let stack = StackUnderTest {
                base_url,
                compose_project: self.project.clone(),
                redis_password_file: password_file,
            };
            let port = url_port(&stack.base_url).unwrap_or(crate::stack::DEFAULT_HOST_PORT);
            let deployment = compose::ComposeProject::new(sh, &self.project, port)?;
            let running = webapp_replicas(sh, &deployment)?;
            let preparation = match self.replicas {
                Some(wanted) if wanted != running => {
                    eprintln!("bench: scaling project {} from {running} to {wanted} webapp replica(s) for the run", self.project);
                    scale(sh, &self.project, wanted)?;
                    Preparation::Scaled {
                        original_replicas: running,
                    }
                }
                _ => Preparation::None,
            };
            return Ok((stack, preparation));
        }

        // Nothing runs: start the stack. A smoke run uses its own project and
        // a free port, so it can run while the user's stack (or a test) is up.
        let (project, port) = if self.smoke {
            (
                format!("webstack-bench-{}", crate::docker::unique_suffix()),
                crate::docker::free_host_port()?,
            )
        } else {
            (self.project.clone(), crate::stack::DEFAULT_HOST_PORT)
        };
        let created_volume = !volume_exists(sh, &project);
        let replicas = self.replicas.unwrap_or(1);
        eprintln!("bench: project {project} is not running; starting it with {replicas} webapp replica(s) on port {port}");
        let started = compose::Up {
            replicas,
            port,
            project: project.clone(),
            skip_images: false,
            timeout_secs: HEALTHY_TIMEOUT_SECS,
            images: None,
        }
        .run(sh);
        let preparation = Preparation::Started { created_volume };
        if let Err(error) = started {
            let _ = undo_preparation(sh, &project, preparation);
            return Err(error).context("start the stack to measure");
        }
        let stack = StackUnderTest {
            redis_password_file: password_file,
            ..StackUnderTest::compose(&project, port)
        };
        Ok((stack, preparation))
    }
}

fn scale(sh: &Shell, compose_project: &str, replicas: u32) -> anyhow::Result<()> {
    compose::Scale {
        replicas,
        project: compose_project.to_string(),
        timeout_secs: HEALTHY_TIMEOUT_SECS,
    }
    .run(sh)
    .with_context(|| format!("scale project {compose_project} to {replicas} webapp replica(s)"))
}

fn undo_preparation(
    sh: &Shell,
    compose_project: &str,
    preparation: Preparation,
) -> anyhow::Result<()> {
    match preparation {
        Preparation::None => Ok(()),
        Preparation::Scaled { original_replicas } => {
            eprintln!("bench: scaling project {compose_project} back to {original_replicas} webapp replica(s)");
            scale(sh, compose_project, original_replicas)
        }
        Preparation::Started { created_volume } => {
            eprintln!("bench: removing project {compose_project}, which the bench started");
            compose::Down {
                // Never delete data the bench did not create.
                volumes: created_volume,
                project: compose_project.to_string(),
            }
            .run(sh)
            .with_context(|| format!("remove project {compose_project}"))
        }
    }
}

/// Whether the project's data volume exists (Compose names it
/// `<project>_<volume>`).
fn volume_exists(sh: &Shell, compose_project: &str) -> bool {
    let volume = format!("{compose_project}_{}", crate::stack::DB_DATA_VOLUME);
    cmd!(sh, "docker volume inspect {volume}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// A few seconds of every row against a stack that is up, checked for a
/// complete, well-formed report and an exact counter; results are written to
/// `target/bench/smoke/`. For test flows that already run a stack.
fn smoke(sh: &Shell, oha: &PathBuf, stack: &StackUnderTest) -> anyhow::Result<Report> {
    let report = measure(
        sh,
        oha,
        stack,
        DEFAULT_CONNECTIONS,
        Amount::Requests(SMOKE_REQUESTS_PER_ROW),
        true,
    )?;
    let output_dir = crate::project_root().join("target/bench/smoke");
    write_results(&report, &output_dir)?;
    // Check what a reader of the file gets, not only the in-memory report.
    let json_path = output_dir.join("results.json");
    let json = fs::read_to_string(&json_path)
        .with_context(|| format!("read back {}", json_path.display()))?;
    let written: Report = serde_json::from_str(&json)
        .with_context(|| format!("{} is not a well-formed report", json_path.display()))?;
    check_report(&written)?;
    Ok(written)
}

/// Fails when the report is incomplete or the counter check failed; targets
/// are only reported.
fn check_report(report: &Report) -> anyhow::Result<()> {
    let problems = report.shape_problems();
    if !problems.is_empty() {
        bail!(
            "the benchmark report is incomplete: {}",
            problems.join("; ")
        );
    }
    let check = &report.counter_check;
    if !check.passed {
        bail!(
            "the hit counter rose from {} to {} but {} GET / requests succeeded: increments were lost or double-counted under load",
            check.before,
            check.after,
            check.successful_hit_requests
        );
    }
    Ok(())
}

fn stack_answers(base_url: &str) -> bool {
    matches!(http::get(base_url, "/nginx/health"), Ok((200, _)))
}

fn webapp_replicas(sh: &Shell, deployment: &dyn Deployment) -> anyhow::Result<u32> {
    Ok(deployment.containers(sh, crate::stack::WEBAPP)?.len() as u32)
}

fn measure(
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
    let run = Run::prepare(sh, oha, stack, connections, amount, smoke)?;
    run.warm_up()?;
    let ceiling = run.http_row(RowKind::ProxyCeiling, "/nginx/ceiling", amount, None)?;
    let base_url = stack.base_url.as_str();
    let before =
        http::read_hit_counter(base_url).context("read the hit counter before GET / load")?;
    let replicas_before = http::read_hits_per_replica(base_url)?;
    let hit_counter = run.http_row(RowKind::HitCounter, "/", amount, None)?;
    let after =
        http::read_hit_counter(base_url).context("read the hit counter after GET / load")?;
    let hits_per_replica =
        http::hits_between(&replicas_before, &http::read_hits_per_replica(base_url)?);
    let counter_check = CounterCheck::new(before, after, hit_counter.successful);
    let fixed_rate_rows = run.fixed_rate_rows(hit_counter.requests_per_sec)?;
    let hits_read = run.http_row(RowKind::HitsReadOnly, "/api/hits", amount, None)?;
    let redis = run.redis_row(ceiling.requests_finished)?;
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        started_at_unix_secs,
        settings: run.settings(),
        rows: [
            vec![ceiling, hit_counter],
            fixed_rate_rows,
            vec![hits_read, redis],
        ]
        .concat(),
        counter_check,
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
    /// What the sampler watches during every row.
    watched: Watched,
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
        let port = url_port(&stack.base_url).unwrap_or(crate::stack::DEFAULT_HOST_PORT);
        let deployment = compose::ComposeProject::new(sh, &stack.compose_project, port)?;
        let containers = sampler::stack_containers(sh, &deployment)?;
        let watched = Watched {
            processes: sampler::docker_host_processes(&containers, url_port(&stack.base_url)),
            containers,
        };
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
            watched,
            redis_target,
            benchmark_binary,
            benchmark_package,
            replicas,
        })
    }

    /// Not measured: the webapp's Redis pool fills, nginx's workers and the
    /// kernel's socket buffers are in use before the first row.
    fn warm_up(&self) -> anyhow::Result<()> {
        let warm_up = Amount::Requests(if self.smoke { 200 } else { 5_000 });
        for path in ["/nginx/ceiling", "/"] {
            oha::run_http_row(
                self.sh,
                self.oha,
                RowKind::ProxyCeiling,
                &format!("{}{path}", self.stack.base_url),
                self.connections,
                warm_up,
                None,
            )
            .with_context(|| format!("warm up {path}"))?;
        }
        Ok(())
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
        self.sampled(|| {
            oha::run_http_row(
                self.sh,
                self.oha,
                kind,
                &format!("{}{path}", self.stack.base_url),
                self.connections,
                amount,
                rate,
            )
        })
    }

    /// Runs one row's load with the sampler running, and adds what the
    /// containers and the Docker host processes spent meanwhile.
    fn sampled(&self, load: impl FnOnce() -> anyhow::Result<Row>) -> anyhow::Result<Row> {
        let sampler = Sampler::start(&self.watched.containers, &self.watched.processes);
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

/// What the sampler watches during every row: the stack's containers and
/// the Docker host processes working for them.
struct Watched {
    containers: Vec<WatchedContainer>,
    processes: Vec<WatchedProcesses>,
}

/// The port of `http://host:port`, if the URL names one.
fn url_port(base_url: &str) -> Option<u16> {
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
    let pinned = crate::images::pinned_package_file(
        crate::stack::DB,
        REDIS_BENCHMARK_PACKAGE,
        REDIS_BENCHMARK_PATH,
    )
    .context("the pinned redis-benchmark")?;
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
        return Ok((BenchmarkBinary::InImage(in_image), pinned.package));
    }
    Ok((BenchmarkBinary::Mounted(pinned.path), pinned.package))
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

fn write_results(report: &Report, output_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(output_dir).with_context(|| format!("create {}", output_dir.display()))?;
    let json = serde_json::to_string_pretty(report).context("serialise the report")?;
    for (name, contents) in [
        ("results.json", json + "\n"),
        ("results.md", report.to_markdown()),
        ("latency.svg", chart::latency_svg(report)),
    ] {
        let path = output_dir.join(name);
        fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!(
        "bench: wrote results.json, results.md and latency.svg to {}",
        output_dir.display()
    );
    Ok(())
}

fn project_relative(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        crate::project_root().join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::fixed_report;

    #[test]
    fn url_port_reads_the_port_of_a_base_url() {
        assert_eq!(url_port("http://127.0.0.1:8070"), Some(8070));
        assert_eq!(url_port("http://127.0.0.1:18914/x"), Some(18914));
        assert_eq!(url_port("http://localhost"), None);
    }

    #[test]
    fn check_report_accepts_a_complete_report_with_an_exact_counter() {
        assert!(check_report(&fixed_report()).is_ok());
    }

    #[test]
    fn check_report_fails_when_the_counter_missed_increments() {
        let mut report = fixed_report();
        report.counter_check = CounterCheck::new(5, 10_004, 10_000);

        let error = check_report(&report).err().map(|error| error.to_string());

        assert!(
            error
                .as_deref()
                .is_some_and(|error| error.contains("rose from 5 to 10004")),
            "{error:?}"
        );
    }

    #[test]
    fn check_report_fails_when_a_row_is_missing() {
        let mut report = fixed_report();
        report.rows.retain(|row| row.kind != RowKind::RedisIncr);

        let error = check_report(&report).err().map(|error| error.to_string());

        assert!(
            error
                .as_deref()
                .is_some_and(|error| error.contains("RedisIncr")),
            "{error:?}"
        );
    }
}
