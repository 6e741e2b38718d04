//! End-to-end tests against a running stack; see `cargo xtask e2e`.
