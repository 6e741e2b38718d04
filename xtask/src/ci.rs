//! `cargo xtask ci`: every check and test suite the project has, in the order
//! a failure is cheapest to find. `.ci/run` runs exactly this, so a new user
//! and CI run the same thing.
//!
//! It fetches what the tests need by itself: the pinned redis-server (from
//! the same Debian packages the db image is built from) and the load tool
//! for the bench smoke test, and the pinned `nix-instantiate` (Debian's
//! nix-bin) for the Nix checks, which fail the run when it cannot be had.

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
        // Reads the sources' `use` paths (see layers.rs); no build needed.
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
        // Builds every image twice, each time from scratch in directories
        // of its own, and compares the digests.
        step("images are reproducible and within budget", &mut || {
            crate::images::check_reproducible_and_budgets(sh)
        })?;
        step(
            "hermetic tests (plain cargo test: no Docker, network or root)",
            &mut || {
                cmd!(sh, "cargo test --workspace").run()?;
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
        step("bench smoke test", &mut || {
            cmd!(sh, "{xtask} bench --smoke").run()?;
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
