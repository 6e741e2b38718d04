//! Docker Swarm: the same stack as `deploy/compose.yaml`, deployed with
//! `docker stack deploy` from `deploy/stack.yaml`, rolled, watched and removed.
//!
//! The subcommands (`swarm deploy`, `swarm update`, `swarm status`,
//! `swarm rm`) and `cargo xtask e2e --swarm` share what is here: probing the
//! engine, creating a single-node swarm when there is none, deploying with
//! content-derived image tags, and deciding when a stack has converged by
//! looking at every task and container ourselves rather than trusting
//! `docker stack deploy`'s exit code (it returns as soon as the specs are
//! stored).

pub mod deploy;
pub mod engine;
pub mod remove;
pub mod status;
pub mod update;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use xshell::{cmd, Shell};

use crate::poll::{self, Look};
use crate::stack::StackImages;
use stack_contract::netguard::Ipv4Net;

/// Stack name when none is given: services become `webstack_webapp` and so on.
pub const DEFAULT_STACK_NAME: &str = "webstack";

/// Host port the proxy publishes when none is given (the Compose stack's too).
pub const DEFAULT_PORT: u16 = crate::stack::DEFAULT_HOST_PORT;

use crate::docker::deployment::Deployment;
pub use crate::docker::STACK_NAMESPACE_LABEL;
use crate::docker::{without_digest, Container, Orchestrator, SWARM_SERVICE_LABEL};
pub use crate::docker::{Condition, Service, Task, TaskState, UpdateState, UpdateStatus};

/// Makes sure the checked-in stack file is the rendered one and the secret
/// files it names exist (the same `.secrets/` files Compose uses).
pub fn prepare_files() -> anyhow::Result<()> {
    let rendered = crate::render::render_stack(&crate::stack::stack())?;
    crate::render::write_file(&crate::render::stack_file_path(), &rendered)?;
    crate::secrets::ensure_redis_secrets().context("create the Redis password")?;
    Ok(())
}

/// One stack on the swarm the shell's engine manages, seen as a
/// [`Deployment`]: what the Swarm commands and `e2e --swarm` drive.
#[derive(Debug, Clone)]
pub struct SwarmStack {
    pub name: String,
    /// The host port the proxy publishes (in `mode: host`).
    pub port: u16,
    /// The tasks that existed before the last [`Deployment::deploy`]: older
    /// failures are not this deploy's.
    tasks_before: BTreeSet<String>,
    /// Where clients reach the published proxy: loopback, or a node's
    /// address on the simulated cluster's network.
    proxy_host: IpAddr,
    /// The networks besides loopback the network guard lets that address be on.
    own_networks: Vec<Ipv4Net>,
}

impl SwarmStack {
    pub fn new(name: &str, port: u16) -> SwarmStack {
        SwarmStack {
            name: name.to_owned(),
            port,
            tasks_before: BTreeSet::new(),
            proxy_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            own_networks: Vec::new(),
        }
    }

    /// The stack whose proxy clients reach at `host`, on `network` (the
    /// simulated cluster's manager).
    pub fn reached_at(mut self, host: Ipv4Addr, network: Ipv4Net) -> SwarmStack {
        self.proxy_host = IpAddr::V4(host);
        self.own_networks = vec![network];
        self
    }

    /// The hostnames of the webapp replicas Swarm runs now (on any node).
    fn running_webapp_replicas(&self, sh: &Shell) -> anyhow::Result<BTreeSet<String>> {
        Ok(service_tasks(sh, &self.service_name(crate::stack::WEBAPP))?
            .iter()
            .filter(|task| {
                task.desired_state == TaskState::Running && task.status.state == TaskState::Running
            })
            .filter_map(Task::container_id)
            .map(crate::docker::serving::replica_name)
            .collect())
    }

    /// The full name Swarm gives a service of the model: `NAME_webapp`.
    pub fn service_name(&self, service: &str) -> String {
        format!("{}_{service}", self.name)
    }
}

impl Deployment for SwarmStack {
    fn name(&self) -> &str {
        &self.name
    }

    fn orchestrator(&self) -> Orchestrator {
        Orchestrator::Swarm
    }

    /// `docker stack deploy` with these images, then the webapp scaled to
    /// `webapp_replicas` when that is not the model's count.
    fn deploy(
        &mut self,
        sh: &Shell,
        images: Option<&StackImages>,
        webapp_replicas: u32,
    ) -> anyhow::Result<()> {
        ensure_db_node(sh)?;
        self.tasks_before = known_task_ids(sh, &self.name)?;
        deploy_stack(sh, &self.name, self.port, images)?;
        let model = crate::stack::stack();
        let default = model.service(crate::stack::WEBAPP)?.replicas;
        if webapp_replicas != default {
            let scale = format!(
                "{}={webapp_replicas}",
                self.service_name(crate::stack::WEBAPP)
            );
            cmd!(sh, "docker service scale --detach {scale}")
                .quiet()
                .ignore_stdout()
                .run()
                .with_context(|| format!("docker service scale {scale}"))?;
        }
        Ok(())
    }

