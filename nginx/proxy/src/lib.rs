//! The proxy image's helpers: `proxy-init` (its main process, `src/bin/proxy-init/`) and
//! `httpcheck` (its healthcheck), next to the nginx configuration they serve.
//!
//! The library is only [`probe`] (std and `http::Uri`), which `webapp healthcheck` shares: a
//! package that depends on it compiles the binaries' dependencies (tokio's process and signal
//! parts, rustix) too, but links nothing of them, since the probe calls none.

pub mod probe;
