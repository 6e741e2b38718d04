use super::*;

#[test]
fn the_stack_describes_exactly_the_services_the_suites_know() {
    let names: Vec<&str> = stack()
        .services
        .iter()
        .map(|service| service.name)
        .collect();
    assert_eq!(names, ServiceName::ALL.map(ServiceName::name));
}

#[test]
fn webapp_stop_grace_period_is_longer_than_its_lame_duck_and_shutdown_grace() {
    let stack = stack();
    let webapp = stack
        .services
        .iter()
        .find(|service| service.name == WEBAPP)
        .expect("the stack has a webapp service");
    assert!(
        webapp.stop_grace_period
            > WEBAPP_LAME_DUCK + Duration::from_secs(WEBAPP_SHUTDOWN_GRACE_SECS)
    );
}

#[test]
fn the_lame_duck_outlasts_a_lookup_a_probe_and_a_reload() {
    // A lookup interval, proxy-init's 500 ms probe, and a reload whose
    // old workers finish requests retried for up to 1.5 s (back.conf).
    assert!(WEBAPP_LAME_DUCK >= 2 * PROXY_RESOLVE_INTERVAL + Duration::from_secs(2));
}

#[test]
fn only_the_proxy_publishes_ports_and_the_db_shares_no_network_with_it() {
    let stack = stack();
    for service in &stack.services {
        assert_eq!(
            !service.published_ports.is_empty(),
            service.name == PROXY,
            "{} publishes ports",
            service.name
        );
    }
    let networks_of = |name: &str| {
        stack
            .services
            .iter()
            .find(|service| service.name == name)
            .map(|service| service.networks.clone())
            .expect("service exists")
    };
    assert!(networks_of(DB)
        .iter()
        .all(|network| !networks_of(PROXY).contains(network)));
    assert!(stack
        .networks
        .iter()
        .any(|network| network.name == BACKEND && network.internal));
}

fn declared_network<'a>(stack: &'a Stack, name: &str) -> &'a Network {
    stack
        .networks
        .iter()
        .find(|network| network.name == name)
        .expect("declared network")
}

/// While the engine re-attaches a restarting container's networks, a port it
/// publishes can lead for a moment to its address on any of them; on an
/// internal one the host has no route to that address, and Docker's
/// userland proxy followed the default route off the machine
/// (docs/hardening.md). So a publishing service is on networks with a host
/// address alone, and shares none with the replicas.
#[test]
fn a_service_that_publishes_a_port_is_on_no_internal_network() {
    let stack = stack();
    let publishing: Vec<&Service> = stack
        .services
        .iter()
        .filter(|service| !service.published_ports.is_empty())
        .collect();
    assert_eq!(publishing.len(), 1);
    for service in publishing {
        for name in &service.networks {
            let network = declared_network(&stack, name);
            assert!(
                !network.internal && network.host_address,
                "{} publishes a port and is on {name}, which the host cannot reach",
                service.name
            );
        }
        assert!(
            stack
                .service(WEBAPP)
                .expect("webapp")
                .networks
                .iter()
                .all(|network| !service.networks.contains(network)),
            "{} shares a network with the replicas",
            service.name
        );
    }
}

#[test]
fn db_and_webapp_are_only_on_networks_without_a_host_address() {
    let stack = stack();
    for service in stack
        .services
        .iter()
        .filter(|service| service.name != PROXY)
    {
        for name in &service.networks {
            let network = declared_network(&stack, name);
            assert!(
                network.internal && !network.host_address,
                "{} is on {name}, which the host can reach",
                service.name
            );
        }
    }
}

#[test]
fn every_service_keeps_the_hardening_and_is_found_by_name() -> anyhow::Result<()> {
    let stack = stack();
    for name in [DB, WEBAPP, BALANCER, PROXY] {
        let service = stack.service(name)?;
        assert_eq!(service.user, NONROOT_USER, "{name}");
        assert!(service.read_only_root_filesystem, "{name}");
        assert_eq!(service.restart, Restart::UnlessStopped, "{name}");
        assert!(
            service.memory_limit_bytes > 0 && service.pids_limit > 0,
            "{name}"
        );
        assert!(
            service.secrets.iter().all(|mount| mount.uid == NONROOT_ID
                && mount.gid == NONROOT_ID
                && mount.mode == 0o400),
            "{name}: secrets readable by the non-root user only"
        );
    }
    assert!(stack.service("cache").is_err());
    Ok(())
}

#[test]
fn tmpfs_sizes_are_whole_mib() {
    let tmp = Tmpfs {
        target: "/tmp",
        size_mib: 16,
    };
    assert_eq!(tmp.size_bytes(), 16 * 1024 * 1024);
}
