//! Renders `deploy/stack.yaml`, the `docker stack deploy` form of the stack,
//! from the same typed description (`xtask/src/stack.rs`) as
//! `deploy/compose.yaml`, so the two files cannot disagree about images,
//! commands, networks, secrets, health or limits.
//!
//! What differs is what the tools understand. Swarm reads `deploy:`
//! (replicas, rolling updates, restart policy, limits) and ignores or
//! rejects several Compose keys: `depends_on` with conditions is an error,
//! `restart`, `tmpfs`, `mem_limit`, `security_opt` are ignored. The
//! description's intent is mapped onto the Swarm equivalents where they
//! exist; the rest is left out and said so here.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::yaml::{
    docker_duration, file_secrets, named_volumes, quote_yaml_1_1_booleans, sysctls_section,
    FileSecret, HealthcheckSection, LoggingSection, Mapping, NamedVolume, UlimitsSection,
};
use super::GENERATED_HEADER;
use crate::stack::{
    Placement, Restart, SecretMount, Service, Stack, VolumeMount, DB_NODE_LABEL, PROXY_NODE_LABEL,
};

/// How the proxy publishes its port. `host` binds the port on the node
/// running the proxy task, without Swarm's ingress routing mesh: the mesh
/// needs IPVS in the kernel, which some hosts (this project's CI machine
/// among them) lack, and then refuses every connection. On a multi-node
/// swarm with IPVS, `ingress` lets any node accept the traffic.
pub(super) const PROXY_PUBLISH_MODE: &str = "host";

/// Pause between replacing one webapp replica and the next. The proxy looks
/// the service name's addresses up every `stack::PROXY_RESOLVE_INTERVAL` and
/// reloads its back nginx when they change (a test keeps this pause several
/// times longer); spacing the replacements by more than that means the
/// proxy's list never holds two stopped replicas, so a retry on the next
/// address succeeds.
const UPDATE_DELAY: Duration = Duration::from_secs(5);

/// Pause before Swarm restarts a failed task, so a crash loop does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(2);

/// Swarm has no "unless stopped" (`docker stop` on a task container is a
/// failure it heals), so every restart policy of the description maps to
/// restarting on any exit.
fn restart_condition(restart: Restart) -> &'static str {
    match restart {
        Restart::UnlessStopped => "any",
    }
}

#[derive(Serialize)]
struct StackFile {
    /// Docker CLIs before 26 require a version; 3.9 is the first with
    /// `resources.limits.pids`.
    version: &'static str,
    services: Mapping<StackService>,
    networks: Mapping<StackNetwork>,
    volumes: Mapping<NamedVolume>,
    secrets: Mapping<FileSecret>,
}

#[derive(Serialize)]
pub(super) struct StackService {
    image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<Mapping<String>>,
    /// Read by `docker stack deploy` itself (the docker CLI), which puts the variables into
    /// the service's environment: the file need not exist on the nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) env_file: Option<String>,
    networks: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<StackPort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<StackMount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<StackSecretMount>,
    healthcheck: HealthcheckSection,
    user: &'static str,
    read_only: bool,
    cap_drop: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ulimits: Option<UlimitsSection>,
    stop_grace_period: String,
    /// Swarm applies these since Engine 19.03 (API 1.40), as Compose does.
    #[serde(skip_serializing_if = "Option::is_none")]
    sysctls: Option<Mapping<&'static str>>,
    /// Empty: the host's DNS servers, Docker's default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns: Vec<&'static str>,
    logging: LoggingSection,
    deploy: StackDeploy,
}

#[derive(Serialize)]
pub(super) struct StackPort {
    pub(super) target: u16,
    /// `${WEBSTACK_PORT:-8070}`: interpolated by `docker stack deploy`.
    pub(super) published: String,
    pub(super) protocol: &'static str,
    pub(super) mode: &'static str,
}

/// Long volume syntax: Swarm ignores the service-level `tmpfs:` key, so
/// tmpfs mounts are volumes of type `tmpfs` here.
#[derive(Serialize)]
pub(super) struct StackMount {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    target: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tmpfs: Option<StackTmpfs>,
}

impl StackMount {
    /// A named volume of the stack.
    pub(super) fn of(mount: &VolumeMount) -> StackMount {
        StackMount {
            kind: "volume",
            source: Some(mount.volume),
            target: mount.target,
            read_only: mount.read_only,
            tmpfs: None,
        }
    }
}

