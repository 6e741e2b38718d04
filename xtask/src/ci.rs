//! `cargo xtask ci`: every check and test suite the project has, in the order
//! a failure is cheapest to find. `.ci/run` runs exactly this, so a new user
//! and CI run the same thing.
//!
//! It fetches what the tests need by itself: the pinned redis-server (from
//! the same Debian packages the db image is built from) and the load tool
//! for the bench smoke test, and the pinned `nix-instantiate` (Debian's
//! nix-bin) for the Nix checks, which fail the run when it cannot be had.

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
        let load_tool = LoadToolBuild::start(
            &xtask,
            crate::project_root()
                .join("target")
                .join("ci-load-tool.log"),
        )?;
        let mut timings = Vec::new();
        let mut step = |name: &'static str, body: &mut dyn FnMut() -> anyhow::Result<()>| {
            eprintln!("\n==> ci: {name}");
            let step_started = Instant::now();
            let outcome = body().with_context(|| format!("ci step `{name}` failed"));
            timings.push((name, step_started.elapsed().as_secs()));
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
        // Builds every image from scratch in a directory of its own and
        // again as the regular build (which the end-to-end steps then reuse),
        // and compares the digests.
        step("images are reproducible and within budget", &mut || {
            crate::images::check_reproducible_and_budgets(sh)
        })?;
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
        step("Compose end to end (v1 and v2)", &mut || {
            cmd!(sh, "{xtask} e2e --compose both").run()?;
            Ok(())
        })?;
        let mut load_tool = Some(load_tool);
        step("bench smoke test", &mut || {
            if let Some(build) = load_tool.take() {
                build.wait();
            }
            cmd!(sh, "{xtask} bench --smoke").run()?;
            Ok(())
        })?;
        // The arm64 images (built by the images step) under qemu-user:
        // skipped in one line where binfmt_misc cannot be used.
        step("arm64 images under emulation (smoke test)", &mut || {
            cmd!(sh, "{xtask} e2e --arm64").run()?;
            Ok(())
        })?;
        if !self.no_swarm {
            step("Swarm end to end", &mut || {
                cmd!(sh, "{xtask} e2e --swarm").run()?;
                Ok(())
            })?;
        }
        if !self.no_cluster {
            step("Swarm on a 3-node cluster end to end", &mut || {
                cmd!(sh, "{xtask} e2e --swarm --nodes 3").run()?;
                Ok(())
            })?;
        }

        eprintln!("\nci: all steps passed in {}s", started.elapsed().as_secs());
        for (name, seconds) in &timings {
            eprintln!("  {seconds:>5}s  {name}");
        }
        Ok(())
    }
}

/// `xtask bench --load-tool-only` in the background, at the lowest CPU
/// priority (`nice -n 19`, where there is a `nice`) so the steps it runs
/// beside keep their pace, in a process group of its own so that it can be
/// stopped as a whole (cargo and its rustc processes) if `ci` ends first.
struct LoadToolBuild {
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

impl LoadToolBuild {
    fn start(xtask: &Path, log: PathBuf) -> anyhow::Result<LoadToolBuild> {
        let spawn = |niced: bool| -> anyhow::Result<std::io::Result<Child>> {
            let output = File::create(&log).with_context(|| format!("create {}", log.display()))?;
            let mut command = if niced {
                let mut nice = Command::new("nice");
                nice.args(["-n", "19"]).arg(xtask);
                nice
            } else {
                Command::new(xtask)
            };
            command
                .args(["bench", "--load-tool-only"])
                .stdin(Stdio::null())
                .stdout(
                    output
                        .try_clone()
                        .context("duplicate the log's file handle")?,
                )
                .stderr(output)
                .process_group(0);
            Ok(command.spawn())
        };
        let child = match spawn(true)? {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => spawn(false)?,
            spawned => spawned,
        }
        .context("start building the load tool in the background")?;
        eprintln!(
            "ci: building the load tool in the background if it is not cached (log: {})",
            log.display()
        );
        Ok(LoadToolBuild {
            child: Some(child),
            log,
            started: Instant::now(),
        })
    }

    /// Waits for the build. A failure is only reported: the bench step then
    /// builds the tool itself, and fails with the reason if it still cannot.
    fn wait(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        eprintln!(
            "ci: waiting for the load tool (log: {})",
            self.log.display()
        );
        match child.wait() {
            Ok(status) if status.success() => eprintln!(
                "ci: the load tool is ready ({}s after ci started building it)",
                self.started.elapsed().as_secs()
            ),
            Ok(status) => eprintln!(
                "ci: warning: building the load tool in the background failed ({status}); see {}",
                self.log.display()
            ),
            Err(error) => eprintln!("ci: warning: waiting for the load tool's build: {error}"),
        }
    }
}

impl Drop for LoadToolBuild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
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
