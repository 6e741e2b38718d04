//! A certificate authority of the user's own, as mkcert makes one: created once per user,
//! kept outside the clone (`$XDG_DATA_HOME/webstack/ca/`, else `~/.local/share/webstack/ca/`,
//! the key readable by its owner alone), never in an image; it signs the front's certificate
//! for localhost, 127.0.0.1, ::1 and the names asked for.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// `WEBSTACK_CA_DIR`: where the local CA lives, instead of the default.
pub const CA_DIR_VARIABLE: &str = "WEBSTACK_CA_DIR";
const CA_CERTIFICATE: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
/// The CA's name, as it was made: the issuer of every certificate it signs must name it.
const CA_NAME: &str = "ca-name.txt";
/// A CA for ten years; the certificates it signs for 397 days, the longest browsers accept.
const CA_DAYS: u64 = 3650;
const LEAF_DAYS: u64 = 397;
const DAY: Duration = Duration::from_secs(86_400);

/// The names every certificate of the local CA holds.
const ALWAYS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

pub struct LocalCa {
    dir: PathBuf,
    name: String,
    key: KeyPair,
}

/// A certificate the local CA signed: its chain (the certificate, then the CA's), its key, and
/// the names it holds.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    pub names: Vec<String>,
}

impl LocalCa {
    fn dir() -> anyhow::Result<PathBuf> {
        if let Some(dir) = std::env::var_os(CA_DIR_VARIABLE) {
            return Ok(PathBuf::from(dir));
        }
        let data = match std::env::var_os("XDG_DATA_HOME") {
            Some(data) if !data.is_empty() => PathBuf::from(data),
            _ => PathBuf::from(std::env::var_os("HOME").context(
                "neither XDG_DATA_HOME nor HOME is set: set WEBSTACK_CA_DIR to where the local CA may live",
            )?)
            .join(".local")
            .join("share"),
        };
        Ok(data.join("webstack").join("ca"))
    }

    /// The user's CA, made on first use.
    pub fn open_or_create() -> anyhow::Result<LocalCa> {
        Self::open_or_create_in(&Self::dir()?)
    }

    pub fn open_or_create_in(dir: &Path) -> anyhow::Result<LocalCa> {
        let key_path = dir.join(CA_KEY);
        if key_path.exists() {
            let key_pem = fs::read_to_string(&key_path)
                .with_context(|| format!("read the local CA's key {}", key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem).with_context(|| {
                format!(
                    "{} is not a private key in PEM: move the directory away to make a new CA",
                    key_path.display()
                )
            })?;
            let name_path = dir.join(CA_NAME);
            let name = fs::read_to_string(&name_path)
                .with_context(|| format!("read {}", name_path.display()))?
                .trim()
                .to_owned();
            return Ok(LocalCa {
                dir: dir.to_owned(),
                name,
                key,
            });
        }
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restrict {}", dir.display()))?;
        let user = std::env::var("USER").unwrap_or_else(|_| "user".to_owned());
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = format!("webstack local CA {user}@{}", host.trim());
        let key = KeyPair::generate().context("generate the local CA's key")?;
        let mut params = ca_params(&name)?;
        set_validity(&mut params, CA_DAYS)?;
        let certificate = CertifiedIssuer::self_signed(params, &key)
            .context("sign the local CA's certificate")?;
        xtask_fetch::write_atomically(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        xtask_fetch::write_atomically(&dir.join(CA_NAME), format!("{name}\n").as_bytes(), 0o644)?;
        xtask_fetch::write_atomically(
            &dir.join(CA_CERTIFICATE),
            certificate.pem().as_bytes(),
            0o644,
        )?;
        eprintln!(
            "tls: made a local CA in {} (its key never leaves that directory)",
            dir.display()
        );
        Ok(LocalCa {
            dir: dir.to_owned(),
            name,
            key,
        })
    }

    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CA_CERTIFICATE)
    }

    /// A certificate for localhost, 127.0.0.1, ::1 and `extra` names, for [`LEAF_DAYS`].
    pub fn issue(&self, extra: &[String]) -> anyhow::Result<Issued> {
        let mut names: Vec<String> = ALWAYS.iter().map(|name| (*name).to_owned()).collect();
        for name in extra {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                anyhow::bail!("--tls-name {name:?} is neither a DNS name nor an IP address");
            }
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for name in &names {
            let san = match name.parse::<IpAddr>() {
                Ok(address) => SanType::IpAddress(address),
                Err(_) => SanType::DnsName(name.as_str().try_into().with_context(|| {
                    format!("--tls-name {name:?} is neither a DNS name nor an IP address")
                })?),
            };
            params.subject_alt_names.push(san);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, LEAF_DAYS)?;
        let key = KeyPair::generate().context("generate the front's key")?;
        let issuer = Issuer::new(ca_params(&self.name)?, &self.key);
        let certificate = params
            .signed_by(&key, &issuer)
            .context("sign the front's certificate with the local CA")?;
        let ca_pem = fs::read_to_string(self.certificate_path())
            .with_context(|| format!("read {}", self.certificate_path().display()))?;
        Ok(Issued {
            chain_pem: format!("{}{ca_pem}", certificate.pem()),
            key_pem: key.serialize_pem(),
            names,
        })
    }

    /// How to make a client trust the CA, in one line.
    pub fn how_to_trust(certificate: &Path) -> String {
        let path = certificate.display();
        format!(
            "`curl --cacert {path}`; for the whole system: Debian and Ubuntu `sudo cp {path} /usr/local/share/ca-certificates/webstack-local-ca.crt && sudo update-ca-certificates`, Fedora `sudo trust anchor {path}`, Arch `sudo trust anchor {path}`, NixOS `security.pki.certificateFiles = [ {path} ];`; browsers with their own store (Firefox) import it in their settings"
        )
    }
}

/// What the CA's certificate says of it, rebuilt from its name: an issuer needs only its name,
/// its key and its key usages.
fn ca_params(name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "webstack");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Valid from yesterday (clocks differ) for `days` days.
fn set_validity(params: &mut CertificateParams, days: u64) -> anyhow::Result<()> {
    let days_since_epoch = jiff::Timestamp::now().as_second().div_euclid(86_400);
    let today = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().days(days_since_epoch))
        .context("today's date")?;
    let month = u8::try_from(today.month()).context("a month")?;
    let day = u8::try_from(today.day()).context("a day")?;
    let midnight = rcgen::date_time_ymd(i32::from(today.year()), month, day);
    params.not_before = midnight - DAY;
    params.not_after = midnight + DAY * u32::try_from(days).context("days")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_signs_certificates_that_check_out() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = LocalCa::open_or_create_in(&ca_dir).unwrap();
        let first = fs::read_to_string(ca.certificate_path()).unwrap();
        assert_eq!(
            fs::metadata(ca_dir.join(CA_KEY))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let again = LocalCa::open_or_create_in(&ca_dir).unwrap();
        assert_eq!(fs::read_to_string(again.certificate_path()).unwrap(), first);

        let issued = again.issue(&["webstack.test".to_owned()]).unwrap();
        assert_eq!(
            issued.names,
            ["localhost", "127.0.0.1", "::1", "webstack.test"]
        );
        let checked = super::super::check_chain_and_key(
            &issued.chain_pem,
            &issued.key_pem,
            &["webstack.test".to_owned(), "localhost".to_owned()],
            Path::new("chain.pem"),
            Path::new("key.pem"),
        )
        .unwrap();
        assert!(checked.to_string().contains("webstack.test"), "{checked}");
        assert!(again.issue(&["not a name".to_owned()]).is_err());
    }
}
