//! Docker's JSON, typed: what `docker inspect` (containers, networks,
//! tasks, nodes), `docker service inspect`, `docker network inspect
//! --verbose`, `docker node ls --format '{{json .}}'` and `docker info`'s
//! Swarm section print, reduced to the fields xtask and the suites read;
//! serde ignores the rest. Fields Docker may omit (or print as `null`) have
//! defaults. States Docker names with a word are enums here, with an
//! `Unknown` variant for words a newer engine may add, so a new state never
//! fails a parse and every match on a state is checked by the compiler.
//!
//! Only parsing and reading: running the docker CLI is the caller's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

/// Declares a state enum that deserialises from Docker's words
/// (`rename_all`), with `Unknown` for any other word (shown as `$unknown`),
/// and shows as that word.
macro_rules! docker_words {
    ($(#[$meta:meta])* $name:ident, $rename:literal, $unknown:literal { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
        #[serde(rename_all = $rename)]
        pub enum $name {
            $($variant,)+
            /// A word this code does not know (a newer engine's), or none.
            #[default]
            #[serde(other)]
            Unknown,
        }

        impl $name {
            /// Docker's own word for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                    Self::Unknown => $unknown,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    };
}

docker_words!(
    /// `State.Status` of a container.
    ContainerStatus, "lowercase", "unknown" {
        Created => "created",
        Running => "running",
        Paused => "paused",
        Restarting => "restarting",
        Removing => "removing",
        Exited => "exited",
        Dead => "dead",
    }
);

docker_words!(
    /// `State.Health.Status` of a container with a healthcheck.
    HealthStatus, "lowercase", "unknown" {
        Starting => "starting",
        Healthy => "healthy",
        Unhealthy => "unhealthy",
        None => "none",
    }
);

docker_words!(
    /// A Swarm task's `Status.State` and `DesiredState`.
    TaskState, "lowercase", "unknown" {
        New => "new",
        Pending => "pending",
        Assigned => "assigned",
        Accepted => "accepted",
        Preparing => "preparing",
        Ready => "ready",
        Starting => "starting",
        Running => "running",
        Complete => "complete",
        Shutdown => "shutdown",
        Failed => "failed",
        Rejected => "rejected",
        Remove => "remove",
        Orphaned => "orphaned",
    }
);

docker_words!(
    /// The state of a service's latest rolling update.
    UpdateState, "snake_case", "unknown" {
        Updating => "updating",
        Paused => "paused",
        Completed => "completed",
        RollbackStarted => "rollback_started",
        RollbackPaused => "rollback_paused",
        RollbackCompleted => "rollback_completed",
    }
);

docker_words!(
    /// `Swarm.LocalNodeState` in `docker info`.
    LocalNodeState, "lowercase", "unknown" {
        Inactive => "inactive",
        Pending => "pending",
        Active => "active",
        Error => "error",
        Locked => "locked",
    }
);

docker_words!(
    /// A node's `Status` in `docker node ls` (Docker's own `Unknown` is
    /// [`NodeStatus::Unknown`] too).
    NodeStatus, "PascalCase", "Unknown" {
        Ready => "Ready",
        Down => "Down",
        Disconnected => "Disconnected",
    }
);

/// A field Docker prints as `null` when empty reads as its default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `repo:tag@sha256:…` → `repo:tag` (Swarm may append the digest).
pub fn without_digest(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

// ---- containers ----------------------------------------------------------

/// A container as `docker inspect --type container` shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    /// With Docker's leading `/`; see [`Container::short_name`].
    pub name: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
    #[serde(default)]
    pub host_config: HostConfig,
    pub network_settings: NetworkSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// What the webapp greets with: the first 12 characters of the id.
    #[serde(default)]
    pub hostname: String,
    /// The image reference the container was created from.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: ContainerStatus,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub exit_code: i64,
    /// The main process's id on the host (0 when not running).
    #[serde(default)]
    pub pid: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: HealthStatus,
    /// The last healthcheck runs, oldest first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub log: Vec<HealthcheckRun>,
}

/// One healthcheck run as `docker inspect` records it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthcheckRun {
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub output: String,
}

/// Container port (`80/tcp`) → host bindings; `null` when none.
pub type PortMap = BTreeMap<String, Option<Vec<PortBinding>>>;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// What was asked for: `"80/tcp"` → the host addresses it is published on.
    #[serde(default)]
    pub port_bindings: Option<PortMap>,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default)]
    pub cap_drop: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// What the engine bound.
    #[serde(default)]
    pub ports: Option<PortMap>,
    /// Network name → endpoint; empty when the engine dropped them all.
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// A container's endpoint on one network.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointSettings {
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
}

