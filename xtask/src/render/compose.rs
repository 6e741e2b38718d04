//! Renders `deploy/compose.yaml`, for Compose v2 and docker-compose 1.29.

use anyhow::Context;
use serde::Serialize;

use super::yaml::*;
use super::GENERATED_HEADER;
use crate::stack::{self, Restart, Stack, Tmpfs};

#[derive(Serialize)]
struct ComposeFile {
    services: Mapping<ComposeService>,
    networks: Mapping<ComposeNetwork>,
    volumes: Mapping<NamedVolume>,
    secrets: Mapping<FileSecret>,
}

#[derive(Serialize)]
pub(super) struct ComposeService {
    image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<Mapping<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) env_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on: Option<Mapping<ComposeDependency>>,
    networks: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<&'static str>,
    healthcheck: HealthcheckSection,
    restart: &'static str,
    user: &'static str,
    read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tmpfs: Vec<String>,
    cap_drop: Vec<&'static str>,
    security_opt: Vec<&'static str>,
    mem_limit: String,
    cpus: f64,
    pids_limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ulimits: Option<UlimitsSection>,
    stop_grace_period: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sysctls: Option<Mapping<&'static str>>,
    /// Empty: the host's DNS servers, Docker's default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dns: Vec<&'static str>,
    logging: LoggingSection,
}

#[derive(Serialize)]
struct ComposeDependency {
    condition: &'static str,
}

#[derive(Serialize)]
struct ComposeNetwork {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_opts: Option<Mapping<&'static str>>,
}

/// `deploy/compose.yaml`: for `docker-compose` 1.29 and `docker compose` v2
/// alike. Hence no top-level `name:` (1.29 rejects it; xtask passes `-p`)
/// and no `deploy:` section (1.29 ignores most of it outside Swarm): limits
/// use the service-level keys, replicas come from `--scale`.
pub fn render_compose(stack: &Stack) -> anyhow::Result<String> {
    let services = stack
        .services
        .iter()
        .map(|service| (service.name.to_string(), compose_service(service)))
        .collect();
    let file = ComposeFile {
        services: Mapping(services),
        networks: Mapping(
            stack
                .networks
                .iter()
                .map(|network| {
                    (
                        network.name.to_string(),
                        ComposeNetwork {
                            internal: network.internal,
                            // The bridge driver's switch for "no host address".
                            driver_opts: (!network.host_address).then(|| {
                                Mapping(vec![(
                                    "com.docker.network.bridge.inhibit_ipv4".to_string(),
                                    "true",
                                )])
                            }),
                        },
                    )
                })
                .collect(),
        ),
        volumes: named_volumes(stack),
        secrets: file_secrets(stack),
    };
    let yaml = yaml_serde::to_string(&file).context("serialize the Compose file")?;
    Ok(format!(
        "{GENERATED_HEADER}{}",
        quote_yaml_1_1_booleans(&yaml)
    ))
}

/// One service of the Compose file. Long on purpose: the destructuring of
/// every field of the model and where each one goes stay side by side.
pub(super) fn compose_service(service: &stack::Service) -> ComposeService {
    // Every field of the model, so that a new one cannot go missing
    // from this file unnoticed: this does not compile until the
    // field is rendered below or dropped here with the reason.
    let stack::Service {
        // The key of the mapping it goes under.
        name: _,
        image,
        command,
        environment,
        networks,
        published_ports,
        volumes,
        secrets,
        healthcheck,
        depends_on_healthy,
        restart,
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
        // `--scale` sets the number of replicas.
        replicas: _,
        // Compose gives every replica its own DNS answer anyway.
        dns_round_robin: _,
        // Compose does not roll updates, and has one host to place on.
        update: _,
        placement: _,
    } = service;
    let environment = (!environment.is_empty()).then(|| {
        Mapping(
            environment
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
        )
    });
    let depends_on = (!depends_on_healthy.is_empty()).then(|| {
        Mapping(
            depends_on_healthy
                .iter()
                .map(|name| {
                    (
                        name.to_string(),
                        ComposeDependency {
                            condition: "service_healthy",
                        },
                    )
                })
                .collect(),
        )
    });
    ComposeService {
        image: image.reference_with_override(),
        command: command.clone(),
        environment,
        env_file: None,
        depends_on,
        networks: networks.clone(),
        ports: published_ports
            .iter()
            .map(|port| {
                format!(
                    "${{{}:-{}}}:{}",
                    port.variable, port.default_host_port, port.container_port
                )
            })
            .collect(),
        volumes: volumes
            .iter()
            .map(|mount| {
                let mode = if mount.read_only { ":ro" } else { "" };
                format!("{}:{}{mode}", mount.volume, mount.target)
            })
            .collect(),
        // Short form: Compose cannot set a file secret's owner or mode
        // (it is a bind mount), so xtask writes the host file readable
        // by the non-root user.
        secrets: secrets.iter().map(|mount| mount.secret).collect(),
        healthcheck: HealthcheckSection::of(healthcheck),
        restart: match restart {
            Restart::UnlessStopped => "unless-stopped",
        },
        user,
        read_only: *read_only_root_filesystem,
        tmpfs: tmpfs.iter().map(tmpfs_spec).collect(),
        cap_drop: vec!["ALL"],
        // `=`, not `:`: Docker logs the `:` form as deprecated.
        security_opt: vec!["no-new-privileges=true"],
        mem_limit: format!("{}m", memory_limit_bytes / (1024 * 1024)),
        cpus: f64::from(*cpu_limit_hundredths) / 100.0,
        pids_limit: *pids_limit,
        ulimits: UlimitsSection::of(*open_files_limit),
        stop_grace_period: docker_duration(*stop_grace_period),
        sysctls: sysctls_section(sysctls),
        dns: external_dns.to_vec(),
        logging: LoggingSection::of(logs),
    }
}

/// Compose's short tmpfs syntax: `/tmp:size=16m,mode=1777`.
fn tmpfs_spec(tmpfs: &Tmpfs) -> String {
    format!("{}:size={}m,mode=1777", tmpfs.target, tmpfs.size_mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_mounts_render_in_compose_syntax() {
        let tmp = Tmpfs {
            target: "/tmp",
            size_mib: 16,
        };
        assert_eq!(tmpfs_spec(&tmp), "/tmp:size=16m,mode=1777");
    }
}
