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
pub mod e2e;
pub mod engine;
pub mod remove;
pub mod render;
pub mod status;
pub mod update;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::images::BuiltImage;

/// Stack name when none is given: services become `webstack_webapp` and so on.
pub const DEFAULT_STACK_NAME: &str = "webstack";

/// Host port the proxy publishes when none is given (the Compose stack's too).
pub const DEFAULT_PORT: u16 = crate::stack::DEFAULT_HOST_PORT;

/// The label `docker stack deploy` puts on every object of a stack.
const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// Where the rendered, checked-in Swarm stack file lives.
pub fn stack_file_path() -> PathBuf {
    crate::project_root().join("deploy").join("stack.yaml")
}

/// Makes sure the checked-in stack file is the rendered one and the secret
/// files it names exist (the same `.secrets/` files Compose uses).
pub fn prepare_files() -> anyhow::Result<()> {
    let rendered = render::render_stack(&crate::stack::stack())?;
    crate::render::write_file(&stack_file_path(), &rendered)?;
    crate::secrets::ensure_redis_secrets().context("create the Redis password")?;
    Ok(())
}

/// The three image references one deployment uses.
///
/// Swarm compares image *strings*: redeploying `webstack/webapp:local` after
/// the tag moved to a new build changes nothing, so xtask always deploys the
/// content-derived tags and an update is a real change of image.
#[derive(Clone, Debug)]
pub struct StackImages {
    pub webapp: String,
    pub db: String,
    pub proxy: String,
}

impl StackImages {
    /// The image for a service of the stack description.
    pub fn for_service(&self, service: &str) -> anyhow::Result<&str> {
        match service {
            crate::stack::WEBAPP => Ok(&self.webapp),
            crate::stack::DB => Ok(&self.db),
            crate::stack::PROXY => Ok(&self.proxy),
            other => bail!(
                "the stack description has a service {other:?} that xtask builds no image for"
            ),
        }
    }

    pub fn from_built(built: &[BuiltImage]) -> anyhow::Result<StackImages> {
        let content_tag_of = |name: &str| {
            built
                .iter()
                .find(|image| image.name == name)
                .map(|image| image.content_tag.clone())
                .with_context(|| format!("the image build produced no {name} image"))
        };
        Ok(StackImages {
            webapp: content_tag_of("webapp")?,
            db: content_tag_of("db")?,
            proxy: content_tag_of("proxy")?,
        })
    }
}

/// `docker stack deploy`s the checked-in stack file as `stack`, with the
/// given images and host port. Returns once the specs are stored; use
/// [`wait_until_converged`] to wait for the tasks.
pub fn deploy_stack(
    sh: &Shell,
    stack: &str,
    port: u16,
    images: &StackImages,
) -> anyhow::Result<()> {
    let stack_file = stack_file_path();
    if !stack_file.exists() {
        bail!(
            "{} is missing: run `cargo xtask render` to write it",
            stack_file.display()
        );
    }
    // The stack file names its images `${WEBSTACK_WEBAPP_IMAGE:-…:local}`
    // and so on: pin the content tags through those variables.
    let mut variables = vec![(crate::stack::PORT_VARIABLE.to_string(), port.to_string())];
    for service in crate::stack::stack().services {
        variables.push((
            service.image.variable.to_string(),
            images.for_service(service.name)?.to_string(),
        ));
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

/// A service as `docker service inspect` shows it (only the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    pub spec: ServiceSpec,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub mode: ServiceMode,
    pub task_template: TaskTemplate,
    #[serde(default)]
    pub endpoint_spec: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceMode {
    #[serde(default)]
    pub replicated: Option<ReplicatedMode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicatedMode {
    #[serde(default)]
    pub replicas: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplate {
    pub container_spec: ContainerSpec,
    /// Kept whole to tell whether a deploy changed anything tasks run with.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    pub image: String,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// The state of a service's latest rolling update, as Swarm names it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
    /// A state this code does not know (a newer engine's).
    #[serde(other)]
    Unknown,
}

impl UpdateState {
    /// Swarm does nothing more on its own: done, rolled back, or paused for
    /// a person.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::RollbackCompleted | Self::Paused | Self::RollbackPaused
        )
    }

    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            Self::RollbackStarted | Self::RollbackPaused | Self::RollbackCompleted
        )
    }

    /// Swarm's own word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Updating => "updating",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::RollbackStarted => "rollback_started",
            Self::RollbackPaused => "rollback_paused",
            Self::RollbackCompleted => "rollback_completed",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for UpdateState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Swarm's record of the latest rolling update of a service.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    pub state: UpdateState,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Service {
    pub fn desired_replicas(&self) -> u64 {
        self.spec
            .mode
            .replicated
            .as_ref()
            .map_or(0, |replicated| replicated.replicas)
    }

    /// The host port published in `mode: host`, read from the spec because
    /// host-mode ports do not appear in the service's endpoint.
    pub fn published_host_port(&self) -> Option<u16> {
        let ports = self.spec.endpoint_spec.as_ref()?.get("Ports")?.as_array()?;
        ports
            .iter()
            .find_map(|port| port.get("PublishedPort")?.as_u64())
            .and_then(|port| u16::try_from(port).ok())
    }
}

