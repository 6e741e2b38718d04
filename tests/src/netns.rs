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
use std::os::fd::AsRawFd;

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
        // SAFETY: setns(2) with a file descriptor that stays open for the call;
        // it changes the network namespace of this thread only, which ends
        // when `work` returns.
        let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            entered,
            0,
            "enter the network namespace of pid {pid}: {} (the suites need root, as Docker does here)",
            std::io::Error::last_os_error()
        );
        work()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Raises this process's soft limit of open files to its hard limit, for
/// tests that hold thousands of connections; returns the new soft limit.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "raise the open files limit: {}",
            std::io::Error::last_os_error()
        );
    }
    limit.rlim_cur
}
