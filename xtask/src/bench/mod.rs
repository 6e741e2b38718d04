//! `cargo xtask bench`: throughput, latency and memory of the stack through
//! the proxy, with the proxy's and Redis's own ceilings measured in the same
//! run, with the same load tool settings.
//!
//! Rows, in order: nginx answering `/nginx/ceiling` by itself (the ceiling of
//! anything proxied through the same published port), `GET /` (one Redis
//! MULTI/EXEC per request), `GET /api/hits` (one Redis GET), and Redis's INCR
//! rate from inside the backend network. While `GET /` runs, the shared
//! counter must rise by exactly the number of successful responses.
//!
//! Results go to `target/bench/`: `results.json`, `results.md` (also printed)
//! and `latency.svg`.

mod chart;
mod http;
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

use self::{
    oha::Amount,
    redis_row::{BenchmarkBinary, RedisTarget},
    report::{CounterCheck, Report, Row, RowKind, Settings},
    sampler::{Sampler, WatchedContainer},
};

/// Requests per row by default: about a minute in total on the 2-core
/// reference machine, long enough that connection set-up and the first
/// second's warm-up are noise.
const DEFAULT_REQUESTS_PER_ROW: u64 = 50_000;
/// Requests per row for `--smoke`: a few seconds in total, enough to produce
/// every row, meaningless as a measurement.
const SMOKE_REQUESTS_PER_ROW: u64 = 1_000;

/// Measure the stack: proxy ceiling, `GET /`, `GET /api/hits`, Redis INCR.
#[derive(clap::Args, Debug)]
pub struct Bench {
    /// Base URL of the proxy's published port. If nothing answers there, the
    /// bench starts the stack itself and stops it afterwards.
    #[arg(long, default_value = "http://127.0.0.1:8070")]
    url: String,
    /// Compose project of the running stack (its containers are sampled and
    /// its db is the target of the Redis row).
    #[arg(long, default_value = "webstack")]
    project: String,
    /// Concurrent connections, the same for every row.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Requests per row [default: 50000; 1000 with --smoke].
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Seconds per HTTP row instead of a request count (the Redis row then
    /// sends as many requests as the proxy ceiling row finished).
    #[arg(long)]
    duration: Option<u64>,
    /// Webapp replicas. When the bench starts the stack it starts this many
    /// [default: 1]; a stack that is already up must run this many.
    #[arg(long)]
    replicas: Option<u32>,
    /// A few seconds in total: checks every row works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Where results.json, results.md and latency.svg go.
    #[arg(long, default_value = "target/bench")]
    output_dir: PathBuf,
}

impl Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        let amount = match (self.requests, self.duration, self.smoke) {
            (Some(0), _, _) => bail!("--requests must be at least 1"),
            (_, Some(0), _) => bail!("--duration must be at least 1 second"),
            (Some(requests), _, _) => Amount::Requests(requests),
            (None, Some(seconds), _) => Amount::Duration(seconds),
            (None, None, true) => Amount::Requests(SMOKE_REQUESTS_PER_ROW),
            (None, None, false) => Amount::Requests(DEFAULT_REQUESTS_PER_ROW),
        };
        let oha = oha::ensure_oha(sh)?;

        let report = if stack_answers(&self.url) {
            check_replicas(sh, &self.project, self.replicas)?;
            eprintln!("bench: using the stack that is up at {}", self.url);
            measure(
                sh,
                &oha,
                &self.url,
                &self.project,
                self.connections,
                amount,
                self.smoke,
            )?
        } else {
            bail!(
                "nothing answers at {}/nginx/health: start the stack with `cargo xtask up` first",
                self.url
            );
        };
        write_results(&report, &project_relative(&self.output_dir))?;
        print!("{}", report.to_markdown());
        check_report(&report)
    }
}

