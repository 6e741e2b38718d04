//! The `acme` service's settings, all from its environment (in the stack, from the env file
//! `cargo xtask up --tls acme` writes). Every bad value stops start-up with a line naming the
//! variable.

use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's staging CA: the default, since its certificates are not trusted by browsers
/// but its rate limits are generous; `ACME_DIRECTORY=production` once it works.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `ACME_DOMAINS`: the names the certificate is for, comma- or space-separated; the first
    /// is its subject.
    pub domains: Vec<String>,
    /// `ACME_DIRECTORY`: `staging` (the default), `production`, or a CA's directory URL.
    pub directory: String,
    /// `ACME_EMAIL`: the account's contact, for the CA's expiry notices; none if unset.
    pub email: Option<String>,
    /// `ACME_CA_FILE`: trust only this root (PEM) for the CA's own HTTPS, for a test CA such
    /// as pebble; Mozilla's roots when unset, or when the file is empty or blank.
    pub ca_file: Option<PathBuf>,
    /// `ACME_STATE_DIR`: the volume the account, the certificates and the challenges live on.
    pub state_dir: PathBuf,
    /// `ACME_RETRY_SECS` and `ACME_RETRY_MAX_SECS`: the wait after a failed attempt, doubled
    /// after each further failure up to the maximum.
    pub retry_first: Duration,
    pub retry_max: Duration,
}

impl Settings {
    pub fn from_lookup(variable: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let domains_text = variable("ACME_DOMAINS").unwrap_or_default();
        let domains: Vec<String> = domains_text
            .split([',', ' '])
            .filter(|name| !name.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        if domains.is_empty() {
            return Err("ACME_DOMAINS is empty: name the domains the certificate is for".into());
        }
        for name in &domains {
            check_domain(name).map_err(|why| format!("ACME_DOMAINS: {name:?} {why}"))?;
        }
        let directory = match variable("ACME_DIRECTORY").as_deref() {
            None | Some("") | Some("staging") => LETS_ENCRYPT_STAGING.to_owned(),
            Some("production") => LETS_ENCRYPT_PRODUCTION.to_owned(),
            Some(url) if url.starts_with("https://") && !url.contains(char::is_whitespace) => {
                url.to_owned()
            }
            Some(other) => {
                return Err(format!(
                    "ACME_DIRECTORY={other:?} is neither staging, production nor an https:// URL"
                ))
            }
        };
        let email = match variable("ACME_EMAIL").filter(|email| !email.is_empty()) {
            None => None,
            Some(email) => match email.split_once('@') {
                Some((user, host))
                    if !user.is_empty()
                        && host.contains('.')
                        && !email.contains(|c: char| c.is_whitespace() || c == ',') =>
                {
                    Some(email)
                }
                _ => return Err(format!("ACME_EMAIL={email:?} is not an email address")),
            },
        };
        let ca_file = variable("ACME_CA_FILE")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        let state_dir =
            PathBuf::from(variable("ACME_STATE_DIR").unwrap_or_else(|| "/run/acme".to_owned()));
        let seconds = |name: &str, default: u64| -> Result<Duration, String> {
            match variable(name) {
                None => Ok(Duration::from_secs(default)),
                Some(text) => match text.parse::<u64>() {
                    Ok(seconds @ 1..=86_400) => Ok(Duration::from_secs(seconds)),
                    _ => Err(format!(
                        "{name}={text:?} is not a whole number of seconds from 1 to 86400"
                    )),
                },
            }
        };
        // Let's Encrypt allows 5 failed validations per name an hour: a first retry after
        // 5 minutes, then 10, 20, … keeps a broken setup under that.
        let retry_first = seconds("ACME_RETRY_SECS", 300)?;
        let retry_max = seconds("ACME_RETRY_MAX_SECS", 6 * 3600)?;
        if retry_max < retry_first {
            return Err(format!(
                "ACME_RETRY_MAX_SECS ({}) is below ACME_RETRY_SECS ({})",
                retry_max.as_secs(),
                retry_first.as_secs()
            ));
        }
        Ok(Settings {
            domains,
            directory,
            email,
            ca_file,
            state_dir,
            retry_first,
            retry_max,
        })
    }
}

/// A name HTTP-01 can prove: a DNS name of letters, digits and hyphens, with a dot; no
/// wildcard (HTTP-01 cannot prove one) and no IP address.
fn check_domain(name: &str) -> Result<(), &'static str> {
    if name.starts_with("*.") {
        return Err("is a wildcard, which HTTP-01 challenges cannot prove (DNS-01 can)");
    }
    if name.len() > 253 || !name.contains('.') {
        return Err("is not a fully qualified domain name");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("is an IP address, not a domain name");
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("is not a domain name (letters, digits and hyphens between dots)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(variables: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_lookup(|name| {
            variables
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_are_lets_encrypt_staging_on_the_volume() {
        let settings = settings(&[("ACME_DOMAINS", "Example.com, www.example.com")]).unwrap();
        assert_eq!(settings.domains, ["example.com", "www.example.com"]);
        assert_eq!(settings.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(settings.state_dir, PathBuf::from("/run/acme"));
        assert_eq!(settings.email, None);
        assert_eq!(settings.retry_first, Duration::from_secs(300));
    }

    #[test]
    fn production_is_a_word_and_any_https_directory_is_taken() {
        let production = settings(&[
            ("ACME_DOMAINS", "example.com"),
            ("ACME_DIRECTORY", "production"),
        ]);
        assert_eq!(production.unwrap().directory, LETS_ENCRYPT_PRODUCTION);
        let pebble = settings(&[
            ("ACME_DOMAINS", "example.com"),
            ("ACME_DIRECTORY", "https://pebble:14000/dir"),
        ]);
        assert_eq!(pebble.unwrap().directory, "https://pebble:14000/dir");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("ACME_DOMAINS", ""),
            ("ACME_DOMAINS", "*.example.com"),
            ("ACME_DOMAINS", "localhost"),
            ("ACME_DOMAINS", "192.0.2.1"),
            ("ACME_DOMAINS", "exa_mple.com"),
            ("ACME_DIRECTORY", "http://pebble:14000/dir"),
            ("ACME_EMAIL", "nobody"),
            ("ACME_RETRY_SECS", "0"),
            ("ACME_RETRY_MAX_SECS", "1"),
        ] {
            let mut variables = vec![("ACME_DOMAINS", "example.com")];
            variables.retain(|(name, _)| *name != variable);
            variables.push((variable, value));
            let error = settings(&variables).unwrap_err();
            assert!(error.starts_with(variable), "{variable}={value}: {error}");
        }
    }
}
