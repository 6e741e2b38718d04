//! End-to-end tests against a running stack; see `cargo xtask e2e`.
//!
//! `netguard` depends on the standard library only, so xtask shares it
//! without the suites' HTTP client and runtime; `harness` (the default
//! feature) is what the suites share: `harness` the client, loads and
//! greeting, `inspect` Docker's JSON as typed structs, `checks` the checks
//! both orchestrators run over a `checks::Deployment`.

#[cfg(feature = "harness")]
pub mod checks;
/// Moved to the `stack-contract` crate (tests/contract/), which xtask
/// shares; re-exported until the suites import it from there.
pub use stack_contract::variables as contract;
#[cfg(feature = "harness")]
pub mod harness;
#[cfg(feature = "harness")]
pub mod inspect;
pub use stack_contract::netguard;
