//! The few single HTTP requests the bench makes besides the load itself
//! (is the stack up, what does the counter say), through ureq, the HTTP
//! client xtask already uses for Debian's archive; over HTTPS for the HTTPS
//! rows, trusting only the run's own CA.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context};

/// Bounds every single request: the stack answers in milliseconds when up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `http` or `https`, and `host:port`, of a base URL without a path.
pub fn scheme_and_authority(base_url: &str) -> anyhow::Result<(&'static str, String)> {
    let (scheme, default_port, rest) = if let Some(rest) = base_url.strip_prefix("http://") {
        ("http", 80, rest)
    } else if let Some(rest) = base_url.strip_prefix("https://") {
        ("https", 443, rest)
    } else {
        bail!("--url must start with http:// (got {base_url:?})");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--url must be http://host:port without a path (got {base_url:?})");
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    Ok((scheme, authority))
}

/// Where the bench's single requests go: the published port of the proxy,
/// plain or HTTPS.
pub struct Endpoint {
    base_url: String,
    agent: ureq::Agent,
}

impl Endpoint {
    /// `base_url` is `http://host:port`, or `https://host:port` with the CA
    /// its certificate chains to (and no other trusted).
    ///
    /// Straight to the address the bench checked (no proxy from the
    /// environment, no redirect), with every status an answer, not an error.
    pub fn new(base_url: &str, ca_certificate: Option<&Path>) -> anyhow::Result<Endpoint> {
        let (scheme, authority) = scheme_and_authority(base_url)?;
        let mut tls = ureq::tls::TlsConfig::builder();
        match (scheme, ca_certificate) {
            ("https", Some(path)) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
                let certificate = ureq::tls::Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
                tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![certificate])));
            }
            ("https", None) => bail!("{base_url}: HTTPS needs the CA to trust"),
            _ => {}
        }
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Endpoint {
            base_url: format!("{scheme}://{authority}"),
            agent,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Status code and body of `GET {base_url}{path}`.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base_url);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("read the answer to GET {url}"))?;
        Ok((status, body))
    }
}

/// The shared hit counter, from `GET /api/hits` (`{"hits": N, ...}`).
pub fn read_hit_counter(endpoint: &Endpoint) -> anyhow::Result<u64> {
    let (status, body) = endpoint.get("/api/hits")?;
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
pub fn read_hits_per_replica(endpoint: &Endpoint) -> anyhow::Result<BTreeMap<String, u64>> {
    let (status, body) = endpoint.get("/api/replicas")?;
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
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn scheme_and_authority_accepts_only_base_urls_without_a_path() -> anyhow::Result<()> {
        assert_eq!(
            scheme_and_authority("http://127.0.0.1:8070")?,
            ("http", String::from("127.0.0.1:8070"))
        );
        assert_eq!(
            scheme_and_authority("http://localhost/")?,
            ("http", String::from("localhost:80"))
        );
        assert_eq!(
            scheme_and_authority("https://localhost")?,
            ("https", String::from("localhost:443"))
        );
        assert!(scheme_and_authority("ftp://localhost:8070").is_err());
        assert!(scheme_and_authority("http://localhost:8070/api").is_err());
        Ok(())
    }

    #[test]
    fn an_https_endpoint_needs_a_ca_to_trust() {
        assert!(Endpoint::new("https://127.0.0.1:8443", None).is_err());
        assert!(Endpoint::new("http://127.0.0.1:8070", None).is_ok());
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
            let body = br#"{"hits":42,"replica":"a"}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
            Ok(String::from_utf8_lossy(&request).into_owned())
        });

        let hits = read_hit_counter(&Endpoint::new(&base_url, None)?)?;
        let request = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;

        assert_eq!(hits, 42);
        assert!(
            request.starts_with("GET /api/hits HTTP/1.1\r\n"),
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
