//! Downloads over HTTP(S): the proxy the usual variables choose, and GETs
//! checked against what the pin says (size, sha256) before the file lands,
//! whole, at its path (temporary file, then rename).

use std::{
    fs,
    io::{self, Read, Write},
    path::Path,
    time::Duration,
};

use anyhow::Context;
use xtask_oci::Digest;

use crate::staging::{self, remove_stale_temporaries};

/// The proxy for `url` from the usual variables: `http_proxy`/`HTTP_PROXY`
/// for http URLs, `https_proxy`/`HTTPS_PROXY` for https, `ALL_PROXY` for
/// both; none when `NO_PROXY` names the host (exact, a domain suffix, `*`).
pub fn proxy_for(url: &str, variable: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => authority.split(':').next()?,
    }
    .to_ascii_lowercase();
    // A mirror on this machine is reached directly, whatever the proxy
    // variables say: a proxy would carry the request off the machine.
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
    {
        return None;
    }
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| variable(name).filter(|value| !value.trim().is_empty()))
    };
    if let Some(no_proxy) = get(&["no_proxy", "NO_PROXY"]) {
        for entry in no_proxy.split([',', ' ']).map(str::trim) {
            let entry = entry.to_ascii_lowercase();
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let entry = entry.split(':').next().unwrap_or_default();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" || host == entry || host.ends_with(&format!(".{entry}")) {
                return None;
            }
        }
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => get(&["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]),
        "http" => get(&["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]),
        _ => None,
    }
}

fn agent_for(url: &str) -> anyhow::Result<ureq::Agent> {
    let proxy = match proxy_for(url, &|name| std::env::var(name).ok()) {
        Some(proxy) => Some(
            ureq::Proxy::new(&proxy).with_context(|| format!("the proxy {proxy:?} for {url}"))?,
        ),
        None => None,
    };
    Ok(ureq::Agent::config_builder()
        .proxy(proxy)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("webstack-xtask/", env!("CARGO_PKG_VERSION")))
        // HTTPS (Rust's standard library, static.rust-lang.org) is checked
        // against the system's roots, as curl and cargo do, so a TLS proxy
        // the machine trusts works; the pins check the bytes anyway.
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into())
}

/// Why a download gave no file.
#[derive(Debug)]
pub enum FetchError {
    /// The server answered 404 or 410: it no longer has this file.
    Gone {
        url: String,
        status: u16,
    },
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for FetchError {
    fn from(error: anyhow::Error) -> FetchError {
        FetchError::Failed(error)
    }
}

impl FetchError {
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            FetchError::Gone { url, status } => {
                anyhow::anyhow!("{url}: the archive answered {status} (no such file)")
            }
            FetchError::Failed(error) => error,
        }
    }
}

/// What a download must be.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub size: u64,
    pub sha256: &'a str,
}

/// GETs `url` into `destination` (in its directory: a temporary file,
/// checked against `expected`, then renamed). On any failure nothing is
/// left behind and `destination` is untouched. `unreachable` ends the
/// message when the server cannot be reached: what to check, which
/// variables move it.
pub fn download_verified(
    url: &str,
    destination: &Path,
    expected: Expected,
    unreachable: &str,
) -> Result<(), FetchError> {
    let directory = destination
        .parent()
        .context("download destination has no directory")?;
    fs::create_dir_all(directory).with_context(|| format!("create {}", directory.display()))?;
    let name = destination
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temporaries(directory);
    let mut temporary = staging::temporary_file(directory, &name, 0o666)?;
    download_to(url, temporary.as_file_mut(), expected, unreachable)?;
    staging::persist(temporary, destination)?;
    Ok(())
}

/// GETs `url` into memory, at most `limit` bytes (for index files, whose
/// hashes the caller checks).
pub fn download_bytes(url: &str, limit: u64, unreachable: &str) -> Result<Vec<u8>, FetchError> {
    let mut response = get(url, unreachable)?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .reader()
        .read_to_end(&mut bytes)
        .with_context(|| format!("download {url} (truncated or interrupted)"))?;
    Ok(bytes)
}

fn get(url: &str, unreachable: &str) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
    let agent = agent_for(url)?;
    let response = agent.get(url).call().map_err(|error| {
        FetchError::Failed(anyhow::anyhow!(
            "cannot download {url}: {error}. {unreachable}"
        ))
    })?;
    let status = response.status().as_u16();
    match status {
        200 => Ok(response),
        404 | 410 => Err(FetchError::Gone {
            url: url.to_string(),
            status,
        }),
        _ => Err(FetchError::Failed(anyhow::anyhow!(
            "cannot download {url}: the server answered {status}"
        ))),
    }
}

