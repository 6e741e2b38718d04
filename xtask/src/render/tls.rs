//! `deploy/compose.tls.yaml` and `deploy/stack.tls.yaml`: HTTPS at the front, as a file each
//! orchestrator merges over the plain one (`-f compose.yaml -f compose.tls.yaml`,
//! `-c stack.yaml -c stack.tls.yaml`), from [`stack::front_tls`]; and
//! `deploy/compose.acme.yaml` and `deploy/stack.acme.yaml`, the same front with the `acme`
//! service that gets its certificate, from [`stack::front_acme`].

use serde::Serialize;

use super::compose::{compose_service, ComposeService};
use super::swarm::{
    stack_service, StackMount, StackPort, StackSecretMount, StackService, PROXY_PUBLISH_MODE,
};
use super::yaml::{quote_yaml_1_1_booleans, FileSecret, Mapping, NamedVolume};
use crate::stack::{self, FrontAcme, FrontTls};

#[derive(Serialize)]
struct Overlay<S, F> {
    services: Mapping<S>,
    secrets: Mapping<F>,
}

/// A Swarm secret from a file under a name of its own, its version in it: Swarm secrets
/// cannot change, so a renewed certificate must be a new secret (`name:`, compose file
/// format 3.5 and later; `docker stack deploy` uses it as it is, without the stack prefix).
#[derive(Serialize)]
struct VersionedFileSecret {
    name: String,
    #[serde(flatten)]
    file: FileSecret,
}

#[derive(Serialize)]
struct ComposeTlsService {
    labels: Mapping<String>,
    environment: Mapping<String>,
    ports: Vec<String>,
    secrets: Vec<&'static str>,
}

#[derive(Serialize)]
struct StackTlsService {
    labels: Mapping<String>,
    environment: Mapping<String>,
    ports: Vec<StackPort>,
    secrets: Vec<StackSecretMount>,
}

const HEADER: &str =
    "# HTTPS at the front: deployed over the plain file by `--tls` (docs/https.md).\n";

fn environment(tls: &FrontTls) -> Mapping<String> {
    Mapping(
        tls.environment
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    )
}

fn labels(tls: &FrontTls) -> Mapping<String> {
    let mut labels = vec![(tls.label.0.to_string(), tls.label.1.to_string())];
    labels.extend(
        (tls.version_label.iter()).map(|(label, value)| (label.to_string(), value.clone())),
    );
    Mapping(labels)
}

fn secret_files(tls: &FrontTls) -> Mapping<FileSecret> {
    files_in_tls_dir(&tls.secret_files)
}

/// Secrets from files in `${WEBSTACK_TLS_DIR}`.
fn files_in_tls_dir(secret_files: &[(&'static str, &'static str)]) -> Mapping<FileSecret> {
    Mapping(
        secret_files
            .iter()
            .map(|(secret, file)| {
                let dir = format!(
                    "${{{}:-../{}}}",
                    stack::TLS_DIR_VARIABLE,
                    stack::DEFAULT_TLS_DIR_FROM_ROOT
                );
                (secret.to_string(), FileSecret::at(format!("{dir}/{file}")))
            })
            .collect(),
    )
}

/// What `docker stack deploy` says when the version is not set.
const REQUIRED_VERSION: &str =
    "the version of the TLS secrets, new for each certificate and key (cargo xtask swarm deploy sets it)";

/// The stack file's secrets: files in `${WEBSTACK_TLS_DIR}` (as [`files_in_tls_dir`]), each
/// named `${WEBSTACK_PROJECT:-webstack}_<secret>_${WEBSTACK_TLS_VERSION:?…}` (docs/https.md).
fn versioned_secret_files(
    secret_files: &[(&'static str, &'static str)],
) -> Mapping<VersionedFileSecret> {
    let stack = format!(
        "${{{}:-{}}}",
        stack::STACK_NAME_VARIABLE,
        stack::DEFAULT_NAME
    );
    // Required: a deploy by hand must name the version. The docker CLI reads a `-` in the
    // message as a default's separator, so it has none.
    let version = format!("${{{}:?{REQUIRED_VERSION}}}", stack::TLS_VERSION_VARIABLE);
    let Mapping(files) = files_in_tls_dir(secret_files);
    Mapping(
        files
            .into_iter()
            .map(|(secret, file)| {
                let name = stack::versioned_secret_name(&stack, &secret, &version);
                (secret, VersionedFileSecret { name, file })
            })
            .collect(),
    )
}

