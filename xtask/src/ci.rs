//! `cargo xtask ci`: every check and test suite the project has, in the order
//! a failure is cheapest to find. `.ci/run` runs exactly this, so a new user
//! and CI run the same thing.
//!
//! It fetches what the tests need by itself: the pinned redis-server (from
//! the same Debian packages the db image is built from) and the load tool
//! for the bench smoke test, and the pinned `nix-instantiate` (Debian's
//! nix-bin) for the Nix checks, which fail the run when it cannot be had.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use xshell::{cmd, Shell};

/// Run every check and test suite (needs the Docker engine).
#[derive(clap::Args)]
pub struct Ci {
    /// Skip the Swarm end-to-end run (it creates and leaves a single-node swarm).
    #[arg(long)]
    no_swarm: bool,
    /// Skip the 3-node cluster end-to-end run (it needs root: it creates
    /// network namespaces and starts three engines, and removes them again).
    #[arg(long)]
    no_cluster: bool,
}

impl Ci {
    /// Long on purpose: the steps in the order they run, each in a line or
    /// a few, read best as one list.
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        // The later steps are xtask commands of their own, run by this very
        // binary so their output and exit codes are exactly what a user sees.
        // `cargo test --workspace` below may rebuild target/debug/xtask with
        // other features (cargo unifies them per build), so run a copy.
        let xtask = crate::project_root().join("target").join("xtask-ci");
        let running = std::env::current_exe().context("locate the running xtask binary")?;
        std::fs::copy(&running, &xtask)
            .with_context(|| format!("copy {} to {}", running.display(), xtask.display()))?;
        // The load tool takes minutes to compile the first time on a machine:
        // build it now, in the background, while the steps before the bench
        // run (and are mostly waiting on Docker). A no-op once it is cached.
        let target = crate::project_root().join("target");
        let load_tool = Background::start(
            "building the load tool (a no-op once it is cached)",
            Kind::Build,
            &xtask,
            &["bench", "--load-tool-only"],
            target.join("ci-load-tool.log"),
        )?;
        let mut timings = Vec::new();
        let mut step = |name: &'static str, body: &mut dyn FnMut() -> anyhow::Result<()>| {
            eprintln!("\n==> ci: {name}");
            let step_started = Instant::now();
            let cpu_before = MachineCpu::now();
            let outcome = body().with_context(|| format!("ci step `{name}` failed"));
            let cpu = MachineCpu::now()
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            timings.push((name, step_started.elapsed().as_secs(), cpu));
            outcome
        };

        step("cargo fmt --check", &mut || {
            cmd!(sh, "cargo fmt --all --check").run()?;
            Ok(())
        })?;
        step("cargo clippy", &mut || {
            cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?;
            Ok(())
        })?;
        // Reads the sources' `use` paths (see layers/); no build needed.
        step("no import cycle between modules", &mut || {
            crate::layers::check(&crate::project_root())
        })?;
        step(
            "Nix checks (flake-check and the flake tests, pinned nix-instantiate)",
            &mut || {
                // The pinned nix-bin (or WEBSTACK_NIX_INSTANTIATE's): when it
                // cannot be had, this fails naming what is missing.
                let nix = crate::flake::NixInstantiate::from_environment_or_pinned()?;
                crate::flake::check(sh, &nix)?;
                // The ignored tier's Nix tests; the later `--ignored` step
                // skips them.
                cmd!(sh, "cargo test -p xtask flake:: -- --ignored")
                    .env(crate::flake::NIX_INSTANTIATE_VARIABLE, &nix.program)
                    .run()?;
                Ok(())
            },
        )?;
        step(
            "hermetic tests (plain cargo test: no Docker, network or root)",
            &mut || {
                // In two: the end-to-end crate turns on reqwest features (HTTP/2) that the rest
                // does not, so building it with the rest would give xtask a second build for
                // the `--exclude stack-tests` tier below.
                cmd!(sh, "cargo test --workspace --exclude stack-tests").run()?;
                cmd!(sh, "cargo test -p stack-tests").run()?;
                Ok(())
            },
        )?;
        // The regular build of every image (which the end-to-end steps run),
        // within the size budgets. The other half of `images --check`, the
        // same images built from scratch at another path and compared byte
        // for byte, then runs beside the later steps: it is a full release
        // build again, and they leave most of the CPU idle.
        step("images (the regular build), within budget", &mut || {
            crate::images::build_regular_within_budgets(sh)
        })?;
        let reproducible = Background::start(
            "images --check (a build from scratch, compared with the regular one)",
            Kind::Build,
            &xtask,
            &["images", "--check"],
            target.join("ci-images-check.log"),
        )?;
        step(
            "tests that need redis-server, Docker, containerd or Debian's archive",
            &mut || {
                let tools = crate::images::host_tools(sh)?;
                // The ignored tests of the webapp (against the pinned
                // redis-server) and of xtask (containers, containerd, fetching).
                // The end-to-end suites in `stack-tests` need a running stack:
                // `cargo xtask e2e` runs them below.
                cmd!(
                    sh,
                    "cargo test --workspace --exclude stack-tests -- --ignored --skip flake::"
                )
                .env("REDIS_SERVER_BIN", &tools.redis_server)
                .run()?;
                Ok(())
            },
        )?;
        step(
            "Compose v2 end to end (the whole suite, then HTTPS)",
            &mut || {
                cmd!(sh, "{xtask} e2e --compose v2").run()?;
                Ok(())
            },
        )?;
        // The 3-node cluster runs on engines of its own (in network
        // namespaces), beside the steps that run on this machine's engine
        // until the Swarm step, and mostly waits on them, as they do. Not the
        // Compose 1.29 pass beside the Swarm step: on one engine, one's
        // containers coming and going stalled the other's rolling update.
        // At normal priority: its test sends load at a fixed rate and checks
        // that it was sent.
        let cluster = if self.no_cluster {
            None
        } else {
            Some(Background::start(
                "the Swarm suite on a 3-node cluster (e2e --swarm --nodes 3)",
                Kind::Suite,
                &xtask,
                &["e2e", "--swarm", "--nodes", "3"],
                target.join("ci-cluster.log"),
            )?)
        };
        step("Compose v1 end to end (what Compose decides)", &mut || {
            cmd!(sh, "{xtask} e2e --compose v1-part").run()?;
            Ok(())
        })?;
        if !self.no_swarm {
            step("Swarm end to end", &mut || {
                cmd!(sh, "{xtask} e2e --swarm").run()?;
                Ok(())
            })?;
        }
        // The arm64 images (built by the images step) under qemu-user:
        // skipped in one line where binfmt_misc cannot be used.
        step("arm64 images under emulation (smoke test)", &mut || {
            cmd!(sh, "{xtask} e2e --arm64").run()?;
            Ok(())
        })?;
        let mut load_tool = Some(load_tool);
        step("bench smoke test", &mut || {
            if let Some(build) = load_tool.take() {
                // A failure is only reported: `bench` then builds the tool
                // itself, and fails with the reason if it still cannot.
                if let Err(error) = build.wait() {
                    eprintln!("ci: warning: {error:#}");
                }
            }
            cmd!(sh, "{xtask} bench --smoke").run()?;
            Ok(())
        })?;
        let mut cluster = cluster;
        step(
            "Swarm on a 3-node cluster end to end (in the background since the Compose v1 step)",
            &mut || match cluster.take() {
                Some(run) => run.wait(),
                None => Ok(()),
            },
        )?;

        let mut reproducible = Some(reproducible);
        step(
            "images are reproducible (images --check, in the background since the images step)",
            &mut || match reproducible.take() {
                Some(check) => check.wait(),
                None => Ok(()),
            },
        )?;

        eprintln!("\nci: all steps passed in {}s", started.elapsed().as_secs());
        // The machine's CPU during each step, the background commands' included:
        // where the time can still be found (idle cores) and where it cannot.
        eprintln!(
            "  {:>6}  {:>11}  {:>11}  step",
            "wall", "CPU busy", "CPU idle"
        );
        for (name, seconds, cpu) in &timings {
            let (busy, idle) = cpu.map_or((String::new(), String::new()), |cpu| {
                (
                    format!("{:.0} core-s", cpu.busy),
                    format!("{:.0} core-s", cpu.idle),
                )
            });
            eprintln!(
                "  {:>6}  {busy:>11}  {idle:>11}  {name}",
                format!("{seconds}s")
            );
        }
        Ok(())
    }
}