#[derive(Serialize)]
struct StackTmpfs {
    size: u64,
}

/// Unlike Compose's bind-mounted file secrets, Swarm secrets get an owner
/// and a mode: readable by the non-root user only.
#[derive(Serialize)]
pub(super) struct StackSecretMount {
    source: &'static str,
    target: &'static str,
    uid: String,
    gid: String,
    /// Decimal in YAML (256 is 0o400): YAML has no portable octal.
    mode: u32,
}

impl StackSecretMount {
    pub(super) fn of(mount: &SecretMount) -> StackSecretMount {
        StackSecretMount {
            source: mount.secret,
            target: mount.secret,
            uid: mount.uid.to_string(),
            gid: mount.gid.to_string(),
            mode: mount.mode,
        }
    }
}

#[derive(Serialize)]
struct StackDeploy {
    /// `dnsrr`: the service name resolves to every task's address, with no
    /// virtual IP. nginx then balances per request over all webapp replicas
    /// (a VIP balances connections, and nginx's keep-alive would pin them),
    /// and nothing depends on IPVS, which a VIP needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_mode: Option<&'static str>,
    replicas: u32,
    placement: StackPlacement,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_config: Option<StackUpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_config: Option<StackUpdateConfig>,
    restart_policy: StackRestartPolicy,
    resources: StackResources,
}

/// `constraints` pin a task to nodes; `preferences` spread tasks over the
/// values of a node attribute. No `max_replicas_per_node`: with one replica
/// per node allowed, a lost node's replica would have nowhere to go.
#[derive(Serialize)]
struct StackPlacement {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preferences: Vec<StackSpread>,
}

#[derive(Serialize)]
struct StackSpread {
    spread: &'static str,
}

fn placement_section(placement: Placement) -> StackPlacement {
    match placement {
        Placement::Spread => StackPlacement {
            constraints: Vec::new(),
            preferences: vec![StackSpread { spread: "node.id" }],
        },
        Placement::LabelledDbNode => StackPlacement {
            constraints: vec![format!("node.labels.{DB_NODE_LABEL} == true")],
            preferences: Vec::new(),
        },
        Placement::LabelledProxyNode => StackPlacement {
            constraints: vec![format!("node.labels.{PROXY_NODE_LABEL} == true")],
            preferences: Vec::new(),
        },
    }
}

#[derive(Serialize)]
struct StackUpdateConfig {
    parallelism: u32,
    delay: String,
    failure_action: &'static str,
    monitor: String,
    max_failure_ratio: f64,
    order: &'static str,
}

#[derive(Serialize)]
struct StackRestartPolicy {
    condition: &'static str,
    delay: String,
}

#[derive(Serialize)]
struct StackResources {
    limits: StackLimits,
}

#[derive(Serialize)]
struct StackLimits {
    cpus: String,
    memory: String,
    pids: u32,
}

#[derive(Serialize)]
struct StackNetwork {
    driver: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    internal: bool,
}

/// `deploy/stack.yaml` for `docker stack deploy`.
pub fn render_stack(stack: &Stack) -> anyhow::Result<String> {
    let services = stack
        .services
        .iter()
        .map(|service| (service.name.to_string(), stack_service(service)))
        .collect();
    let file = StackFile {
        version: "3.9",
        services: Mapping(services),
        networks: Mapping(
            stack
                .networks
                .iter()
                .map(|network| {
                    (
                        network.name.to_string(),
                        StackNetwork {
                            // Spans every node of the swarm.
                            driver: "overlay",
                            internal: network.internal,
                        },
                    )
                })
                .collect(),
        ),
        volumes: named_volumes(stack),
        secrets: file_secrets(stack),
    };
    let yaml = yaml_serde::to_string(&file).context("serialize the Swarm stack file")?;
    Ok(format!(
        "{GENERATED_HEADER}{}",
        quote_yaml_1_1_booleans(&yaml)
    ))
}

