//! `cargo xtask swarm update`: roll a deployed stack to freshly built images
//! or a changed stack file, and wait until the rolling update has finished or
//! Swarm has rolled it back. A stack deployed with `--tls` stays on HTTPS.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use xshell::Shell;

use super::{engine, UpdateState, UpdateStatus, DEFAULT_PORT, DEFAULT_STACK_NAME};
use crate::poll::{self, Look};
use crate::stack::StackImages;

/// Roll the running stack to freshly built images (or a changed stack file)
/// and wait for the rollout to finish; fails, saying why, if it rolled back.
#[derive(clap::Args)]
pub struct SwarmUpdate {
    /// Stack name given to `swarm deploy`.
    #[arg(long = "project", short = 'p', alias = "stack", value_name = "NAME", env = "WEBSTACK_PROJECT", default_value = DEFAULT_STACK_NAME)]
    pub stack: String,
    /// Roll webapp to this image instead of the freshly built one (it must
    /// exist on every node, e.g. an image made with `docker commit`).
    #[arg(long, value_name = "IMAGE")]
    pub webapp_image: Option<String>,
    /// Seconds to wait for the rollout (or the rollback) to finish.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

impl SwarmUpdate {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        engine::require_docker(sh)?;
        let info = engine::swarm_info(sh)?;
        if !info.is_manager() {
            bail!(
                "this engine is not a swarm manager, so there is no stack to update: run `cargo xtask swarm deploy` first"
            );
        }
        let stack = &self.stack;
        let services = super::stack_services(sh, stack)?;
        if services.is_empty() {
            bail!("there is no stack named {stack}: deploy it with `cargo xtask swarm deploy -p {stack}`");
        }
        // Keep the ports the stack was deployed with, and its HTTPS: with
        // the certificate and key in the TLS directory now (a renewed pair
        // under a new version of the secrets).
        let port = super::published_plain_port(&services).unwrap_or(DEFAULT_PORT);
        let tls = match super::proxy_service(stack, &services) {
            Some(proxy) => super::tls::StackTls::of_running(proxy)?,
            None => None,
        };
        let before: Before = services
            .iter()
            .map(|service| {
                (
                    service.spec.name.clone(),
                    (task_template_json(service), service.update_status.clone()),
                )
            })
            .collect();

        super::prepare_files()?;
        let mut images = StackImages::from_built(
            &crate::images::ensure_images(sh).context("build and load the images")?,
        )?;
        if let Some(webapp_image) = &self.webapp_image {
            images.webapp = webapp_image.clone();
        }
        let tasks_before = super::converge::known_task_ids(sh, stack)?;
        let started = Instant::now();
        super::deploy_stack(sh, stack, port, Some(&images), tls.as_ref())?;

        let timeout = Duration::from_secs(self.timeout_secs);
        let mut rolling = rollouts(&super::stack_services(sh, stack)?, &before);
        wait_for_rollouts(sh, &mut rolling, started, timeout)?;
        let rolled_back = report_rollbacks(sh, &rolling, &tasks_before)?;
        super::converge::wait_until_converged(sh, stack, &tasks_before, timeout)?;
        if !rolled_back.is_empty() {
            bail!(
                "the update was rolled back ({}); the stack still runs the previous version. \
                 The failing tasks' errors and logs are above",
                rolled_back.join("; ")
            );
        }
        super::tls::remove_unused_secrets(sh, stack)?;
        eprintln!(
            "swarm: stack {stack} is up to date: {}",
            super::deploy::url("localhost", port, tls.as_ref().map(|tls| tls.https_port))
        );
        Ok(())
    }
}

/// What each service was before the deploy: its task template and its
/// update status.
type Before = BTreeMap<String, (serde_json::Value, Option<UpdateStatus>)>;

/// The services whose task template the deploy changed, each a rollout to
/// watch; prints what became of every other one.
fn rollouts(services: &[super::Service], before: &Before) -> Vec<Rollout> {
    let mut rolling = Vec::new();
    for service in services {
        let name = service.spec.name.clone();
        let Some((template_before, status_before)) = before.get(&name) else {
            eprintln!("swarm: {name} is new");
            continue;
        };
        if *template_before == task_template_json(service) {
            eprintln!("swarm: {name} unchanged");
            continue;
        }
        eprintln!(
            "swarm: {name} rolling to {}",
            service.spec.task_template.container_spec.image
        );
        rolling.push(Rollout {
            service: name,
            previous_status: status_before.clone(),
            outcome: None,
            rollback_reason: None,
        });
    }
    rolling
}

