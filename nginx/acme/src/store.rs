//! The state directory (a volume; `/run/acme` in the stack), shared with the front nginx, which
//! mounts it read-only:
//!
//! - `live/fullchain.pem`, `live/key.pem`: what the front serves. `live` is a symlink to one
//!   directory of `certificates/`, replaced by rename(2), so a reader sees the old pair or the
//!   new one, never half of each; proxy-init reloads the front when it changes.
//! - `certificates/<name>/`: each certificate with its key; the live one and the one before it
//!   are kept. `certificates/provisional/` is the self-signed one the front starts with.
//! - `webroot/.well-known/acme-challenge/<token>`: the HTTP-01 answers, which the front serves
//!   on port 80.
//! - `account.json`: the ACME account's key and URL (mode 0600), reused across restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub const PROVISIONAL: &str = "provisional";
/// How long the provisional certificate is valid: it is replaced as soon as the CA answers.
const PROVISIONAL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Store {
    dir: PathBuf,
}

/// What is known of the certificate being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Its directory under `certificates/`.
    pub name: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Its DNS names (subject alternative names), sorted.
    pub names: Vec<String>,
}

impl Current {
    /// When to renew: when a third of its lifetime is left; at once for the provisional one
    /// or one whose names are not the ones asked for.
    pub fn renewal_due(&self, domains: &[String]) -> SystemTime {
        let mut wanted = domains.to_vec();
        wanted.sort();
        wanted.dedup();
        if self.name == PROVISIONAL || self.names != wanted {
            return SystemTime::UNIX_EPOCH;
        }
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - lifetime / 3
    }
}

