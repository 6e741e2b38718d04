//! End-to-end tests against a running stack; see `cargo xtask e2e`.
//!
//! `netguard` depends on the standard library only, so xtask shares it
//! without the suites' HTTP client and runtime; `harness` (the default
//! feature) is what the suites share: `harness` the client, loads and
//! greeting, `inspect` Docker's JSON as typed structs, `checks` the checks
//! both orchestrators run over a `checks::Deployment`.

#[cfg(feature = "harness")]
pub mod checks;
pub mod contract;
#[cfg(feature = "harness")]
pub mod harness;
#[cfg(feature = "harness")]
pub mod inspect;
pub mod netguard;
