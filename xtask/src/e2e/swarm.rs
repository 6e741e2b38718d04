//! `cargo xtask e2e --swarm`: deploys the stack to Swarm under a unique name
//! and a free port, runs the Swarm end-to-end tests (`tests/tests/swarm.rs`)
//! against it, the HTTPS ones last, then always removes it and leaves the
//! engine as it found it.
//! With `--nodes N` the same on a fresh simulated cluster of N engines
//! (`tests/tests/cluster.rs`), removed afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::docker::deployment::Deployment;
use crate::swarm::deploy::{self, Target};
use crate::swarm::engine::{self, SwarmOrigin};

use stack_contract::variables::cluster::{
    NETWORK_VARIABLE as CLUSTER_NETWORK_VARIABLE, STACK_VARIABLE as CLUSTER_STACK_VARIABLE,
    URL_VARIABLE as CLUSTER_URL_VARIABLE, XTASK_VARIABLE as CLUSTER_XTASK_VARIABLE,
};
use stack_contract::variables::swarm::{
    ACME_DIRECTORY_VARIABLE, ACME_DOMAIN_VARIABLE, HTTPS_PORT_VARIABLE, HTTPS_TESTS,
    PEBBLE_LISTENER_CA_VARIABLE, PEBBLE_MANAGEMENT_PORT_VARIABLE, PEBBLE_SERVICE_VARIABLE,
    STACK_VARIABLE, TEST_IMAGE_LABEL, URL_VARIABLE, WEBAPP_IMAGE_VARIABLE, XTASK_VARIABLE,
};

use super::Tests;

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
    super::verdict(
        "cluster e2e",
        "the cluster test",
        "cluster down",
        outcome,
        cleanup,
    )
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
    let port = crate::swarm::DEFAULT_PORT;
    let deploy_started = Instant::now();
    // As on real servers: pushed to a registry, pulled by each node.
    let target = Target::Registry {
        push: deploy::cluster_registry()?,
        platforms: crate::images::Platform::ALL.to_vec(),
        cluster: true,
    };
    let images = deploy_and_wait(sh, stack, port, &target)?;
    eprintln!(
        "cluster e2e: stack {stack} converged {:.1}s after the deploy started",
        deploy_started.elapsed().as_secs_f64()
    );
    for line in nodes_pulled(sh, stack, &images)? {
        eprintln!("cluster e2e: {line}");
    }
    let url = super::suite_url(manager.address(), port, &[crate::cluster::SUBNET])?;
    super::run_suite(
        sh,
        "cluster",
        "cluster end-to-end test",
        vec![
            (CLUSTER_URL_VARIABLE, url.into()),
            (CLUSTER_STACK_VARIABLE, stack.into()),
            (CLUSTER_XTASK_VARIABLE, super::xtask_binary()?.into()),
            (
                CLUSTER_NETWORK_VARIABLE,
                crate::cluster::SUBNET.to_string().into(),
            ),
        ],
        Tests::Skipping(&[]),
    )
}

/// Checks that every node holds the image of each task it runs under the
/// pushed reference (so it pulled it from the registry), and that no node
/// holds a `webstack/…` image (one loaded by hand). Returns one line per node.
fn nodes_pulled(
    sh: &Shell,
    stack: &str,
    images: &crate::stack::StackImages,
) -> anyhow::Result<Vec<String>> {
    let format = "{{.Node}} {{.Name}}";
    let tasks = cmd!(
        sh,
        "docker stack ps --filter desired-state=running --format {format} {stack}"
    )
    .quiet()
    .read()
    .with_context(|| format!("list the running tasks of {stack}"))?;
    let mut report = Vec::new();
    for node in crate::cluster::existing_nodes() {
        let _engine = sh.push_env("DOCKER_HOST", node.docker_host());
        let format = "{{.Repository}}@{{.Digest}}";
        let held = cmd!(sh, "docker image ls --digests --format {format}")
            .quiet()
            .read()
            .with_context(|| format!("list the images of {}", node.name()))?;
        let held: Vec<&str> = held.lines().map(str::trim).collect();
        if let Some(loaded) = held
            .iter()
            .find(|image| image.starts_with(&format!("{}/", crate::images::REPOSITORY_PREFIX)))
        {
            anyhow::bail!(
                "{} holds {loaded}: an image loaded by hand, not pulled",
                node.name()
            )
        }
        let mut pulled = Vec::new();
        for line in tasks
            .lines()
            .filter(|line| line.split(' ').next() == Some(&node.name()))
        {
            let Some(service) = line
                .split(' ')
                .nth(1)
                .and_then(|task| task.strip_prefix(&format!("{stack}_")))
                .and_then(|task| task.split('.').next())
            else {
                continue;
            };
            let reference = images.for_service(service)?;
            if !held.contains(&reference) {
                anyhow::bail!(
                    "{} runs a {service} task but holds no {reference}; it holds {held:?}",
                    node.name()
                )
            }
            pulled.push(service.to_string());
        }
        pulled.sort();
        pulled.dedup();
        report.push(format!(
            "{} pulled from the registry the images of: {}",
            node.name(),
            if pulled.is_empty() {
                "nothing (no task)".to_string()
            } else {
                pulled.join(", ")
            }
        ));
    }
    Ok(report)
}