fn published(tls: &FrontTls) -> String {
    format!(
        "${{{}:-{}}}",
        tls.https_port.variable, tls.https_port.default_host_port
    )
}

/// The HTTPS port in the stack file's long syntax, published like the plain one.
fn stack_https_port(tls: &FrontTls) -> StackPort {
    StackPort {
        target: tls.https_port.container_port,
        published: published(tls),
        protocol: "tcp",
        mode: PROXY_PUBLISH_MODE,
    }
}

pub fn render_compose_tls(tls: &FrontTls) -> anyhow::Result<String> {
    let service = ComposeTlsService {
        labels: labels(tls),
        environment: environment(tls),
        ports: vec![format!(
            "{}:{}",
            published(tls),
            tls.https_port.container_port
        )],
        secrets: tls.secrets.iter().map(|mount| mount.secret).collect(),
    };
    let overlay = Overlay {
        services: Mapping(vec![(tls.service.to_string(), service)]),
        secrets: secret_files(tls),
    };
    Ok(format!(
        "{}{HEADER}{}",
        super::GENERATED_HEADER,
        quote_yaml_1_1_booleans(&yaml_serde::to_string(&overlay)?)
    ))
}

pub fn render_stack_tls(tls: &FrontTls) -> anyhow::Result<String> {
    let service = StackTlsService {
        labels: labels(tls),
        environment: environment(tls),
        ports: vec![stack_https_port(tls)],
        secrets: tls.secrets.iter().map(StackSecretMount::of).collect(),
    };
    let overlay = Overlay {
        services: Mapping(vec![(tls.service.to_string(), service)]),
        secrets: versioned_secret_files(&tls.secret_files),
    };
    stack_overlay(HEADER, &overlay)
}

/// A Swarm overlay's text: `docker stack deploy` wants the same file format version in every
/// file it merges.
fn stack_overlay(header: &str, overlay: &impl Serialize) -> anyhow::Result<String> {
    Ok(format!(
        "{}{header}version: '3.9'\n{}",
        super::GENERATED_HEADER,
        quote_yaml_1_1_booleans(&yaml_serde::to_string(overlay)?)
    ))
}

#[derive(Serialize)]
struct AcmeOverlay {
    services: AcmeServices,
    volumes: Mapping<NamedVolume>,
    secrets: Mapping<FileSecret>,
}

#[derive(Serialize)]
struct AcmeServices {
    proxy: ComposeAcmeFront,
    acme: ComposeService,
}

#[derive(Serialize)]
struct ComposeAcmeFront {
    labels: Mapping<String>,
    environment: Mapping<String>,
    ports: Vec<String>,
    volumes: Vec<String>,
}

const ACME_HEADER: &str = "# HTTPS at the front with a certificate from an ACME CA, which the acme service gets and\n# renews: deployed over the plain file by `--tls acme` (docs/https.md).\n";

/// The front of the acme overlays, which render it as the `proxy` service.
fn acme_front(acme: &FrontAcme) -> anyhow::Result<&FrontTls> {
    anyhow::ensure!(
        acme.front.service == stack::PROXY,
        "the acme overlay renders the front as `proxy`"
    );
    Ok(&acme.front)
}

pub fn render_compose_acme(acme: &FrontAcme) -> anyhow::Result<String> {
    let front = acme_front(acme)?;
    let mut service = compose_service(&acme.service);
    service.env_file = Some(env_file(acme));
    let overlay = AcmeOverlay {
        services: AcmeServices {
            proxy: ComposeAcmeFront {
                labels: labels(front),
                environment: environment(front),
                ports: vec![format!(
                    "{}:{}",
                    published(front),
                    front.https_port.container_port
                )],
                volumes: acme
                    .front_volumes
                    .iter()
                    .map(|mount| {
                        let mode = if mount.read_only { ":ro" } else { "" };
                        format!("{}:{}{mode}", mount.volume, mount.target)
                    })
                    .collect(),
            },
            acme: service,
        },
        volumes: super::yaml::named_volumes_of(std::slice::from_ref(&acme.volume)),
        secrets: files_in_tls_dir(&acme.secret_files),
    };
    Ok(format!(
        "{}{ACME_HEADER}{}",
        super::GENERATED_HEADER,
        quote_yaml_1_1_booleans(&yaml_serde::to_string(&overlay)?)
    ))
}

/// The acme service's settings file, in `${WEBSTACK_TLS_DIR}`.
fn env_file(acme: &FrontAcme) -> String {
    format!(
        "${{{}:-../{}}}/{}",
        stack::TLS_DIR_VARIABLE,
        stack::DEFAULT_TLS_DIR_FROM_ROOT,
        acme.env_file
    )
}

