//! `cargo xtask bench`: throughput, latency and memory of the stack through
//! the proxy, with the proxy's and Redis's own ceilings measured in the same
//! run, with the same load tool settings.
//!
//! Rows, in order: nginx answering `/nginx/ceiling` by itself (the ceiling of
//! anything proxied through the same published port), `GET /` (one Redis
//! script call per request, which counts it once), `GET /` open loop at 25, 50 and 75 % of the rate
//! just measured, `GET /api/hits` (one Redis GET), and Redis's INCR rate from
//! inside the backend network; then, with the project's front deployed again
//! on HTTPS (`--tls self-signed`, a CA of the run's own), `GET /` with a new
//! TLS connection per request, over kept-alive TLS connections, and over
//! HTTP/2, after which the front is put back as it was. While each `GET /`
//! row runs (but the open-loop ones), the shared counter must rise by exactly
//! the number of successful responses. Every row also gets
//! the CPU per request of each container and of the Docker host processes
//! working for the stack (docker-proxy, containerd-shim, dockerd).
//!
//! Results go to `target/bench/`: `results.json`, `results.md` (also printed)
//! and `latency.svg`.

mod chart;
mod http;
mod https;
mod markdown;
mod measure;
mod oha;
mod redis_row;
pub mod report;
mod sampler;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::compose::{self, Front};
use crate::docker::HEALTHY_TIMEOUT_SECS;