/// What a person wants to know of a container: up and healthy, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Running, and its healthcheck passes (or says `none`).
    Healthy,
    /// Running, its healthcheck has not passed yet.
    Starting,
    /// Running, its healthcheck fails.
    Unhealthy,
    /// Running, with no healthcheck.
    Running,
    /// Stopped, with this exit code.
    Exited(i64),
    /// Any other state: created, restarting, dead...
    Other(ContainerStatus),
}

impl Condition {
    /// Unhealthy, exited or dead: it will not become healthy by waiting.
    pub fn failed(self) -> bool {
        matches!(
            self,
            Condition::Unhealthy | Condition::Exited(_) | Condition::Other(ContainerStatus::Dead)
        )
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Healthy => formatter.write_str("healthy"),
            Condition::Starting => formatter.write_str("starting"),
            Condition::Unhealthy => formatter.write_str("unhealthy"),
            Condition::Running => formatter.write_str("running"),
            Condition::Exited(code) => write!(formatter, "exited ({code})"),
            Condition::Other(status) => write!(formatter, "{status}"),
        }
    }
}

impl Container {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.config.labels.get(name).map(String::as_str)
    }

    /// The name without Docker's leading `/`.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    pub fn is_running(&self) -> bool {
        self.state.status == ContainerStatus::Running
    }

    /// The healthcheck's word, `None` for a container without one.
    pub fn health(&self) -> Option<HealthStatus> {
        self.state.health.as_ref().map(|health| health.status)
    }

    pub fn condition(&self) -> Condition {
        match (self.state.status, self.health()) {
            (ContainerStatus::Running, None) => Condition::Running,
            (ContainerStatus::Running, Some(health)) => match health {
                HealthStatus::Healthy | HealthStatus::None => Condition::Healthy,
                HealthStatus::Starting => Condition::Starting,
                HealthStatus::Unhealthy => Condition::Unhealthy,
                HealthStatus::Unknown => Condition::Other(ContainerStatus::Running),
            },
            (ContainerStatus::Exited, _) => Condition::Exited(self.state.exit_code),
            (other, _) => Condition::Other(other),
        }
    }

    /// The host port bound to `container_port` (e.g. `"80/tcp"`) in
    /// `HostConfig.PortBindings`, if any.
    pub fn host_port(&self, container_port: &str) -> Option<u16> {
        self.host_config
            .port_bindings
            .as_ref()?
            .get(container_port)?
            .as_ref()?
            .iter()
            .find_map(|binding| binding.host_port.parse().ok())
    }

    /// The host ports the container asked for or got, from both
    /// `HostConfig.PortBindings` and `NetworkSettings.Ports` (one port bound
    /// on IPv4 and IPv6 counts once). A host port that is no number is
    /// returned as `Err` with what Docker printed.
    pub fn host_ports(&self) -> Result<BTreeSet<u16>, String> {
        [
            &self.host_config.port_bindings,
            &self.network_settings.ports,
        ]
        .into_iter()
        .flatten()
        .flat_map(|map| map.values().flatten().flatten())
        .filter(|binding| !binding.host_port.is_empty())
        .map(|binding| {
            binding
                .host_port
                .parse()
                .map_err(|_| format!("host port {:?}", binding.host_port))
        })
        .collect()
    }
}

