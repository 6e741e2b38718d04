//! End-to-end tests against a running stack; see `cargo xtask e2e`.
//!
//! What the suites share: `harness` the docker CLI, the HTTP client, loads
//! and greeting; `netns` sockets of a container's network namespace;
//! `inspect` the docker CLI calls that read Docker's state
//! into the contract's typed structs; `checks` the checks both
//! orchestrators run over a `checks::Deployment`. What xtask shares with
//! them (Docker's JSON, the network guard, the variables, the service
//! names) is the `stack-contract` crate (tests/contract/).

pub mod checks;
pub mod harness;
pub mod inspect;
pub mod netns;
