//! The environment `cargo xtask e2e` hands the Compose suite
//! (tests/tests/compose.rs): defined once, read by both sides.

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