#[derive(Serialize)]
struct StackAcmeOverlay {
    services: StackAcmeServices,
    volumes: Mapping<NamedVolume>,
    secrets: Mapping<VersionedFileSecret>,
}

#[derive(Serialize)]
struct StackAcmeServices {
    proxy: StackAcmeFront,
    acme: StackService,
}

#[derive(Serialize)]
struct StackAcmeFront {
    labels: Mapping<String>,
    environment: Mapping<String>,
    ports: Vec<StackPort>,
    volumes: Vec<StackMount>,
}

/// `deploy/stack.acme.yaml`: the front of [`render_compose_acme`] and the `acme` service,
/// placed on the proxy's node (their volume is local to a node), its CA root a secret named
/// by version like the TLS ones.
pub fn render_stack_acme(acme: &FrontAcme) -> anyhow::Result<String> {
    let front = acme_front(acme)?;
    anyhow::ensure!(
        acme.service.placement == stack::Placement::LabelledProxyNode,
        "the acme service shares a node-local volume with the proxy, so it runs on the proxy's node"
    );
    let mut service = stack_service(&acme.service);
    service.env_file = Some(env_file(acme));
    let overlay = StackAcmeOverlay {
        services: StackAcmeServices {
            proxy: StackAcmeFront {
                labels: labels(front),
                environment: environment(front),
                ports: vec![stack_https_port(front)],
                volumes: acme.front_volumes.iter().map(StackMount::of).collect(),
            },
            acme: service,
        },
        volumes: super::yaml::named_volumes_of(std::slice::from_ref(&acme.volume)),
        secrets: versioned_secret_files(&acme.secret_files),
    };
    stack_overlay(ACME_HEADER, &overlay)
}

