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

    // From the frontend network (the balancer's and the replicas') the db's
    // address is unreachable and its name unknown; from the backend network the same probe reaches
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

/// The docker-proxy processes on this host that forward `host_port`, by the
/// container address each forwards to (`-container-ip`), from
/// `/proc/<pid>/cmdline`.
fn docker_proxy_targets(host_port: u16) -> Vec<Ipv4Addr> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let port = host_port.to_string();
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        // Processes come and go while the directory is read: a vanished one
        // is simply not there.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let arguments: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        if !arguments
            .first()
            .is_some_and(|program| program.ends_with(b"docker-proxy"))
        {
            continue;
        }
        let value_of = |flag: &[u8]| {
            arguments
                .iter()
                .position(|argument| *argument == flag)
                .and_then(|index| arguments.get(index + 1))
                .map(|value| String::from_utf8_lossy(value).into_owned())
        };
        if value_of(b"-host-port").as_deref() != Some(port.as_str()) {
            continue;
        }
        if let Some(address) = value_of(b"-container-ip").and_then(|ip| ip.parse().ok()) {
            targets.push(address);
        }
    }
    targets
}

/// Restarts of the proxy under load, while the published port is watched.
const PROXY_RESTARTS: usize = 3;

/// While the engine re-attaches a restarting container's networks, in no
/// fixed order, the port it publishes can lead for a moment to its address
/// on whichever network came first. When the proxy was also on the internal
/// `frontend` network, Docker's userland proxy was seen forwarding clients'
/// requests to that address, which the host has no route to: they followed
/// the default route off the machine, and a `text/plain` 403 from a filter
/// beyond came back (docs/hardening.md). The proxy is now on `edge` alone.
/// This test asserts that, and watches the port through restarts under load:
/// every docker-proxy for it forwards to an `edge` address, and every answer
/// is the stack's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn the_published_port_leads_only_to_the_edge_network_also_while_the_proxy_restarts() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let proxy = stack.single(Service::Proxy);
    let edge = stack.network("edge");
    let networks: BTreeSet<String> = addresses_of(&proxy).into_keys().collect();
    assert_eq!(
        networks,
        BTreeSet::from([edge.clone()]),
        "the proxy must be on {edge} alone"
    );
    let edge_subnets = network_facts(&edge).subnets;
    let userland_proxy = !docker_proxy_targets(stack.port).is_empty();

    // Watch the port's docker-proxy processes every 2 ms.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, port) = (watching.clone(), stack.port);
        std::thread::spawn(move || {
            let mut seen: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for target in docker_proxy_targets(port) {
                    *seen.entry(target).or_default() += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    // A client sending GET / every 10 ms, each on a new connection.
    let client = stack_tests::harness::http_client_builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("build the HTTP client");
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let (sending, url) = (sending.clone(), format!("{}/", stack.url));
        tokio::spawn(async move {
            let mut answers: BTreeMap<String, u64> = BTreeMap::new();
            let mut foreign: Vec<String> = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(10));
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                ticks.tick().await;
                let outcome = match client.get(&url).send().await {
                    Err(error) if error.is_connect() => "not connected".to_owned(),
                    Err(error) => format!("error: {error}"),
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let content_type = response
                            .headers()
                            .get("content-type")
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = response.text().await.unwrap_or_default();
                        // The stack's answers: a replica's greeting, or a JSON
                        // error from nginx or the webapp.
                        let ours = (status == 200 && body.starts_with("Hello from "))
                            || (content_type.starts_with("application/json")
                                && body.starts_with("{\"error\""));
                        if !ours {
                            foreign.push(format!("{status} {content_type}: {body:.200}"));
                        }
                        status.to_string()
                    }
                };
                *answers.entry(outcome).or_default() += 1;
            }
            (answers, foreign)
        })
    };

    let started = Instant::now();
    for _ in 0..PROXY_RESTARTS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        docker(&["restart", &proxy.id]);
    }
    stack.wait_until_healthy(WEBAPP_REPLICAS);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let (answers, foreign) = sender.await.expect("the sender task");
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().expect("the watcher thread");
    eprintln!(
        "[e2e] {PROXY_RESTARTS} proxy restarts in {:.1?} under a GET / every 10 ms: answers {answers:?}; docker-proxy for port {} forwarded to {seen:?} (polls that saw each address)",
        started.elapsed(),
        stack.port
    );

    assert!(
        foreign.is_empty(),
        "answers that no part of the stack writes: {foreign:?}"
    );
    for address in seen.keys() {
        assert!(
            edge_subnets.iter().any(|subnet| subnet.contains(*address)),
            "docker-proxy forwarded port {} to {address}, which is not on {edge} ({edge_subnets:?})",
            stack.port
        );
    }
    if userland_proxy {
        assert!(
            !seen.is_empty(),
            "the engine runs docker-proxy for port {}, but the watcher never saw it",
            stack.port
        );
    } else {
        eprintln!("[e2e] this engine forwards the port without docker-proxy (userland-proxy off): only the proxy's networks were checked");
    }
    assert!(
        answers.get("200").copied().unwrap_or(0) > 0,
        "no request was answered: {answers:?}"
    );
}

