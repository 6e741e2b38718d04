//! Keeps nginx's list of webapp replicas in step with Docker's DNS, using only `std` and `libc`.
//!
//! nginx 1.22 resolves the names in an `upstream` block once, when it (re)loads its
//! configuration, and only an `upstream` block gives keep-alive connections to the replicas.
//! So the proxy's healthcheck (`httpcheck --sync-upstream webapp:5000 URL`, run every few
//! seconds by Docker and by Swarm) resolves the service name, which Docker's DNS answers with
//! one address per healthy replica, writes them as `server` lines into a file that
//! `nginx/webapp-upstream.conf` includes, and sends nginx a SIGHUP (a graceful reload) when the
//! set changed. Replicas added by scaling, replaced after a crash or rolled by an update are
//! picked up within one healthcheck interval, and nginx keeps its connections to them open.
//!
//! Included with `#[path]` by the `httpcheck` binary, which must stay small.

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Where nginx includes the server lines from (see `nginx/webapp-upstream.conf`).
pub const DEFAULT_SERVERS_FILE: &str = "/tmp/nginx-upstream/webapp.conf";
/// nginx's pid file (see `pid` in `nginx/nginx.conf`).
pub const DEFAULT_PID_FILE: &str = "/tmp/nginx.pid";

/// What one sync needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTarget {
    /// `host:port` of the replicas, e.g. `webapp:5000`.
    pub service: String,
    pub servers_file: PathBuf,
    pub pid_file: PathBuf,
}

/// What a sync did, for the healthcheck's output (`docker inspect` shows it).
#[derive(Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    Unchanged(usize),
    Reloaded(usize),
    /// The file changed but nginx has not written its pid yet; it reads the file when it starts.
    WrittenBeforeStart(usize),
    /// The name did not resolve (no replica is up, or DNS failed): the last known list stays,
    /// since dropping every server on a DNS hiccup would fail all requests.
    KeptOnResolveError(String),
}

/// Resolves the replicas, rewrites the servers file if the set changed, and reloads nginx.
pub fn sync(target: &SyncTarget) -> Result<SyncOutcome, String> {
    let addresses = match resolve(&target.service) {
        Ok(addresses) if !addresses.is_empty() => addresses,
        Ok(_) => {
            return Ok(SyncOutcome::KeptOnResolveError(format!(
                "{} resolves to no address",
                target.service
            )))
        }
        Err(error) => return Ok(SyncOutcome::KeptOnResolveError(error)),
    };
    let wanted = render_servers(&addresses);
    let current = match fs::read_to_string(&target.servers_file) {
        Ok(contents) => contents,
        Err(error) if error.kind() == ErrorKind::NotFound => String::new(),
        Err(error) => return Err(format!("read {}: {error}", target.servers_file.display())),
    };
    if current == wanted {
        return Ok(SyncOutcome::Unchanged(addresses.len()));
    }
    write_atomically(&target.servers_file, &wanted)?;
    match read_pid(&target.pid_file)? {
        Some(pid) => {
            reload(pid)?;
            Ok(SyncOutcome::Reloaded(addresses.len()))
        }
        None => Ok(SyncOutcome::WrittenBeforeStart(addresses.len())),
    }
}

/// Every address `service` resolves to, sorted so that the same set renders the same file.
pub fn resolve(service: &str) -> Result<Vec<SocketAddr>, String> {
    let mut addresses: Vec<SocketAddr> = service
        .to_socket_addrs()
        .map_err(|error| format!("resolve {service}: {error}"))?
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The `server` lines for an nginx `upstream` block. A replica that refuses a connection is
/// left alone for a few seconds (`fail_timeout`), so a replica that is shutting down is skipped
/// until the next sync removes it.
pub fn render_servers(addresses: &[SocketAddr]) -> String {
    let mut lines = String::from("# Written by `httpcheck --sync-upstream`; do not edit.\n");
    for address in addresses {
        lines.push_str(&format!("server {address} max_fails=1 fail_timeout=5s;\n"));
    }
    lines
}

/// Writes next to `path` and renames, so nginx never reads half a file.
fn write_atomically(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(directory) = path.parent() {
        fs::create_dir_all(directory)
            .map_err(|error| format!("create {}: {error}", directory.display()))?;
    }
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, contents)
        .map_err(|error| format!("write {}: {error}", temporary.display()))?;
    fs::rename(&temporary, path).map_err(|error| format!("rename to {}: {error}", path.display()))
}

fn read_pid(pid_file: &Path) -> Result<Option<i32>, String> {
    match fs::read_to_string(pid_file) {
        Ok(contents) => contents
            .trim()
            .parse::<i32>()
            .map(Some)
            .map_err(|_| format!("{} holds no pid: {contents:?}", pid_file.display())),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("read {}: {error}", pid_file.display())),
    }
}

/// SIGHUP makes nginx's master re-read its configuration, the new servers file included, start
/// new workers and let the old ones finish their requests.
fn reload(pid: i32) -> Result<(), String> {
    // In the proxy image nginx is pid 1, which is fine: its master handles SIGHUP. Zero and
    // negative pids would signal whole process groups.
    if pid <= 0 {
        return Err(format!("refusing to signal pid {pid}"));
    }
    // SAFETY: kill(2) with a positive pid and a valid signal number has no memory effects.
    let result = unsafe { libc::kill(pid, libc::SIGHUP) };
    if result == 0 {
        Ok(())
    } else {
        Err(format!(
            "send SIGHUP to nginx (pid {pid}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_rendered_one_per_line_in_the_given_order() {
        let addresses: Vec<SocketAddr> = vec![
            "10.0.1.2:5000".parse().unwrap(),
            "10.0.1.3:5000".parse().unwrap(),
        ];
        assert_eq!(
            render_servers(&addresses),
            "# Written by `httpcheck --sync-upstream`; do not edit.\n\
             server 10.0.1.2:5000 max_fails=1 fail_timeout=5s;\n\
             server 10.0.1.3:5000 max_fails=1 fail_timeout=5s;\n"
        );
    }

    #[test]
    fn localhost_resolves_sorted_and_deduplicated() {
        let addresses = resolve("127.0.0.1:5000").unwrap();
        assert_eq!(addresses, vec!["127.0.0.1:5000".parse().unwrap()]);
    }
}
