//! Docker Swarm: the same stack as `deploy/compose.yaml`, deployed with
//! `docker stack deploy` from `deploy/stack.yaml`, rolled, watched and removed.
//!
//! The subcommands (`swarm deploy`, `swarm update`, `swarm status`,
//! `swarm rm`) and `cargo xtask e2e --swarm` share what is here: probing the
//! engine, creating a single-node swarm when there is none, deploying with
//! content-derived image tags (and with `deploy/stack.tls.yaml` or
//! `deploy/stack.acme.yaml` for HTTPS, `tls.rs`), and deciding when a stack has converged
//! (`converge.rs`) by
//! looking at every task and container ourselves rather than trusting
//! `docker stack deploy`'s exit code (it returns as soon as the specs are
//! stored).

pub mod converge;
pub mod deploy;
pub mod engine;
pub mod remove;
pub mod status;
pub mod tls;
pub mod update;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::stack::StackImages;
use stack_contract::netguard::Ipv4Net;

/// Stack name when none is given: services become `webstack_webapp` and so on.
pub const DEFAULT_STACK_NAME: &str = crate::stack::DEFAULT_NAME;

/// Host port the proxy publishes when none is given (the Compose stack's too).
pub const DEFAULT_PORT: u16 = crate::stack::DEFAULT_HOST_PORT;

use crate::docker::deployment::Deployment;
pub use crate::docker::STACK_NAMESPACE_LABEL;
use crate::docker::{Container, Orchestrator, SWARM_SERVICE_LABEL};
pub use crate::docker::{Service, Task, TaskState, UpdateState, UpdateStatus};
use converge::{known_task_ids, wait_until_converged};

/// Makes sure the checked-in stack file (and its HTTPS overlay) is the
/// rendered one and the secret files it names exist (the same `.secrets/`
/// files Compose uses).
pub fn prepare_files() -> anyhow::Result<()> {
    let rendered = crate::render::render_stack(&crate::stack::stack())?;
    crate::render::write_file(&crate::render::stack_file_path(), &rendered)?;
    for (path, rendered) in crate::render::tls_overlays()? {
        crate::render::write_file(&path, &rendered)?;
    }
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
    /// HTTPS at the front: deployed with `deploy/stack.tls.yaml` over the file too.
    pub tls: Option<tls::StackTls>,
}

impl SwarmStack {
    pub fn new(name: &str, port: u16) -> SwarmStack {
        SwarmStack {
            name: name.to_owned(),
            port,
            tasks_before: BTreeSet::new(),
            proxy_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            own_networks: Vec::new(),
            tls: None,
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

    /// `docker stack deploy` with these images (`None`: those the stack runs, else the
    /// file's `:local` defaults), then the webapp scaled to `webapp_replicas` when that is
    /// not the model's count.
    fn deploy(
        &mut self,
        sh: &Shell,
        images: Option<&StackImages>,
        webapp_replicas: u32,
    ) -> anyhow::Result<()> {
        ensure_labelled_nodes(sh)?;
        self.tasks_before = known_task_ids(sh, &self.name)?;
        let running = match images {
            Some(_) => None,
            None => running_images(&self.name, &stack_services(sh, &self.name)?),
        };
        deploy_stack(
            sh,
            &self.name,
            self.port,
            images.or(running.as_ref()),
            self.tls.as_ref(),
        )?;
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
        let (port, scheme) = match &self.tls {
            Some(tls) => (tls.https_port, crate::docker::serving::Scheme::Https),
            None => (self.port, crate::docker::serving::Scheme::Http),
        };
        crate::docker::serving::wait_until_every_replica_serves(
            SocketAddr::new(self.proxy_host, port),
            scheme,
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
        Ok(published_plain_port(&stack_services(sh, &self.name)?))
    }

    fn remove(&self, sh: &Shell, volumes: bool) -> anyhow::Result<()> {
        remove::remove_stack(sh, &self.name, volumes)
    }
}

/// The host port the proxy publishes plain HTTP on (with HTTPS, where it
/// redirects from), among a stack's services.
pub fn published_plain_port(services: &[Service]) -> Option<u16> {
    let model = crate::stack::stack();
    let container_port = model
        .service(crate::stack::PROXY)
        .ok()?
        .published_ports
        .first()?
        .container_port;
    services
        .iter()
        .find_map(|service| service.published_host_port(container_port))
}

/// The service of the model a service of `stack` runs (`NAME_webapp` → `webapp`).
fn model_service<'a>(stack: &str, service: &'a Service) -> Option<&'a str> {
    service
        .spec
        .name
        .strip_prefix(stack)
        .and_then(|name| name.strip_prefix('_'))
}

/// The images the services of `stack` run, when it runs all three.
pub fn running_images(stack: &str, services: &[Service]) -> Option<StackImages> {
    let image = |wanted: &str| {
        services
            .iter()
            .find(|service| model_service(stack, service) == Some(wanted))
            .map(|service| service.image().to_owned())
    };
    Some(StackImages {
        webapp: image(crate::stack::WEBAPP)?,
        db: image(crate::stack::DB)?,
        proxy: image(crate::stack::PROXY)?,
    })
}

/// The stack's proxy service, when it runs.
pub fn proxy_service<'a>(stack: &str, services: &'a [Service]) -> Option<&'a Service> {
    services
        .iter()
        .find(|service| model_service(stack, service) == Some(crate::stack::PROXY))
}