/// The overlays, for the drift test and `render`.
pub fn rendered() -> anyhow::Result<[(std::path::PathBuf, String); 4]> {
    let tls = stack::front_tls();
    let acme = stack::front_acme();
    let deploy = crate::project_root().join("deploy");
    Ok([
        (deploy.join("compose.tls.yaml"), render_compose_tls(&tls)?),
        (deploy.join("stack.tls.yaml"), render_stack_tls(&tls)?),
        (
            deploy.join("compose.acme.yaml"),
            render_compose_acme(&acme)?,
        ),
        (deploy.join("stack.acme.yaml"), render_stack_acme(&acme)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acme_overlay_adds_the_service_its_volume_and_a_front_that_reloads() {
        let rendered = render_compose_acme(&stack::front_acme()).unwrap();
        let parsed: yaml_serde::Value = yaml_serde::from_str(&rendered).unwrap();
        let proxy = &parsed["services"]["proxy"];
        assert_eq!(proxy["labels"]["webstack.tls"].as_str(), Some("acme"));
        assert_eq!(
            proxy["environment"]["PROXY_TLS_RELOAD"].as_str(),
            Some("on")
        );
        assert_eq!(proxy["volumes"][0].as_str(), Some("acme:/run/acme:ro"));
        assert!(proxy.get("secrets").is_none(), "{rendered}");
        let acme = &parsed["services"]["acme"];
        assert_eq!(acme["command"][0].as_str(), Some("acme"));
        assert_eq!(acme["volumes"][0].as_str(), Some("acme:/run/acme"));
        assert_eq!(
            acme["env_file"].as_str(),
            Some("${WEBSTACK_TLS_DIR:-../.secrets/tls}/acme.env")
        );
        assert!(
            acme.get("dns").is_none(),
            "the CA is found by the host's DNS"
        );
        assert_eq!(acme["read_only"].as_bool(), Some(true));
        assert!(parsed["volumes"].get("acme").is_some(), "{rendered}");
    }

    #[test]
    fn the_swarm_acme_overlay_places_the_service_with_the_proxy_and_versions_its_ca_secret() {
        let rendered = render_stack_acme(&stack::front_acme()).unwrap();
        let parsed: yaml_serde::Value = yaml_serde::from_str(&rendered).unwrap();
        assert_eq!(parsed["version"].as_str(), Some("3.9"));
        let proxy = &parsed["services"]["proxy"];
        assert_eq!(proxy["labels"]["webstack.tls"].as_str(), Some("acme"));
        assert_eq!(
            proxy["environment"]["PROXY_TLS_RELOAD"].as_str(),
            Some("on")
        );
        assert_eq!(proxy["ports"][0]["target"].as_u64(), Some(443));
        assert_eq!(proxy["ports"][0]["mode"].as_str(), Some("host"));
        assert_eq!(proxy["volumes"][0]["source"].as_str(), Some("acme"));
        assert_eq!(proxy["volumes"][0]["target"].as_str(), Some("/run/acme"));
        assert_eq!(proxy["volumes"][0]["read_only"].as_bool(), Some(true));
        assert!(proxy.get("secrets").is_none(), "{rendered}");
        let acme = &parsed["services"]["acme"];
        assert_eq!(acme["command"][0].as_str(), Some("acme"));
        assert_eq!(acme["volumes"][0]["source"].as_str(), Some("acme"));
        assert!(acme["volumes"][0].get("read_only").is_none(), "{rendered}");
        assert_eq!(
            acme["env_file"].as_str(),
            Some("${WEBSTACK_TLS_DIR:-../.secrets/tls}/acme.env")
        );
        assert!(
            acme.get("dns").is_none(),
            "the CA is found by the host's DNS"
        );
        let deploy = &acme["deploy"];
        assert_eq!(
            deploy["placement"]["constraints"][0].as_str(),
            Some("node.labels.webstack.proxy == true"),
            "on the node of the proxy, whose volume it writes"
        );
        assert_eq!(deploy["restart_policy"]["condition"].as_str(), Some("any"));
        assert_eq!(
            deploy["resources"]["limits"]["memory"].as_str(),
            Some("64M")
        );
        assert_eq!(acme["secrets"][0]["source"].as_str(), Some("acme_ca"));
        assert_eq!(acme["secrets"][0]["mode"].as_u64(), Some(0o400));
        let name = parsed["secrets"]["acme_ca"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("${WEBSTACK_PROJECT:-webstack}_acme_ca_${WEBSTACK_TLS_VERSION:?"),
            "{name}"
        );
        assert_eq!(
            parsed["secrets"]["acme_ca"]["file"].as_str(),
            Some("${WEBSTACK_TLS_DIR:-../.secrets/tls}/acme-ca.pem")
        );
        assert!(parsed["volumes"].get("acme").is_some(), "{rendered}");
    }

    #[test]
    fn the_overlays_add_https_and_the_two_secrets_to_the_proxy_only() {
        let tls = stack::front_tls();
        for rendered in [
            render_compose_tls(&tls).unwrap(),
            render_stack_tls(&tls).unwrap(),
        ] {
            let parsed: yaml_serde::Value = yaml_serde::from_str(&rendered).unwrap();
            let services = parsed["services"].as_mapping().unwrap();
            assert_eq!(services.len(), 1, "{rendered}");
            let proxy = &parsed["services"]["proxy"];
            assert_eq!(proxy["environment"]["PROXY_TLS"].as_str(), Some("on"));
            assert_eq!(
                proxy["environment"]["PROXY_HTTPS_PORT"].as_str(),
                Some("${WEBSTACK_HTTPS_PORT:-8443}")
            );
            assert_eq!(proxy["secrets"].as_sequence().unwrap().len(), 2);
            assert_eq!(
                parsed["secrets"]["tls_key"]["file"].as_str(),
                Some("${WEBSTACK_TLS_DIR:-../.secrets/tls}/key.pem")
            );
        }
    }

    #[test]
    fn under_swarm_the_secrets_are_named_by_stack_and_version_and_compose_keeps_plain_ones() {
        let tls = stack::front_tls();
        let compose: yaml_serde::Value =
            yaml_serde::from_str(&render_compose_tls(&tls).unwrap()).unwrap();
        assert!(compose["secrets"]["tls_key"].get("name").is_none());
        let swarm: yaml_serde::Value =
            yaml_serde::from_str(&render_stack_tls(&tls).unwrap()).unwrap();
        for secret in [stack::TLS_CERTIFICATE_SECRET, stack::TLS_KEY_SECRET] {
            let name = swarm["secrets"][secret]["name"].as_str().unwrap();
            let prefix =
                format!("${{WEBSTACK_PROJECT:-webstack}}_{secret}_${{WEBSTACK_TLS_VERSION:?");
            assert!(name.starts_with(&prefix), "{name}");
            assert!(name.ends_with('}'), "{name}");
        }
        // `${VAR:?message}`: the docker CLI reads a `-` in the message as `${VAR-default}`'s.
        for forbidden in ['-', '}', '$'] {
            assert!(!REQUIRED_VERSION.contains(forbidden), "{forbidden}");
        }
    }
}
