//! The environment `cargo xtask e2e` hands the suites: defined once, read
//! by both sides. At the top the Compose suite's (tests/tests/compose/),
//! then [`swarm`] and [`cluster`].

/// The proxy's published URL on loopback, e.g. `http://127.0.0.1:43121`.
pub const URL_VARIABLE: &str = "WEBSTACK_E2E_URL";
/// The Compose project's name.
pub const PROJECT_VARIABLE: &str = "WEBSTACK_E2E_PROJECT";
/// The published host port.
pub const PORT_VARIABLE: &str = "WEBSTACK_E2E_PORT";
/// The Compose file the project was started from.
pub const COMPOSE_FILE_VARIABLE: &str = "WEBSTACK_E2E_COMPOSE_FILE";
/// The xtask binary, for `scale`, `down` and `up` from the tests.
pub const XTASK_VARIABLE: &str = "WEBSTACK_E2E_XTASK";

/// The HTTPS pass of `cargo xtask e2e` (Compose v2) → tests/tests/tls.rs.
pub mod tls {
    /// The proxy's HTTPS URL on loopback, e.g. `https://127.0.0.1:43122`.
    pub const HTTPS_URL_VARIABLE: &str = "WEBSTACK_E2E_HTTPS_URL";
    /// The CA certificate (PEM) the proxy's certificate checks against.
    pub const CA_VARIABLE: &str = "WEBSTACK_E2E_CA";
    /// What the names of the tests of `--tls files` start with. They deploy a certificate of
    /// their own CA, so xtask runs them apart, after the others, with the Compose suite's
    /// project, port and xtask variables too.
    pub const FILES_TESTS: &str = "files_";
}

/// `cargo xtask e2e`, its ACME pass with pebble → tests/tests/acme.rs.
pub mod acme {
    /// The proxy's HTTPS port on loopback.
    pub const HTTPS_PORT_VARIABLE: &str = "WEBSTACK_E2E_ACME_HTTPS_PORT";
    /// The domain the certificate is for (the test resolves it to loopback itself).
    pub const DOMAIN_VARIABLE: &str = "WEBSTACK_E2E_ACME_DOMAIN";
    /// A domain pebble refuses to certify.
    pub const REFUSED_DOMAIN_VARIABLE: &str = "WEBSTACK_E2E_ACME_REFUSED_DOMAIN";
    /// pebble's management interface on loopback (`/roots/0`: the root it issues under).
    pub const PEBBLE_MANAGEMENT_URL_VARIABLE: &str = "WEBSTACK_E2E_PEBBLE_MANAGEMENT_URL";
    /// The CA (PEM) of pebble's own HTTPS listeners.
    pub const PEBBLE_LISTENER_CA_VARIABLE: &str = "WEBSTACK_E2E_PEBBLE_LISTENER_CA";
    /// pebble's container, which a test stops.
    pub const PEBBLE_CONTAINER_VARIABLE: &str = "WEBSTACK_E2E_PEBBLE_CONTAINER";
    /// The acme service's container, whose log the tests read.
    pub const ACME_CONTAINER_VARIABLE: &str = "WEBSTACK_E2E_ACME_CONTAINER";
    /// How long pebble's certificates are valid, in seconds.
    pub const VALIDITY_SECS_VARIABLE: &str = "WEBSTACK_E2E_ACME_VALIDITY_SECS";
}

/// `cargo xtask e2e --swarm` → tests/tests/swarm.rs.
pub mod swarm {
    /// The stack's name.
    pub const STACK_VARIABLE: &str = "WEBSTACK_SWARM_STACK";
    /// The proxy's published URL on loopback.
    pub const URL_VARIABLE: &str = "WEBSTACK_SWARM_URL";
    /// The webapp image the stack runs, which the tests derive others from.
    pub const WEBAPP_IMAGE_VARIABLE: &str = "WEBSTACK_SWARM_WEBAPP_IMAGE";
    /// Images the tests make with `docker commit` carry this label with the
    /// stack name as value, so that cleanup finds exactly those.
    pub const TEST_IMAGE_LABEL: &str = "webstack.e2e-stack";
    /// What the names of the HTTPS tests contain. They turn the stack to
    /// HTTPS (its plain port then only redirects), so xtask runs them last,
    /// apart, with the two variables below, which only they read.
    pub const HTTPS_TESTS: &str = "https_";
    /// The xtask binary, for `swarm deploy --tls` from the HTTPS tests.
    pub const XTASK_VARIABLE: &str = "WEBSTACK_SWARM_XTASK";
    /// A free host port for the stack's HTTPS.
    pub const HTTPS_PORT_VARIABLE: &str = "WEBSTACK_SWARM_HTTPS_PORT";
    /// For `swarm deploy --tls acme` against pebble: its directory URL, as the stack's acme
    /// service reaches it.
    pub const ACME_DIRECTORY_VARIABLE: &str = "WEBSTACK_SWARM_ACME_DIRECTORY";
    /// The domain to get a certificate for: one Docker's DNS resolves to the proxy on the
    /// stack's edge network, for pebble (the test resolves it to loopback itself).
    pub const ACME_DOMAIN_VARIABLE: &str = "WEBSTACK_SWARM_ACME_DOMAIN";
    /// The CA (PEM) of pebble's own HTTPS listeners.
    pub const PEBBLE_LISTENER_CA_VARIABLE: &str = "WEBSTACK_SWARM_PEBBLE_LISTENER_CA";
    /// pebble's Swarm service, whose management interface (`/roots/0`) answers in its task's
    /// network namespace on this port.
    pub const PEBBLE_SERVICE_VARIABLE: &str = "WEBSTACK_SWARM_PEBBLE_SERVICE";
    pub const PEBBLE_MANAGEMENT_PORT_VARIABLE: &str = "WEBSTACK_SWARM_PEBBLE_MANAGEMENT_PORT";
}

/// `cargo xtask e2e --swarm --nodes N` → tests/tests/cluster.rs.
pub mod cluster {
    /// The proxy's URL on the manager's cluster address.
    pub const URL_VARIABLE: &str = "WEBSTACK_CLUSTER_URL";
    /// The stack's name.
    pub const STACK_VARIABLE: &str = "WEBSTACK_CLUSTER_STACK";
    /// The xtask binary, for `cluster link` from the test.
    pub const XTASK_VARIABLE: &str = "WEBSTACK_CLUSTER_XTASK";
    /// The cluster's own network (CIDR), the only one its test may reach.
    pub const NETWORK_VARIABLE: &str = "WEBSTACK_CLUSTER_NETWORK";
}
