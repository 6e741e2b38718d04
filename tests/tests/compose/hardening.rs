//! How the containers run (non-root, read-only, no capabilities), what the
//! proxy hides, Redis's password, and request ids.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn every_container_runs_as_non_root_with_a_read_only_root_filesystem_and_no_capabilities() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let containers = stack.containers(None);
    // The replicas, db, balancer and proxy.
    assert_eq!(containers.len(), WEBAPP_REPLICAS + 3);
    for container in &containers {
        let name = container.name.as_str();
        // What was asked for...
        assert_eq!(container.config.user, "65532:65532", "{name} user");
        assert!(
            container.host_config.readonly_rootfs,
            "{name} root filesystem"
        );
        assert!(
            container
                .host_config
                .cap_drop
                .as_ref()
                .is_some_and(|caps| caps.iter().any(|cap| cap == "ALL")),
            "{name} keeps capabilities"
        );
        // ...and what the kernel says about every process of the container
        // (Docker runs on this host, so its process ids are ours to read).
        let pids = container_pids(&container.id);
        assert!(!pids.is_empty(), "{name} runs no process");
        let main = container.state.pid.to_string();
        assert!(
            pids.contains(&main),
            "{name}: its main process {main} is not among {pids:?}"
        );
        for pid in pids {
            // A short-lived process (a healthcheck's exec, Redis's rewrite of its append-only
            // file) may have exited since it was listed; the main process may not.
            let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && pid != main => {
                    eprintln!("[e2e] {name} pid {pid}: exited before it was read");
                    continue;
                }
                read => read
                    .unwrap_or_else(|error| panic!("read /proc/{pid}/status of {name}: {error}")),
            };
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(key))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
                    .to_string()
            };
            let uids = field("Uid:");
            let capabilities = field("CapEff:");
            let no_new_privileges = field("NoNewPrivs:");
            let mountinfo = match std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && pid != main => {
                    eprintln!("[e2e] {name} pid {pid}: exited before it was read");
                    continue;
                }
                read => read.unwrap_or_else(|error| {
                    panic!("read /proc/{pid}/mountinfo of {name}: {error}")
                }),
            };
            let root_mount_options = mountinfo
                .lines()
                .map(|line| line.split_whitespace().collect::<Vec<_>>())
                .find(|fields| fields.get(4) == Some(&"/"))
                .and_then(|fields| fields.get(5).map(|options| options.to_string()))
                .unwrap_or_else(|| panic!("no root mount for process {pid} of {name}"));
            eprintln!(
                "[e2e] {name} pid {pid}: uid {uids}, effective capabilities {capabilities}, no_new_privs {no_new_privileges}, root mount {root_mount_options}"
            );
            assert!(
                uids.split_whitespace().all(|uid| uid == "65532"),
                "{name} pid {pid} uids {uids}"
            );
            assert_eq!(capabilities, "0000000000000000", "{name} pid {pid}");
            assert_eq!(no_new_privileges, "1", "{name} pid {pid}");
            assert!(
                root_mount_options.split(',').any(|option| option == "ro"),
                "{name} pid {pid} root mount {root_mount_options}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn metrics_are_not_reachable_through_the_proxy_though_the_webapp_serves_them_inside() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    // `//metrics` is a 400: nginx would merge its slashes, the webapp not.
    for (path, refused_with) in [
        ("/metrics", 404),
        ("/metrics/", 404),
        ("//metrics", 400),
        ("/%6Detrics", 404),
        ("/metrics?x=1", 404),
    ] {
        let (status, body) = get(&client, &format!("{}{path}", stack.url))
            .await
            .expect("the proxy answers");
        assert_eq!(status, refused_with, "{path}: {body}");
        assert!(!body.contains("# TYPE"), "{path} leaked metrics");
    }
    // Control: the webapp does serve /metrics on the internal network.
    let balancer = stack.single(Service::Balancer).id;
    docker(&[
        "exec",
        &balancer,
        "/usr/local/bin/httpcheck",
        "http://webapp:5000/metrics",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn the_server_header_names_nginx_without_a_version() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    for path in ["/", "/no-such-page", "/metrics", "/nginx/health"] {
        let response = client
            .get(format!("{}{path}", stack.url))
            .send()
            .await
            .expect("the proxy answers");
        let server = response
            .headers()
            .get("server")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        assert_eq!(server, "nginx", "{path}");
        let body = response.text().await.expect("body");
        assert!(!body.contains("nginx/"), "{path} body names a version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn redis_refuses_commands_without_the_generated_password() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let db = stack.single(Service::Db).id;
    let without = docker(&["exec", &db, "/usr/bin/redis-cli", "ping"]);
    assert!(without.contains("NOAUTH"), "without a password: {without}");
    let password = stack.redis_password();
    let with = docker(&[
        "exec",
        &db,
        "/usr/bin/redis-cli",
        "--no-auth-warning",
        "-a",
        &password,
        "ping",
    ]);
    assert_eq!(with.trim(), "PONG");
}

/// The proxy passes or creates a request id, answers with it and logs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a running Compose stack; `cargo xtask e2e` starts one and runs it"]
async fn the_proxy_passes_a_request_id_through_makes_one_when_missing_and_logs_it_as_json() {
    let _turn = ONE_TEST_AT_A_TIME.lock().await;
    let stack = ComposeStack::from_environment();
    let client = http_client();
    let response = client
        .get(format!("{}/api/hits", stack.url))
        .header("x-request-id", "e2e-request-1")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("e2e-request-1")
    );
    let response = client
        .get(format!("{}/api/hits", stack.url))
        .send()
        .await
        .expect("the proxy answers");
    let generated = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(generated.len(), 32, "generated id {generated:?}");

    // The access log has one JSON object per request, with the id, the
    // replica that answered and the timings.
    // nginx buffers its access log and flushes it within a second.
    let proxy = stack.single(Service::Proxy).id;
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let logs = docker_output(&["logs", "--tail", "200", &proxy]);
        let stdout = String::from_utf8_lossy(&logs.stdout).into_owned();
        let found = stdout
            .lines()
            .find(|line| line.contains("\"e2e-request-1\""))
            .map(str::to_owned);
        match found {
            Some(line) => break line,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            None => panic!("no access log line for e2e-request-1 within 5 s in:\n{stdout}"),
        }
    };
    let line = line.as_str();
    let entry: Value = serde_json::from_str(line).expect("the access log line is JSON");
    eprintln!("[e2e] access log line: {line}");
    assert_eq!(entry["request_id"], "e2e-request-1");
    assert_eq!(entry["status"], 200);
    assert!(
        entry["upstream_addr"]
            .as_str()
            .is_some_and(|address| address.ends_with(":5000")),
        "{line}"
    );
    assert!(entry["request_time"].is_number(), "{line}");
    assert!(
        entry["upstream_response_time"]
            .as_str()
            .is_some_and(|time| !time.is_empty()),
        "{line}"
    );
}