impl Store {
    /// The store at `dir`, to read only.
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// The store at `dir`, its directories made.
    pub fn open(dir: &Path) -> Result<Store, String> {
        for sub in ["certificates", "webroot/.well-known/acme-challenge"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .map_err(|error| format!("create {}: {error}", path.display()))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn account_file(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// Writes `contents` to `path` through a temporary file and a rename, with `mode`.
    pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
        let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&temporary)?;
            file.write_all(contents)?;
            file.sync_all()?;
            fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))?;
            fs::rename(&temporary, path)
        })();
        written.map_err(|error| {
            let _ = fs::remove_file(&temporary);
            format!("write {}: {error}", path.display())
        })
    }

    /// The certificate `live` points at, if any.
    pub fn current(&self) -> Result<Option<Current>, String> {
        let live = self.dir.join("live");
        let target = match fs::read_link(&live) {
            Ok(target) => target,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("read {}: {error}", live.display())),
        };
        let name = target
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| format!("{} points at {}", live.display(), target.display()))?
            .to_owned();
        let chain_path = live.join("fullchain.pem");
        let chain = fs::read(&chain_path)
            .map_err(|error| format!("read {}: {error}", chain_path.display()))?;
        let (not_before, not_after, names) =
            leaf_facts(&chain).map_err(|error| format!("{}: {error}", chain_path.display()))?;
        Ok(Some(Current {
            name,
            not_before,
            not_after,
            names,
        }))
    }

    /// Puts a chain and its key under `certificates/<name>/` and points `live` at it; keeps
    /// the certificate it replaces (a reader may still be loading it) and removes older ones.
    pub fn install(&self, name: &str, chain_pem: &str, key_pem: &str) -> Result<(), String> {
        let dir = self.dir.join("certificates").join(name);
        fs::create_dir_all(&dir).map_err(|error| format!("create {}: {error}", dir.display()))?;
        Store::write_atomically(&dir.join("key.pem"), key_pem.as_bytes(), 0o600)?;
        Store::write_atomically(&dir.join("fullchain.pem"), chain_pem.as_bytes(), 0o644)?;
        let previous = fs::read_link(self.dir.join("live")).ok();
        let link = self.dir.join(format!("live.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&link);
        let target = Path::new("certificates").join(name);
        std::os::unix::fs::symlink(&target, &link)
            .and_then(|()| fs::rename(&link, self.dir.join("live")))
            .map_err(|error| {
                let _ = fs::remove_file(&link);
                format!(
                    "point {}/live at {}: {error}",
                    self.dir.display(),
                    target.display()
                )
            })?;
        let keep: Vec<PathBuf> = [Some(target), previous].into_iter().flatten().collect();
        let certificates = self.dir.join("certificates");
        let entries = fs::read_dir(&certificates)
            .map_err(|error| format!("list {}: {error}", certificates.display()))?;
        for entry in entries.flatten() {
            let relative = Path::new("certificates").join(entry.file_name());
            if !keep.contains(&relative) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// A self-signed certificate for `domains`, for the front to start with before the CA's
    /// first one: port 80 has to serve the CA's challenges, and the front needs a certificate
    /// to start at all.
    pub fn install_provisional(&self, domains: &[String]) -> Result<(), String> {
        let mut params = rcgen::CertificateParams::new(domains.to_vec())
            .map_err(|error| format!("provisional certificate for {domains:?}: {error}"))?;
        let now = SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + PROVISIONAL_LIFETIME).into();
        let key = rcgen::KeyPair::generate()
            .map_err(|error| format!("provisional certificate key: {error}"))?;
        let certificate = params
            .self_signed(&key)
            .map_err(|error| format!("provisional certificate: {error}"))?;
        self.install(PROVISIONAL, &certificate.pem(), &key.serialize_pem())
    }

    pub fn challenge_path(&self, token: &str) -> Result<PathBuf, String> {
        // RFC 8555 §8.3: the token is base64url, so it is one plain file name.
        if token.is_empty()
            || !token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        {
            return Err(format!(
                "the CA sent a challenge token that is not base64url: {token:?}"
            ));
        }
        Ok(self
            .dir
            .join("webroot/.well-known/acme-challenge")
            .join(token))
    }
}

/// The leaf's validity and DNS names, from a PEM chain.
pub fn leaf_facts(chain_pem: &[u8]) -> Result<(SystemTime, SystemTime, Vec<String>), String> {
    let text = std::str::from_utf8(chain_pem).map_err(|_| "not PEM text".to_owned())?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text.find(begin).ok_or("holds no certificate")?;
    let rest = &text[start..];
    let stop = rest.find(end).ok_or("holds a certificate with no end")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&rest.as_bytes()[..stop + end.len()])
        .map_err(|error| format!("not a PEM certificate: {error}"))?;
    let (_, leaf) = X509Certificate::from_der(&pem.contents)
        .map_err(|error| format!("not an X.509 certificate: {error}"))?;
    let time = |asn1: x509_parser::time::ASN1Time| {
        let seconds = u64::try_from(asn1.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    };
    let validity = leaf.validity();
    let mut names: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok((time(validity.not_before), time(validity.not_after), names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["www.example.com".to_owned(), "example.com".to_owned()]
    }

    #[test]
    fn the_provisional_certificate_is_live_and_due_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.current().unwrap(), None);
        store.install_provisional(&domains()).unwrap();
        let current = store.current().unwrap().unwrap();
        assert_eq!(current.name, PROVISIONAL);
        assert_eq!(current.names, ["example.com", "www.example.com"]);
        assert_eq!(current.renewal_due(&domains()), SystemTime::UNIX_EPOCH);
        let key = fs::metadata(dir.path().join("live/key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_certificate_is_due_when_a_third_of_its_lifetime_is_left_or_its_names_changed() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let current = Current {
            name: "1".to_owned(),
            not_before: now,
            not_after: now + Duration::from_secs(90),
            names: vec!["example.com".to_owned(), "www.example.com".to_owned()],
        };
        assert_eq!(
            current.renewal_due(&domains()),
            now + Duration::from_secs(60)
        );
        assert_eq!(
            current.renewal_due(&["example.com".to_owned()]),
            SystemTime::UNIX_EPOCH
        );
    }

    #[test]
    fn installing_keeps_the_live_certificate_and_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.install_provisional(&domains()).unwrap();
        let pair = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        for (index, name) in ["a.example", "b.example", "c.example"].iter().enumerate() {
            let (chain, key) = pair(name);
            store.install(&index.to_string(), &chain, &key).unwrap();
            assert_eq!(store.current().unwrap().unwrap().names, [name.to_string()]);
        }
        let mut left: Vec<String> = fs::read_dir(dir.path().join("certificates"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["1", "2"]);
    }

    #[test]
    fn a_token_is_one_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.challenge_path("abc-DEF_123").is_ok());
        for bad in ["", "../account.json", "a/b", "a.b"] {
            assert!(store.challenge_path(bad).is_err(), "{bad}");
        }
    }
}
