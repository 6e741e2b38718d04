//! `cargo xtask e2e [--compose v1|v2|both]`: builds the images, starts a
//! fresh Compose stack under a unique project name and a free host port,
//! runs `tests/tests/compose/` against it, then (but under Compose 1.29) deploys it again
//! with `--tls self-signed` and runs `tests/tests/tls.rs`, then with `--tls acme` against
//! pebble (`acme.rs`) and runs `tests/tests/acme.rs`, and tears it down unless `--keep`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::Shell;

use super::ComposeChoice;
use crate::compose::{self, ComposeProject, Up};
use crate::docker::{self, deployment::Deployment};

use stack_contract::variables::tls::{CA_VARIABLE, FILES_TESTS, HTTPS_URL_VARIABLE};
use stack_contract::variables::{
    COMPOSE_FILE_VARIABLE, PORT_VARIABLE, PROJECT_VARIABLE, URL_VARIABLE, XTASK_VARIABLE,
};

/// Replicas the suite starts with (it checks that all of them serve).
const E2E_REPLICAS: u32 = 3;

/// The suite under each Compose `choice` names, one after the other.
pub fn run_compose_e2e(sh: &Shell, choice: ComposeChoice, keep: bool) -> anyhow::Result<()> {
    // With both: the whole suite under v2, the Compose v2 users run, and
    // under v1 what Compose itself decides (starting, scaling, stopping,
    // networks, ports, container settings), not what nginx, Redis, the
    // webapp or the engine do whoever started them: the proxy's answers to
    // hostile clients, where the published port leads while the proxy
    // restarts, failures of one service, the balancer's connections.
    const NOT_COMPOSE: &[&str] = &[
        "front::",
        "hostile::",
        "slow_readers::",
        "isolation::the_published_port_leads_only_to_the_edge_network",
        "failures::killing_the_db_under_write_load",
        "failures::stopping_the_db",
        "failures::stopping_the_balancer",
        "failures::killing_a_webapp_replica",
        "hardening::metrics_are_not_reachable",
        "hardening::the_server_header",
        "hardening::redis_refuses_commands",
        "hardening::the_proxy_passes_a_request_id",
        "scaling::the_balancer_reuses_its_connections",
        // Scaling is Compose's: from 3 to 1 and back tests it under 1.29;
        // 20 replicas twice test the engine and the balancer.
        "scaling::scaling_3_to_20_to_3_twice",
    ];
    let generations: &[(&str, &[&str])] = match choice {
        ComposeChoice::V1 => &[("v1", &[])],
        ComposeChoice::V2 => &[("v2", &[])],
        ComposeChoice::Both => &[("v1", NOT_COMPOSE), ("v2", &[])],
        ComposeChoice::V1Part => &[("v1", NOT_COMPOSE)],
        ComposeChoice::Auto => &[("auto", &[])],
    };
    let mut timings = Vec::new();
    for (generation, skip) in generations {
        // Every compose command of this run, and those the suite runs
        // through xtask, use the same Compose.
        sh.set_var(compose::COMPOSE_VARIABLE, generation);
        let started = Instant::now();
        run_with_current_compose(sh, keep, skip)
            .with_context(|| format!("end-to-end tests with Compose {generation}"))?;
        timings.push((generation, started.elapsed().as_secs_f64()));
    }
    for (generation, seconds) in timings {
        eprintln!("e2e: Compose {generation}: passed in {seconds:.0}s");
    }
    Ok(())
}

