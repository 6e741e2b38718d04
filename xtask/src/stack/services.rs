//! The four services of the stack: what each runs, and where it differs
//! from [`Service::hardened`].

use std::time::Duration;

use super::*;

/// Redis, with its append-only file on the `db-data` volume, on the
/// backend network only, pinned to the node that holds the volume.
pub(super) fn db() -> Service {
    Service {
        command: [
            // requirepass, from the secret (see REDIS_CONFIG_SECRET).
            "--include",
            "/run/secrets/redis_config",
            // Every write goes to the append-only file, fsynced before Redis
            // answers it (once per turn of its event loop, for all the
            // clients served in it), so no acknowledged hit is lost when
            // Redis is killed; no RDB snapshots besides it.
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--dir",
            "/data",
            // Below the container's memory limit, so Redis is never
            // OOM-killed. At the limit it evicts only keys with a TTL: cache
            // entries always have one, the counters never, so a full cache
            // gives way and the counter keeps counting.
            "--maxmemory",
            "192mb",
            "--maxmemory-policy",
            "volatile-lru",
        ]
        .iter()
        .map(|argument| argument.to_string())
        .collect(),
        networks: vec![BACKEND],
        volumes: vec![VolumeMount {
            volume: DB_DATA_VOLUME,
            target: "/data",
            read_only: false,
        }],
        working_dir: "/data",
        secrets: vec![SecretMount::for_nonroot(REDIS_CONFIG_SECRET)],
        // The webapp reaches `db` by name; on Swarm a virtual IP would need
        // IPVS in the kernel, which not every host has, so the name resolves
        // to the task's own address instead.
        dns_round_robin: true,
        placement: Placement::LabelledDbNode,
        memory_limit_bytes: 256 * MIB,
        ..Service::hardened(
            DB,
            Image {
                repository: "webstack/db",
                variable: "WEBSTACK_DB_IMAGE",
            },
            // redis-cli exits 0 once a Redis server answered, whatever it
            // answered (here NOAUTH, since the check has no password), and 1
            // when nothing listens: the exit code proves liveness without
            // handing the password to the healthcheck (it would show up in
            // `docker inspect`).
            &["/usr/bin/redis-cli", "ping"],
        )
    }
}

/// The axum web app: three replicas on the frontend and backend
/// networks, rolled one at a time, drained before they stop.
pub(super) fn webapp() -> Service {
    Service {
        environment: vec![
            ("WEBAPP_PORT", WEBAPP_PORT.to_string()),
            ("REDIS_URL", format!("redis://{DB}:6379")),
            (
                "REDIS_PASSWORD_FILE",
                format!("/run/secrets/{REDIS_PASSWORD_SECRET}"),
            ),
            ("LOG_FORMAT", "json".to_string()),
            (
                "WEBAPP_SHUTDOWN_GRACE_SECS",
                WEBAPP_SHUTDOWN_GRACE_SECS.to_string(),
            ),
            (
                "WEBAPP_LAME_DUCK_MS",
                WEBAPP_LAME_DUCK.as_millis().to_string(),
            ),
        ],
        networks: vec![FRONTEND, BACKEND],
        secrets: vec![SecretMount::for_nonroot(REDIS_PASSWORD_SECRET)],
        depends_on_healthy: vec![DB],
        replicas: 3,
        dns_round_robin: true,
        update: Some(RollingUpdate {
            parallelism: 1,
            start_first: true,
            monitor: Duration::from_secs(15),
            rollback_on_failure: true,
            // One of three replicas.
            max_failure_ratio: 0.34,
        }),
        memory_limit_bytes: 128 * MIB,
        pids_limit: 128,
        // Lame duck, then the drain, then 5 s to spare.
        stop_grace_period: WEBAPP_LAME_DUCK + Duration::from_secs(WEBAPP_SHUTDOWN_GRACE_SECS + 5),
        ..Service::hardened(
            WEBAPP,
            Image {
                repository: "webstack/webapp",
                variable: "WEBSTACK_WEBAPP_IMAGE",
            },
            &["/usr/local/bin/webapp", "healthcheck"],
        )
    }
}

/// The front nginx (`proxy-init front`): the only service that publishes a
/// port, on the edge network alone. It passes requests to the balancer over
/// a unix socket on a volume both mount, so it shares no network with the
/// replicas.
///
/// Why not one container for both nginx, on edge and frontend: while the
/// engine re-attaches a restarting container's networks (in no fixed order),
/// a published port can lead for a moment to the container's address on
/// the internal network, which the host has no route to; Docker's userland
/// proxy then followed the default route off the machine with a client's
/// request (docs/hardening.md). A container on no internal network has no
/// such address.
pub(super) fn proxy() -> Service {
    Service {
        command: vec!["front".to_string()],
        networks: vec![EDGE],
        published_ports: vec![PublishedPort {
            variable: PORT_VARIABLE,
            default_host_port: DEFAULT_HOST_PORT,
            container_port: 80,
        }],
        volumes: vec![proxy_socket()],
        depends_on_healthy: vec![BALANCER],
        // Thousands of slow clients: each connection is a file of a front
        // nginx worker, and one more while its request goes to the back
        // nginx. The front's worker_rlimit_nofile (nginx/nginx.conf) is this
        // number; engines differ in their default (1024 soft with some).
        open_files_limit: Some(PROXY_OPEN_FILES_LIMIT),
        // What nginx.conf's limits leave its two workers at most: about
        // 23 MiB at rest, 9.5 KiB for each of the 8,192 connections they
        // accept (a header being read: 1 KiB, and at most 8 KiB more for a
        // long one), and 76 KiB more for each of the at most 999 requests in
        // progress (their answer's buffers; nothing is written to /tmp):
        // 23 + 76 + 74 = 173 MiB. docs/hardening.md has the arithmetic.
        memory_limit_bytes: 256 * MIB,
        // The access log of a busy hour: 500 MiB is about 1.1 million
        // lines of a typical 450 bytes (at most 900; docs/hardening.md).
        logs: LogRetention {
            max_size_mib: 50,
            files: 10,
        },
        ..nginx(PROXY)
    }
}