    /// Converged (every task running the spec's image, healthy, no
    /// rollout), then serving: every replica answers through the proxy.
    fn wait_ready(&self, sh: &Shell, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        wait_until_converged(sh, &self.name, &self.tasks_before, timeout)?;
        let replicas = self.running_webapp_replicas(sh)?;
        crate::docker::serving::wait_until_every_replica_serves(
            SocketAddr::new(self.proxy_host, self.port),
            &replicas,
            &self.own_networks,
            timeout
                .saturating_sub(started.elapsed())
                .max(crate::docker::serving::MIN_SERVING_TIMEOUT),
        )
        .with_context(|| format!("stack {} converged but does not serve", self.name))
    }

    fn containers(&self, sh: &Shell, service: &str) -> anyhow::Result<Vec<Container>> {
        let labels = [
            format!("{STACK_NAMESPACE_LABEL}={}", self.name),
            format!("{SWARM_SERVICE_LABEL}={}", self.service_name(service)),
        ];
        crate::docker::containers_labelled(sh, &labels, false)
    }

    fn published_port(&self, sh: &Shell) -> anyhow::Result<Option<u16>> {
        Ok(stack_services(sh, &self.name)?
            .iter()
            .find_map(Service::published_host_port))
    }

    fn remove(&self, sh: &Shell, volumes: bool) -> anyhow::Result<()> {
        remove::remove_stack(sh, &self.name, volumes)
    }
}

/// `docker stack deploy`s the checked-in stack file as `stack`, with the
/// given images and host port. Returns once the specs are stored; use
/// [`wait_until_converged`] to wait for the tasks.
pub fn deploy_stack(
    sh: &Shell,
    stack: &str,
    port: u16,
    images: Option<&StackImages>,
) -> anyhow::Result<()> {
    let stack_file = crate::render::stack_file_path();
    if !stack_file.exists() {
        bail!(
            "{} is missing: run `cargo xtask render` to write it",
            stack_file.display()
        );
    }
    // The stack file names its images `${WEBSTACK_WEBAPP_IMAGE:-…:local}`
    // and so on: pin the content tags through those variables.
    let mut variables = vec![(crate::stack::PORT_VARIABLE.to_string(), port.to_string())];
    if let Some(images) = images {
        variables.extend(images.variables()?);
    }
    // `--resolve-image never`: the images are local, there is no registry to
    // ask for a digest. `--prune` removes services no longer in the file.
    // No `--detach`: older CLIs lack the flag, and the newer default is
    // detached anyway; callers wait with `wait_until_converged`.
    cmd!(
        sh,
        "docker stack deploy --resolve-image never --prune --compose-file {stack_file} {stack}"
    )
    .envs(variables)
    .run()
    .with_context(|| format!("docker stack deploy {stack}"))?;
    Ok(())
}