fn run_with_current_compose(sh: &Shell, keep: bool, skip: &[&str]) -> anyhow::Result<()> {
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

    let outcome = start_and_test(sh, &project, images, skip);
    if outcome.is_err() {
        eprintln!("e2e: failed; the stack's recent logs follow");
        let _ = project
            .command(sh, &["logs", "--no-color", "--tail=60"])
            .run();
    }
    if keep {
        eprintln!(
            "e2e: keeping project {project_name}: remove it with `cargo xtask down --volumes -p {project_name}`"
        );
        outcome?;
    } else {
        eprintln!("e2e: removing project {project_name}");
        let cleanup = project.remove(sh, true);
        super::verdict(
            "e2e",
            "the end-to-end tests",
            "removing the project",
            outcome,
            cleanup,
        )?;
    }
    eprintln!("e2e: passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn start_and_test(
    sh: &Shell,
    project: &ComposeProject,
    images: crate::stack::StackImages,
    skip: &[&str],
) -> anyhow::Result<()> {
    Up {
        replicas: E2E_REPLICAS,
        port: project.port,
        project: project.name.clone(),
        skip_images: true,
        timeout_secs: docker::HEALTHY_TIMEOUT_SECS,
        tls: crate::tls::TlsArgs::plain(),
        https_port: crate::stack::DEFAULT_HTTPS_HOST_PORT,
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
    let url = super::suite_url("127.0.0.1", project.port, &[])?;
    eprintln!("e2e: running the suite (cargo test -p stack-tests --test compose) against {url}");
    super::run_suite(
        sh,
        "compose",
        "end-to-end suite",
        vec![
            (URL_VARIABLE, url.clone().into()),
            (PROJECT_VARIABLE, project.name.clone().into()),
            (PORT_VARIABLE, project.port.to_string().into()),
            (COMPOSE_FILE_VARIABLE, project.file.clone().into()),
            (XTASK_VARIABLE, super::xtask_binary()?.into()),
        ],
        super::Tests::Skipping(skip),
    )?;
    // The whole suite, not the run under Compose 1.29, goes on to HTTPS.
    if skip.is_empty() {
        https_pass(sh, project, &url)?;
        super::acme::acme_pass(sh, project, E2E_REPLICAS)?;
    }
    Ok(())
}

/// The same project deployed again with `--tls self-signed` (only the proxy is recreated),
/// with a local CA and certificate of the run's own, and the HTTPS suite (tests/tests/tls.rs).
fn https_pass(sh: &Shell, plain: &ComposeProject, url: &str) -> anyhow::Result<()> {
    let scratch = crate::tls::ScratchTls::new()?;
    let mut project = ComposeProject::new(sh, &plain.name, plain.port)?;
    let https_port = docker::free_host_port()?;
    let started = Instant::now();
    project
        .redeploy_front(
            sh,
            compose::Front::Https {
                port: https_port,
                tls_dir: Some(scratch.tls_dir()),
            },
            Duration::from_secs(docker::HEALTHY_TIMEOUT_SECS),
        )
        .context("deploy the stack under test with --tls self-signed")?;
    let https_url =
        super::suite_url("127.0.0.1", https_port, &[])?.replacen("http://", "https://", 1);
    eprintln!(
        "e2e: the stack serves HTTPS at {https_url} after {:.1}s; running the HTTPS suite (cargo test -p stack-tests --test tls)",
        started.elapsed().as_secs_f64()
    );
    let mut variables = vec![
        (URL_VARIABLE, url.into()),
        (HTTPS_URL_VARIABLE, https_url.into()),
        (CA_VARIABLE, scratch.ca_certificate().into()),
    ];
    super::run_suite(
        sh,
        "tls",
        "HTTPS suite",
        variables.clone(),
        super::Tests::Skipping(&[FILES_TESTS]),
    )?;
    // Last: they deploy a certificate of their own CA with `up --tls files`.
    variables.extend([
        (PROJECT_VARIABLE, plain.name.clone().into()),
        (PORT_VARIABLE, plain.port.to_string().into()),
        (XTASK_VARIABLE, super::xtask_binary()?.into()),
    ]);
    super::run_suite(
        sh,
        "tls",
        "HTTPS suite's tests of --tls files",
        variables,
        super::Tests::Matching(FILES_TESTS),
    )
}
