//! The few single HTTP requests the bench makes besides the load itself
//! (is the stack up, what does the counter say), over a plain `TcpStream`.
//!
//! HTTP/1.0 with `Connection: close` against our own proxy needs no HTTP
//! library: the whole response is read until the server closes.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{bail, Context};

/// Bounds every single request: the stack answers in milliseconds when up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `host:port` of an `http://host:port` base URL (no path, no TLS: the bench
/// talks to the published proxy port).
pub fn host_and_port(base_url: &str) -> anyhow::Result<String> {
    let Some(rest) = base_url.strip_prefix("http://") else {
        bail!("--url must start with http:// (got {base_url:?})");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--url must be http://host:port without a path (got {base_url:?})");
    }
    Ok(if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

/// Status code and body of `GET {base_url}{path}`.
pub fn get(base_url: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let authority = host_and_port(base_url)?;
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)
        .with_context(|| format!("connect to {authority}"))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .context("set read timeout")?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .context("set write timeout")?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("send GET {path} to {authority}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("read the answer to GET {path} from {authority}"))?;
    parse_response(&response).with_context(|| format!("parse the answer to GET {path}"))
}

fn parse_response(response: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status_line = head.lines().next().context("empty response")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("malformed status line {status_line:?}"))?;
    Ok((status, body.to_string()))
}

/// The shared hit counter, from `GET /api/hits` (`{"hits": N, ...}`).
pub fn read_hit_counter(base_url: &str) -> anyhow::Result<u64> {
    let (status, body) = get(base_url, "/api/hits")?;
    if status != 200 {
        bail!("GET /api/hits answered {status}: {body}");
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("GET /api/hits body {body:?}"))?;
    value["hits"]
        .as_u64()
        .with_context(|| format!("GET /api/hits body has no \"hits\" number: {body}"))
}

/// Hits per replica, from `GET /api/replicas` (`{"<replica>": hits, ...}`).
pub fn read_hits_per_replica(base_url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let (status, body) = get(base_url, "/api/replicas")?;
    if status != 200 {
        bail!("GET /api/replicas answered {status}: {body}");
    }
    serde_json::from_str(&body)
        .with_context(|| format!("GET /api/replicas body is not a map of counts: {body}"))
}

/// `after - before` per replica, leaving out replicas that served nothing.
pub fn hits_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(replica, hits)| {
            let earlier = before.get(replica).copied().unwrap_or(0);
            (replica.clone(), hits.saturating_sub(earlier))
        })
        .filter(|(_, hits)| *hits > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn host_and_port_accepts_only_http_base_urls() -> anyhow::Result<()> {
        assert_eq!(host_and_port("http://127.0.0.1:8070")?, "127.0.0.1:8070");
        assert_eq!(host_and_port("http://localhost/")?, "localhost:80");
        assert!(host_and_port("https://localhost:8070").is_err());
        assert!(host_and_port("http://localhost:8070/api").is_err());
        Ok(())
    }

    #[test]
    fn read_hit_counter_parses_the_webapps_json() -> anyhow::Result<()> {
        // A real socket with a canned answer in the webapp's format.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let server = std::thread::spawn(move || -> std::io::Result<String> {
            let (mut stream, _) = listener.accept()?;
            // Read the whole request first: closing with unread bytes would
            // reset the connection instead of ending it.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let read = stream.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"hits\":42,\"replica\":\"a\"}",
            )?;
            Ok(String::from_utf8_lossy(&request).into_owned())
        });

        let hits = read_hit_counter(&base_url)?;
        let request = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;

        assert_eq!(hits, 42);
        assert!(
            request.starts_with("GET /api/hits HTTP/1.0\r\n"),
            "{request}"
        );
        Ok(())
    }

    #[test]
    fn hits_between_counts_only_what_each_replica_served_in_between() {
        let before = BTreeMap::from([(String::from("a"), 10), (String::from("b"), 5)]);
        let after = BTreeMap::from([
            (String::from("a"), 15),
            (String::from("b"), 5),
            (String::from("c"), 7),
        ]);

        let spread = hits_between(&before, &after);

        assert_eq!(
            spread,
            BTreeMap::from([(String::from("a"), 5), (String::from("c"), 7)])
        );
    }
}