// ---- networks --------------------------------------------------------------

/// A network as `docker network inspect` shows it; with `--verbose`, an
/// overlay network also lists the engine's gossip peers and the task
/// endpoints it knows (its NetworkDB).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    pub name: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(rename = "IPAM", default)]
    pub ipam: Ipam,
    /// `--verbose`, overlay: absent (null) when the engine has no part in
    /// the network.
    #[serde(default)]
    pub peers: Option<Vec<NetworkPeer>>,
    /// `--verbose`, overlay: service name → its tasks' endpoints.
    #[serde(default)]
    pub services: Option<BTreeMap<String, NetworkService>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    #[serde(default)]
    pub config: Option<Vec<IpamConfig>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    #[serde(default)]
    pub subnet: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkPeer {
    #[serde(rename = "IP")]
    pub ip: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkService {
    #[serde(default, deserialize_with = "null_as_default")]
    pub tasks: Vec<NetworkTask>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkTask {
    #[serde(rename = "EndpointIP")]
    pub endpoint_ip: String,
    /// `{"Host IP": "198.18.0.12"}`: the node the task runs on.
    #[serde(default, deserialize_with = "null_as_default")]
    pub info: BTreeMap<String, String>,
}

/// A task endpoint as one engine knows it: address on the overlay, and the
/// address of the host it lives on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OverlayEndpoint {
    pub address: String,
    pub host: String,
}

impl Network {
    pub fn subnets(&self) -> impl Iterator<Item = &str> {
        self.ipam
            .config
            .iter()
            .flatten()
            .filter_map(|config| config.subnet.as_deref())
    }

    /// The addresses of the nodes this engine gossips with on the network.
    pub fn peer_addresses(&self) -> BTreeSet<String> {
        self.peers
            .iter()
            .flatten()
            .map(|peer| peer.ip.clone())
            .collect()
    }

    /// Every task endpoint this engine knows on the network.
    pub fn endpoints(&self) -> BTreeSet<OverlayEndpoint> {
        self.services
            .iter()
            .flat_map(BTreeMap::values)
            .flat_map(|service| &service.tasks)
            .map(|task| OverlayEndpoint {
                address: task.endpoint_ip.clone(),
                host: task.info.get("Host IP").cloned().unwrap_or_default(),
            })
            .collect()
    }
}

// ---- Swarm -----------------------------------------------------------------

/// The engine's `docker info` Swarm section.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    pub local_node_state: LocalNodeState,
    #[serde(default)]
    pub control_available: bool,
    #[serde(default)]
    pub error: String,
}

impl SwarmInfo {
    /// In an active swarm, as a manager: may deploy stacks.
    pub fn is_manager(&self) -> bool {
        self.local_node_state == LocalNodeState::Active && self.control_available
    }
}

/// A node as `docker node ls --format '{{json .}}'` prints it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    #[serde(rename = "ID", default)]
    pub id: String,
    pub hostname: String,
    pub status: NodeStatus,
    /// `Leader` or `Reachable` for a manager, empty for a worker.
    #[serde(default)]
    pub manager_status: String,
}

impl NodeRow {
    pub fn is_manager(&self) -> bool {
        !self.manager_status.is_empty()
    }
}

/// Parses `docker node ls --format '{{json .}}'`: one JSON object a line.
pub fn parse_node_rows(text: &str) -> Result<Vec<NodeRow>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|error| format!("parse node row {line:?}: {error}"))
        })
        .collect()
}

/// A swarm node as `docker node inspect` shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub status: SwarmNodeStatus,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmNodeStatus {
    /// The address the node advertises to the others.
    #[serde(default)]
    pub addr: String,
}

