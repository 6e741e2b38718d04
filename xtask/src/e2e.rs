//! `cargo xtask e2e`: builds the images, starts a fresh Compose stack under a
//! unique project name and a free host port, runs the end-to-end suite in
//! `tests/` (crate `stack-tests`) against it, and always tears it down.
//!
//! The suite finds the stack through the `WEBSTACK_E2E_*` variables set
//! here; run on its own it fails, saying to use this command.

use std::time::Instant;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::compose::{self, ComposeProject, Up};
use crate::docker;

/// Variables the suite reads (tests/tests/compose.rs has the same names).
pub const URL_VARIABLE: &str = "WEBSTACK_E2E_URL";
pub const PROJECT_VARIABLE: &str = "WEBSTACK_E2E_PROJECT";
pub const PORT_VARIABLE: &str = "WEBSTACK_E2E_PORT";
pub const COMPOSE_FILE_VARIABLE: &str = "WEBSTACK_E2E_COMPOSE_FILE";
pub const COMPOSE_COMMAND_VARIABLE: &str = "WEBSTACK_E2E_COMPOSE_COMMAND";
pub const XTASK_VARIABLE: &str = "WEBSTACK_E2E_XTASK";

/// Replicas the suite starts with (it checks that all of them serve).
const E2E_REPLICAS: u32 = 3;

/// Run the end-to-end tests against a fresh Compose stack.
#[derive(clap::Args)]
pub struct E2e {
    /// Keep the stack running after the tests (for debugging; remove it
    /// with `cargo xtask down --volumes -p <project>`).
    #[arg(long)]
    keep: bool,
    /// Test the stack on Docker Swarm instead (deploy/stack.yaml; creates a
    /// single-node swarm if needed and leaves it again afterwards).
    #[arg(long, conflicts_with = "keep")]
    swarm: bool,
    /// With --swarm: test on a cluster of this many engines on this machine
    /// (`cargo xtask cluster up`; root), removed afterwards.
    #[arg(long, requires = "swarm")]
    nodes: Option<u8>,
}

impl E2e {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if let Some(nodes) = self.nodes {
            return crate::swarm::e2e::run_cluster_e2e(sh, nodes);
        }
        if self.swarm {
            return crate::swarm::e2e::run_swarm_e2e(sh);
        }
        let started = Instant::now();
        compose::require_docker(sh)?;
        eprintln!("e2e: building and loading the images");
        let built = crate::images::ensure_images(sh).context("build and load the images")?;
        let images = crate::swarm::StackImages::from_built(&built)?;

        let project_name = format!("webstack-e2e-{}", docker::unique_suffix());
        let port = docker::free_host_port()?;
        let project = ComposeProject::new(sh, &project_name, port)?;
        eprintln!("e2e: project {project_name} on host port {port}");

        let outcome = start_and_test(sh, &project, images);
        if outcome.is_err() {
            eprintln!("e2e: failed; the stack's recent logs follow");
            let _ = project
                .command(sh, &["logs", "--no-color", "--tail=60"])
                .run();
        }
        if self.keep {
            eprintln!(
                "e2e: keeping project {project_name}: remove it with `cargo xtask down --volumes -p {project_name}`"
            );
        } else {
            eprintln!("e2e: removing project {project_name}");
            let teardown = project
                .command(sh, &["down", "--volumes", "--remove-orphans"])
                .run()
                .with_context(|| format!("remove project {project_name}"));
            if let Err(error) = teardown {
                eprintln!("e2e: {error:#}");
                if outcome.is_ok() {
                    return Err(error);
                }
            }
        }
        outcome?;
        eprintln!("e2e: passed in {:.0}s", started.elapsed().as_secs_f64());
        Ok(())
    }
}

fn start_and_test(
    sh: &Shell,
    project: &ComposeProject,
    images: crate::swarm::StackImages,
) -> anyhow::Result<()> {
    Up {
        replicas: E2E_REPLICAS,
        port: project.port,
        project: project.name.clone(),
        skip_images: true,
        timeout_secs: 180,
        images: Some(images),
    }
    .run(sh)
    .context("start the stack under test")?;

    let xtask = std::env::current_exe().context("locate the running xtask binary")?;
    let (program, leading) = project.tool.program_and_leading_arguments();
    let compose_command = std::iter::once(program)
        .chain(leading.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let url = format!("http://127.0.0.1:{}", project.port);
    stack_tests::netguard::check_url(&url, &[]).map_err(anyhow::Error::msg)?;
    eprintln!("e2e: running the suite (cargo test -p stack-tests --test compose) against {url}");
    let suite = cmd!(
        sh,
        "cargo test -p stack-tests --test compose -- --test-threads=1 --nocapture"
    )
    .env(URL_VARIABLE, &url)
    .env(PROJECT_VARIABLE, &project.name)
    .env(PORT_VARIABLE, project.port.to_string())
    .env(COMPOSE_FILE_VARIABLE, &project.file)
    .env(COMPOSE_COMMAND_VARIABLE, compose_command)
    .env(XTASK_VARIABLE, xtask)
    .run();
    if suite.is_err() {
        bail!("the end-to-end suite failed: see the test output above");
    }
    Ok(())
}
