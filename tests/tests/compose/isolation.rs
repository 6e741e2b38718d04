//! Only the proxy is reachable: from the host, and between the stack's
//! networks.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn only_the_proxy_publishes_a_host_port() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let published = checks::only_the_proxy_publishes_a_port(&stack);
    eprintln!("[e2e] host ports per service: {published:?}");
}

// The proof needs no packet to leave this machine (stack_contract::netguard):
// from the host it rests on facts of the host and the engine, and probes
// from containers run only over the stack's internal networks, where a
// failed connect stays inside the container.

/// `httpcheck URL` in a throwaway container on `network` (the proxy image
/// has it; it reports connection errors and non-HTTP replies differently).
/// Only over an internal network: there a container has no route off its
/// own subnet, so whatever the URL, no packet leaves the machine.
fn probe_from_network(stack: &ComposeStack, network: &str, url: &str) -> String {
    assert!(
        network_facts(network).internal,
        "probes run only over internal networks, where no packet can leave the machine; {network} is not internal"
    );
    let image = stack.single(Service::Proxy).config.image;
    let name = format!(
        "{}-probe-{}",
        stack.project,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos())
    );
    let output = docker_output(&[
        "run",
        "--rm",
        "--name",
        &name,
        "--network",
        network,
        "--entrypoint",
        "/usr/local/bin/httpcheck",
        &image,
        url,
    ]);
    format!(
        "exit {:?}: {}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn db_and_webapp_are_unreachable_from_the_host_and_the_db_from_the_proxy_network() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let db = stack.single(Service::Db);
    let webapps = stack.running(Service::Webapp);
    let proxy = stack.single(Service::Proxy);

    // That nothing but the proxy publishes a host port is the shared check
    // `only_the_proxy_publishes_a_host_port`.

    // The db and the proxy share no network.
    let db_networks: BTreeSet<String> = addresses_of(&db).into_keys().collect();
    let proxy_networks: BTreeSet<String> = addresses_of(&proxy).into_keys().collect();
    assert_eq!(db_networks, BTreeSet::from([stack.network("backend")]));
    assert!(db_networks.is_disjoint(&proxy_networks));

    // The host cannot reach the db or a webapp: their networks are internal
    // (no gateway), the host has no address on them, and it has no route to
    // their addresses except, at most, the default route, which leads off
    // this machine and which the guard refuses to use.
    let host = HostNetwork::read().expect("read the host's routes");
    for name in ["frontend", "backend"] {
        let network = stack.network(name);
        let facts = network_facts(&network);
        assert!(facts.internal, "{network} must be internal");
        assert!(!facts.subnets.is_empty(), "{network} has a subnet");
        for subnet in &facts.subnets {
            assert_eq!(
                host.addresses_in(subnet),
                Vec::<Ipv4Addr>::new(),
                "the host has an address on {network} ({subnet})"
            );
        }
    }
    let edge = network_facts(&stack.network("edge"));
    for container in webapps.iter().chain([&db]) {
        for (network, address) in addresses_of(container) {
            assert!(
                network == stack.network("frontend") || network == stack.network("backend"),
                "{} is on {network}",
                container.name
            );
            let route = host.route_to(address);
            eprintln!(
                "[e2e] host -> {} {address} ({network}): route {}",
                container.name,
                route.map_or("none".to_string(), |route| route.to_string())
            );
            assert!(
                route.is_none_or(|route| route.is_default()),
                "the host has a route into {network}: {route:?}"
            );
            // Even claiming the stack's own subnets, the guard refuses the
            // address: the host has no link there.
            let own: Vec<Ipv4Net> = network_facts(&network)
                .subnets
                .into_iter()
                .chain(edge.subnets.iter().copied())
                .collect();
            let refused = host
                .check(IpAddr::V4(address), &own)
                .expect_err("the guard must refuse an address the host cannot reach locally");
            assert!(refused.to_string().contains("no link"), "{refused}");
        }
    }
    // The control: the proxy's address on edge, which the host does have a
    // link to, passes the same guard.
    let proxy_on_edge = addresses_of(&proxy)[&stack.network("edge")];
    host.check(IpAddr::V4(proxy_on_edge), &edge.subnets)
        .expect("the host reaches the proxy on edge over its own bridge");

    // From the proxy's internal network the db's address is unreachable and
    // its name unknown; from the backend network the same probe reaches
    // Redis: the control that proves the probe would notice.
    let db_address = addresses_of(&db)[&stack.network("backend")];
    let db_url = format!("http://{db_address}:6379/");
    let from_frontend = probe_from_network(&stack, &stack.network("frontend"), &db_url);
    let by_name_from_frontend =
        probe_from_network(&stack, &stack.network("frontend"), "http://db:6379/");
    let from_backend = probe_from_network(&stack, &stack.network("backend"), &db_url);
    eprintln!("[e2e] frontend -> db {db_url}: {from_frontend}");
    eprintln!("[e2e] frontend -> http://db:6379/: {by_name_from_frontend}");
    eprintln!("[e2e] backend (control) -> db {db_url}: {from_backend}");
    // Redis drops an HTTP request unanswered or with an error line: httpcheck
    // calls that "not an HTTP response".
    assert!(
        from_backend.contains("not an HTTP response"),
        "{from_backend}"
    );
    assert!(from_frontend.contains("connect to"), "{from_frontend}");
    assert!(
        by_name_from_frontend.contains("resolve"),
        "{by_name_from_frontend}"
    );
}
