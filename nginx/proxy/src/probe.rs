//! A tiny HTTP/1.1 GET probe for health checks, with no async runtime.
//!
//! Shared by `webapp healthcheck` and the `httpcheck` binary. Images without a shell or curl run
//! these as their HEALTHCHECK.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use http::uri::{Scheme, Uri};

/// How long a probe waits for connecting, writing and reading, each.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Parts of an `http://host:port/path` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses `http://host[:port][/path][?query]`; only plain HTTP is supported. `http::Uri`
/// refuses characters a request line cannot carry; it reads an invalid port as none, so the
/// port is checked here.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(format!("{url:?} is not an http:// URL"));
    }
    let authority = uri
        .authority()
        .filter(|authority| !authority.host().is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let port = match authority.port() {
        Some(port) => port.as_u16(),
        None if authority.as_str().ends_with(authority.host()) => 80,
        None => return Err(format!("the port in {url:?} is not a port number")),
    };
    Ok(HttpUrl {
        host: authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        path: uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned(),
    })
}

/// GETs `url` and returns the response status code.
pub fn get_status(url: &HttpUrl) -> Result<u16, String> {
    let address = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|error| format!("resolve {}: {error}", url.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", url.host))?;
    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)
        .map_err(|error| format!("connect to {address}: {error}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|error| format!("set socket timeouts: {error}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: httpcheck\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("send request to {address}: {error}"))?;
    // The status line fits in the first read; the rest of the response is not needed.
    let mut buffer = [0_u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let read = stream
            .read(&mut buffer[filled..])
            .map_err(|error| format!("read response from {address}: {error}"))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    parse_status_line(&buffer[..filled])
}

/// Extracts the status code from `HTTP/1.x NNN ...`.
pub fn parse_status_line(response: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(response);
    let mut words = text.split(' ');
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP response: {text:?}"));
    }
    words
        .next()
        .and_then(|code| code.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {text:?}"))
}

/// Probes `url`; returns the process exit code (0 for 2xx, 1 otherwise) after printing why.
pub fn check(url: &str) -> u8 {
    let outcome = parse_http_url(url).and_then(|parsed| get_status(&parsed));
    match outcome {
        Ok(status) if (200..300).contains(&status) => 0,
        Ok(status) => {
            eprintln!("{url} answered {status}");
            1
        }
        Err(error) => {
            eprintln!("{url}: {error}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_port_and_path_is_split() {
        let url = parse_http_url("http://127.0.0.1:5000/readyz").unwrap();
        assert_eq!(
            url,
            HttpUrl {
                host: "127.0.0.1".to_owned(),
                port: 5000,
                path: "/readyz".to_owned()
            }
        );
    }

    #[test]
    fn url_without_port_or_path_defaults_to_80_and_root() {
        let url = parse_http_url("http://localhost").unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
    }

    #[test]
    fn query_is_kept_and_brackets_leave_an_ipv6_host() {
        let url = parse_http_url("http://[::1]:8080/readyz?verbose").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("::1", 8080, "/readyz?verbose")
        );
        assert_eq!(parse_http_url("http://[::1]/").unwrap().port, 80);
    }

    #[test]
    fn https_and_garbage_are_refused() {
        for url in [
            "https://x/",
            "http://x:notaport/",
            "http://x:65536/",
            "http://x:/",
            "http:///path",
            "http://x/a b",
            "/readyz",
        ] {
            assert!(parse_http_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Ok(503)
        );
        assert!(parse_status_line(b"SSH-2.0").is_err());
    }
}