/// Prints, for each rollout that did not complete, why Swarm rolled it back
/// and the failed tasks' errors and logs; returns one line per such rollout.
fn report_rollbacks(
    sh: &Shell,
    rolling: &[Rollout],
    tasks_before: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut rolled_back = Vec::new();
    for rollout in rolling {
        let Some(outcome) = &rollout.outcome else {
            continue;
        };
        let name = &rollout.service;
        if outcome.state == UpdateState::Completed {
            continue;
        }
        // Swarm says which task made it roll back only while the
        // rollback runs ("update rolled back due to failure or early
        // termination of task …"); afterwards the message is just
        // "rollback completed".
        let reason = rollout
            .rollback_reason
            .clone()
            .or_else(|| outcome.message.clone())
            .unwrap_or_else(|| outcome.state.to_string());
        eprintln!(
            "swarm: {name} did not roll out ({}): {reason}",
            outcome.state
        );
        let failures = super::converge::new_failed_tasks(sh, name, tasks_before)?;
        super::converge::print_task_failures(sh, &failures);
        rolled_back.push(format!("{name}: {reason}"));
    }
    Ok(rolled_back)
}

fn task_template_json(service: &super::Service) -> serde_json::Value {
    let template = &service.spec.task_template;
    let mut value = serde_json::Value::Object(template.rest.clone());
    value["ContainerSpec"] = serde_json::json!({
        "Image": template.container_spec.image,
        "Rest": template.container_spec.rest,
    });
    // The contract types the networks apart from `rest`; they count too.
    if let Some(networks) = &template.networks {
        value["Networks"] = serde_json::json!(networks);
    }
    value
}

/// How long to wait for Swarm to record that a rollout began before
/// concluding that the spec change needs no new tasks.
const ROLLOUT_START_GRACE: Duration = Duration::from_secs(15);

/// One service whose spec changed, and what became of its rolling update.
struct Rollout {
    service: String,
    /// The update status before the deploy: a rollout is new when its start
    /// time differs.
    previous_status: Option<UpdateStatus>,
    /// The final state, once reached.
    outcome: Option<UpdateStatus>,
    /// The message Swarm gave when it started rolling back.
    rollback_reason: Option<String>,
}

/// Pause between two looks at the rollouts.
const ROLLOUT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Watches all rollouts at once (Swarm runs them in parallel) until each
/// has reached a final state, printing every state change. The timeout
/// counts from `started`, the deploy.
fn wait_for_rollouts(
    sh: &Shell,
    rollouts: &mut [Rollout],
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut last_states: BTreeMap<String, UpdateState> = BTreeMap::new();
    poll::until(
        timeout.saturating_sub(started.elapsed()),
        ROLLOUT_POLL_INTERVAL,
        || {
            let mut pending = Vec::new();
            for rollout in rollouts
                .iter_mut()
                .filter(|rollout| rollout.outcome.is_none())
            {
                if !look_at_rollout(sh, rollout, started, &mut last_states)? {
                    pending.push(rollout.service.clone());
                }
            }
            Ok(if pending.is_empty() {
                Look::Ready(())
            } else {
                Look::NotYet(pending)
            })
        },
        |pending, _| {
            anyhow!(
                "the rollout of {} did not finish within {}s; see `cargo xtask swarm status` and `docker service ps <service>`",
                pending.join(", "),
                timeout.as_secs()
            )
        },
    )
}

/// One look at one rollout: prints its state when it changed, records its
/// outcome once final, and says whether it has one.
fn look_at_rollout(
    sh: &Shell,
    rollout: &mut Rollout,
    started: Instant,
    last_states: &mut BTreeMap<String, UpdateState>,
) -> anyhow::Result<bool> {
    let service = &rollout.service;
    let current = super::inspect_service(sh, service)?.update_status;
    let new_status = current.filter(|status| {
        rollout
            .previous_status
            .as_ref()
            .is_none_or(|previous| previous.started_at != status.started_at)
    });
    let Some(status) = new_status else {
        // Some spec changes (labels of the task template, say) do
        // not replace tasks, so Swarm starts no rollout at all.
        if started.elapsed() > ROLLOUT_START_GRACE {
            eprintln!("swarm: {service}: no task needed replacing");
            rollout.outcome = Some(UpdateStatus {
                state: UpdateState::Completed,
                started_at: None,
                completed_at: None,
                message: None,
            });
        }
        return Ok(rollout.outcome.is_some());
    };
    if last_states.get(service) != Some(&status.state) {
        eprintln!(
            "swarm: [{:>3}s] {service}: {} ({})",
            started.elapsed().as_secs(),
            status.state,
            status.message.as_deref().unwrap_or("")
        );
        last_states.insert(service.clone(), status.state);
    }
    if status.state.is_rollback() && rollout.rollback_reason.is_none() {
        rollout.rollback_reason = status
            .message
            .clone()
            .filter(|message| message.contains("rolled back due to"));
    }
    if status.state.is_final() {
        rollout.outcome = Some(status);
    }
    Ok(rollout.outcome.is_some())
}