/// Makes sure some node carries the db node label, so db (pinned there,
/// with its volume) can be placed: when none does, labels the manager this
/// command talks to, and says so.
pub fn ensure_db_node(sh: &Shell) -> anyhow::Result<()> {
    let label = crate::stack::DB_NODE_LABEL;
    let filter = format!("node.label={label}=true");
    let labelled = cmd!(sh, "docker node ls --quiet --filter {filter}")
        .quiet()
        .read()
        .context("list the swarm nodes that hold the db volume")?;
    if !labelled.trim().is_empty() {
        return Ok(());
    }
    let format = "{{.Description.Hostname}}";
    let hostname = cmd!(sh, "docker node inspect --format {format} self")
        .quiet()
        .read()
        .context("read this swarm node's hostname")?;
    eprintln!(
        "swarm: no node is labelled {label}=true: labelling this manager ({}), so db and its volume live here \
         (move it with `docker node update --label-rm/--label-add {label}=true`)",
        hostname.trim()
    );
    let add = format!("{label}=true");
    // `docker node update` does not take `self`, unlike `docker node inspect`.
    let node_id = engine::swarm_info(sh)?.node_id;
    cmd!(sh, "docker node update --label-add {add} {node_id}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("label this node as the one holding the db volume")?;
    Ok(())
}

pub use crate::docker::{service_tasks, stack_services};

/// One service, fully inspected.
pub fn inspect_service(sh: &Shell, service: &str) -> anyhow::Result<Service> {
    crate::docker::service(sh, service)
}

/// How far one service is from what its spec asks for.
#[derive(Debug)]
pub struct ServiceProgress {
    pub name: String,
    pub desired: u64,
    /// Tasks that run the spec's image, are running and (where Docker can
    /// tell) healthy.
    pub ready: u64,
    /// Tasks meant to run that do not (yet): starting, unhealthy, old image.
    pub pending: Vec<String>,
    pub update_status: Option<UpdateStatus>,
}

impl ServiceProgress {
    pub fn converged(&self) -> bool {
        let rollout_finished = self
            .update_status
            .as_ref()
            .is_none_or(|status| status.state.is_final());
        self.ready == self.desired && self.pending.is_empty() && rollout_finished
    }
}

/// Looks at every task of every service of `stack`.
pub fn stack_progress(sh: &Shell, stack: &str) -> anyhow::Result<Vec<ServiceProgress>> {
    stack_services(sh, stack)?
        .iter()
        .map(|service| service_progress(sh, service))
        .collect()
}

/// Looks at every task of one inspected service.
pub fn service_progress(sh: &Shell, service: &Service) -> anyhow::Result<ServiceProgress> {
    let spec_image = &service.spec.task_template.container_spec.image;
    let mut ready = 0;
    let mut pending = Vec::new();
    for task in service_tasks(sh, &service.spec.name)? {
        if task.desired_state != TaskState::Running {
            continue;
        }
        let slot = task
            .slot
            .map_or_else(String::new, |slot| format!(".{slot}"));
        let label = format!("{}{slot}", service.spec.name);
        if task.status.state != TaskState::Running {
            pending.push(format!("{label}: {}", task.status.state));
            continue;
        }
        // Compare the image *name* as deployed; Swarm may append a digest.
        if !same_image_reference(&task.spec.container_spec.image, spec_image) {
            pending.push(format!(
                "{label}: still on {}",
                task.spec.container_spec.image
            ));
            continue;
        }
        // A container on another node of the swarm cannot be inspected
        // from here: its task's running state is all there is to know.
        let container = task
            .container_id()
            .and_then(|id| crate::docker::local_container(sh, id));
        match container.map(|container| container.condition()) {
            None | Some(Condition::Healthy | Condition::Running) => ready += 1,
            Some(other) => pending.push(format!("{label}: {other}")),
        }
    }
    Ok(ServiceProgress {
        name: service.spec.name.clone(),
        desired: service.desired_replicas(),
        ready,
        pending,
        update_status: service.update_status.clone(),
    })
}

fn same_image_reference(task_image: &str, spec_image: &str) -> bool {
    without_digest(task_image) == without_digest(spec_image)
}

/// The task ids of a stack right now, so that later failures can be told
/// apart from old ones without comparing clocks.
pub fn known_task_ids(sh: &Shell, stack: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for service in stack_services(sh, stack)? {
        for task in service_tasks(sh, &service.spec.name)? {
            ids.insert(task.id);
        }
    }
    Ok(ids)
}

/// How many times a service's tasks may fail before a wait gives up early
/// instead of watching Swarm restart them until the timeout.
const FAILED_TASKS_BEFORE_GIVING_UP: usize = 4;

/// Pause between two looks at a stack's tasks.
const CONVERGE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Waits until every service of `stack` has all its replicas running the
/// spec's image and healthy, and no rolling update is in progress. Prints
/// progress as it changes. On timeout, or when tasks keep failing, fails
/// with each failing task's error and last log lines.
pub fn wait_until_converged(
    sh: &Shell,
    stack: &str,
    tasks_before: &BTreeSet<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = String::new();
    poll::until(
        timeout,
        CONVERGE_POLL_INTERVAL,
        || {
            let progress = stack_progress(sh, stack)?;
            if progress.is_empty() {
                bail!("stack {stack} has no services: was it removed meanwhile?");
            }
            let report = progress
                .iter()
                .map(|service| format!("{} {}/{}", service.name, service.ready, service.desired))
                .collect::<Vec<_>>()
                .join(", ");
            if report != last_report {
                eprintln!("swarm: [{:>3}s] {report}", started.elapsed().as_secs());
                last_report = report;
            }
            if progress.iter().all(ServiceProgress::converged) {
                return Ok(Look::Ready(()));
            }
            give_up_on_failing_tasks(sh, &progress, tasks_before)?;
            Ok(Look::NotYet(progress))
        },
        |progress, _| {
            for service in progress.iter().filter(|service| !service.converged()) {
                eprintln!(
                    "swarm: {} has {}/{} ready: {}",
                    service.name,
                    service.ready,
                    service.desired,
                    service.pending.join("; ")
                );
                match new_failed_tasks(sh, &service.name, tasks_before) {
                    Ok(failures) => print_task_failures(sh, &failures),
                    Err(error) => return error,
                }
            }
            anyhow!(
                "stack {stack} did not converge within {}s (details above); `cargo xtask swarm status -p {stack}` shows where it stands",
                timeout.as_secs()
            )
        },
    )
}

/// Fails, with their errors and logs, once one service's tasks have failed
/// [`FAILED_TASKS_BEFORE_GIVING_UP`] times since the deploy: Swarm would
/// only go on restarting them until the timeout.
fn give_up_on_failing_tasks(
    sh: &Shell,
    progress: &[ServiceProgress],
    tasks_before: &BTreeSet<String>,
) -> anyhow::Result<()> {
    for service in progress {
        let failures = new_failed_tasks(sh, &service.name, tasks_before)?;
        if failures.len() >= FAILED_TASKS_BEFORE_GIVING_UP {
            print_task_failures(sh, &failures);
            bail!(
                "{} tasks of {} failed since the deploy (errors and logs above); fix the cause and run the command again",
                failures.len(),
                service.name
            );
        }
    }
    Ok(())
}

/// Tasks of `service` that are not in `before` and ended while Swarm wanted
/// them running: failed, rejected, or "complete" (exited 0, which is what a
/// webapp stopped for being unhealthy does: it shuts down gracefully).
pub fn new_failed_tasks(
    sh: &Shell,
    service: &str,
    before: &BTreeSet<String>,
) -> anyhow::Result<Vec<Task>> {
    Ok(service_tasks(sh, service)?
        .into_iter()
        .filter(|task| !before.contains(&task.id))
        .filter(Task::ended_unexpectedly)
        .collect())
}

/// How many log lines of a failed task to show.
const FAILED_TASK_LOG_LINES: &str = "20";

/// Prints, for each task, its error and its last log lines: what someone
/// needs to see to fix a failed deploy or rollout.
pub fn print_task_failures(sh: &Shell, tasks: &[Task]) {
    for task in tasks {
        let exit_code = task
            .status
            .container_status
            .as_ref()
            .and_then(|status| status.exit_code)
            .map_or_else(String::new, |code| format!(", exit code {code}"));
        eprintln!(
            "swarm: task {} ({}) {}{exit_code}: {}",
            task.id,
            task.spec.container_spec.image,
            task.status.state,
            task.error_text()
        );
        // Why Docker stopped it, when the container is on this node: the
        // last healthcheck runs say what the check saw.
        let container = task
            .container_id()
            .and_then(|id| crate::docker::local_container(sh, id));
        if let Some(health) = container.and_then(|container| container.state.health) {
            {
                eprintln!("swarm:   health: {}", health.status);
                let checks = &health.log;
                for check in checks.iter().rev().take(3).rev() {
                    eprintln!(
                        "swarm:   healthcheck exit {}: {}",
                        check.exit_code,
                        check.output.trim()
                    );
                }
            }
        }
        let task_id = &task.id;
        // `docker service logs` takes a task id and works on any node of the
        // swarm, unlike `docker logs`.
        let logs = cmd!(
            sh,
            "docker service logs --raw --no-trunc --tail {FAILED_TASK_LOG_LINES} {task_id}"
        )
        .quiet()
        .ignore_status()
        .output();
        match logs {
            Ok(output) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                if text.trim().is_empty() {
                    eprintln!("swarm:   (the task logged nothing)");
                }
                for line in text.lines() {
                    eprintln!("swarm:   | {line}");
                }
            }
            Err(error) => eprintln!("swarm:   (could not read its logs: {error})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: UpdateState) -> UpdateStatus {
        UpdateStatus {
            state,
            started_at: None,
            completed_at: None,
            message: None,
        }
    }

    fn progress(ready: u64, pending: &[&str], update: Option<UpdateState>) -> ServiceProgress {
        ServiceProgress {
            name: String::from("demo_webapp"),
            desired: 3,
            ready,
            pending: pending.iter().map(|task| task.to_string()).collect(),
            update_status: update.map(status),
        }
    }

    #[test]
    fn a_service_converged_when_every_replica_is_ready_and_no_rollout_runs() {
        assert!(progress(3, &[], None).converged());
        assert!(progress(3, &[], Some(UpdateState::Completed)).converged());
        assert!(progress(3, &[], Some(UpdateState::RollbackCompleted)).converged());
        assert!(!progress(3, &[], Some(UpdateState::Updating)).converged());
        assert!(!progress(3, &[], Some(UpdateState::RollbackStarted)).converged());
        assert!(!progress(2, &[], None).converged());
        assert!(!progress(3, &["demo_webapp.2: starting"], None).converged());
    }
}