/// The back nginx and its lookups (`proxy-init back`): picks a webapp
/// replica for each request the proxy passes on, on the internal frontend
/// network alone.
pub(super) fn balancer() -> Service {
    Service {
        command: vec!["back".to_string()],
        environment: vec![
            // Where the replicas are: Docker's DNS answers one address each.
            ("PROXY_UPSTREAM", format!("{WEBAPP}:{WEBAPP_PORT}")),
            (
                "PROXY_RESOLVE_INTERVAL_MS",
                PROXY_RESOLVE_INTERVAL.as_millis().to_string(),
            ),
        ],
        networks: vec![FRONTEND],
        volumes: vec![proxy_socket()],
        depends_on_healthy: vec![WEBAPP],
        // nginx keeps its connections to the replicas (nginx/back.conf), but
        // each reload of the back nginx opens them anew. When it opened one
        // per request (before keep-alive), a few seconds of load used up the
        // ~28k local ports per replica with TIME_WAIT sockets and throughput
        // collapsed (measured: from 3,500 to 310 requests/s on the second 8 s
        // oha run); reusing TIME_WAIT ports and a wider port range keep any
        // burst of new connections from doing that again.
        // Two connections for each request the proxy passes on (back.conf's
        // worker_rlimit_nofile is this number).
        open_files_limit: Some(PROXY_OPEN_FILES_LIMIT),
        sysctls: vec![
            ("net.ipv4.tcp_tw_reuse", "1"),
            ("net.ipv4.ip_local_port_range", "1024 65535"),
        ],
        ..nginx(BALANCER)
    }
}

/// The certificate renewer of `--tls acme` (`proxy-init acme`, nginx/acme/): on the edge
/// network, the one with a way out, since it talks to the CA; with the host's DNS servers,
/// since it must find the CA by name; writing the `acme` volume the front reads. Its settings
/// come from the env file `--tls acme` writes ([`FrontAcme::env_file`]).
pub(super) fn acme() -> Service {
    Service {
        command: vec![ACME.to_string()],
        environment: vec![
            ("ACME_STATE_DIR", ACME_DIR.to_string()),
            ("ACME_CA_FILE", format!("/run/secrets/{ACME_CA_SECRET}")),
        ],
        networks: vec![EDGE],
        volumes: vec![VolumeMount {
            volume: ACME_VOLUME,
            target: ACME_DIR,
            read_only: false,
        }],
        secrets: vec![SecretMount::for_nonroot(ACME_CA_SECRET)],
        // On the front's node: the volume is local to a node.
        placement: Placement::LabelledProxyNode,
        external_dns: &[],
        ..Service::hardened(
            ACME,
            Image {
                repository: "webstack/proxy",
                variable: "WEBSTACK_PROXY_IMAGE",
            },
            // Healthy once a certificate (the provisional one at first) is live.
            &["/usr/local/bin/acme", "health"],
        )
    }
}

/// The socket volume, where proxy-init and both nginx configurations expect it.
fn proxy_socket() -> VolumeMount {
    VolumeMount {
        volume: PROXY_SOCKET_VOLUME,
        target: PROXY_SOCKET_DIR,
        read_only: false,
    }
}

/// What both roles of the proxy image share.
fn nginx(name: &'static str) -> Service {
    Service {
        // On one node: the two share the socket's volume, which is local to
        // a node.
        placement: Placement::LabelledProxyNode,
        // nginx's pid file and temp paths (nginx/nginx.conf, back.conf), and
        // the balancer's list of replicas.
        tmpfs: vec![Tmpfs {
            target: "/tmp",
            size_mib: 16,
        }],
        // proxy-init drains nginx on SIGQUIT (the image's stop signal); a
        // request may wait up to about 2 s for the webapp.
        stop_grace_period: Duration::from_secs(WEBAPP_SHUTDOWN_GRACE_SECS + 5),
        // nginx finishes in-flight requests on SIGQUIT, not on SIGTERM;
        // proxy-init passes it on.
        stop_signal: "SIGQUIT",
        ..Service::hardened(
            name,
            Image {
                repository: "webstack/proxy",
                variable: "WEBSTACK_PROXY_IMAGE",
            },
            // Answered by the back nginx: through the socket in the proxy,
            // on loopback in the balancer.
            &["/usr/local/bin/httpcheck", "http://127.0.0.1/nginx/health"],
        )
    }
}
