//! End-to-end tests against a running stack; see `cargo xtask e2e`.
//!
//! The library holds what the suites and xtask share. It depends on the
//! standard library only, so xtask can use it without pulling in the
//! suites' HTTP client and runtime.

pub mod netguard;
