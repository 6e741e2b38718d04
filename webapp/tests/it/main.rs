//! Integration tests for the webapp, in one test binary (one link step, shared support code).
//!
//! Everything except `router` runs against a real `redis-server` process started on a free
//! loopback port per test (see `support::redis_server`); nothing is mocked.

mod abuse;
mod auth;
mod cache;
mod counter;
mod labels;
mod logging;
mod outage;
mod process;
mod replicas;
mod router;
mod scripts;
mod support;