/// What the e2e flow calls while its own stack is up: a few seconds of every
/// row against `base_url`, checked for shape and correctness. Writes nothing.
pub fn smoke(sh: &Shell, base_url: &str, compose_project: &str) -> anyhow::Result<Report> {
    let oha = oha::ensure_oha(sh)?;
    let report = measure(
        sh,
        &oha,
        base_url,
        compose_project,
        64,
        Amount::Requests(SMOKE_REQUESTS_PER_ROW),
        true,
    )?;
    check_report(&report)?;
    Ok(report)
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

fn check_replicas(sh: &Shell, compose_project: &str, wanted: Option<u32>) -> anyhow::Result<()> {
    let running = webapp_replicas(sh, compose_project)?;
    if let Some(wanted) = wanted {
        if running != wanted {
            bail!("the running stack has {running} webapp replica(s), not {wanted}: restart it with that many (`cargo xtask up --replicas {wanted}`) or drop --replicas");
        }
    }
    Ok(())
}

fn webapp_replicas(sh: &Shell, compose_project: &str) -> anyhow::Result<u32> {
    let project_filter = format!("label=com.docker.compose.project={compose_project}");
    let service_filter = "label=com.docker.compose.service=webapp";
    let ids = cmd!(
        sh,
        "docker ps --quiet --filter {project_filter} --filter {service_filter}"
    )
    .quiet()
    .read()
    .context("count the webapp containers with docker ps")?;
    Ok(ids.lines().filter(|line| !line.trim().is_empty()).count() as u32)
}

fn measure(
    sh: &Shell,
    oha: &PathBuf,
    base_url: &str,
    compose_project: &str,
    connections: u32,
    amount: Amount,
    smoke: bool,
) -> anyhow::Result<Report> {
    let base_url = base_url.trim_end_matches('/');
    let started_at_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let containers = sampler::stack_containers(sh, compose_project)?;
    let redis_target = redis_target(sh, compose_project)?;
    let benchmark_binary = redis_benchmark_binary(sh, &redis_target.image)?;
    let replicas = webapp_replicas(sh, compose_project)?;

    // Warm-up, not measured: the webapp's Redis pool fills, nginx's workers
    // and the kernel's socket buffers are in use before the first row.
    let warm_up = Amount::Requests(if smoke { 200 } else { 5_000 });
    for path in ["/nginx/ceiling", "/"] {
        oha::run_http_row(
            sh,
            oha,
            RowKind::ProxyCeiling,
            &format!("{base_url}{path}"),
            connections,
            warm_up,
        )
        .with_context(|| format!("warm up {path}"))?;
    }

    let ceiling = measure_http_row(
        sh,
        oha,
        &containers,
        RowKind::ProxyCeiling,
        base_url,
        "/nginx/ceiling",
        connections,
        amount,
    )?;

    let before =
        http::read_hit_counter(base_url).context("read the hit counter before GET / load")?;
    let hit_counter = measure_http_row(
        sh,
        oha,
        &containers,
        RowKind::HitCounter,
        base_url,
        "/",
        connections,
        amount,
    )?;
    let after =
        http::read_hit_counter(base_url).context("read the hit counter after GET / load")?;
    let counter_check = CounterCheck::new(before, after, hit_counter.successful);

    let hits_read = measure_http_row(
        sh,
        oha,
        &containers,
        RowKind::HitsReadOnly,
        base_url,
        "/api/hits",
        connections,
        amount,
    )?;

    let redis_requests = match amount {
        Amount::Requests(requests) => requests,
        Amount::Duration(_) => ceiling.requests_finished.max(1),
    };
    eprintln!(
        "bench: {} (redis-benchmark in the db image)",
        RowKind::RedisIncr.label()
    );
    let sampler = Sampler::start(&containers);
    let redis = redis_row::run_redis_row(
        sh,
        &redis_target,
        &benchmark_binary,
        connections,
        redis_requests,
    );
    let usage = sampler.finish()?;
    let mut redis = redis?;
    redis.containers = usage;

    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        started_at_unix_secs,
        settings: Settings {
            base_url: base_url.to_string(),
            compose_project: compose_project.to_string(),
            connections,
            requests_per_row: match amount {
                Amount::Requests(requests) => Some(requests),
                Amount::Duration(_) => None,
            },
            duration_secs_per_row: match amount {
                Amount::Requests(_) => None,
                Amount::Duration(seconds) => Some(seconds),
            },
            webapp_replicas: replicas,
            http_load_tool: format!("oha {}", oha::OHA_VERSION),
            redis_load_tool: redis_benchmark_version(sh, &redis_target, &benchmark_binary),
            smoke,
        },
        rows: vec![ceiling, hit_counter, hits_read, redis],
        counter_check,
        targets: Vec::new(),
    };
    report.finish();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn measure_http_row(
    sh: &Shell,
    oha: &PathBuf,
    containers: &[WatchedContainer],
    kind: RowKind,
    base_url: &str,
    path: &str,
    connections: u32,
    amount: Amount,
) -> anyhow::Result<Row> {
    eprintln!("bench: {} (GET {path})", kind.label());
    let sampler = Sampler::start(containers);
    let row = oha::run_http_row(
        sh,
        oha,
        kind,
        &format!("{base_url}{path}"),
        connections,
        amount,
    );
    let usage = sampler.finish()?;
    let mut row = row?;
    row.containers = usage;
    Ok(row)
}

/// The running db container's image, backend network and password.
fn redis_target(sh: &Shell, compose_project: &str) -> anyhow::Result<RedisTarget> {
    let project_filter = format!("label=com.docker.compose.project={compose_project}");
    let service_filter = "label=com.docker.compose.service=db";
    let id = cmd!(
        sh,
        "docker ps --quiet --filter {project_filter} --filter {service_filter}"
    )
    .quiet()
    .read()
    .context("find the db container with docker ps")?;
    let Some(id) = id.lines().next().filter(|id| !id.is_empty()) else {
        bail!("Compose project {compose_project:?} has no running db container: start the stack with `cargo xtask up`");
    };
    let format =
        "{{.Config.Image}}\n{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}";
    let inspected = cmd!(sh, "docker inspect --format {format} {id}")
        .quiet()
        .read()
        .context("inspect the db container")?;
    let mut lines = inspected.lines();
    let image = lines.next().unwrap_or_default().trim().to_string();
    let networks: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // The db is meant to be on the backend network only; prefer one named so.
    let Some(network) = networks
        .iter()
        .find(|network| network.ends_with("backend"))
        .or_else(|| networks.first())
    else {
        bail!("the db container of {compose_project:?} is on no Docker network");
    };
    Ok(RedisTarget {
        image,
        network: network.to_string(),
        host: String::from("db"),
        password: redis_password()?,
    })
}

/// The generated Redis password from `.secrets/`, if the stack uses one.
fn redis_password() -> anyhow::Result<Option<String>> {
    let path = crate::project_root()
        .join(".secrets")
        .join("redis-password");
    if !path.exists() {
        return Ok(None);
    }
    let password = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(Some(password.trim_end_matches(['\n', '\r']).to_string()))
}

/// redis-benchmark from the db image if it has one, else the host tools' copy
/// of the same Debian package mounted in.
fn redis_benchmark_binary(sh: &Shell, image: &str) -> anyhow::Result<BenchmarkBinary> {
    let in_image = "/usr/bin/redis-benchmark";
    let probe = cmd!(
        sh,
        "docker run --rm --entrypoint {in_image} {image} --version"
    )
    .quiet()
    .ignore_stderr()
    .ignore_stdout()
    .run();
    if probe.is_ok() {
        return Ok(BenchmarkBinary::InImage(in_image.to_string()));
    }
    let host_binary = host_redis_benchmark()?;
    Ok(BenchmarkBinary::Mounted(host_binary))
}

fn host_redis_benchmark() -> anyhow::Result<PathBuf> {
    // FIXME: take this from images::host_tools once it exposes the unpacked
    // redis-tools package.
    let path = PathBuf::from("/usr/bin/redis-benchmark");
    if !path.exists() {
        bail!(
            "the db image has no redis-benchmark and {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

fn redis_benchmark_version(sh: &Shell, target: &RedisTarget, binary: &BenchmarkBinary) -> String {
    let _ = (sh, target);
    match binary {
        BenchmarkBinary::InImage(path) => format!("redis-benchmark ({path} in {})", target.image),
        BenchmarkBinary::Mounted(path) => {
            format!(
                "redis-benchmark ({} mounted into {})",
                path.display(),
                target.image
            )
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

/// A suffix for the names of the throw-away containers this run creates, so
/// concurrent runs (and other helpers' containers) never collide.
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:08x}", std::process::id())
}