/// Writes every byte it reads to `file` and counts them, so one pass both
/// hashes the download and stores it.
struct Tee<'a, R> {
    reader: R,
    file: &'a mut fs::File,
    size: u64,
    /// Set when writing, not reading, failed: the message says which.
    write_failed: bool,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.reader.read(buffer)?;
        if let Err(error) = self.file.write_all(&buffer[..read]) {
            self.write_failed = true;
            return Err(error);
        }
        self.size += read as u64;
        Ok(read)
    }
}

fn download_to(
    url: &str,
    file: &mut fs::File,
    expected: Expected,
    unreachable: &str,
) -> Result<(), FetchError> {
    let response = get(url, unreachable)?;
    // One byte more than pinned is enough to tell a longer file.
    let limit = expected.size.saturating_add(1);
    let mut tee = Tee {
        reader: response.into_body().into_reader().take(limit),
        file,
        size: 0,
        write_failed: false,
    };
    let digest = Digest::sha256_of_reader(&mut tee).with_context(|| {
        if tee.write_failed {
            format!("write the download of {url}")
        } else {
            format!("download {url} (truncated or interrupted)")
        }
    })?;
    let size = tee.size;
    if size != expected.size {
        return Err(FetchError::Failed(anyhow::anyhow!(
            "{url}: got {size} bytes, the lock expects {} ({}); nothing was kept",
            expected.size,
            if size < expected.size {
                "a truncated download"
            } else {
                "a different file"
            }
        )));
    }
    let actual = digest.hex();
    if actual != expected.sha256 {
        return Err(FetchError::Failed(anyhow::anyhow!(
            "{url}: sha256 is {actual}, the lock expects {}; nothing was kept",
            expected.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn proxy_is_chosen_by_scheme_and_skipped_for_loopback_and_no_proxy_hosts() {
        let variables = [
            ("HTTP_PROXY", "http://proxy.example:3128"),
            ("HTTPS_PROXY", "http://secure-proxy.example:3128"),
            (
                "NO_PROXY",
                "localhost, .internal.example,mirror.example:8080",
            ),
        ];
        let variable = environment(&variables);
        assert_eq!(
            proxy_for("http://deb.debian.org/debian", &variable).as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(
            proxy_for("https://deb.debian.org/debian", &variable).as_deref(),
            Some("http://secure-proxy.example:3128")
        );
        for bypassed in [
            "http://localhost:8000/debian",
            "http://a.internal.example/debian",
            "http://mirror.example/debian",
            "http://user@mirror.example:80/debian",
        ] {
            assert_eq!(proxy_for(bypassed, &variable), None, "{bypassed}");
        }
        assert_eq!(
            proxy_for(
                "http://deb.debian.org/x",
                &environment(&[("ALL_PROXY", "http://all.example:1")])
            )
            .as_deref(),
            Some("http://all.example:1")
        );
        assert_eq!(
            proxy_for(
                "http://deb.debian.org/x",
                &environment(&[("HTTP_PROXY", "http://p:1"), ("no_proxy", "*")])
            ),
            None
        );
        assert_eq!(
            proxy_for("http://deb.debian.org/x", &environment(&[])),
            None
        );
        let proxy_only = environment(&[("HTTP_PROXY", "http://p:1")]);
        for local in [
            "http://localhost:8000/debian",
            "http://127.0.0.1:8000/debian",
            "http://127.8.9.10/debian",
            "http://[::1]:8000/debian",
        ] {
            assert_eq!(proxy_for(local, &proxy_only), None, "{local}");
        }
    }

    /// What xtask keeps its own NO_PROXY matching for: ureq's (3.5) does not
    /// trim entries, keeps their ports, and lets `.example` skip only
    /// subdomains; curl's convention, followed here, includes the domain.
    #[test]
    fn no_proxy_entries_match_the_domain_and_its_subdomains_whatever_their_form() {
        let variable = |no_proxy: &'static str| {
            move |name: &str| match name {
                "HTTP_PROXY" => Some("http://proxy.example:3128".to_string()),
                "NO_PROXY" => Some(no_proxy.to_string()),
                _ => None,
            }
        };
        for no_proxy in [
            "mirror.example",
            ".mirror.example",
            "*.mirror.example",
            "other.example , MIRROR.example:80",
        ] {
            for url in [
                "http://mirror.example/debian",
                "http://a.b.mirror.example:8080/debian",
            ] {
                assert_eq!(
                    proxy_for(url, &variable(no_proxy)),
                    None,
                    "{no_proxy}: {url}"
                );
            }
            assert_eq!(
                proxy_for("http://notmirror.example/debian", &variable(no_proxy)).as_deref(),
                Some("http://proxy.example:3128"),
                "{no_proxy}: a suffix matches at a dot only"
            );
        }
    }
}
