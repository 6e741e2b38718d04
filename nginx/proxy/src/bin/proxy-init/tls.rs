//! The front nginx's HTTPS settings: whether it serves HTTPS (`PROXY_TLS`), from which
//! certificate and key, where port 80 redirects to, and HSTS; and the include that
//! nginx-tls.conf reads them from ([`TLS_SETTINGS_FILE`]), written before nginx starts.

use std::path::PathBuf;

/// What nginx-tls.conf includes at its `http` level.
pub const TLS_SETTINGS_FILE: &str = "/tmp/nginx-front-tls.conf";

/// The longest HSTS max-age taken: two years, what browsers' preload lists ask for.
const MAX_HSTS_SECONDS: u64 = 63_072_000;

/// The front's HTTPS, when `PROXY_TLS=on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontTls {
    /// `PROXY_TLS_CERTIFICATE`: the certificate chain, PEM, leaf first.
    pub certificate: PathBuf,
    /// `PROXY_TLS_KEY`: its private key, PEM.
    pub key: PathBuf,
    /// `PROXY_HTTPS_PORT`: the port clients reach HTTPS on (the host's published port), for the
    /// redirects of port 80; 443 is left out of the URL.
    pub https_port: u16,
    /// `PROXY_HSTS_MAX_AGE`: seconds browsers are told to use only HTTPS; off unless given,
    /// since it cannot be taken back from browsers that saw it.
    pub hsts_max_age: Option<u64>,
    /// `PROXY_TLS_RELOAD=on`: the certificate is renewed in place (the `acme` service's
    /// `live/`): wait until it exists before starting nginx, then reload nginx when it changes.
    pub reload_on_change: bool,
}

/// What tells one certificate file from its replacement: where its path leads (through a
/// symlink such as `live/`), its size and its modification time.
pub type Fingerprint = Vec<Option<(PathBuf, u64, std::time::SystemTime)>>;

