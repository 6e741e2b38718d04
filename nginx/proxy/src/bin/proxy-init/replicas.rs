//! What proxy-init lists as the back nginx's servers: the addresses Docker's DNS gives for the
//! replicas' name, what each one's `/readyz` says, and the file the back nginx includes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server list the back nginx includes (nginx/back.conf); on the container's tmpfs.
pub const SERVERS_FILE: &str = "/tmp/nginx-webapp-servers.conf";
/// A lookup that takes longer than this keeps the last known servers.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the `/readyz` probe of one replica may take; one that has not answered by then
/// stays listed (nginx's own timeouts deal with a replica that does not answer).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The part of a `/readyz` answer the probe reads: status line, headers and a small JSON body.
const PROBE_READ_LIMIT: u64 = 4096;

/// The body of [`SERVERS_FILE`] for these addresses. An `upstream` block needs at least one
/// server: with no replica it names one marked `down`, so nginx answers 502 at once instead of
/// waiting for a connection.
fn servers_config(upstream: &str, addresses: &BTreeSet<SocketAddr>) -> String {
    let mut config = format!("# Written by proxy-init: the addresses of {upstream}.\n");
    if addresses.is_empty() {
        config.push_str("# None at the last lookup: every request gets 502 at once.\n");
        config.push_str("server 127.0.0.1:9 down;\n");
    }
    for address in addresses {
        // A replica that failed (refused, timed out) is skipped for 2 s: a frozen one costs
        // a request per nginx worker every 2 s rather than every third request.
        config.push_str(&format!("server {address} max_fails=1 fail_timeout=2s;\n"));
    }
    config
}

/// What one lookup of the replicas' name found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(BTreeSet<SocketAddr>),
    /// The name does not exist (no replica is running): a certain answer, not a failure.
    NoSuchName,
    /// The resolver did not answer usefully; the last known servers stay.
    Failed(String),
}

pub async fn look_up(upstream: &str) -> Lookup {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(upstream)).await {
        Ok(Ok(addresses)) => Lookup::Found(addresses.collect()),
        Ok(Err(error)) => classify_lookup_error(&error.to_string()),
        Err(_) => Lookup::Failed(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    }
}

/// glibc's getaddrinfo says "Name or service not known" (EAI_NONAME) for a name the DNS server
/// says does not exist, which Docker's DNS answers for a service with no running replica.
fn classify_lookup_error(message: &str) -> Lookup {
    if message.contains("Name or service not known") {
        Lookup::NoSuchName
    } else {
        Lookup::Failed(message.to_owned())
    }
}

/// What a replica's `/readyz` said at one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// 200: it serves, Redis included.
    Ready,
    /// 503 `"status":"stopping"`: it is in its lame-duck period and about to stop accepting.
    Stopping,
    /// Anything else: refused, no answer within [`PROBE_TIMEOUT`], or not ready (Redis
    /// unreachable, which every replica would say at once).
    Unknown,
}

/// Asks one replica's `/readyz`, within [`PROBE_TIMEOUT`].
async fn probe_readiness(address: SocketAddr) -> Readiness {
    let probe = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: proxy-init\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream
            .take(PROBE_READ_LIMIT)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        Some(classify_readiness(&answer))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Some(readiness)) => readiness,
        Ok(None) | Err(_) => Readiness::Unknown,
    }
}