/// Deploys `stack` with the model's defaults (plain HTTP) to `target` and
/// waits, at most the deploy command's default time, until it has converged
/// and serves.
fn deploy_and_wait(
    sh: &Shell,
    stack: &str,
    port: u16,
    target: &Target,
) -> anyhow::Result<crate::stack::StackImages> {
    deploy::deploy_and_wait(
        sh,
        stack,
        port,
        Duration::from_secs(deploy::DEFAULT_CONVERGE_TIMEOUT_SECS),
        target,
        None,
    )?
    .context("the deploy built no images")
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
    super::verdict(
        "swarm e2e",
        "the Swarm tests",
        "cleaning up",
        outcome,
        cleanup,
    )
}

fn deploy_and_test(sh: &Shell, stack: &str, port: u16) -> anyhow::Result<()> {
    let deploy_started = Instant::now();
    let images = deploy_and_wait(sh, stack, port, &Target::ThisEngine)?;
    eprintln!(
        "swarm e2e: stack converged {:.1}s after the deploy started",
        deploy_started.elapsed().as_secs_f64()
    );
    let url = super::suite_url("127.0.0.1", port, &[])?;
    let mut variables = vec![
        (STACK_VARIABLE, stack.into()),
        (URL_VARIABLE, url.into()),
        (WEBAPP_IMAGE_VARIABLE, images.webapp.into()),
    ];
    super::run_suite(
        sh,
        "swarm",
        "Swarm end-to-end tests",
        variables.clone(),
        Tests::Skipping(&[HTTPS_TESTS]),
    )?;
    // Last, since the plain port only redirects once the stack serves HTTPS.
    let started = Instant::now();
    // pebble for `--tls acme`, started now so that it runs by the time its test does.
    let pebble = super::acme::Pebble::new()?;
    let pebble_service = format!("{stack}-pebble");
    let edge = format!("{stack}_{}", crate::stack::EDGE);
    pebble.start_swarm_service(sh, &pebble_service, &edge, &images.proxy)?;
    variables.extend([
        (XTASK_VARIABLE, super::xtask_binary()?.into()),
        (
            HTTPS_PORT_VARIABLE,
            crate::docker::free_host_port()?.to_string().into(),
        ),
        (
            ACME_DIRECTORY_VARIABLE,
            super::acme::PEBBLE_DIRECTORY.into(),
        ),
        (ACME_DOMAIN_VARIABLE, ACME_DOMAIN.into()),
        (
            PEBBLE_LISTENER_CA_VARIABLE,
            pebble.listener_ca.clone().into(),
        ),
        (PEBBLE_SERVICE_VARIABLE, pebble_service.clone().into()),
        (
            PEBBLE_MANAGEMENT_PORT_VARIABLE,
            super::acme::PEBBLE_MANAGEMENT_PORT.to_string().into(),
        ),
    ]);
    let outcome = super::run_suite(
        sh,
        "swarm",
        "Swarm HTTPS tests",
        variables,
        Tests::Matching(HTTPS_TESTS),
    );
    // Before the stack goes: its edge network cannot while pebble is on it.
    let removed = remove_service(sh, &pebble_service);
    super::verdict(
        "swarm e2e",
        "the Swarm HTTPS tests",
        "removing pebble",
        outcome,
        removed,
    )?;
    eprintln!(
        "swarm e2e: the HTTPS tests took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The name the `--tls acme` test gets a certificate for: Docker's DNS answers it, on the
/// stack's edge network, with the address of the proxy's task (`tasks.<alias>`), where
/// pebble validates the challenge.
const ACME_DOMAIN: &str = "tasks.proxy";

/// Removes a service of the run's own and waits until its containers are gone.
fn remove_service(sh: &Shell, service: &str) -> anyhow::Result<()> {
    cmd!(sh, "docker service rm {service}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("remove the service {service}"))?;
    let filter = format!("label=com.docker.swarm.service.name={service}");
    crate::poll::until(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let left = cmd!(sh, "docker ps --all --quiet --filter {filter}")
                .quiet()
                .read()
                .with_context(|| format!("list the containers of {service}"))?;
            Ok(if left.trim().is_empty() {
                crate::poll::Look::Ready(())
            } else {
                crate::poll::Look::NotYet(left)
            })
        },
        |left, waited| {
            anyhow::anyhow!(
                "the containers of {service} were still there {}s after its removal: {}",
                waited.as_secs(),
                left.split_whitespace().collect::<Vec<_>>().join(", ")
            )
        },
    )
}

fn cleanup(sh: &Shell, stack: &str, origin: SwarmOrigin) -> anyhow::Result<()> {
    crate::swarm::SwarmStack::new(stack, 0).remove(sh, true)?;
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
    let Ok(services) = crate::swarm::stack_services(sh, stack) else {
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