/// One service of the stack file. Long on purpose: the destructuring of
/// every field of the model and where each one goes stay side by side.
pub(super) fn stack_service(service: &Service) -> StackService {
    // Every field of the model, so that a new one cannot go missing from
    // this file unnoticed: this does not compile until the field is rendered
    // below or dropped here with the reason.
    let Service {
        name: _,
        image,
        command,
        environment,
        networks,
        published_ports,
        volumes,
        secrets,
        healthcheck,
        // Swarm ignores start order; every service copes without it.
        depends_on_healthy: _,
        restart,
        replicas,
        dns_round_robin,
        update,
        placement,
        user,
        read_only_root_filesystem,
        tmpfs,
        memory_limit_bytes,
        cpu_limit_hundredths,
        pids_limit,
        open_files_limit,
        stop_grace_period,
        sysctls,
        logs,
        external_dns,
        // The image carries them.
        stop_signal: _,
        working_dir: _,
    } = service;
    let environment = (!environment.is_empty()).then(|| {
        Mapping(
            environment
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
        )
    });
    let mut volumes: Vec<StackMount> = volumes.iter().map(StackMount::of).collect();
    // Swarm mounts tmpfs with mode 1777 by default, which is what the
    // model asks for; the size carries over.
    volumes.extend(tmpfs.iter().map(|mount| StackMount {
        kind: "tmpfs",
        source: None,
        target: mount.target,
        read_only: false,
        tmpfs: Some(StackTmpfs {
            size: mount.size_bytes(),
        }),
    }));
    let update_config = update.as_ref().map(|update| StackUpdateConfig {
        parallelism: update.parallelism,
        delay: docker_duration(UPDATE_DELAY),
        failure_action: if update.rollback_on_failure {
            "rollback"
        } else {
            "pause"
        },
        monitor: docker_duration(update.monitor),
        max_failure_ratio: update.max_failure_ratio,
        order: if update.start_first {
            "start-first"
        } else {
            "stop-first"
        },
    });
    // Rolling back goes the same careful way, and a rollback that fails
    // itself pauses for a person rather than flapping.
    let rollback_config = update.as_ref().map(|update| StackUpdateConfig {
        parallelism: update.parallelism,
        delay: docker_duration(Duration::ZERO),
        failure_action: "pause",
        monitor: docker_duration(update.monitor),
        max_failure_ratio: update.max_failure_ratio,
        order: if update.start_first {
            "start-first"
        } else {
            "stop-first"
        },
    });
    StackService {
        image: image.reference_with_override(),
        command: command.clone(),
        environment,
        env_file: None,
        networks: networks.clone(),
        ports: published_ports
            .iter()
            .map(|port| StackPort {
                target: port.container_port,
                published: format!("${{{}:-{}}}", port.variable, port.default_host_port),
                protocol: "tcp",
                mode: PROXY_PUBLISH_MODE,
            })
            .collect(),
        volumes,
        secrets: secrets.iter().map(StackSecretMount::of).collect(),
        healthcheck: HealthcheckSection::of(healthcheck),
        user,
        read_only: *read_only_root_filesystem,
        cap_drop: vec!["ALL"],
        // No `security_opt: [no-new-privileges]`: Swarm services cannot set
        // it (docker stack deploy ignores the key). The non-root user, no
        // capabilities and no setuid binaries in the images cover the same
        // ground.
        ulimits: UlimitsSection::of(*open_files_limit),
        stop_grace_period: docker_duration(*stop_grace_period),
        sysctls: sysctls_section(sysctls),
        dns: external_dns.to_vec(),
        logging: LoggingSection::of(logs),
        deploy: StackDeploy {
            endpoint_mode: dns_round_robin.then_some("dnsrr"),
            replicas: *replicas,
            placement: placement_section(*placement),
            update_config,
            rollback_config,
            restart_policy: StackRestartPolicy {
                condition: restart_condition(*restart),
                delay: docker_duration(RESTART_DELAY),
            },
            resources: StackResources {
                limits: StackLimits {
                    cpus: format!(
                        "{}.{:02}",
                        cpu_limit_hundredths / 100,
                        cpu_limit_hundredths % 100
                    ),
                    memory: format!("{}M", memory_limit_bytes / (1024 * 1024)),
                    pids: *pids_limit,
                },
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack;

    fn rendered() -> yaml_serde::Value {
        let text = render_stack(&stack::stack()).expect("render the stack file");
        assert!(text.starts_with(GENERATED_HEADER));
        yaml_serde::from_str(&text).expect("the stack file is valid YAML")
    }

    #[test]
    fn stack_file_has_no_depends_on_which_docker_stack_deploy_rejects() {
        let file = rendered();
        let services = file["services"].as_mapping().expect("services");
        assert_eq!(services.len(), 4);
        for (name, service) in services {
            assert!(
                service.get("depends_on").is_none(),
                "{name:?} has depends_on"
            );
        }
    }

    #[test]
    fn webapp_rolls_one_replica_at_a_time_starting_the_new_one_first_and_rolls_back_on_failure() {
        let file = rendered();
        let deploy = &file["services"]["webapp"]["deploy"];
        assert_eq!(deploy["replicas"].as_u64(), Some(3));
        assert_eq!(deploy["endpoint_mode"].as_str(), Some("dnsrr"));
        let update = &deploy["update_config"];
        assert_eq!(update["parallelism"].as_u64(), Some(1));
        assert_eq!(update["order"].as_str(), Some("start-first"));
        assert_eq!(update["failure_action"].as_str(), Some("rollback"));
        assert!(update["monitor"].as_str().is_some());
        assert!(deploy["rollback_config"].is_mapping());
        assert!(deploy["resources"]["limits"]["memory"].is_string());
    }

    #[test]
    fn only_the_proxy_publishes_its_port_in_host_mode() {
        let file = rendered();
        for (name, service) in file["services"].as_mapping().expect("services") {
            let published = service.get("ports").is_some();
            assert_eq!(published, name.as_str() == Some("proxy"), "{name:?}");
        }
        let port = &file["services"]["proxy"]["ports"][0];
        assert_eq!(port["mode"].as_str(), Some("host"));
        assert_eq!(port["published"].as_str(), Some("${WEBSTACK_PORT:-8070}"));
        assert_eq!(port["target"].as_u64(), Some(80));
    }

    #[test]
    fn secrets_are_readable_by_the_non_root_user_only() {
        let file = rendered();
        for name in ["db", "webapp"] {
            let secrets = file["services"][name]["secrets"]
                .as_sequence()
                .expect("secrets");
            assert!(!secrets.is_empty(), "{name} mounts no secret");
            for secret in secrets {
                assert_eq!(secret["uid"].as_str(), Some("65532"));
                assert_eq!(secret["gid"].as_str(), Some("65532"));
                assert_eq!(secret["mode"].as_u64(), Some(0o400));
            }
        }
    }

    #[test]
    fn webapp_replicas_are_replaced_slower_than_the_proxy_follows_their_addresses() {
        // A lookup, a reload, and the old workers' last requests: a few
        // intervals.
        let follows_within = crate::stack::PROXY_RESOLVE_INTERVAL * 3;
        assert!(
            UPDATE_DELAY > follows_within,
            "UPDATE_DELAY ({UPDATE_DELAY:?}) must exceed the time the proxy takes to follow the replicas ({follows_within:?})"
        );
    }

    #[test]
    fn every_sysctl_of_the_model_reaches_the_stack_file() {
        // The proxy's port range and TIME_WAIT reuse keep per-request
        // upstream connections from exhausting ports: Swarm needs them too.
        let stack = crate::stack::stack();
        let rendered = render_stack(&stack).expect("render");
        let parsed: yaml_serde::Value = yaml_serde::from_str(&rendered).expect("YAML");
        let mut checked = 0;
        for service in &stack.services {
            for (name, value) in &service.sysctls {
                assert_eq!(
                    parsed["services"][service.name]["sysctls"][*name].as_str(),
                    Some(*value),
                    "{} sysctl {name}",
                    service.name
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "the model has sysctls to check");
    }

    #[test]
    fn webapp_spreads_over_nodes_db_stays_with_its_volume_and_proxy_on_a_manager() {
        let file = rendered();
        let placement = |service: &str| file["services"][service]["deploy"]["placement"].clone();
        let webapp = placement("webapp");
        assert_eq!(webapp["preferences"][0]["spread"].as_str(), Some("node.id"));
        assert!(webapp.get("constraints").is_none());
        assert!(file["services"]["webapp"]["deploy"]
            .get("max_replicas_per_node")
            .is_none());
        assert_eq!(
            placement("db")["constraints"][0].as_str(),
            Some("node.labels.webstack.db == true")
        );
        for service in ["proxy", "balancer"] {
            assert_eq!(
                placement(service)["constraints"][0].as_str(),
                Some("node.labels.webstack.proxy == true"),
                "{service}"
            );
        }
    }
}