/// `docker stack deploy`s the checked-in stack file as `stack`, with the
/// given images and host port, and with `tls` its HTTPS overlay over it
/// (`deploy/stack.tls.yaml` or `deploy/stack.acme.yaml`).
/// Returns once the specs are stored; use
/// [`converge::wait_until_converged`] to wait for the tasks.
pub fn deploy_stack(
    sh: &Shell,
    stack: &str,
    port: u16,
    images: Option<&StackImages>,
    tls: Option<&tls::StackTls>,
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
    let mut files = vec![stack_file];
    if let Some(tls) = tls {
        files.push(tls.certificate.overlay_file());
        variables.extend(tls.variables(stack)?);
    }
    let files: Vec<String> = files
        .iter()
        .flat_map(|file| ["--compose-file".to_owned(), file.display().to_string()])
        .collect();
    // `--resolve-image never`: the images are local content tags, or
    // pushed ones already named by digest; either way nothing needs a
    // registry's answer at deploy time (each node pulls what it lacks).
    // `--with-registry-auth`: a pushed image's registry may want the
    // credentials the docker CLI holds (none is sent when it holds none).
    // `--prune` removes services no longer in the file. No `--detach`: older
    // CLIs lack the flag, and the newer default is detached anyway; callers
    // wait with `wait_until_converged`.
    cmd!(
        sh,
        "docker stack deploy --resolve-image never --with-registry-auth --prune {files...} {stack}"
    )
    .envs(variables)
    .run()
    .with_context(|| format!("docker stack deploy {stack}"))?;
    Ok(())
}

/// Makes sure exactly one node carries each node label the stack is placed
/// by (db with its volume; the proxy and the balancer with their socket's):
/// when none does, labels the manager this command talks to, and says so;
/// when several do, refuses, since a local volume is on one node only.
pub fn ensure_labelled_nodes(sh: &Shell) -> anyhow::Result<()> {
    for (label, what) in [
        (crate::stack::DB_NODE_LABEL, "db and its volume live"),
        (
            crate::stack::PROXY_NODE_LABEL,
            "the proxy (the published port) and the balancer, which share a socket on a local volume, run",
        ),
    ] {
        ensure_labelled_node(sh, label, what)?;
    }
    Ok(())
}

/// Whether no node carries `label` yet, from `docker node ls`'s hostnames of
/// the nodes that do; an error when several do.
fn needs_label(labelled: &str, label: &str, what: &str) -> anyhow::Result<bool> {
    let labelled: Vec<&str> = labelled.split_whitespace().collect();
    match labelled[..] {
        [] => Ok(true),
        [_] => Ok(false),
        _ => bail!(
            "nodes {} are all labelled {label}=true, but {what} on one node: remove the label from all but one \
             (`docker node update --label-rm {label} <node>`)",
            labelled.join(", ")
        ),
    }
}

fn ensure_labelled_node(sh: &Shell, label: &str, what: &str) -> anyhow::Result<()> {
    let filter = format!("node.label={label}=true");
    let format = "{{.Hostname}}";
    let labelled = cmd!(sh, "docker node ls --format {format} --filter {filter}")
        .quiet()
        .read()
        .with_context(|| format!("list the swarm nodes labelled {label}=true"))?;
    if !needs_label(&labelled, label, what)? {
        return Ok(());
    }
    let format = "{{.Description.Hostname}}";
    let hostname = cmd!(sh, "docker node inspect --format {format} self")
        .quiet()
        .read()
        .context("read this swarm node's hostname")?;
    eprintln!(
        "swarm: no node is labelled {label}=true: labelling this manager ({}), so {what} here \
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
        .with_context(|| format!("label this node {label}=true"))?;
    Ok(())
}

pub use crate::docker::{service_tasks, stack_services};

/// One service, fully inspected.
pub fn inspect_service(sh: &Shell, service: &str) -> anyhow::Result<Service> {
    crate::docker::service(sh, service)
}

#[cfg(test)]
mod tests {
    use super::needs_label;

    #[test]
    fn a_placement_label_goes_on_one_node_and_several_are_refused_by_name() {
        let what = "db and its volume live";
        assert!(needs_label("", "webstack.db", what).unwrap());
        assert!(!needs_label("node-1\n", "webstack.db", what).unwrap());
        let error = needs_label("node-1\nnode-2\n", "webstack.db", what)
            .unwrap_err()
            .to_string();
        assert!(error.contains("node-1, node-2"), "{error}");
        assert!(
            error.contains("docker node update --label-rm webstack.db"),
            "{error}"
        );
    }
}
