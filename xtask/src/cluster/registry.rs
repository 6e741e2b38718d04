//! The cluster's registry: the pinned distribution registry, run on the
//! host's address of the cluster network (198.18.0.1), where every node
//! reaches it and nothing outside this machine does. `swarm deploy --cluster
//! --registry` pushes to it and the nodes pull from it, as servers pull from
//! a real registry. The nodes' engines treat the cluster network as an
//! insecure (plain HTTP) registry range (`DAEMON_JSON`).
//!
//! It runs until `cluster down`, because Swarm may place a task on a node
//! that has not pulled its image yet at any time (a node lost, a rolling
//! update). Its command line names its configuration under [`BASE_DIR`],
//! so `cluster down` stops it with the rest and removes its storage.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::{BASE_DIR, HOST_ADDRESS, SUBNET};

fn dir() -> PathBuf {
    Path::new(BASE_DIR).join("registry")
}

fn config_path() -> PathBuf {
    dir().join("config.yml")
}

/// The registry's configuration: storage under [`BASE_DIR`], listening on
/// `address` only, no authentication (only the nodes and this host reach
/// the cluster network).
pub fn config_yaml(address: SocketAddrV4, storage: &Path) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
        storage.display()
    )
}

/// The address in a configuration written by [`config_yaml`].
fn address_in(config: &str) -> Option<SocketAddrV4> {
    config
        .lines()
        .find_map(|line| line.trim().strip_prefix("addr: "))
        .and_then(|address| address.trim().parse().ok())
}

/// `host:port` of the cluster's registry, started with `program` (the
/// pinned `docker-registry`) unless it already runs and answers.
pub fn ensure_registry(program: &Path) -> anyhow::Result<SocketAddrV4> {
    super::manager().context("the cluster's registry runs beside a running cluster")?;
    if let Some(address) = std::fs::read_to_string(config_path())
        .ok()
        .as_deref()
        .and_then(address_in)
    {
        if answers(address) {
            return Ok(address);
        }
    }
    let address = free_address(HOST_ADDRESS)?;
    let storage = dir().join("data");
    std::fs::create_dir_all(&storage).with_context(|| format!("create {}", storage.display()))?;
    std::fs::write(config_path(), config_yaml(address, &storage))
        .with_context(|| format!("write {}", config_path().display()))?;
    let log_path = dir().join("registry.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    let log_err = log.try_clone().context("duplicate the log file handle")?;
    // Not this process's child: it outlives xtask, like the nodes' engines.
    let status = Command::new("setsid")
        .arg("--fork")
        .arg(program)
        .arg("serve")
        .arg(config_path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .with_context(|| format!("start {}", program.display()))?;
    if !status.success() {
        bail!(
            "starting the cluster's registry failed ({status}); see {}",
            log_path.display()
        )
    }
    let started =
        crate::poll::until_true(Duration::from_secs(20), Duration::from_millis(100), || {
            answers(address)
        });
    if !started {
        bail!(
            "the cluster's registry did not answer http://{address}/v2/ within 20 s; see {}",
            log_path.display()
        )
    }
    eprintln!(
        "cluster: registry at http://{address}/ (storage {})",
        storage.display()
    );
    Ok(address)
}

/// A port on `address` that nothing listens on now.
fn free_address(address: Ipv4Addr) -> anyhow::Result<SocketAddrV4> {
    let listener = TcpListener::bind(SocketAddrV4::new(address, 0))
        .with_context(|| format!("find a free port on {address}"))?;
    match listener.local_addr().context("the bound address")? {
        std::net::SocketAddr::V4(bound) => Ok(bound),
        other => bail!("bound {other}, not an IPv4 address"),
    }
}

/// Whether `GET /v2/` answers 200 (the registry's API root).
fn answers(address: SocketAddrV4) -> bool {
    if stack_contract::netguard::check_destination((*address.ip()).into(), &[SUBNET]).is_err() {
        return false;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://{address}/v2/"))
        .call()
        .is_ok_and(|response| response.status() == 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_its_address_and_storage() {
        let address = SocketAddrV4::new(HOST_ADDRESS, 40123);
        let config = config_yaml(
            address,
            Path::new("/var/lib/webstack-cluster/registry/data"),
        );

        assert_eq!(address_in(&config), Some(address));
        assert!(config.contains("rootdirectory: /var/lib/webstack-cluster/registry/data\n"));
        assert!(SUBNET.contains(*address.ip()));
    }
}
