//! The ACME pass of `cargo xtask e2e`: the Compose project under test deployed again with
//! `--tls acme` against pebble, Let's Encrypt's test CA (pinned, like every tool), and
//! `tests/tests/acme.rs` run against it.
//!
//! pebble and its DNS server (`pebble-challtestsrv`, which answers every name with the proxy's
//! address) run as two containers of the pass's own on the project's `edge` network, on the
//! proxy image (they need only glibc), with the pinned binaries mounted; pebble's management
//! port is published on loopback only, for the tests to read its root. So the CA, its
//! challenges and its DNS stay on this machine. pebble's certificates live for
//! [`VALIDITY_SECS`], so a renewal comes due within the pass.
//!
//! The Swarm suite's `--tls acme` test (`e2e/swarm.rs`) runs the same pebble as a Swarm
//! service on its stack's edge network ([`Pebble::start_swarm_service`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::compose::ComposeProject;
use crate::docker::{self, deployment::Deployment};
use crate::stack;
use stack_contract::variables::acme::{
    ACME_CONTAINER_VARIABLE, DOMAIN_VARIABLE, HTTPS_PORT_VARIABLE, PEBBLE_CONTAINER_VARIABLE,
    PEBBLE_LISTENER_CA_VARIABLE, PEBBLE_MANAGEMENT_URL_VARIABLE, REFUSED_DOMAIN_VARIABLE,
    VALIDITY_SECS_VARIABLE,
};

/// The name the stack gets a certificate for; challtestsrv resolves every name to the proxy.
const DOMAIN: &str = "stack.test";
/// A name pebble refuses (its `domainBlocklist`).
const REFUSED_DOMAIN: &str = "refused.test";
/// pebble's certificate lifetime: renewal is due after two thirds of it.
const VALIDITY_SECS: u64 = 15;

