//! `cargo xtask e2e --swarm`: deploys the stack to Swarm under a unique name
//! and a free port, runs the Swarm end-to-end tests (`tests/tests/swarm.rs`)
//! against it, then always removes it and leaves the engine as it found it.

use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use super::engine::{self, SwarmOrigin};
use crate::docker::deployment::Deployment;

use stack_contract::variables::cluster::{
    NETWORK_VARIABLE as CLUSTER_NETWORK_VARIABLE, STACK_VARIABLE as CLUSTER_STACK_VARIABLE,
    URL_VARIABLE as CLUSTER_URL_VARIABLE, XTASK_VARIABLE as CLUSTER_XTASK_VARIABLE,
};
use stack_contract::variables::swarm::{
    STACK_VARIABLE, TEST_IMAGE_LABEL, URL_VARIABLE, WEBAPP_IMAGE_VARIABLE,
};

/// Set (to anything) to keep the cluster and its stack when the cluster
/// test fails, for a look at the engines' state and logs.
pub const KEEP_FAILED_CLUSTER_VARIABLE: &str = "WEBSTACK_KEEP_FAILED_CLUSTER";

/// `e2e --swarm --nodes N`: a fresh cluster of N engines (whatever an
/// earlier run left is removed first), the stack deployed to it, the
/// cluster test, and the cluster removed whatever happened.
pub fn run_cluster_e2e(sh: &Shell, nodes: u8) -> anyhow::Result<()> {
    let started = Instant::now();
    let leftovers = crate::cluster::find_leftovers(sh)?;
    if !leftovers.is_empty() {
        eprintln!(
            "cluster e2e: removing what an earlier cluster left:{}",
            leftovers.describe()
        );
        crate::cluster::down(sh)?;
    }
    crate::cluster::up(sh, nodes)?;
    let outcome = deploy_and_test_cluster(sh);
    if outcome.is_err() && std::env::var_os(KEEP_FAILED_CLUSTER_VARIABLE).is_some() {
        eprintln!(
            "cluster e2e: {KEEP_FAILED_CLUSTER_VARIABLE} is set: the cluster stays up for a look \
             (`cargo xtask cluster status`, `cargo xtask cluster down` removes it)"
        );
        return outcome;
    }
    let cleanup = crate::cluster::down(sh);
    eprintln!(
        "cluster e2e: finished in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    match (outcome, cleanup) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) => Err(error),
        (Ok(()), Err(error)) => {
            Err(error.context("the cluster test passed, but cluster down failed"))
        }
        (Err(error), Err(cleanup_error)) => {
            eprintln!("cluster e2e: cluster down failed as well: {cleanup_error:#}");
            Err(error)
        }
    }
}

fn deploy_and_test_cluster(sh: &Shell) -> anyhow::Result<()> {
    let manager = crate::cluster::manager()?;
    let _engine = sh.push_env("DOCKER_HOST", manager.docker_host());
    let stack = format!("webstack-cluster-e2e-{}", crate::docker::unique_suffix());
    let outcome = deploy_and_test_on_manager(sh, &manager, &stack);
    if outcome.is_err() {
        // A failed test may have left a node cut off, and `docker service
        // logs` waits for every node's part.
        crate::cluster::connect_all_links(sh);
        print_service_logs(sh, &stack);
        eprintln!("cluster e2e: ---- each node's view of the overlay networks ----");
        for line in crate::cluster::overlay_report(sh, &stack) {
            eprintln!("cluster e2e: {line}");
        }
    }
    outcome
}

fn deploy_and_test_on_manager(
    sh: &Shell,
    manager: &crate::cluster::Node,
    stack: &str,
) -> anyhow::Result<()> {
    let port = super::DEFAULT_PORT;
    let deploy_started = Instant::now();
    super::deploy::deploy_and_wait(
        sh,
        stack,
        port,
        Duration::from_secs(super::deploy::DEFAULT_CONVERGE_TIMEOUT_SECS),
        &super::deploy::Target::Cluster(super::deploy::cluster_engines()),
    )?;
    eprintln!(
        "cluster e2e: stack {stack} converged {:.1}s after the deploy started",
        deploy_started.elapsed().as_secs_f64()
    );
    let url = format!("http://{}:{port}", manager.address());
    stack_contract::netguard::check_url(&url, &[crate::cluster::SUBNET])
        .map_err(anyhow::Error::msg)?;
    let xtask = std::env::current_exe().context("locate the running xtask binary")?;
    let network = crate::cluster::SUBNET.to_string();
    cmd!(
        sh,
        "cargo test --package stack-tests --test cluster -- --ignored --test-threads=1 --nocapture"
    )
    .env(CLUSTER_URL_VARIABLE, &url)
    .env(CLUSTER_STACK_VARIABLE, stack)
    .env(CLUSTER_XTASK_VARIABLE, xtask)
    .env(CLUSTER_NETWORK_VARIABLE, network)
    .run()
    .context("the cluster end-to-end test failed (output above)")?;
    Ok(())
}

