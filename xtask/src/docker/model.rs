//! Docker's JSON, typed: what `docker inspect`, `docker service inspect`,
//! `docker inspect --type task` and `docker info` print, reduced to the
//! fields xtask reads. States Docker names with a word are enums here, with
//! an `Unknown` variant for words a newer engine may add, so a new state
//! never fails a parse and every match on a state is checked by the compiler.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Declares a state enum that deserialises from Docker's lowercase words
/// (`rename_all`), with `Unknown` for any other word, and shows as that word.
macro_rules! docker_words {
    ($(#[$meta:meta])* $name:ident, $rename:literal { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
        #[serde(rename_all = $rename)]
        pub enum $name {
            $($variant,)+
            /// A word this code does not know (a newer engine's).
            #[serde(other)]
            Unknown,
        }

        impl $name {
            /// Docker's own word for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                    Self::Unknown => "unknown",
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
    ContainerStatus, "lowercase" {
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
    HealthStatus, "lowercase" {
        Starting => "starting",
        Healthy => "healthy",
        Unhealthy => "unhealthy",
        None => "none",
    }
);

docker_words!(
    /// A Swarm task's `Status.State` and `DesiredState`.
    TaskState, "lowercase" {
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
    UpdateState, "snake_case" {
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
    LocalNodeState, "lowercase" {
        Inactive => "inactive",
        Pending => "pending",
        Active => "active",
        Error => "error",
        Locked => "locked",
    }
);

// ---- containers ----------------------------------------------------------

/// A container as `docker inspect` shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    pub name: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
    pub network_settings: NetworkSettings,
    #[serde(default)]
    pub host_config: HostConfig,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// The image reference the container was created from.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: ContainerStatus,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub exit_code: i64,
    /// The main process's id on the host (0 when not running).
    #[serde(default)]
    pub pid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: HealthStatus,
    /// The last healthcheck runs, oldest first.
    #[serde(default)]
    pub log: Vec<HealthcheckRun>,
}

/// One healthcheck run as `docker inspect` records it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthcheckRun {
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub output: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// Network name → endpoint; empty when the engine dropped them all.
    #[serde(default)]
    pub networks: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `"80/tcp"` → the host addresses it is published on.
    #[serde(default)]
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_port: String,
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

    pub fn running(&self) -> bool {
        self.state.status == ContainerStatus::Running
    }

    pub fn condition(&self) -> Condition {
        match (self.state.status, &self.state.health) {
            (ContainerStatus::Running, None) => Condition::Running,
            (ContainerStatus::Running, Some(health)) => match health.status {
                HealthStatus::Healthy | HealthStatus::None => Condition::Healthy,
                HealthStatus::Starting => Condition::Starting,
                HealthStatus::Unhealthy => Condition::Unhealthy,
                HealthStatus::Unknown => Condition::Other(ContainerStatus::Running),
            },
            (ContainerStatus::Exited, _) => Condition::Exited(self.state.exit_code),
            (other, _) => Condition::Other(other),
        }
    }

    /// The host port bound to `container_port` (e.g. `"80/tcp"`), if any.
    pub fn host_port(&self, container_port: &str) -> Option<u16> {
        self.host_config
            .port_bindings
            .as_ref()?
            .get(container_port)?
            .as_ref()?
            .iter()
            .find_map(|binding| binding.host_port.parse().ok())
    }
}

// ---- Swarm -----------------------------------------------------------------

/// The engine's `docker info` Swarm section.
#[derive(Debug, Deserialize)]
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

/// A node as `docker node ls --format '{{json .}}'` prints it .
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    pub hostname: String,
    /// Ready, Down, Unknown.
    pub status: String,
}

/// A service as `docker service inspect` shows it.
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
    pub endpoint_spec: Option<EndpointSpec>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default)]
    pub published_port: Option<u16>,
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
        self.spec
            .endpoint_spec
            .as_ref()?
            .ports
            .iter()
            .find_map(|port| port.published_port)
    }
}

/// A task as `docker inspect --type task` shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub slot: Option<u64>,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    pub spec: TaskSpec,
    /// The node Swarm assigned it to (empty until it is assigned).
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Its addresses on the overlay networks it is attached to.
    #[serde(default)]
    pub networks_attachments: Vec<NetworkAttachment>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    pub network: AttachedNetwork,
    /// CIDR notation: `198.18.129.5/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    pub spec: AttachedNetworkSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetworkSpec {
    pub name: String,
}

/// A swarm node as `docker node inspect` shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub status: SwarmNodeStatus,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmNodeStatus {
    /// The address the node advertises to the others.
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskContainerStatus {
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

        let starting = container(r#"{"Status":"running","Health":{"Status":"starting"}}"#);
        assert_eq!(starting.condition(), Condition::Starting);
        assert!(!starting.condition().failed());
        let no_check = container(r#"{"Status":"running"}"#);
        assert_eq!(no_check.condition(), Condition::Running);
    }

    #[test]
    fn unhealthy_exited_and_dead_containers_have_failed_and_say_how() {
        let unhealthy = container(r#"{"Status":"running","Health":{"Status":"unhealthy"}}"#);
        assert!(unhealthy.condition().failed());
        let exited = container(r#"{"Status":"exited","ExitCode":137}"#);
        assert_eq!(exited.condition(), Condition::Exited(137));
        assert_eq!(exited.condition().to_string(), "exited (137)");
        assert!(exited.condition().failed());
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

    fn task(state: &str, err: &str) -> Task {
        let json = format!(
            r#"{{"ID":"t1","Slot":2,"NodeID":"n1","DesiredState":"running",
                "Status":{{"State":"{state}","Err":"{err}","ContainerStatus":{{"ContainerID":"c1","ExitCode":1}}}},
                "Spec":{{"ContainerSpec":{{"Image":"webstack/webapp:abc"}}}}}}"#
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
    }

    #[test]
    fn a_services_replicas_and_host_port_come_from_its_spec() {
        let service: Service = serde_json::from_str(
            r#"{"Spec":{"Name":"demo_proxy","Mode":{"Replicated":{"Replicas":1}},
                "TaskTemplate":{"ContainerSpec":{"Image":"webstack/proxy:abc"}},
                "EndpointSpec":{"Mode":"dnsrr","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8070,"PublishMode":"host"}]}}}"#,
        )
        .expect("a service");
        assert_eq!(service.desired_replicas(), 1);
        assert_eq!(service.published_host_port(), Some(8070));
        assert!(service.update_status.is_none());
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
}
