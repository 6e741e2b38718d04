//! `cargo xtask e2e`: a fresh stack under a unique name and on a free port
//! (Compose, Swarm, or Swarm on a simulated cluster), the end-to-end suite
//! in `tests/` (crate `stack-tests`) against it, and the stack removed
//! whatever happened.
//!
//! The suites find the stack through the variables of
//! `stack_contract::variables` set here; run on their own they fail,
//! saying to use this command.
//!
//! `compose.rs` and `swarm.rs` drive one orchestrator each; what they share
//! (running a suite, checking its address, the verdict after teardown) is
//! here.

mod acme;
mod arm64;
mod compose;
mod swarm;

use std::ffi::OsString;
use std::fmt::Display;
use std::path::PathBuf;

use anyhow::Context;
use stack_contract::netguard::Ipv4Net;
use xshell::{cmd, Shell};

/// Run the end-to-end tests against a fresh Compose stack.
#[derive(clap::Args)]
pub struct E2e {
    /// Keep the stack running after the tests (for debugging; remove it
    /// with `cargo xtask down --volumes -p <project>`).
    #[arg(long)]
    keep: bool,
    /// Test the stack on Docker Swarm instead (deploy/stack.yaml; creates a
    /// single-node swarm if needed and leaves it again afterwards).
    #[arg(long, conflicts_with_all = ["keep", "compose"])]
    swarm: bool,
    /// Which Compose runs the suite: v1 (`docker-compose` 1.29), v2 (the
    /// plugin, else the pinned Compose v2), both one after the other (v2
    /// the whole suite, v1 what depends on Compose: all but the proxy's
    /// hostile-client tests and its restarts), v1-part (that part of `both`
    /// alone), or auto (v2 if it can be had).
    #[arg(long, value_enum, default_value_t = ComposeChoice::Auto)]
    compose: ComposeChoice,
    /// With --swarm: test on a cluster of this many engines on this machine
    /// (`cargo xtask cluster up`; root), removed afterwards.
    #[arg(long, requires = "swarm")]
    nodes: Option<u8>,
    /// Instead: a smoke test of the arm64 images under emulation (the
    /// pinned qemu-user, registered with binfmt_misc; root): a Compose
    /// stack of them comes up healthy and counts. Says why and passes
    /// where the machine cannot register the emulator.
    #[arg(long, conflicts_with_all = ["keep", "swarm", "compose", "nodes"])]
    arm64: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ComposeChoice {
    V1,
    V2,
    Both,
    /// Under v1, only what depends on Compose: the v1 half of `Both`, which
    /// `cargo xtask ci` runs beside the Swarm suite.
    V1Part,
    Auto,
}

impl E2e {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if self.arm64 {
            return arm64::run_arm64_smoke(sh);
        }
        match (self.swarm, self.nodes) {
            (_, Some(nodes)) => swarm::run_cluster_e2e(sh, nodes),
            (true, None) => swarm::run_swarm_e2e(sh),
            (false, None) => compose::run_compose_e2e(sh, self.compose, self.keep),
        }
    }
}

/// The running xtask binary, which the suites call for `scale` and the like.
fn xtask_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locate the running xtask binary")
}

/// `http://HOST:PORT`, once the network guard has accepted it: loopback, or
/// an address on one of `own_networks`.
fn suite_url(host: impl Display, port: u16, own_networks: &[Ipv4Net]) -> anyhow::Result<String> {
    let url = format!("http://{host}:{port}");
    stack_contract::netguard::check_url(&url, own_networks).map_err(anyhow::Error::msg)?;
    Ok(url)
}

/// Which tests of a test binary run, by libtest's filters (a test matches
/// a filter its name contains).
#[derive(Clone, Copy)]
enum Tests<'a> {
    /// All but those matching one of these.
    Skipping(&'a [&'a str]),
    /// Only those matching this.
    Matching(&'a str),
}

impl Tests<'_> {
    fn arguments(self) -> Vec<String> {
        match self {
            Tests::Skipping(skip) => skip
                .iter()
                .map(|filter| format!("--skip={filter}"))
                .collect(),
            Tests::Matching(filter) => vec![filter.to_owned()],
        }
    }
}

/// Runs one test binary of `stack-tests` (`--test {test}`) with the
/// variables that tell it where the stack is. One test at a time: they
/// share one stack, and the counter and rollout checks would disturb each
/// other. `--nocapture` shows the measured counts.
fn run_suite(
    sh: &Shell,
    test: &str,
    what: &str,
    variables: Vec<(&str, OsString)>,
    tests: Tests<'_>,
) -> anyhow::Result<()> {
    let selection = tests.arguments();
    cmd!(
        sh,
        "cargo test --package stack-tests --test {test} -- --ignored --test-threads=1 --nocapture {selection...}"
    )
    .envs(variables)
    .run()
    .with_context(|| format!("the {what} failed (output above)"))
}

/// What a run that removes its stack afterwards returns: the tests' verdict
/// first; a failed teardown after passing tests fails the run too.
/// `log` prefixes the lines printed, `tests` and `teardown` name the two
/// steps in the messages.
fn verdict(
    log: &str,
    tests: &str,
    teardown: &str,
    outcome: anyhow::Result<()>,
    cleanup: anyhow::Result<()>,
) -> anyhow::Result<()> {
    match (outcome, cleanup) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) => Err(error),
        (Ok(()), Err(error)) => {
            Err(error.context(format!("{tests} passed, but {teardown} failed")))
        }
        (Err(error), Err(cleanup_error)) => {
            eprintln!("{log}: {teardown} failed as well: {cleanup_error:#}");
            Err(error)
        }
    }
}
