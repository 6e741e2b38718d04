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
use crate::docker::{self, deployment::Deployment};

use stack_contract::variables::{
    COMPOSE_FILE_VARIABLE, PORT_VARIABLE, PROJECT_VARIABLE, URL_VARIABLE, XTASK_VARIABLE,
};

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
    #[arg(long, conflicts_with_all = ["keep", "compose"])]
    swarm: bool,
    /// Which Compose runs the suite: v1 (`docker-compose` 1.29), v2 (the
    /// plugin, else the pinned Compose v2), both one after the other, or
    /// auto (v2 if it can be had).
    #[arg(long, value_enum, default_value_t = ComposeChoice::Auto)]
    compose: ComposeChoice,
    /// With --swarm: test on a cluster of this many engines on this machine
    /// (`cargo xtask cluster up`; root), removed afterwards.
    #[arg(long, requires = "swarm")]
    nodes: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ComposeChoice {
    V1,
    V2,
    Both,
    Auto,
}

impl E2e {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if let Some(nodes) = self.nodes {
            return crate::swarm::e2e::run_cluster_e2e(sh, nodes);
        }
        if self.swarm {
            return crate::swarm::e2e::run_swarm_e2e(sh);
        }
        let generations: &[&str] = match self.compose {
            ComposeChoice::V1 => &["v1"],
            ComposeChoice::V2 => &["v2"],
            ComposeChoice::Both => &["v1", "v2"],
            ComposeChoice::Auto => &["auto"],
        };
        let mut timings = Vec::new();
        for generation in generations {
            // Every compose command of this run, and those the suite runs
            // through xtask, use the same Compose.
            sh.set_var(compose::COMPOSE_VARIABLE, generation);
            let started = Instant::now();
            self.run_with_current_compose(sh)
                .with_context(|| format!("end-to-end tests with Compose {generation}"))?;
            timings.push((generation, started.elapsed().as_secs_f64()));
        }
        for (generation, seconds) in timings {
            eprintln!("e2e: Compose {generation}: passed in {seconds:.0}s");
        }
        Ok(())
    }

    fn run_with_current_compose(&self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        docker::require_docker(sh)?;
        eprintln!("e2e: building and loading the images");
        let built = crate::images::ensure_images(sh).context("build and load the images")?;
        let images = crate::stack::StackImages::from_built(&built)?;

        let project_name = format!("webstack-e2e-{}", docker::unique_suffix());
        let port = docker::free_host_port()?;
        let project = ComposeProject::new(sh, &project_name, port)?;
        eprintln!(
            "e2e: project {project_name} on host port {port}, Compose {} ({:?})",
            project.tool.generation(),
            project.tool.program_and_leading_arguments().0
        );

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
            let teardown = project.remove(sh, true);
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
    images: crate::stack::StackImages,
) -> anyhow::Result<()> {
    Up {
        replicas: E2E_REPLICAS,
        port: project.port,
        project: project.name.clone(),
        skip_images: true,
        timeout_secs: docker::HEALTHY_TIMEOUT_SECS,
        images: Some(images),
    }
    .run(sh)
    .context("start the stack under test")?;

    // What the suite will be told, checked against what Docker reports.
    let published = project.published_port(sh)?;
    if published != Some(project.port) {
        bail!(
            "project {} publishes the proxy on {published:?}, not on port {}",
            project.name,
            project.port
        );
    }
    let xtask = std::env::current_exe().context("locate the running xtask binary")?;
    let url = format!("http://127.0.0.1:{}", project.port);
    stack_contract::netguard::check_url(&url, &[]).map_err(anyhow::Error::msg)?;
    eprintln!("e2e: running the suite (cargo test -p stack-tests --test compose) against {url}");
    let suite = cmd!(
        sh,
        "cargo test -p stack-tests --test compose -- --ignored --test-threads=1 --nocapture"
    )
    .env(URL_VARIABLE, &url)
    .env(PROJECT_VARIABLE, &project.name)
    .env(PORT_VARIABLE, project.port.to_string())
    .env(COMPOSE_FILE_VARIABLE, &project.file)
    .env(XTASK_VARIABLE, xtask)
    .run();
    if suite.is_err() {
        bail!("the end-to-end suite failed: see the test output above");
    }
    Ok(())
}
