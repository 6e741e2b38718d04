//! `cargo xtask swarm status`: where a deployed stack stands, service by
//! service: replicas ready, image, the last rolling update, the URL.

use xshell::{cmd, Shell};

use super::{engine, DEFAULT_STACK_NAME};

/// Show the stack's services, their tasks and their last rolling update.
#[derive(clap::Args)]
pub struct SwarmStatus {
    /// Stack name given to `swarm deploy`.
    #[arg(long = "project", short = 'p', alias = "stack", value_name = "NAME", env = "WEBSTACK_PROJECT", default_value = DEFAULT_STACK_NAME)]
    pub stack: String,
}

impl SwarmStatus {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        engine::require_docker(sh)?;
        let info = engine::swarm_info(sh)?;
        if info.local_node_state != engine::LocalNodeState::Active {
            println!(
                "This engine is in no swarm (state {}): `cargo xtask swarm deploy` creates one.",
                info.local_node_state
            );
            return Ok(());
        }
        if !info.control_available {
            println!(
                "This engine is a swarm worker: run `cargo xtask swarm status` against a manager."
            );
            return Ok(());
        }
        let created_by_xtask = engine::swarm_created_by_xtask(sh)?;
        println!(
            "Swarm: active, this engine is a manager{}.",
            if created_by_xtask {
                " (created by xtask; `cargo xtask swarm rm` leaves it once no stack is left)"
            } else {
                " (not created by xtask; it will not be left)"
            }
        );
        let stack = &self.stack;
        let services = super::stack_services(sh, stack)?;
        if services.is_empty() {
            println!("No stack named {stack}.");
            return Ok(());
        }
        print_services(sh, &services)?;
        println!();
        // The tasks meant to run, with node and error columns, as Docker
        // prints them.
        cmd!(sh, "docker stack ps --filter desired-state=running {stack}").run()?;
        if let Some(port) = super::published_plain_port(&services) {
            println!();
            // On the cluster of `cargo xtask cluster up`, the proxy listens
            // on the manager's address, not on the host's loopback.
            let manager = crate::cluster::Node { index: 1 };
            let host = match std::env::var("DOCKER_HOST") {
                Ok(docker_host) if docker_host == manager.docker_host() => {
                    manager.address().to_string()
                }
                _ => String::from("localhost"),
            };
            let https_port =
                super::proxy_service(stack, &services).and_then(super::tls::https_port);
            println!("URL: {}", super::deploy::url(&host, port, https_port));
        }
        Ok(())
    }
}

/// One row per service (ready, converged, image, last update), and the
/// tasks that are not ready under it.
fn print_services(sh: &Shell, services: &[super::Service]) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<32} {:>7}  {:<10} {:<40} LAST UPDATE",
        "SERVICE", "READY", "CONVERGED", "IMAGE"
    );
    // Each row from one inspection of its service: a service that
    // appears or goes meanwhile cannot shift the rows.
    for service in services {
        let progress = super::converge::service_progress(sh, service)?;
        let update = service
            .update_status
            .as_ref()
            .map_or_else(String::new, |status| {
                format!(
                    "{} ({})",
                    status.state,
                    status.message.as_deref().unwrap_or("")
                )
            });
        println!(
            "{:<32} {:>7}  {:<10} {:<40} {}",
            service.spec.name,
            format!("{}/{}", progress.ready, progress.desired),
            if progress.converged() { "yes" } else { "no" },
            service.spec.task_template.container_spec.image,
            update
        );
        for pending in &progress.pending {
            println!("    not ready: {pending}");
        }
    }
    Ok(())
}