/// A task as `docker inspect --type task` shows it (only the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub slot: Option<u64>,
    pub desired_state: String,
    pub status: TaskStatus,
    pub spec: TaskSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    pub container_spec: TaskContainerSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskContainerSpec {
    pub image: String,
}

impl Task {
    pub fn container_id(&self) -> Option<&str> {
        self.status
            .container_status
            .as_ref()?
            .container_id
            .as_deref()
            .filter(|id| !id.is_empty())
    }

    /// Whether the task stopped without being asked to: it failed, was
    /// rejected, or exited on its own. (A task Swarm replaced on purpose
    /// ends in "shutdown".)
    pub fn ended_unexpectedly(&self) -> bool {
        matches!(
            self.status.state.as_str(),
            "failed" | "rejected" | "complete" | "orphaned"
        ) || self
            .status
            .err
            .as_deref()
            .is_some_and(|error| !error.is_empty())
    }

    /// The task's error, else its status message: what to show a person.
    pub fn error_text(&self) -> String {
        match (&self.status.err, &self.status.message) {
            (Some(error), _) if !error.is_empty() => error.clone(),
            (_, Some(message)) => message.clone(),
            _ => String::from("(no error recorded)"),
        }
    }
}

/// Every service of `stack`, fully inspected.
pub fn stack_services(sh: &Shell, stack: &str) -> anyhow::Result<Vec<Service>> {
    let filter = format!("label={STACK_NAMESPACE_LABEL}={stack}");
    let ids = cmd!(sh, "docker service ls --quiet --filter {filter}")
        .quiet()
        .read()
        .with_context(|| format!("list the services of stack {stack}"))?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let json = cmd!(sh, "docker service inspect {ids...}")
        .quiet()
        .read()
        .with_context(|| format!("inspect the services of stack {stack}"))?;
    let mut services: Vec<Service> =
        serde_json::from_str(&json).context("parse `docker service inspect` output")?;
    services.sort_by(|left, right| left.spec.name.cmp(&right.spec.name));
    Ok(services)
}

/// One service, fully inspected.
pub fn inspect_service(sh: &Shell, service: &str) -> anyhow::Result<Service> {
    let json = cmd!(sh, "docker service inspect {service}")
        .quiet()
        .read()
        .with_context(|| format!("inspect service {service}"))?;
    let mut services: Vec<Service> =
        serde_json::from_str(&json).context("parse `docker service inspect` output")?;
    services
        .pop()
        .with_context(|| format!("docker service inspect {service} returned nothing"))
}

/// Every task Swarm still remembers for a service (running ones and the
/// recent history), fully inspected.
pub fn service_tasks(sh: &Shell, service: &str) -> anyhow::Result<Vec<Task>> {
    let ids = cmd!(sh, "docker service ps --quiet --no-trunc {service}")
        .quiet()
        .read()
        .with_context(|| format!("list the tasks of service {service}"))?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let json = cmd!(sh, "docker inspect --type task {ids...}")
        .quiet()
        .ignore_stderr()
        .ignore_status()
        .read()
        .with_context(|| format!("inspect the tasks of service {service}"))?;
    // Tasks can vanish between listing and inspecting (history pruning);
    // `docker inspect` then still prints the others.
    let tasks: Vec<Task> = if json.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&json).context("parse `docker inspect --type task` output")?
    };
    Ok(tasks)
}