/// Deploy, test, remove. Returns the tests' verdict after cleanup.
pub fn run_swarm_e2e(sh: &Shell) -> anyhow::Result<()> {
    let started = Instant::now();
    let origin = engine::ensure_manager(sh)?;
    let stack = format!("webstack-swarm-e2e-{}", crate::docker::unique_suffix());
    let port = crate::docker::free_host_port()?;
    eprintln!("swarm e2e: stack {stack} on port {port}");

    let outcome = deploy_and_test(sh, &stack, port);
    if outcome.is_err() {
        print_service_logs(sh, &stack);
    }

    let cleanup = cleanup(sh, &stack, origin);
    eprintln!(
        "swarm e2e: finished in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    match (outcome, cleanup) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) => Err(error),
        (Ok(()), Err(error)) => {
            Err(error.context("the Swarm tests passed, but cleaning up failed"))
        }
        (Err(error), Err(cleanup_error)) => {
            eprintln!("swarm e2e: cleaning up failed as well: {cleanup_error:#}");
            Err(error)
        }
    }
}

fn deploy_and_test(sh: &Shell, stack: &str, port: u16) -> anyhow::Result<()> {
    let deploy_started = Instant::now();
    let images = super::deploy::deploy_and_wait(
        sh,
        stack,
        port,
        Duration::from_secs(super::deploy::DEFAULT_CONVERGE_TIMEOUT_SECS),
        &super::deploy::Target::ThisEngine,
    )?;
    eprintln!(
        "swarm e2e: stack converged {:.1}s after the deploy started",
        deploy_started.elapsed().as_secs_f64()
    );
    let url = format!("http://127.0.0.1:{port}");
    stack_contract::netguard::check_url(&url, &[]).map_err(anyhow::Error::msg)?;
    // One test at a time: they share one stack, and the counter and rollout
    // checks would disturb each other. --nocapture shows the measured counts.
    cmd!(
        sh,
        "cargo test --package stack-tests --test swarm -- --ignored --test-threads=1 --nocapture"
    )
    .env(STACK_VARIABLE, stack)
    .env(URL_VARIABLE, &url)
    .env(WEBAPP_IMAGE_VARIABLE, &images.webapp)
    .run()
    .context("the Swarm end-to-end tests failed (output above)")?;
    Ok(())
}

fn cleanup(sh: &Shell, stack: &str, origin: SwarmOrigin) -> anyhow::Result<()> {
    super::SwarmStack::new(stack, 0).remove(sh, true)?;
    remove_test_images(sh, stack)?;
    // Leave the engine as it was found: in a swarm only if it was in one.
    if origin == SwarmOrigin::CreatedNow {
        engine::leave_swarm_if_created_by_xtask(sh)?;
    }
    Ok(())
}

/// Deletes the images the tests committed for this stack (by label), by id:
/// a tag may have moved on. `docker images` lists the newest first, so an
/// image committed from another test image goes before its parent.
fn remove_test_images(sh: &Shell, stack: &str) -> anyhow::Result<()> {
    let filter = format!("label={TEST_IMAGE_LABEL}={stack}");
    let listed = cmd!(sh, "docker images --all --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the images the tests made")?;
    let mut image_ids: Vec<&str> = Vec::new();
    for id in listed.split_whitespace() {
        if !image_ids.contains(&id) {
            image_ids.push(id);
        }
    }
    let mut deleted = 0;
    for image_id in image_ids {
        // Deleting an image also deletes its untagged parents, which may be
        // further down the list.
        let exists = cmd!(sh, "docker image inspect {image_id}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok();
        if exists {
            cmd!(sh, "docker rmi {image_id}")
                .quiet()
                .ignore_stdout()
                .run()
                .with_context(|| format!("delete the test image {image_id}"))?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        eprintln!("swarm e2e: deleted {deleted} test image(s)");
    }
    Ok(())
}

/// The last log lines of every service, printed when a step failed.
fn print_service_logs(sh: &Shell, stack: &str) {
    let Ok(services) = super::stack_services(sh, stack) else {
        return;
    };
    for service in services {
        let name = &service.spec.name;
        eprintln!("swarm e2e: ---- last log lines of {name} ----");
        // Bounded: the logs of a task on an unreachable node never come.
        let _ = cmd!(
            sh,
            "timeout 30 docker service logs --no-trunc --tail 30 {name}"
        )
        .quiet()
        .ignore_status()
        .run();
    }
}
