//! Sockets of another network namespace: a container's, entered from the
//! host (the suites run as root, as Docker does here).
//!
//! A socket belongs to the namespace of the thread that created it, and stays
//! there whichever thread uses it later. So a test creates its sockets on a
//! thread that entered a container's namespace, and uses them from anywhere:
//! clients on the proxy's own loopback with addresses of their own
//! (127.0.0.2, 127.0.0.3, ...), standing in for clients on other machines, or
//! a listener where a container's traffic would go.

use std::fs::File;
use std::os::fd::AsFd;

use rustix::process::{getrlimit, setrlimit, Resource};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Runs `work` on a thread of its own that has entered the network namespace
/// of process `pid` (a host pid, as `docker inspect` gives it), and returns
/// what it returned. Panics, saying why, when the namespace cannot be entered.
pub fn in_network_namespace_of<T, F>(pid: u32, work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        let path = format!("/proc/{pid}/ns/net");
        let namespace = File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
        // setns(2): only this thread moves, and it ends when `work` returns.
        move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap_or_else(|error| {
                panic!(
                    "enter the network namespace of pid {pid}: {error} (the suites need root, as Docker does here)"
                )
            });
        work()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Raises this process's soft limit of open files to its hard limit, for
/// tests that hold thousands of connections; returns the new soft limit.
pub fn raise_open_files_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised)
        .unwrap_or_else(|error| panic!("raise the open files limit: {error}"));
    limit.maximum.unwrap_or(u64::MAX)
}