impl FrontTls {
    /// The settings from the environment: `None` with `PROXY_TLS` unset or `off`. Every bad
    /// value is an error naming its variable.
    pub fn from_lookup(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<FrontTls>, String> {
        let hsts = variable("PROXY_HSTS_MAX_AGE");
        match variable("PROXY_TLS").as_deref() {
            None | Some("off") => {
                return match hsts {
                    None => Ok(None),
                    Some(_) => Err(
                        "PROXY_HSTS_MAX_AGE is set, but PROXY_TLS is not on: HSTS is for HTTPS"
                            .to_owned(),
                    ),
                }
            }
            Some("on") => {}
            Some(other) => return Err(format!("PROXY_TLS={other:?} is neither on nor off")),
        }
        let path = |name: &str, default: &str| -> Result<PathBuf, String> {
            let value = variable(name).unwrap_or_else(|| default.to_owned());
            let plain = value.starts_with('/')
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"/._-".contains(&byte));
            if plain {
                Ok(PathBuf::from(value))
            } else {
                Err(format!(
                    "{name}={value:?} is not an absolute path of letters, digits and / . _ -"
                ))
            }
        };
        let port = variable("PROXY_HTTPS_PORT").unwrap_or_else(|| "443".to_owned());
        let https_port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("PROXY_HTTPS_PORT={port:?} is not a port number")),
        };
        let hsts_max_age = match hsts {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(seconds @ 1..=MAX_HSTS_SECONDS) => Some(seconds),
                _ => {
                    return Err(format!(
                        "PROXY_HSTS_MAX_AGE={text:?} is not a whole number of seconds from 1 to {MAX_HSTS_SECONDS}"
                    ))
                }
            },
        };
        let reload_on_change = match variable("PROXY_TLS_RELOAD").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => return Err(format!("PROXY_TLS_RELOAD={other:?} is neither on nor off")),
        };
        Ok(Some(FrontTls {
            certificate: path("PROXY_TLS_CERTIFICATE", "/run/secrets/tls_certificate")?,
            key: path("PROXY_TLS_KEY", "/run/secrets/tls_key")?,
            https_port,
            hsts_max_age,
            reload_on_change,
        }))
    }

    /// The certificate's and the key's [`Fingerprint`]; `None` for a file that is not there.
    pub fn fingerprint(&self) -> Fingerprint {
        [&self.certificate, &self.key]
            .iter()
            .map(|path| {
                let target = std::fs::canonicalize(path).ok()?;
                let metadata = std::fs::metadata(&target).ok()?;
                Some((target, metadata.len(), metadata.modified().ok()?))
            })
            .collect()
    }

    /// The text of [`TLS_SETTINGS_FILE`].
    pub fn nginx_settings(&self) -> String {
        let suffix = match self.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let hsts = self
            .hsts_max_age
            .map_or(String::new(), |seconds| format!("max-age={seconds}"));
        format!(
            "# Written by proxy-init from its environment (PROXY_TLS_*, PROXY_HTTPS_PORT,\n\
             # PROXY_HSTS_MAX_AGE) before the front nginx starts.\n\
             ssl_certificate {};\n\
             ssl_certificate_key {};\n\
             map $host $https_port_suffix {{\n    default \"{suffix}\";\n}}\n\
             map $host $strict_transport_security {{\n    default \"{hsts}\";\n}}\n",
            self.certificate.display(),
            self.key.display(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(variables: &[(&str, &str)]) -> Result<Option<FrontTls>, String> {
        FrontTls::from_lookup(|name| {
            variables
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn off_unless_asked_with_secrets_in_their_usual_place_and_port_443() {
        assert_eq!(tls(&[]), Ok(None));
        assert_eq!(tls(&[("PROXY_TLS", "off")]), Ok(None));
        let on = tls(&[("PROXY_TLS", "on")]).unwrap().unwrap();
        assert_eq!(
            on.certificate,
            PathBuf::from("/run/secrets/tls_certificate")
        );
        assert_eq!(on.key, PathBuf::from("/run/secrets/tls_key"));
        assert_eq!(on.https_port, 443);
        assert_eq!(on.hsts_max_age, None);
        assert!(!on.reload_on_change);
        let text = on.nginx_settings();
        assert!(
            text.contains("ssl_certificate /run/secrets/tls_certificate;"),
            "{text}"
        );
        assert!(
            text.contains("ssl_certificate_key /run/secrets/tls_key;"),
            "{text}"
        );
        assert!(
            text.contains("map $host $https_port_suffix {\n    default \"\";\n}"),
            "{text}"
        );
        assert!(
            text.contains("map $host $strict_transport_security {\n    default \"\";\n}"),
            "{text}"
        );
    }

    #[test]
    fn another_port_goes_into_the_redirects_and_hsts_only_when_asked() {
        let on = tls(&[
            ("PROXY_TLS", "on"),
            ("PROXY_HTTPS_PORT", "8443"),
            ("PROXY_HSTS_MAX_AGE", "300"),
            ("PROXY_TLS_CERTIFICATE", "/run/acme/live/fullchain.pem"),
        ])
        .unwrap()
        .unwrap();
        let text = on.nginx_settings();
        assert!(text.contains("default \":8443\";"), "{text}");
        assert!(text.contains("default \"max-age=300\";"), "{text}");
        assert!(
            text.contains("ssl_certificate /run/acme/live/fullchain.pem;"),
            "{text}"
        );
    }

    #[test]
    fn a_replaced_certificate_changes_the_fingerprint() {
        let dir = std::env::temp_dir().join(format!("proxy-init-tls-{}", std::process::id()));
        let (one, two) = (dir.join("one"), dir.join("two"));
        for sub in [&one, &two] {
            std::fs::create_dir_all(sub).unwrap();
            std::fs::write(sub.join("fullchain.pem"), sub.to_str().unwrap()).unwrap();
            std::fs::write(sub.join("key.pem"), "key").unwrap();
        }
        let live = dir.join("live");
        let tls = tls(&[
            ("PROXY_TLS", "on"),
            ("PROXY_TLS_RELOAD", "on"),
            (
                "PROXY_TLS_CERTIFICATE",
                live.join("fullchain.pem").to_str().unwrap(),
            ),
            ("PROXY_TLS_KEY", live.join("key.pem").to_str().unwrap()),
        ])
        .unwrap()
        .unwrap();
        assert!(tls.reload_on_change);
        assert_eq!(tls.fingerprint(), vec![None, None]);
        std::os::unix::fs::symlink(&one, &live).unwrap();
        let first = tls.fingerprint();
        assert!(first.iter().all(Option::is_some));
        assert_eq!(tls.fingerprint(), first);
        let next = dir.join("live.next");
        std::os::unix::fs::symlink(&two, &next).unwrap();
        std::fs::rename(&next, &live).unwrap();
        assert_ne!(tls.fingerprint(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variables, named) in [
            (vec![("PROXY_TLS", "yes")], "PROXY_TLS"),
            (vec![("PROXY_HSTS_MAX_AGE", "300")], "PROXY_HSTS_MAX_AGE"),
            (
                vec![("PROXY_TLS", "on"), ("PROXY_HSTS_MAX_AGE", "0")],
                "PROXY_HSTS_MAX_AGE",
            ),
            (
                vec![("PROXY_TLS", "on"), ("PROXY_HTTPS_PORT", "0")],
                "PROXY_HTTPS_PORT",
            ),
            (
                vec![("PROXY_TLS", "on"), ("PROXY_HTTPS_PORT", "70000")],
                "PROXY_HTTPS_PORT",
            ),
            (
                vec![("PROXY_TLS", "on"), ("PROXY_TLS_RELOAD", "yes")],
                "PROXY_TLS_RELOAD",
            ),
            (
                vec![("PROXY_TLS", "on"), ("PROXY_TLS_KEY", "key.pem")],
                "PROXY_TLS_KEY",
            ),
            (
                vec![
                    ("PROXY_TLS", "on"),
                    ("PROXY_TLS_CERTIFICATE", "/a;include /etc/x"),
                ],
                "PROXY_TLS_CERTIFICATE",
            ),
        ] {
            let error = tls(&variables).unwrap_err();
            assert!(error.starts_with(named), "{variables:?}: {error}");
        }
    }
}
