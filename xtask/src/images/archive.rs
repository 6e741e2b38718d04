//! Debian's archives over HTTP(S): where they are (defaults, flags,
//! environment variables), which proxy to use, and downloads that are
//! checked (size, sha256) before anything reads them and land in the cache
//! only whole (temporary file, then rename).
//!
//! No apt: the lock records each `.deb`'s archive and pool path, so a
//! download is one GET of `<archive base URL>/<pool path>`.

use std::{
    fs,
    io::{Read, Write},
    path::Path,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::staging::{self, remove_stale_temporaries};

/// The lock's name for Debian's main archive (trixie, trixie-updates).
pub const DEBIAN: &str = "debian";
/// The lock's name for Debian's security archive (trixie-security).
pub const DEBIAN_SECURITY: &str = "debian-security";

pub const DEFAULT_DEBIAN_URL: &str = "http://deb.debian.org/debian";
pub const DEFAULT_DEBIAN_SECURITY_URL: &str = "http://deb.debian.org/debian-security";
pub const DEBIAN_MIRROR_VARIABLE: &str = "WEBSTACK_DEBIAN_MIRROR";
pub const DEBIAN_SECURITY_MIRROR_VARIABLE: &str = "WEBSTACK_DEBIAN_SECURITY_MIRROR";

/// Base URLs of the archives the lock names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archives {
    pub debian: String,
    pub debian_security: String,
}

/// Set by `cargo xtask images --debian-mirror …`; wins over the environment.
static FLAG_OVERRIDES: OnceLock<(Option<String>, Option<String>)> = OnceLock::new();

/// Records the `--debian-mirror` and `--debian-security-mirror` flags for
/// this process (the first call wins).
pub fn set_flag_overrides(debian: Option<String>, debian_security: Option<String>) {
    let _ = FLAG_OVERRIDES.set((debian, debian_security));
}

impl Archives {
    /// Flags, else `WEBSTACK_DEBIAN_MIRROR` / `WEBSTACK_DEBIAN_SECURITY_MIRROR`,
    /// else deb.debian.org.
    pub fn configured() -> Archives {
        let (flag_debian, flag_security) = FLAG_OVERRIDES.get().cloned().unwrap_or_default();
        let pick = |flag: Option<String>, variable: &str, default: &str| {
            flag.or_else(|| std::env::var(variable).ok())
                .filter(|value| !value.trim().is_empty())
                .map(|value| value.trim().trim_end_matches('/').to_string())
                .unwrap_or_else(|| default.to_string())
        };
        Archives {
            debian: pick(flag_debian, DEBIAN_MIRROR_VARIABLE, DEFAULT_DEBIAN_URL),
            debian_security: pick(
                flag_security,
                DEBIAN_SECURITY_MIRROR_VARIABLE,
                DEFAULT_DEBIAN_SECURITY_URL,
            ),
        }
    }

    /// The base URL of `archive` ("debian" or "debian-security").
    pub fn base_url(&self, archive: &str) -> anyhow::Result<&str> {
        match archive {
            DEBIAN => Ok(&self.debian),
            DEBIAN_SECURITY => Ok(&self.debian_security),
            other => bail!(
                "unknown archive {other:?}: the lock names \"{DEBIAN}\" or \"{DEBIAN_SECURITY}\""
            ),
        }
    }

    /// The variable that moves `archive`, for error messages.
    pub fn variable(archive: &str) -> &'static str {
        if archive == DEBIAN_SECURITY {
            DEBIAN_SECURITY_MIRROR_VARIABLE
        } else {
            DEBIAN_MIRROR_VARIABLE
        }
    }
}

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
    /// The archive answered 404 or 410: it no longer has this file.
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
/// left behind and `destination` is untouched.
pub fn download_verified(
    url: &str,
    destination: &Path,
    expected: Expected,
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
    download_to(url, temporary.as_file_mut(), expected)?;
    staging::persist(temporary, destination)?;
    Ok(())
}

/// GETs `url` into memory, at most `limit` bytes (for index files, whose
/// hashes the caller checks).
pub fn download_bytes(url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let mut response = get(url)?;
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

fn get(url: &str) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
    let agent = agent_for(url)?;
    let response = agent.get(url).call().map_err(|error| {
        FetchError::Failed(anyhow::anyhow!(
            "cannot download {url}: {error}. Is the archive reachable? \
             (set {DEBIAN_MIRROR_VARIABLE} / {DEBIAN_SECURITY_MIRROR_VARIABLE} for a mirror, \
             HTTP_PROXY/HTTPS_PROXY for a proxy)"
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

fn download_to(url: &str, file: &mut fs::File, expected: Expected) -> Result<(), FetchError> {
    let response = get(url)?;
    // One byte more than pinned is enough to tell a longer file.
    let limit = expected.size.saturating_add(1);
    let mut reader = response.into_body().into_reader().take(limit);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = reader
            .read(&mut buffer)
            .with_context(|| format!("download {url} (truncated or interrupted)"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .with_context(|| format!("write the download of {url}"))?;
        size += read as u64;
    }
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
    let actual = hex::encode(hasher.finalize());
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

    #[test]
    fn archives_map_lock_names_to_base_urls() {
        let archives = Archives {
            debian: "http://a/debian".into(),
            debian_security: "http://b/debian-security".into(),
        };
        assert_eq!(archives.base_url("debian").unwrap(), "http://a/debian");
        assert_eq!(
            archives.base_url("debian-security").unwrap(),
            "http://b/debian-security"
        );
        assert!(archives.base_url("ubuntu").is_err());
    }
}