/// A command run in the background while the steps go on, in a process
/// group of its own so that it can be stopped as a whole (cargo and its rustc
/// processes, or the end-to-end suite's) if `ci` ends first. Its output goes
/// to a log file.
struct Background {
    what: &'static str,
    kind: Kind,
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

/// The CPU time of the whole machine, all cores, from `/proc/stat` (`None`
/// where there is none): what a step used, beside what it left idle.
#[derive(Clone, Copy)]
struct MachineCpu {
    busy: f64,
    idle: f64,
}

impl MachineCpu {
    fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        MachineCpu::parse(stat.lines().next()?)
    }

    /// The `cpu` line: user, nice, system, idle, iowait, irq, softirq, steal
    /// (then guest time, already counted in user), in USER_HZ, which Linux fixes at 100.
    fn parse(line: &str) -> Option<MachineCpu> {
        let mut fields = line.strip_prefix("cpu ")?.split_whitespace();
        let mut next =
            || -> Option<f64> { Some(fields.next()?.parse::<u64>().ok()? as f64 / 100.0) };
        let (user, nice, system, idle, iowait) = (next()?, next()?, next()?, next()?, next()?);
        let (irq, softirq, steal) = (next()?, next()?, next()?);
        Some(MachineCpu {
            busy: user + nice + system + irq + softirq + steal,
            idle: idle + iowait,
        })
    }
}