/// The health of a container on this node: `Some("healthy")`,
/// `Some("starting")`, ...; `Some("none")` without a healthcheck; `None` when
/// the container is not on this engine (another node of a multi-node swarm).
pub fn local_container_health(sh: &Shell, container_id: &str) -> Option<String> {
    let format = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}";
    cmd!(
        sh,
        "docker inspect --type container --format {format} {container_id}"
    )
    .quiet()
    .ignore_stderr()
    .read()
    .ok()
    .map(|health| health.trim().to_owned())
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
        if task.desired_state != "running" {
            continue;
        }
        let slot = task
            .slot
            .map_or_else(String::new, |slot| format!(".{slot}"));
        let label = format!("{}{slot}", service.spec.name);
        if task.status.state != "running" {
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
        let health = task
            .container_id()
            .and_then(|id| local_container_health(sh, id));
        match health.as_deref() {
            None | Some("healthy") | Some("none") => ready += 1,
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
    let strip_digest = |image: &str| image.split('@').next().unwrap_or(image).to_owned();
    strip_digest(task_image) == strip_digest(spec_image)
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
    loop {
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
            return Ok(());
        }
        for service in &progress {
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
        if started.elapsed() > timeout {
            for service in progress.iter().filter(|service| !service.converged()) {
                eprintln!(
                    "swarm: {} has {}/{} ready: {}",
                    service.name,
                    service.ready,
                    service.desired,
                    service.pending.join("; ")
                );
                let failures = new_failed_tasks(sh, &service.name, tasks_before)?;
                print_task_failures(sh, &failures);
            }
            bail!(
                "stack {stack} did not converge within {}s (details above); `cargo xtask swarm status -p {stack}` shows where it stands",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
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

/// One healthcheck run as `docker inspect` records it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthcheckRun {
    #[serde(default)]
    exit_code: i64,
    #[serde(default)]
    output: String,
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
        if let Some(container_id) = task.container_id() {
            let format =
                "{{if .State.Health}}{{.State.Health.Status}} {{json .State.Health.Log}}{{end}}";
            let health = cmd!(
                sh,
                "docker inspect --type container --format {format} {container_id}"
            )
            .quiet()
            .ignore_stderr()
            .read()
            .unwrap_or_default();
            if let Some((status, log)) = health.trim().split_once(' ') {
                eprintln!("swarm:   health: {status}");
                let checks: Vec<HealthcheckRun> = serde_json::from_str(log).unwrap_or_default();
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
    fn update_states_parse_from_swarms_words_and_unknown_ones_do_not_fail() {
        let parsed: UpdateStatus = serde_json::from_str(
            r#"{"State":"rollback_completed","StartedAt":"2026-12-02T06:00:00Z","Message":"rollback completed"}"#,
        )
        .expect("an update status");
        assert_eq!(parsed.state, UpdateState::RollbackCompleted);
        assert_eq!(parsed.message.as_deref(), Some("rollback completed"));
        let newer: UpdateStatus =
            serde_json::from_str(r#"{"State":"frobnicating"}"#).expect("an unknown state");
        assert_eq!(newer.state, UpdateState::Unknown);
        assert_eq!(UpdateState::RollbackStarted.to_string(), "rollback_started");
    }

    #[test]
    fn final_and_rollback_states() {
        use UpdateState::*;
        for state in [Completed, RollbackCompleted, Paused, RollbackPaused] {
            assert!(state.is_final(), "{state}");
        }
        for state in [Updating, RollbackStarted, Unknown] {
            assert!(!state.is_final(), "{state}");
        }
        for state in [RollbackStarted, RollbackPaused, RollbackCompleted] {
            assert!(state.is_rollback(), "{state}");
        }
        assert!(!Completed.is_rollback() && !Paused.is_rollback());
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
