//! One running copy of the stack, whichever orchestrator runs it: a Compose
//! project ([`crate::compose::ComposeProject`]) or a Swarm stack
//! ([`crate::swarm::SwarmStack`]). The bench and the e2e drivers hold a
//! `&dyn Deployment` and do not care which.

use std::time::Duration;

use xshell::Shell;

use super::{Container, Orchestrator};
use crate::stack::StackImages;

pub trait Deployment {
    /// The project's or stack's name.
    fn name(&self) -> &str;

    fn orchestrator(&self) -> Orchestrator;

    /// Starts it, or changes it to these images (`None`: the ones it runs,
    /// else the deploy file's `:local` defaults) and this many webapp
    /// replicas; returns before it is ready ([`Deployment::wait_ready`]).
    fn deploy(
        &mut self,
        sh: &Shell,
        images: Option<&StackImages>,
        webapp_replicas: u32,
    ) -> anyhow::Result<()>;

    /// Waits until every service runs the replicas it should, healthy;
    /// fails with the culprits' logs when one fails or at the timeout.
    fn wait_ready(&self, sh: &Shell, timeout: Duration) -> anyhow::Result<()>;

    /// The running containers of one service of the model (`db`, `webapp`,
    /// `proxy`) on this engine.
    fn containers(&self, sh: &Shell, service: &str) -> anyhow::Result<Vec<Container>>;

    /// The host port the proxy publishes, when it runs.
    fn published_port(&self, sh: &Shell) -> anyhow::Result<Option<u16>>;

    /// Removes it and waits until it is gone; with `volumes`, its data too.
    fn remove(&self, sh: &Shell, volumes: bool) -> anyhow::Result<()>;
}