/// A service as `docker service inspect` shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    pub spec: ServiceSpec,
    /// What the service has (as opposed to asks for, in the spec).
    #[serde(default)]
    pub endpoint: Option<ServiceEndpoint>,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    /// The full name, `<stack>_<service>`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mode: ServiceMode,
    pub task_template: TaskTemplate,
    #[serde(default)]
    pub endpoint_spec: Option<EndpointSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceMode {
    #[serde(default)]
    pub replicated: Option<ReplicatedMode>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicatedMode {
    #[serde(default)]
    pub replicas: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplate {
    pub container_spec: ContainerSpec,
    /// The networks the tasks are attached to, by id.
    #[serde(default)]
    pub networks: Option<Vec<NetworkAttachmentConfig>>,
    /// Everything else, kept whole to tell whether a deploy changed
    /// anything tasks run with.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    /// May end in `@sha256:…`; see [`without_digest`].
    pub image: String,
    /// Everything else, kept whole like [`TaskTemplate::rest`].
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl ContainerSpec {
    /// A label of the containers (`labels:` of a service in a stack file).
    pub fn label(&self, name: &str) -> Option<&str> {
        self.rest.get("Labels")?.get(name)?.as_str()
    }

    /// The names of the Swarm secrets the containers get.
    pub fn secret_names(&self) -> Vec<&str> {
        self.rest
            .get("Secrets")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|secret| secret.get("SecretName")?.as_str())
            .collect()
    }
}

/// One entry of a task template's `Networks`; serialises back whole.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachmentConfig {
    /// A network id.
    pub target: String,
    /// Aliases and driver options, kept whole.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<PortConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEndpoint {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<PortConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default)]
    pub published_port: Option<u16>,
    #[serde(default)]
    pub target_port: Option<u16>,
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

    /// Swarm is rolling an update out or back.
    pub fn in_progress(self) -> bool {
        matches!(self, Self::Updating | Self::RollbackStarted)
    }

    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            Self::RollbackStarted | Self::RollbackPaused | Self::RollbackCompleted
        )
    }
}

/// Swarm's record of the latest rolling update of a service.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    #[serde(default)]
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

    /// The image reference in the spec (may end in `@sha256:…`).
    pub fn image(&self) -> &str {
        &self.spec.task_template.container_spec.image
    }

    /// The host port container port `target` is published on in `mode: host`, read from the
    /// spec because host-mode ports do not appear in the service's endpoint. By target, since
    /// a service may publish several (the proxy with HTTPS: 80 and 443) in any order.
    pub fn published_host_port(&self, target: u16) -> Option<u16> {
        self.spec
            .endpoint_spec
            .as_ref()?
            .ports
            .iter()
            .filter(|port| port.target_port == Some(target))
            .find_map(|port| port.published_port)
    }

    /// The host ports the service asks for (`Spec.EndpointSpec.Ports`) or
    /// has (`Endpoint.Ports`).
    pub fn published_ports(&self) -> BTreeSet<u16> {
        let asked = self.spec.endpoint_spec.as_ref().map(|spec| &spec.ports);
        let has = self.endpoint.as_ref().map(|endpoint| &endpoint.ports);
        [asked, has]
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|port| port.published_port)
            .filter(|port| *port != 0)
            .collect()
    }
}

/// A task as `docker inspect --type task` shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub slot: Option<u64>,
    #[serde(default)]
    pub desired_state: TaskState,
    pub status: TaskStatus,
    pub spec: TaskSpec,
    /// The node Swarm assigned it to (empty until it is assigned).
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Its addresses on the overlay networks it is attached to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks_attachments: Vec<NetworkAttachment>,
}

/// A task's place on one network.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    pub network: AttachedNetwork,
    /// CIDR notation: `198.18.129.5/24`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    pub spec: AttachedNetworkSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetworkSpec {
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub state: TaskState,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub container_status: Option<TaskContainerStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    pub container_spec: ContainerSpec,
}

impl Task {
    pub fn is_running(&self) -> bool {
        self.status.state == TaskState::Running
    }

    pub fn container_id(&self) -> Option<&str> {
        self.status
            .container_status
            .as_ref()?
            .container_id
            .as_deref()
            .filter(|id| !id.is_empty())
    }

