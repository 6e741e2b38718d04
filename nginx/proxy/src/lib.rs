//! The proxy image's helpers: `proxy-init` (its main process, `src/bin/proxy-init.rs`) and
//! `httpcheck` (its healthcheck), next to the nginx configuration they serve.
//!
//! The library is only [`probe`], which the webapp's `webapp healthcheck` shares; the
//! binaries' dependencies (tokio's process and signal parts, rustix) stay out of what it calls.

pub mod probe;
