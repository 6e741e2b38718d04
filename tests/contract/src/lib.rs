//! The contract between xtask and the end-to-end suites (tests/tests/*.rs):
//! what both sides read and must read alike, defined once.
//!
//! - [`docker`]: Docker's JSON (`docker inspect` of containers, networks,
//!   services, tasks and nodes, `docker node ls`, `docker info`'s swarm) as
//!   typed structs, with Docker's state words as enums.
//! - [`netguard`]: the rule that test traffic never leaves the machine.
//! - [`variables`]: the environment `cargo xtask e2e` hands each suite.
//! - [`service`]: the stack's services by name.
//!
//! Pure parsing and checking: nothing here runs a process; running the
//! docker CLI is xtask's (xtask/src/docker/) and the suites' (tests/src/).

pub mod docker;
pub mod netguard;
pub mod service;
pub mod variables;