    /// The image the task runs, without the digest Swarm may append.
    pub fn image(&self) -> &str {
        without_digest(&self.spec.container_spec.image)
    }

    /// Whether the task stopped without being asked to: it failed, was
    /// rejected, or exited on its own. (A task Swarm replaced on purpose
    /// ends in "shutdown".)
    pub fn ended_unexpectedly(&self) -> bool {
        matches!(
            self.status.state,
            TaskState::Failed | TaskState::Rejected | TaskState::Complete | TaskState::Orphaned
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

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: &str) -> Container {
        let json = format!(
            r#"{{"Id":"0123456789abcdef","Name":"/demo-webapp-1",
                "Config":{{"Labels":{{"com.docker.compose.service":"webapp"}}}},
                "State":{state},
                "NetworkSettings":{{"Networks":{{"demo_backend":{{}}}}}},
                "HostConfig":{{"PortBindings":{{"80/tcp":[{{"HostIp":"","HostPort":"8070"}}]}}}}}}"#
        );
        serde_json::from_str(&json).expect("a container")
    }

    #[test]
    fn a_container_reads_as_its_condition_label_name_and_published_port() {
        let healthy =
            container(r#"{"Status":"running","Pid":42,"Health":{"Status":"healthy","Log":[]}}"#);
        assert_eq!(healthy.condition(), Condition::Healthy);
        assert_eq!(healthy.label("com.docker.compose.service"), Some("webapp"));
        assert_eq!(healthy.short_name(), "demo-webapp-1");
        assert_eq!(healthy.short_id(), "0123456789ab");
        assert_eq!(healthy.host_port("80/tcp"), Some(8070));
        assert_eq!(healthy.host_port("5000/tcp"), None);
        assert_eq!(healthy.state.pid, 42);
        assert_eq!(healthy.health(), Some(HealthStatus::Healthy));

        let starting = container(r#"{"Status":"running","Health":{"Status":"starting"}}"#);
        assert_eq!(starting.condition(), Condition::Starting);
        assert!(!starting.condition().failed());
        let no_check = container(r#"{"Status":"running"}"#);
        assert_eq!(no_check.condition(), Condition::Running);
        assert_eq!(no_check.health(), None);
    }

    #[test]
    fn unhealthy_exited_and_dead_containers_have_failed_and_say_how() {
        let unhealthy = container(r#"{"Status":"running","Health":{"Status":"unhealthy"}}"#);
        assert!(unhealthy.condition().failed());
        let exited = container(r#"{"Status":"exited","ExitCode":137}"#);
        assert_eq!(exited.condition(), Condition::Exited(137));
        assert_eq!(exited.condition().to_string(), "exited (137)");
        assert!(exited.condition().failed());
        assert!(!exited.is_running());
        let dead = container(r#"{"Status":"dead"}"#);
        assert!(dead.condition().failed());
        let restarting = container(r#"{"Status":"restarting"}"#);
        assert!(!restarting.condition().failed());
        assert_eq!(restarting.condition().to_string(), "restarting");
        // A word of a newer engine parses, and is no failure.
        let newer = container(r#"{"Status":"hibernating"}"#);
        assert_eq!(
            newer.condition(),
            Condition::Other(ContainerStatus::Unknown)
        );
    }

    #[test]
    fn a_container_inspect_gives_state_health_labels_and_host_ports_once() {
        let json = r#"[{"Id":"abc","Name":"/p-proxy-1",
            "Config":{"Hostname":"abc","Image":"sha256:1","User":"65532:65532",
                      "Labels":{"com.docker.compose.service":"proxy"}},
            "State":{"Status":"running","StartedAt":"t","Health":{"Status":"healthy"}},
            "HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8070"}]},
                          "ReadonlyRootfs":true,"CapDrop":["ALL"]},
            "NetworkSettings":{"Ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8070"},
                                                  {"HostIp":"::","HostPort":"8070"}],
                                        "5000/tcp":null},
                               "Networks":{"p_edge":{"IPAddress":"172.18.0.2"}}}}]"#;
        let containers: Vec<Container> = serde_json::from_str(json).expect("parse");
        let proxy = &containers[0];
        assert!(proxy.is_running());
        assert_eq!(proxy.health(), Some(HealthStatus::Healthy));
        assert_eq!(proxy.config.hostname, "abc");
        assert_eq!(proxy.config.user, "65532:65532");
        assert!(proxy.host_config.readonly_rootfs);
        assert_eq!(proxy.host_config.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(proxy.label("com.docker.compose.service"), Some("proxy"));
        assert_eq!(proxy.host_ports(), Ok(BTreeSet::from([8070])));
        assert_eq!(
            proxy.network_settings.networks["p_edge"].ip_address,
            "172.18.0.2"
        );
    }

    #[test]
    fn a_container_without_ports_health_or_labels_publishes_nothing() {
        let json = r#"{"Id":"d","Name":"/db","Config":{"Hostname":"d","Image":"i","Labels":null},
            "State":{"Status":"running","StartedAt":"t"},
            "HostConfig":{"PortBindings":{}},"NetworkSettings":{"Ports":{},"Networks":{}}}"#;
        let db: Container = serde_json::from_str(json).expect("parse");
        assert!(db.is_running());
        assert_eq!(db.health(), None);
        assert_eq!(db.host_ports(), Ok(BTreeSet::new()));
        assert_eq!(db.label("x"), None);
        let odd = r#"{"Id":"d","Name":"/db","Config":{},"State":{"Status":"running"},
            "NetworkSettings":{"Ports":{"80/tcp":[{"HostPort":"http"}]}}}"#;
        let odd: Container = serde_json::from_str(odd).expect("parse");
        assert_eq!(odd.host_ports(), Err("host port \"http\"".to_owned()));
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
        let without: UpdateStatus = serde_json::from_str("{}").expect("no state");
        assert_eq!(without.state, UpdateState::Unknown);
        assert_eq!(UpdateState::RollbackStarted.to_string(), "rollback_started");
    }

    #[test]
    fn final_in_progress_and_rollback_states() {
        use UpdateState::*;
        for state in [Completed, RollbackCompleted, Paused, RollbackPaused] {
            assert!(state.is_final() && !state.in_progress(), "{state}");
        }
        for state in [Updating, RollbackStarted] {
            assert!(!state.is_final() && state.in_progress(), "{state}");
        }
        assert!(!Unknown.is_final() && !Unknown.in_progress());
        for state in [RollbackStarted, RollbackPaused, RollbackCompleted] {
            assert!(state.is_rollback(), "{state}");
        }
        assert!(!Completed.is_rollback() && !Paused.is_rollback());
    }

    fn task(state: &str, err: &str) -> Task {
        let json = format!(
            r#"{{"ID":"t1","Slot":2,"NodeID":"n1","DesiredState":"running",
                "Status":{{"State":"{state}","Err":"{err}","ContainerStatus":{{"ContainerID":"c1","ExitCode":1}}}},
                "Spec":{{"ContainerSpec":{{"Image":"webstack/webapp:abc@sha256:x"}}}}}}"#
        );
        serde_json::from_str(&json).expect("a task")
    }

    #[test]
    fn a_task_ended_unexpectedly_when_it_failed_exited_or_carries_an_error() {
        assert!(!task("running", "").ended_unexpectedly());
        assert!(!task("shutdown", "").ended_unexpectedly());
        for state in ["failed", "rejected", "complete", "orphaned"] {
            assert!(task(state, "").ended_unexpectedly(), "{state}");
        }
        let errored = task("shutdown", "error while removing network");
        assert!(errored.ended_unexpectedly());
        assert_eq!(errored.error_text(), "error while removing network");
        assert_eq!(task("running", "").container_id(), Some("c1"));
        assert_eq!(task("running", "").desired_state, TaskState::Running);
        assert!(task("running", "").is_running());
        assert_eq!(task("running", "").image(), "webstack/webapp:abc");
    }

    #[test]
    fn a_task_without_desired_state_or_container_reads_as_unknown_and_none() {
        let pending: Task = serde_json::from_str(
            r#"{"ID":"t2","Status":{"State":"pending","ContainerStatus":{"ContainerID":""}},"Spec":{"ContainerSpec":{"Image":"w"}}}"#,
        )
        .expect("parse");
        assert_eq!(pending.container_id(), None);
        assert!(!pending.is_running());
        assert_eq!(pending.desired_state, TaskState::Unknown);
        assert!(pending.networks_attachments.is_empty());
    }

    #[test]
    fn an_https_proxy_publishes_each_port_by_target_and_names_its_labels_and_secrets() {
        // As `docker service inspect` shows a proxy deployed with `--tls`: the file merge
        // sorts ports by published port, so 443's may come first.
        let service: Service = serde_json::from_str(
            r#"{"Spec":{"Name":"demo_proxy","Mode":{"Replicated":{"Replicas":1}},
                "TaskTemplate":{"ContainerSpec":{"Image":"webstack/proxy:abc",
                    "Labels":{"com.docker.stack.namespace":"demo","webstack.tls":"on"},
                    "Secrets":[{"File":{"Name":"tls_certificate","UID":"65532","GID":"65532","Mode":256},
                                "SecretID":"s1","SecretName":"demo_tls_certificate_0123456789ab"},
                               {"File":{"Name":"tls_key","UID":"65532","GID":"65532","Mode":256},
                                "SecretID":"s2","SecretName":"demo_tls_key_0123456789ab"}]}},
                "EndpointSpec":{"Mode":"dnsrr","Ports":[
                    {"Protocol":"tcp","TargetPort":443,"PublishedPort":8070,"PublishMode":"host"},
                    {"Protocol":"tcp","TargetPort":80,"PublishedPort":9000,"PublishMode":"host"}]}}}"#,
        )
        .expect("a service");
        assert_eq!(service.published_host_port(80), Some(9000));
        assert_eq!(service.published_host_port(443), Some(8070));
        let container = &service.spec.task_template.container_spec;
        assert_eq!(container.label("webstack.tls"), Some("on"));
        assert_eq!(container.label("absent"), None);
        assert_eq!(
            container.secret_names(),
            vec![
                "demo_tls_certificate_0123456789ab",
                "demo_tls_key_0123456789ab"
            ]
        );
        let bare: ContainerSpec = serde_json::from_str(r#"{"Image":"db"}"#).expect("parse");
        assert_eq!(bare.label("webstack.tls"), None);
        assert!(bare.secret_names().is_empty());
    }

    #[test]
    fn a_services_replicas_image_and_ports_come_from_its_spec_and_endpoint() {
        let service: Service = serde_json::from_str(
            r#"{"Spec":{"Name":"demo_proxy","Mode":{"Replicated":{"Replicas":1}},
                "TaskTemplate":{"ContainerSpec":{"Image":"webstack/proxy:abc@sha256:x"},
                                "Networks":[{"Target":"n1","Aliases":["proxy"]}]},
                "EndpointSpec":{"Mode":"dnsrr","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8070,"PublishMode":"host"}]}},
               "Endpoint":{"Ports":[{"TargetPort":80,"PublishedPort":8070}]}}"#,
        )
        .expect("a service");
        assert_eq!(service.desired_replicas(), 1);
        assert_eq!(service.published_host_port(80), Some(8070));
        assert_eq!(service.published_host_port(443), None);
        assert_eq!(service.published_ports(), BTreeSet::from([8070]));
        assert_eq!(without_digest(service.image()), "webstack/proxy:abc");
        assert!(service.update_status.is_none());
        let networks = service
            .spec
            .task_template
            .networks
            .as_deref()
            .expect("networks");
        assert_eq!(networks[0].target, "n1");
        assert_eq!(networks[0].rest["Aliases"], serde_json::json!(["proxy"]));
        // Typed fields are not kept twice.
        assert!(!service.spec.task_template.rest.contains_key("Networks"));

        let bare: Service = serde_json::from_str(
            r#"{"Spec":{"TaskTemplate":{"ContainerSpec":{"Image":"db"}},"Mode":{},"EndpointSpec":{"Mode":"dnsrr","Ports":null}},"Endpoint":{"Spec":{}}}"#,
        )
        .expect("parse");
        assert!(bare.published_ports().is_empty());
        assert_eq!(bare.published_host_port(80), None);
        assert_eq!(bare.desired_replicas(), 0);
    }

    #[test]
    fn swarm_info_tells_a_manager_from_a_worker_and_no_swarm() {
        let parse = |json: &str| serde_json::from_str::<SwarmInfo>(json).expect("swarm info");
        assert!(
            parse(r#"{"NodeID":"n","LocalNodeState":"active","ControlAvailable":true}"#)
                .is_manager()
        );
        assert!(
            !parse(r#"{"NodeID":"n","LocalNodeState":"active","ControlAvailable":false}"#)
                .is_manager()
        );
        let none = parse(r#"{"NodeID":"","LocalNodeState":"inactive"}"#);
        assert_eq!(none.local_node_state, LocalNodeState::Inactive);
        assert!(!none.is_manager());
    }

    #[test]
    fn node_rows_are_parsed_from_docker_node_ls_json() {
        let text = r#"{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"webstack-node-1","ID":"4aqb","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Ready"}
{"Availability":"Drain","EngineVersion":"20.10.24","Hostname":"webstack-node-2","ID":"qubf","ManagerStatus":"","Self":false,"Status":"Down","TLSStatus":"Ready"}
{"Hostname":"webstack-node-3","ID":"x","Status":"Unknown"}
"#;
        let rows = parse_node_rows(text).expect("rows");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].hostname, "webstack-node-1");
        assert_eq!(rows[0].id, "4aqb");
        assert_eq!(rows[0].status, NodeStatus::Ready);
        assert!(rows[0].is_manager());
        assert_eq!(rows[1].status, NodeStatus::Down);
        assert_eq!(rows[1].status.to_string(), "Down");
        assert!(!rows[1].is_manager());
        assert_eq!(rows[2].status, NodeStatus::Unknown);
        assert_eq!(rows[2].status.to_string(), "Unknown");
        assert!(parse_node_rows("{").is_err());
    }

    #[test]
    fn a_network_gives_its_subnets_and_an_overlay_view_its_peers_and_endpoints() {
        let bridge: Vec<Network> = serde_json::from_str(
            r#"[{"Name":"p_backend","Internal":true,"IPAM":{"Config":[{"Subnet":"172.20.0.0/16"}]}}]"#,
        )
        .expect("parse");
        assert!(bridge[0].internal);
        assert_eq!(bridge[0].subnets().collect::<Vec<_>>(), ["172.20.0.0/16"]);
        assert!(bridge[0].peers.is_none());

        let overlay: Network = serde_json::from_str(
            r#"{"Name":"exp_backend","IPAM":{"Config":null},
                "Peers":[{"Name":"d7e6","IP":"198.18.0.12"}],
                "Services":{"exp_db":{"Tasks":[{"EndpointIP":"198.18.129.5","Info":{"Host IP":"198.18.0.11"}}]},
                            "exp_webapp":{"Tasks":null}}}"#,
        )
        .expect("parse");
        assert_eq!(overlay.subnets().count(), 0);
        assert_eq!(
            overlay.peer_addresses(),
            BTreeSet::from(["198.18.0.12".to_owned()])
        );
        assert_eq!(
            overlay.endpoints(),
            BTreeSet::from([OverlayEndpoint {
                address: "198.18.129.5".into(),
                host: "198.18.0.11".into()
            }])
        );
    }
}
