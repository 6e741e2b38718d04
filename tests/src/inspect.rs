//! The parts of Docker's JSON the suites read, as typed structs: `docker
//! inspect` of containers, networks, Swarm services and tasks. Only the
//! fields a suite uses are declared; serde ignores the rest.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::harness::docker;

/// `docker inspect --type container`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub id: String,
    /// With Docker's leading `/`.
    pub name: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
    pub host_config: HostConfig,
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub hostname: String,
    pub image: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// `running`, `exited`, ...
    pub status: String,
    pub started_at: String,
    #[serde(default)]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy`, `unhealthy`.
    pub status: String,
}

/// Container port (`80/tcp`) → host bindings; `null` when none.
pub type PortMap = BTreeMap<String, Option<Vec<PortBinding>>>;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// What was asked for.
    #[serde(default)]
    pub port_bindings: Option<PortMap>,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default)]
    pub cap_drop: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// What the engine bound.
    #[serde(default)]
    pub ports: Option<PortMap>,
    #[serde(default)]
    pub networks: BTreeMap<String, EndpointSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointSettings {
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
}

impl Container {
    pub fn is_running(&self) -> bool {
        self.state.status == "running"
    }

    /// Running, and healthy if it has a healthcheck.
    pub fn is_healthy(&self) -> bool {
        self.is_running()
            && self
                .state
                .health
                .as_ref()
                .is_none_or(|health| health.status == "healthy")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.config.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// The host ports the container asked for or got, from both
    /// `HostConfig.PortBindings` and `NetworkSettings.Ports` (one port bound
    /// on IPv4 and IPv6 counts once).
    pub fn host_ports(&self) -> BTreeSet<u16> {
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
                .unwrap_or_else(|_| panic!("host port {:?}", binding.host_port))
        })
        .collect()
    }
}

/// `docker inspect --type container` of `ids` (none: none).
pub fn containers(ids: &[&str]) -> Vec<Container> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--type", "container"];
    args.extend_from_slice(ids);
    serde_json::from_str(&docker(&args)).expect("docker inspect gives container JSON")
}

/// `docker network inspect`.
#[derive(Debug, Clone, Deserialize)]
pub struct Network {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Internal", default)]
    pub internal: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ipam {
    #[serde(rename = "Config", default)]
    pub config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpamConfig {
    #[serde(rename = "Subnet", default)]
    pub subnet: Option<String>,
}

impl Network {
    pub fn subnets(&self) -> impl Iterator<Item = &str> {
        self.ipam
            .config
            .iter()
            .flatten()
            .filter_map(|config| config.subnet.as_deref())
    }
}

/// `docker network inspect <name or id>`.
pub fn network(name: &str) -> Network {
    let mut networks: Vec<Network> =
        serde_json::from_str(&docker(&["network", "inspect", name])).expect("network JSON");
    assert_eq!(networks.len(), 1, "network inspect {name}");
    networks.remove(0)
}

/// `docker service inspect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    pub spec: ServiceSpec,
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub task_template: TaskTemplate,
    pub mode: ServiceMode,
    #[serde(default)]
    pub endpoint_spec: Option<EndpointSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplate {
    pub container_spec: ContainerSpec,
    #[serde(default)]
    pub networks: Option<Vec<NetworkAttachment>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    /// May end in `@sha256:…`; see [`without_digest`].
    pub image: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    /// A network id.
    pub target: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceMode {
    #[serde(default)]
    pub replicated: Option<Replicated>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replicated {
    #[serde(default)]
    pub replicas: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    #[serde(default)]
    pub ports: Option<Vec<PortConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    #[serde(default)]
    pub ports: Option<Vec<PortConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default)]
    pub published_port: Option<u16>,
    #[serde(default)]
    pub target_port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub message: String,
}

impl Service {
    /// The host ports the service asks for (`Spec.EndpointSpec.Ports`) or
    /// has (`Endpoint.Ports`).
    pub fn published_ports(&self) -> BTreeSet<u16> {
        let asked = self
            .spec
            .endpoint_spec
            .as_ref()
            .and_then(|spec| spec.ports.as_ref());
        let has = self
            .endpoint
            .as_ref()
            .and_then(|endpoint| endpoint.ports.as_ref());
        [asked, has]
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|port| port.published_port)
            .filter(|port| *port != 0)
            .collect()
    }

    pub fn image(&self) -> &str {
        &self.spec.task_template.container_spec.image
    }

    pub fn desired_replicas(&self) -> usize {
        self.spec
            .mode
            .replicated
            .as_ref()
            .map_or(0, |replicated| replicated.replicas as usize)
    }
}

/// `docker service inspect <service>`.
pub fn service(name: &str) -> Service {
    let mut services: Vec<Service> =
        serde_json::from_str(&docker(&["service", "inspect", name])).expect("service JSON");
    assert_eq!(services.len(), 1, "service inspect {name}");
    services.remove(0)
}

/// `docker inspect --type task`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    pub status: TaskStatus,
    pub spec: TaskSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    /// `running`, `failed`, `shutdown`, ...
    pub state: String,
    #[serde(default)]
    pub container_status: Option<TaskContainerStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    pub container_spec: ContainerSpec,
}