/// A DNS query for `name` (type A, class IN) with message id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = Vec::new();
    query.extend_from_slice(&id.to_be_bytes());
    // Recursion desired; one question.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).expect("a short label"));
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// Docker's embedded DNS server (127.0.0.11 in each container) forwards a
/// name it does not know to the container's external servers, on Engines
/// before 26.0 even from an internal network (CVE-2024-29018), by default
/// the host's, off the machine. Every service names its own loopback
/// instead. The capture: in each container's network namespace the test
/// listens on 127.0.0.1:53, asks 127.0.0.11 for a name outside the stack,
/// and the query must arrive at that listener, the only place it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn no_container_resolves_a_name_off_the_machine() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let containers: Vec<Container> = stack
        .containers(None)
        .into_iter()
        .filter(Container::is_running)
        .collect();
    assert_eq!(
        containers.len(),
        3 + WEBAPP_REPLICAS,
        "db, balancer, proxy and the replicas"
    );
    let embedded = std::net::SocketAddr::from(([127, 0, 0, 11], 53));
    netguard::check_destination(embedded.ip(), &[]).unwrap_or_else(|refused| panic!("{refused}"));
    for (index, container) in containers.iter().enumerate() {
        let name = format!("e2e-probe-{index}.webstack.invalid");
        let query = dns_query(
            0x5700 + u16::try_from(index).expect("few containers"),
            &name,
        );
        let captured =
            stack_tests::netns::in_network_namespace_of(container.state.pid, move || {
                let capture = std::net::UdpSocket::bind("127.0.0.1:53")
                    .expect("listen on the container's 127.0.0.1:53");
                capture
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let asker = std::net::UdpSocket::bind("127.0.0.1:0").expect("a client socket");
                asker
                    .send_to(&query, embedded)
                    .expect("ask the embedded DNS server");
                let mut buffer = [0u8; 512];
                capture
                    .recv_from(&mut buffer)
                    .map(|(length, _)| buffer[..length].to_vec())
                    .ok()
            });
        let captured = captured.unwrap_or_else(|| {
            panic!(
                "{}: the embedded DNS server did not forward {name} to the container's own loopback (so it went elsewhere, or nowhere)",
                container.name
            )
        });
        let label = name.split('.').next().expect("a label");
        assert!(
            captured
                .windows(label.len())
                .any(|window| window == label.as_bytes()),
            "{}: captured something else: {captured:?}",
            container.name
        );
        eprintln!(
            "[e2e] {}: {name} forwarded only to its own 127.0.0.1:53 (captured {} bytes)",
            container.name,
            captured.len()
        );
    }
}
