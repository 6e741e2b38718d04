//! Where Debian's archives are (defaults, flags, environment variables),
//! and what to check when one cannot be reached. The downloads themselves
//! (proxies, size and sha256 checked before anything reads them, the cache
//! filled only whole) are the `xtask_fetch` crate's.
//!
//! No apt: the lock records each `.deb`'s archive and pool path, so a
//! download is one GET of `<archive base URL>/<pool path>`.

use std::sync::OnceLock;

use anyhow::bail;

/// The lock's name for Debian's main archive (trixie, trixie-updates).
pub const DEBIAN: &str = "debian";
/// The lock's name for Debian's security archive (trixie-security).
pub const DEBIAN_SECURITY: &str = "debian-security";

pub const DEFAULT_DEBIAN_URL: &str = "http://deb.debian.org/debian";
pub const DEFAULT_DEBIAN_SECURITY_URL: &str = "http://deb.debian.org/debian-security";
pub const DEBIAN_MIRROR_VARIABLE: &str = "WEBSTACK_DEBIAN_MIRROR";
pub const DEBIAN_SECURITY_MIRROR_VARIABLE: &str = "WEBSTACK_DEBIAN_SECURITY_MIRROR";

/// How a download that cannot reach its server ends its message: the
/// variables above and the proxy's (a unit test keeps the names in step).
pub const UNREACHABLE: &str = "Is the archive reachable? \
     (set WEBSTACK_DEBIAN_MIRROR / WEBSTACK_DEBIAN_SECURITY_MIRROR for a mirror, \
     HTTP_PROXY/HTTPS_PROXY for a proxy)";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_archive_names_the_variables_that_move_it() {
        for variable in [DEBIAN_MIRROR_VARIABLE, DEBIAN_SECURITY_MIRROR_VARIABLE] {
            assert!(UNREACHABLE.contains(variable), "{UNREACHABLE}");
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