impl std::ops::Sub for MachineCpu {
    type Output = MachineCpu;
    fn sub(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy - earlier.busy,
            idle: self.idle - earlier.idle,
        }
    }
}

/// What runs in the background, which decides its CPU priority and what
/// happens to it when `ci` ends first (a step failed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A build: at the lowest priority (a session of its own whose scheduling
    /// group is niced to 19, see [`LOWEST_PRIORITY_SCRIPT`]), so the steps and
    /// the stacks they test keep their pace and it takes the CPU they leave
    /// idle (the end-to-end steps mostly wait on Docker); stopped if `ci` ends
    /// first.
    Build,
    /// An end-to-end suite: at the steps' own priority, since its tests send
    /// load at fixed rates; if `ci` ends first, waited for, so that it removes
    /// what it started (stopped half-way, it would leave its stack behind).
    Suite,
}

/// Run by `setsid sh -c`, in the new session: nices its scheduling group
/// where the kernel has autogroups, and itself (`nice`) where it does not,
/// then becomes the command (`$0` and its arguments).
const LOWEST_PRIORITY_SCRIPT: &str = r#"echo 19 2>/dev/null > /proc/self/autogroup
if command -v nice >/dev/null; then exec nice -n 19 "$0" "$@"; fi
exec "$0" "$@""#;

/// How many of a failed background command's last lines the error shows.
const LOG_LINES_SHOWN: usize = 30;

impl Background {
    fn start(
        what: &'static str,
        kind: Kind,
        program: &Path,
        args: &[impl AsRef<OsStr>],
        log: PathBuf,
    ) -> anyhow::Result<Background> {
        let spawn = |lowest: bool| -> anyhow::Result<std::io::Result<Child>> {
            let output = File::create(&log).with_context(|| format!("create {}", log.display()))?;
            let mut command = if lowest {
                // A session of its own, whose scheduling group (Linux's autogroup,
                // one per session, on by default) is niced to 19 as a whole. `nice`
                // alone is not enough where autogroups are on: the kernel first
                // shares the CPU between sessions, each container's being one, so
                // a niced build in `ci`'s session still took a full share from
                // the stack under test (and made its Redis calls miss their
                // deadline). setsid makes the new session its process group too.
                let mut setsid = Command::new("setsid");
                setsid
                    .args(["sh", "-c", LOWEST_PRIORITY_SCRIPT])
                    .arg(program);
                setsid
            } else {
                let mut command = Command::new(program);
                command.process_group(0);
                command
            };
            command
                .args(args)
                .stdin(Stdio::null())
                .stdout(
                    output
                        .try_clone()
                        .context("duplicate the log's file handle")?,
                )
                .stderr(output);
            Ok(command.spawn())
        };
        // Without setsid (util-linux), at the steps' own priority.
        let child = match (kind, spawn(kind == Kind::Build)?) {
            (Kind::Build, Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("ci: no setsid on PATH: {what} runs at normal priority");
                spawn(false)?
            }
            (_, spawned) => spawned,
        }
        .with_context(|| format!("start {what} in the background"))?;
        eprintln!("ci: {what}, in the background (log: {})", log.display());
        Ok(Background {
            what,
            kind,
            child: Some(child),
            log,
            started: Instant::now(),
        })
    }

    /// Waits for the command; an error says how it failed and where its log is.
    fn wait(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        eprintln!(
            "ci: waiting for {} (log: {})",
            self.what,
            self.log.display()
        );
        let status = child
            .wait()
            .with_context(|| format!("wait for {}", self.what))?;
        let minutes = self.started.elapsed().as_secs_f64() / 60.0;
        if !status.success() {
            // The end of its output says why; the whole of it stays in the log.
            let output = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = output.lines().collect();
            let last = lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..].join("\n");
            anyhow::bail!(
                "{} failed ({status}, {minutes:.1} min after it started); the end of its output ({}):\n{last}",
                self.what,
                self.log.display()
            );
        }
        eprintln!("ci: {} done, {minutes:.1} min after it started", self.what);
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.kind == Kind::Suite {
                eprintln!(
                    "ci: waiting for {} to end and remove what it started (log: {})",
                    self.what,
                    self.log.display()
                );
                let _ = child.wait();
                return;
            }
            // The whole group: cargo and the rustc processes it started.
            let group = format!("-{}", child.id());
            let _ = Command::new("kill")
                .args(["-TERM", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MachineCpu;

    #[test]
    fn the_machines_cpu_is_read_from_the_first_line_of_proc_stat() {
        let cpu = MachineCpu::parse("cpu  127983 137768 47964 12586 489 0 1043 837 0 0")
            .expect("a cpu line");
        assert_eq!(
            cpu.busy,
            (127983 + 137768 + 47964 + 1043 + 837) as f64 / 100.0
        );
        assert_eq!(cpu.idle, (12586 + 489) as f64 / 100.0);
        assert!(MachineCpu::parse("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(MachineCpu::parse("cpu  1 2 3").is_none());
    }
}