/// A 200 is ready; a 503 whose JSON body has `"status":"stopping"` (webapp/src/routes/health.rs)
/// is stopping; anything else tells nothing.
fn classify_readiness(answer: &[u8]) -> Readiness {
    let text = String::from_utf8_lossy(answer);
    if !text.starts_with("HTTP/1.") {
        return Readiness::Unknown;
    }
    match text.split(' ').nth(1) {
        Some("200") => Readiness::Ready,
        Some("503") if text.contains(r#""status":"stopping""#) => Readiness::Stopping,
        _ => Readiness::Unknown,
    }
}

/// Asks every address's `/readyz` at once.
pub async fn probe_replicas(addresses: &BTreeSet<SocketAddr>) -> BTreeMap<SocketAddr, Readiness> {
    let mut probes = tokio::task::JoinSet::new();
    for &address in addresses {
        probes.spawn(async move { (address, probe_readiness(address).await) });
    }
    let mut answers = BTreeMap::new();
    while let Some(probed) = probes.join_next().await {
        if let Ok((address, readiness)) = probed {
            answers.insert(address, readiness);
        }
    }
    answers
}

/// The servers to list, from the addresses found and what each said: never one that is
/// stopping; one listed before stays whatever else it says (passive checks deal with a sick
/// one); a new one joins once it has answered ready, so a replica still starting (its first
/// Redis connection not yet open) gets no request it would answer late. When that leaves none,
/// every address not stopping is listed, and when every one is stopping, all of them (they still
/// serve for their lame-duck period): better than none.
pub fn servers_to_list(
    listed: &BTreeSet<SocketAddr>,
    answers: &BTreeMap<SocketAddr, Readiness>,
) -> BTreeSet<SocketAddr> {
    let said = |address: &SocketAddr| answers.get(address).copied().unwrap_or(Readiness::Unknown);
    let not_stopping: BTreeSet<SocketAddr> = answers
        .keys()
        .filter(|address| said(address) != Readiness::Stopping)
        .copied()
        .collect();
    let serving: BTreeSet<SocketAddr> = not_stopping
        .iter()
        .filter(|address| listed.contains(address) || said(address) == Readiness::Ready)
        .copied()
        .collect();
    if !serving.is_empty() {
        serving
    } else if !not_stopping.is_empty() {
        not_stopping
    } else {
        answers.keys().copied().collect()
    }
}

/// Writes the server list through a temporary file, so nginx never reads half of it.
pub fn write_servers(upstream: &str, addresses: &BTreeSet<SocketAddr>) -> std::io::Result<()> {
    let temporary = format!("{SERVERS_FILE}.new");
    std::fs::write(&temporary, servers_config(upstream, addresses))?;
    std::fs::rename(&temporary, SERVERS_FILE)
}

/// The addresses found but not listed, each with what it said (stopping, or not yet ready).
pub fn describe_left_out(
    answers: &BTreeMap<SocketAddr, Readiness>,
    listed: &BTreeSet<SocketAddr>,
) -> String {
    let left_out: Vec<String> = answers
        .iter()
        .filter(|(address, _)| !listed.contains(address))
        .map(|(address, readiness)| match readiness {
            Readiness::Stopping => format!("{address} stopping"),
            Readiness::Ready | Readiness::Unknown => format!("{address} not ready yet"),
        })
        .collect();
    if left_out.is_empty() {
        "none".to_owned()
    } else {
        left_out.join(", ")
    }
}

pub fn describe(addresses: &BTreeSet<SocketAddr>) -> String {
    if addresses.is_empty() {
        return "none".to_owned();
    }
    let listed: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
    listed.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_listed_in_a_stable_order_with_passive_health_checks() {
        let addresses: BTreeSet<SocketAddr> = ["10.0.1.9:5000", "10.0.1.10:5000"]
            .iter()
            .map(|address| address.parse().unwrap())
            .collect();

        let config = servers_config("webapp:5000", &addresses);

        assert_eq!(
            config,
            "# Written by proxy-init: the addresses of webapp:5000.\n\
             server 10.0.1.9:5000 max_fails=1 fail_timeout=2s;\n\
             server 10.0.1.10:5000 max_fails=1 fail_timeout=2s;\n"
        );
    }

    #[test]
    fn no_replica_is_one_server_marked_down() {
        let config = servers_config("webapp:5000", &BTreeSet::new());

        let servers: Vec<&str> = config
            .lines()
            .filter(|line| line.starts_with("server "))
            .collect();
        assert_eq!(servers, ["server 127.0.0.1:9 down;"]);
    }

    #[test]
    fn stopping_replicas_leave_and_new_ones_join_once_ready() {
        use Readiness::{Ready, Stopping, Unknown};
        let (a, b, c, d) = (
            "10.0.1.9:5000".parse().unwrap(),
            "10.0.1.10:5000".parse().unwrap(),
            "10.0.1.11:5000".parse().unwrap(),
            "10.0.1.12:5000".parse().unwrap(),
        );
        let listed = BTreeSet::from([a, b, c]);
        // b stops; c is not ready (Redis?) yet stays; d is new and ready.
        let answers = BTreeMap::from([(a, Ready), (b, Stopping), (c, Unknown), (d, Ready)]);
        assert_eq!(
            servers_to_list(&listed, &answers),
            BTreeSet::from([a, c, d])
        );
        // A new replica that has not answered ready yet waits.
        let answers = BTreeMap::from([(a, Ready), (d, Unknown)]);
        assert_eq!(servers_to_list(&listed, &answers), BTreeSet::from([a]));
        // Never none because of what they say: not ready (Redis down at start), or all stopping.
        let answers = BTreeMap::from([(c, Unknown), (d, Unknown)]);
        assert_eq!(
            servers_to_list(&BTreeSet::new(), &answers),
            BTreeSet::from([c, d])
        );
        let answers = BTreeMap::from([(a, Stopping), (b, Stopping)]);
        assert_eq!(servers_to_list(&listed, &answers), BTreeSet::from([a, b]));
        assert_eq!(servers_to_list(&listed, &BTreeMap::new()), BTreeSet::new());
    }

    #[test]
    fn only_a_503_saying_stopping_is_stopping_and_only_a_200_is_ready() {
        let stopping = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"error\":\"shutting down\",\"replica\":\"a\",\"status\":\"stopping\"}";
        assert_eq!(classify_readiness(stopping), Readiness::Stopping);
        let redis_down = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"error\":\"redis unavailable, retry shortly\"}";
        assert_eq!(classify_readiness(redis_down), Readiness::Unknown);
        let ready = b"HTTP/1.1 200 OK\r\n\r\n{\"replica\":\"a\",\"status\":\"ready\"}";
        assert_eq!(classify_readiness(ready), Readiness::Ready);
        assert_eq!(classify_readiness(b""), Readiness::Unknown);
    }

    #[test]
    fn a_name_that_does_not_exist_means_no_replica_other_errors_keep_the_servers() {
        assert_eq!(
            classify_lookup_error(
                "failed to lookup address information: Name or service not known"
            ),
            Lookup::NoSuchName
        );
        assert!(matches!(
            classify_lookup_error(
                "failed to lookup address information: Temporary failure in name resolution"
            ),
            Lookup::Failed(_)
        ));
    }
}
