//! When a Swarm stack has converged: every task of every service runs the
//! spec (its image, and the rest of its container spec: a new certificate's
//! secrets change nothing else), running and (where Docker can tell)
//! healthy, and no rolling update is in progress; and, when it does not get
//! there, what each failed task said and logged.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, bail};
use xshell::{cmd, Shell};

use crate::docker::{
    service_tasks, stack_services, without_digest, Condition, Service, Task, TaskState,
    UpdateStatus,
};
use crate::poll::{self, Look};

/// How far one service is from what its spec asks for.
#[derive(Debug)]
pub struct ServiceProgress {
    pub name: String,
    pub desired: u64,
    /// Tasks that run the spec, are running and (where Docker can tell)
    /// healthy.
    pub ready: u64,
    /// Tasks meant to run that do not (yet): starting, unhealthy, older spec.
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
        // Swarm starts a task with a copy of the service's container spec;
        // one that differs is from before the last deploy, which changed,
        // say, the proxy's secrets alone.
        if !same_container_spec(
            &task.spec.container_spec.rest,
            &service.spec.task_template.container_spec.rest,
        ) {
            pending.push(format!("{label}: still on the previous spec"));
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

/// Whether a task's copy of the container spec is the service's. The engine leaves empty
/// settings out of the task's copy: a service deployed without `dns:` has `"DNSConfig": {}`,
/// its tasks none.
fn same_container_spec(
    task: &serde_json::Map<String, serde_json::Value>,
    service: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    let set = |spec: &serde_json::Map<String, serde_json::Value>| {
        spec.iter()
            .filter(|(_, value)| {
                !(value.is_null() || value.as_object().is_some_and(serde_json::Map::is_empty))
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<serde_json::Map<_, _>>()
    };
    set(task) == set(service)
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
    let mut shown = poll::Progress::new("swarm: ");
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
            shown.show(&report);
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
    use crate::docker::UpdateState;

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
    fn a_task_is_on_the_service_spec_whatever_empty_settings_the_engine_left_out() {
        let spec = |json: &str| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_str(json).unwrap()
        };
        let service = spec(r#"{"Env":["A=1"],"DNSConfig":{}}"#);
        assert!(same_container_spec(&spec(r#"{"Env":["A=1"]}"#), &service));
        assert!(!same_container_spec(&spec(r#"{"Env":["A=2"]}"#), &service));
        assert!(!same_container_spec(
            &spec(r#"{"Env":["A=1"],"DNSConfig":{"Nameservers":["127.0.0.1"]}}"#),
            &service
        ));
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