impl Task {
    pub fn is_running(&self) -> bool {
        self.status.state == "running"
    }

    pub fn container_id(&self) -> Option<&str> {
        self.status
            .container_status
            .as_ref()
            .map(|status| status.container_id.as_str())
            .filter(|id| !id.is_empty())
    }

    pub fn image(&self) -> &str {
        without_digest(&self.spec.container_spec.image)
    }
}

/// `docker inspect --type task` of `ids` (none: none).
pub fn tasks(ids: &[&str]) -> Vec<Task> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect", "--type", "task"];
    args.extend_from_slice(ids);
    serde_json::from_str(&docker(&args)).expect("task inspect JSON")
}

/// `repo:tag@sha256:…` → `repo:tag`.
pub fn without_digest(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(proxy.is_healthy());
        assert_eq!(proxy.label("com.docker.compose.service"), Some("proxy"));
        assert_eq!(proxy.host_ports(), BTreeSet::from([8070]));
        assert_eq!(
            proxy.network_settings.networks["p_edge"].ip_address,
            "172.18.0.2"
        );
    }

    #[test]
    fn a_container_without_ports_or_health_publishes_nothing_and_is_healthy_when_running() {
        let json = r#"{"Id":"d","Name":"/db","Config":{"Hostname":"d","Image":"i","Labels":null},
            "State":{"Status":"running","StartedAt":"t"},
            "HostConfig":{"PortBindings":{}},"NetworkSettings":{"Ports":{},"Networks":{}}}"#;
        let db: Container = serde_json::from_str(json).expect("parse");
        assert!(db.is_healthy());
        assert!(db.host_ports().is_empty());
        assert_eq!(db.label("x"), None);
    }

    #[test]
    fn a_service_inspect_gives_published_ports_from_spec_and_endpoint() {
        let json = r#"{"Spec":{"TaskTemplate":{"ContainerSpec":{"Image":"w:1@sha256:x"}},
                               "Mode":{"Replicated":{"Replicas":3}},
                               "EndpointSpec":{"Ports":[{"TargetPort":80,"PublishedPort":8070}]}},
                       "Endpoint":{"Ports":[{"TargetPort":80,"PublishedPort":8070}]}}"#;
        let service: Service = serde_json::from_str(json).expect("parse");
        assert_eq!(service.published_ports(), BTreeSet::from([8070]));
        assert_eq!(service.desired_replicas(), 3);
        assert_eq!(without_digest(service.image()), "w:1");
        let bare: Service = serde_json::from_str(
            r#"{"Spec":{"TaskTemplate":{"ContainerSpec":{"Image":"db"}},"Mode":{},"EndpointSpec":{"Mode":"dnsrr"}},"Endpoint":{"Spec":{}}}"#,
        )
        .expect("parse");
        assert!(bare.published_ports().is_empty());
    }

    #[test]
    fn a_task_inspect_gives_state_and_container() {
        let json = r#"{"ID":"t1","Status":{"State":"running","ContainerStatus":{"ContainerID":"c1"}},
                       "Spec":{"ContainerSpec":{"Image":"w:1@sha256:x"}}}"#;
        let task: Task = serde_json::from_str(json).expect("parse");
        assert!(task.is_running());
        assert_eq!(task.container_id(), Some("c1"));
        assert_eq!(task.image(), "w:1");
        let pending: Task = serde_json::from_str(
            r#"{"ID":"t2","Status":{"State":"pending"},"Spec":{"ContainerSpec":{"Image":"w"}}}"#,
        )
        .expect("parse");
        assert_eq!(pending.container_id(), None);
    }
}