/// Deploys `plain`'s project again with `--tls acme`, runs the ACME suite, and removes what
/// the pass added (pebble, its DNS server, and the project's acme volume with the project).
pub(super) fn acme_pass(sh: &Shell, plain: &ComposeProject, replicas: u32) -> anyhow::Result<()> {
    let pebble = Pebble::new()?;
    let listener_ca = pebble.listener_ca.clone();
    let tls_dir = pebble.scratch.path().join("tls");
    let tls = crate::tls::TlsArgs {
        tls: crate::tls::TlsSource::Acme,
        names: vec![DOMAIN.to_owned()],
        acme_directory: PEBBLE_DIRECTORY.to_owned(),
        acme_ca_file: Some(listener_ca.clone()),
        acme_retry_secs: RETRY_SECS,
        acme_retry_max_secs: RETRY_MAX_SECS,
        ..crate::tls::TlsArgs::plain()
    };
    tls.prepare_in(&tls_dir, || anyhow::bail!("--tls acme needs no local CA"))?;
    let mut project = ComposeProject::new(sh, &plain.name, plain.port)?;
    project.tls = true;
    project.acme = true;
    project.https_port = docker::free_host_port()?;
    project.tls_dir = Some(tls_dir);
    let outcome = deploy_and_test(sh, &mut project, &pebble, replicas);
    for fixture in ["pebble", "challtestsrv"] {
        let name = format!("{}-{fixture}", project.name);
        let _ = cmd!(sh, "docker rm --force --volumes {name}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run();
    }
    // The acme volume is the overlay's: only a removal with the overlay drops it.
    let removed = project.remove(sh, true);
    super::verdict(
        "e2e",
        "the ACME suite",
        "removing the ACME pass's project",
        outcome,
        removed,
    )
}

fn deploy_and_test(
    sh: &Shell,
    project: &mut ComposeProject,
    pebble: &Pebble,
    replicas: u32,
) -> anyhow::Result<()> {
    let listener_ca = &pebble.listener_ca;
    let started = Instant::now();
    project
        .deploy(sh, None, replicas)
        .and_then(|()| project.wait_ready(sh, Duration::from_secs(docker::HEALTHY_TIMEOUT_SECS)))
        .context("deploy the stack under test with --tls acme")?;
    let proxy = project
        .containers(sh, stack::PROXY)?
        .into_iter()
        .next()
        .context("the project has no proxy container")?;
    let (network, address) = proxy
        .network_settings
        .networks
        .iter()
        .find(|(name, _)| name.ends_with(&format!("_{}", stack::EDGE)))
        .map(|(name, endpoint)| (name.clone(), endpoint.ip_address.clone()))
        .context("the proxy is on no edge network")?;
    let image = proxy.config.image.clone();
    let [bin_mount, config_mount] = pebble
        .mounts()?
        .map(|(source, target)| format!("{}:{target}:ro", source.display()));
    let challtestsrv = format!("{}-challtestsrv", project.name);
    cmd!(
        sh,
        "docker run --detach --name {challtestsrv} --network {network} --network-alias challtestsrv
            --read-only --user 65532:65532 --volume {bin_mount} --entrypoint /pebble/pebble-challtestsrv {image}
            -defaultIPv4 {address} -defaultIPv6= -dns01 :8053 -http01= -https01= -tlsalpn01= -doh= -management :8055"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .context("start pebble-challtestsrv")?;
    let management_port = docker::free_host_port()?;
    let publish = format!("127.0.0.1:{management_port}:{PEBBLE_MANAGEMENT_PORT}");
    let arguments = Pebble::arguments("challtestsrv:8053");
    let pebble = format!("{}-pebble", project.name);
    cmd!(
        sh,
        "docker run --detach --name {pebble} --network {network} --network-alias {PEBBLE_HOST}
            --read-only --user {NONROOT_USER} --env {PEBBLE_ENVIRONMENT} --publish {publish}
            --volume {bin_mount} --volume {config_mount} --entrypoint {PEBBLE_PROGRAM} {image}
            {arguments...}"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .context("start pebble")?;
    for fixture in [&challtestsrv, &pebble] {
        require_running(sh, fixture)?;
    }
    let acme = project
        .containers(sh, stack::ACME)?
        .into_iter()
        .next()
        .context("the project has no acme container")?;
    eprintln!(
        "e2e: the stack runs with --tls acme after {:.1}s, pebble on {network}; running the ACME suite (cargo test -p stack-tests --test acme)",
        started.elapsed().as_secs_f64()
    );
    super::run_suite(
        sh,
        "acme",
        "ACME suite",
        vec![
            (HTTPS_PORT_VARIABLE, project.https_port.to_string().into()),
            (DOMAIN_VARIABLE, DOMAIN.into()),
            (REFUSED_DOMAIN_VARIABLE, REFUSED_DOMAIN.into()),
            (
                PEBBLE_MANAGEMENT_URL_VARIABLE,
                format!("https://127.0.0.1:{management_port}").into(),
            ),
            (PEBBLE_LISTENER_CA_VARIABLE, listener_ca.into()),
            (PEBBLE_CONTAINER_VARIABLE, pebble.into()),
            (
                ACME_CONTAINER_VARIABLE,
                acme.name.trim_start_matches('/').into(),
            ),
            (VALIDITY_SECS_VARIABLE, VALIDITY_SECS.to_string().into()),
        ],
        super::Tests::Skipping(&[]),
    )
}

/// Fails, with its log, when a fixture container is not running a moment after its start.
fn require_running(sh: &Shell, name: &str) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(500));
    let format = "{{.State.Running}}";
    let running = cmd!(sh, "docker inspect --format {format} {name}")
        .quiet()
        .read()
        .with_context(|| format!("inspect {name}"))?;
    if running.trim() == "true" {
        return Ok(());
    }
    let log = cmd!(sh, "docker logs {name}")
        .quiet()
        .ignore_status()
        .output()
        .map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
        .unwrap_or_default();
    anyhow::bail!("{name} is not running; it said:\n{log}")
}

/// pebble's directory URL, as the stack's acme service reaches it (the name is the pebble
/// container's alias on the stack's edge network, and its listeners' certificate's).
pub(super) const PEBBLE_DIRECTORY: &str = "https://pebble:14000/dir";
const PEBBLE_HOST: &str = "pebble";
/// Where pebble's management interface listens (`/roots/0`: the root it issues under).
pub(super) const PEBBLE_MANAGEMENT_PORT: u16 = 15000;
/// pebble in the containers, from the pinned package's `usr/bin` mounted at `/pebble`.
const PEBBLE_PROGRAM: &str = "/pebble/pebble";
/// No random sleeps before validating a challenge.
const PEBBLE_ENVIRONMENT: &str = "PEBBLE_VA_NOSLEEP=1";
const NONROOT_USER: &str = stack::NONROOT_USER;
/// The acme service's waits after a failure: short, so that an attempt before pebble or the
/// new proxy is up costs little.
const RETRY_SECS: u64 = 1;
const RETRY_MAX_SECS: u64 = 2;

/// pebble's files for one run, in a directory removed with it: its configuration, its
/// listeners' certificate and key, and the CA of those ([`Pebble::listener_ca`]); pebble
/// runs from the pinned package, on the proxy image (it needs only glibc).
pub(super) struct Pebble {
    scratch: tempfile::TempDir,
    /// The CA (PEM) of pebble's own HTTPS listeners: what the acme service trusts.
    pub(super) listener_ca: std::path::PathBuf,
}

impl Pebble {
    pub(super) fn new() -> anyhow::Result<Pebble> {
        let scratch =
            tempfile::tempdir().context("a directory for pebble and the acme settings")?;
        let listener_ca = pebble_files(scratch.path())?;
        Ok(Pebble {
            scratch,
            listener_ca,
        })
    }

    /// What a pebble container mounts, read-only: the pinned programs at `/pebble`, the
    /// configuration at `/config`.
    fn mounts(&self) -> anyhow::Result<[(std::path::PathBuf, &'static str); 2]> {
        Ok([
            (crate::images::pinned_pebble()?.join("usr/bin"), "/pebble"),
            (self.scratch.path().join("pebble"), "/config"),
        ])
    }

    /// pebble's arguments, with the DNS server it resolves the names to validate with.
    fn arguments(dns_server: &str) -> Vec<String> {
        ["-config", "/config/config.json", "-dnsserver", dns_server]
            .map(str::to_owned)
            .to_vec()
    }

    /// Starts pebble as a Swarm service `name` on the overlay network `network` (a stack's
    /// edge network, which only services can join), reached there as `pebble`, resolving the
    /// names it validates with Docker's DNS (so `tasks.proxy` is the stack's proxy); on the
    /// proxy's node, where the pinned files are. Returns at once; the service's task starts
    /// meanwhile. No port is published: its management interface answers in its own network
    /// namespace. Without the image's healthcheck, which is the proxy's: Swarm would stop an
    /// unhealthy task.
    pub(super) fn start_swarm_service(
        &self,
        sh: &Shell,
        name: &str,
        network: &str,
        image: &str,
    ) -> anyhow::Result<()> {
        let attach = format!("name={network},alias={PEBBLE_HOST}");
        let mounts: Vec<String> = self
            .mounts()?
            .iter()
            .flat_map(|(source, target)| {
                [
                    "--mount".to_owned(),
                    format!(
                        "type=bind,source={},target={target},readonly",
                        source.display()
                    ),
                ]
            })
            .collect();
        let constraint = format!("node.labels.{}==true", stack::PROXY_NODE_LABEL);
        let arguments = Pebble::arguments(SWARM_DNS);
        cmd!(
            sh,
            "docker service create --detach --quiet --name {name} --network {attach}
                --endpoint-mode dnsrr --constraint {constraint} --restart-condition none
                --no-healthcheck
                --read-only --user {NONROOT_USER} --env {PEBBLE_ENVIRONMENT} {mounts...}
                --entrypoint {PEBBLE_PROGRAM} {image} {arguments...}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("start pebble as the Swarm service {name}"))
    }
}

/// Docker's DNS server in every container on a user-defined network.
const SWARM_DNS: &str = "127.0.0.11:53";

/// pebble's configuration and the certificate of its HTTPS listeners (signed by a CA of the
/// run's own, whose certificate is returned), in `scratch/pebble/`, readable by the
/// containers' non-root user.
fn pebble_files(scratch: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ca = crate::tls::LocalCa::open_or_create_in(&scratch.join("ca"))?;
    let issued = ca.issue(&[PEBBLE_HOST.to_owned()])?;
    let dir = scratch.join("pebble");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": "0.0.0.0:14000",
            "managementListenAddress": format!("0.0.0.0:{PEBBLE_MANAGEMENT_PORT}"),
            "certificate": "/config/cert.pem",
            "privateKey": "/config/key.pem",
            // The proxy's plain port, where it answers HTTP-01 challenges.
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": [REFUSED_DOMAIN],
            "certificateValidityPeriod": VALIDITY_SECS,
            "retryAfter": { "authz": 1, "order": 1 },
        }
    });
    for (file, text) in [
        ("cert.pem", issued.chain_pem),
        ("key.pem", issued.key_pem),
        ("config.json", config.to_string()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        // A test CA's throwaway key: readable by pebble's non-root user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("open {} to the containers", path.display()))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("open {} to the containers", dir.display()))?;
    let ca_path = dir.join("listener-ca.pem");
    std::fs::copy(ca.certificate_path(), &ca_path)
        .with_context(|| format!("copy the listener CA to {}", ca_path.display()))?;
    std::fs::set_permissions(&ca_path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("open {} to the containers", ca_path.display()))?;
    Ok(ca_path)
}