use self::{
    measure::{default_password_file, measure, url_port, webapp_replicas, StackUnderTest},
    oha::Amount,
    report::{Report, RowKind},
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

/// What the bench changed to get the stack it measures, undone afterwards.
struct Preparation {
    change: Change,
    /// How the front served before the bench, put back after the HTTPS rows;
    /// `None` when there is nothing to put back (a stack the bench started,
    /// or one given by `--url`, which the bench does not redeploy).
    front_before: Option<Front>,
}

/// What the bench changed in the stack's existence or size.
enum Change {
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
        let cleanup = undo_preparation(sh, &stack, preparation);
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
                https_rows: self.url.is_none(),
            };
            let port = url_port(&stack.base_url).unwrap_or(crate::stack::DEFAULT_HOST_PORT);
            let mut deployment = compose::ComposeProject::new(sh, &self.project, port)?;
            let front_before = if stack.https_rows {
                let front = deployment.running_front(sh);
                if front != Front::Plain {
                    require_the_certificate_to_put_back(&self.project)?;
                    if let Err(error) = serve_plain_for_the_plain_rows(sh, &mut deployment) {
                        let _ = restore_front(sh, &stack, front);
                        return Err(error);
                    }
                }
                Some(front)
            } else {
                None
            };
            let running = webapp_replicas(sh, &deployment)?;
            let change = match self.replicas {
                Some(wanted) if wanted != running => {
                    eprintln!("bench: scaling project {} from {running} to {wanted} webapp replica(s) for the run", self.project);
                    if let Err(error) = scale(sh, &self.project, wanted) {
                        let preparation = Preparation {
                            change: Change::None,
                            front_before,
                        };
                        let _ = undo_preparation(sh, &stack, preparation);
                        return Err(error);
                    }
                    Change::Scaled {
                        original_replicas: running,
                    }
                }
                _ => Change::None,
            };
            let preparation = Preparation {
                change,
                front_before,
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
            tls: crate::tls::TlsArgs::plain(),
            https_port: crate::stack::DEFAULT_HTTPS_HOST_PORT,
            images: None,
        }
        .run(sh);
        let stack = StackUnderTest {
            redis_password_file: password_file,
            ..StackUnderTest::compose(&project, port)
        };
        // Removed afterwards: its front needs no putting back.
        let preparation = Preparation {
            change: Change::Started { created_volume },
            front_before: None,
        };
        if let Err(error) = started {
            let _ = undo_preparation(sh, &stack, preparation);
            return Err(error).context("start the stack to measure");
        }
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

/// The bench measures the plain rows of a project whose front serves HTTPS
/// with a plain front, and puts the HTTPS one back afterwards: only when the
/// certificate it ran with is where `up --tls` left it.
fn require_the_certificate_to_put_back(compose_project: &str) -> anyhow::Result<()> {
    let dir = crate::tls::tls_dir();
    for (_, file) in crate::stack::front_tls().secret_files {
        if !dir.join(file).is_file() {
            bail!(
                "project {compose_project} serves HTTPS; the bench measures its plain rows with a plain front and puts the HTTPS one back afterwards, but {} is not there to put back (is {} set as when it was started?)",
                dir.join(file).display(),
                crate::stack::TLS_DIR_VARIABLE
            );
        }
    }
    Ok(())
}

/// A project whose front serves HTTPS (`up --tls`) deployed again with a
/// plain front, for the plain rows (its plain port only redirects).
fn serve_plain_for_the_plain_rows(
    sh: &Shell,
    project: &mut compose::ComposeProject,
) -> anyhow::Result<()> {
    eprintln!(
        "bench: project {} serves HTTPS; deploying its front plain for the plain rows (put back afterwards)",
        project.name
    );
    project
        .redeploy_front(sh, Front::Plain, Duration::from_secs(HEALTHY_TIMEOUT_SECS))
        .with_context(|| format!("deploy project {} with a plain front", project.name))
}

/// Puts the front back as it was, then the replicas or the whole project;
/// both are tried, the first failure is returned.
fn undo_preparation(
    sh: &Shell,
    stack: &StackUnderTest,
    preparation: Preparation,
) -> anyhow::Result<()> {
    let compose_project = &stack.compose_project;
    let front = match preparation.front_before {
        Some(front_before) => restore_front(sh, stack, front_before),
        None => Ok(()),
    };
    let change = undo_change(sh, compose_project, preparation.change);
    front.and(change)
}

/// Deploys the front again as it served before the bench, unless it
/// still does (a plain front the HTTPS rows never replaced).
fn restore_front(sh: &Shell, stack: &StackUnderTest, front_before: Front) -> anyhow::Result<()> {
    let port = url_port(&stack.base_url).unwrap_or(crate::stack::DEFAULT_HOST_PORT);
    let mut project = compose::ComposeProject::new(sh, &stack.compose_project, port)?;
    if front_before == Front::Plain && project.running_front(sh) == Front::Plain {
        return Ok(());
    }
    let serving = match &front_before {
        Front::Plain => String::from("plain HTTP"),
        Front::Https { port, .. } => format!("HTTPS on port {port}"),
    };
    eprintln!(
        "bench: putting the front of project {} back as it was ({serving})",
        stack.compose_project
    );
    project
        .redeploy_front(sh, front_before, Duration::from_secs(HEALTHY_TIMEOUT_SECS))
        .with_context(|| {
            format!(
                "put the front of project {} back ({serving})",
                stack.compose_project
            )
        })
}

fn undo_change(sh: &Shell, compose_project: &str, change: Change) -> anyhow::Result<()> {
    match change {
        Change::None => Ok(()),
        Change::Scaled { original_replicas } => {
            eprintln!("bench: scaling project {compose_project} back to {original_replicas} webapp replica(s)");
            scale(sh, compose_project, original_replicas)
        }
        Change::Started { created_volume } => {
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
    let checks = std::iter::once((RowKind::HitCounter, &report.counter_check)).chain(
        report
            .https_counter_checks
            .iter()
            .map(|check| (check.row, &check.check)),
    );
    for (row, check) in checks {
        if !check.passed {
            bail!(
                "the hit counter rose from {} to {} but {} requests of {} succeeded: increments were lost or double-counted under load",
                check.before,
                check.after,
                check.successful_hit_requests,
                row.label()
            );
        }
    }
    Ok(())
}

fn stack_answers(base_url: &str) -> bool {
    http::Endpoint::new(base_url, None)
        .and_then(|endpoint| endpoint.get("/nginx/health"))
        .is_ok_and(|(status, _)| status == 200)
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
    use crate::bench::report::CounterCheck;

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
