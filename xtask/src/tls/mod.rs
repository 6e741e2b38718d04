//! HTTPS at the front: where its certificate comes from (`--tls self-signed|files`), checked,
//! and written where the TLS deploy files expect it (`.secrets/tls/`, git-ignored), from where
//! Compose and Swarm hand it to the proxy as two secrets. Never into an image.
//!
//! - `local_ca.rs`: a certificate authority of the user's own, made once, kept outside the
//!   clone, that signs a certificate for localhost and the names asked for (as mkcert does).
//! - `files.rs`: a chain and key the user has, checked before they are used: they parse, the
//!   key is the certificate's, the chain holds together, and it is valid now for its names.

mod files;
mod local_ca;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use files::check_chain_and_key;
pub use local_ca::LocalCa;

/// Where the front's certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsSource {
    /// Plain HTTP, no certificate (the default).
    Off,
    /// A certificate for localhost and `--tls-name`s, signed by a local CA of your own.
    SelfSigned,
    /// Your certificate chain and key (`--tls-certificate`, `--tls-key`).
    Files,
    /// A certificate for the `--tls-name`s from an ACME CA (Let's Encrypt's staging CA unless
    /// `--acme-directory` says otherwise), got and renewed by the stack's `acme` service.
    Acme,
}

/// The TLS flags `up` and `swarm deploy` share.
#[derive(clap::Args, Clone, Debug)]
pub struct TlsArgs {
    /// HTTPS at the proxy, and where its certificate comes from.
    #[arg(long, value_enum, default_value_t = TlsSource::Off)]
    pub tls: TlsSource,
    /// With `--tls self-signed`: more names (DNS names or IP addresses) for the certificate,
    /// besides localhost, 127.0.0.1 and ::1.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub names: Vec<String>,
    /// With `--tls files`: the certificate chain, PEM, the server's certificate first.
    #[arg(long, value_name = "FILE", required_if_eq("tls", "files"))]
    pub tls_certificate: Option<PathBuf>,
    /// With `--tls files`: its private key, PEM.
    #[arg(long, value_name = "FILE", required_if_eq("tls", "files"))]
    pub tls_key: Option<PathBuf>,
    /// With `--tls acme`: the CA: `staging` (Let's Encrypt's staging CA, whose certificates
    /// browsers do not trust), `production` (Let's Encrypt), or any CA's directory URL.
    #[arg(long, value_name = "CA", default_value = "staging")]
    pub acme_directory: String,
    /// With `--tls acme`: the account's contact, for the CA's expiry notices.
    #[arg(long, value_name = "ADDRESS")]
    pub acme_email: Option<String>,
    /// With `--tls acme`: the root (PEM) to trust for the CA's own HTTPS, when it is not one of
    /// Mozilla's (a private or test CA).
    #[arg(long, value_name = "FILE")]
    pub acme_ca_file: Option<PathBuf>,
    /// With `--tls acme`: seconds to wait after a failed attempt, doubled after each further
    /// one (to six hours at most).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub acme_retry_secs: u64,
    /// With `--tls acme`: the longest wait between two attempts.
    #[arg(long, value_name = "SECONDS", default_value_t = 21_600)]
    pub acme_retry_max_secs: u64,
}

/// A local CA and a certificate it signed for localhost, both in a temporary directory of one
/// run (the end-to-end HTTPS pass, the bench's HTTPS rows): never the user's CA, and gone when
/// this is dropped.
pub struct ScratchTls {
    dir: tempfile::TempDir,
    ca_certificate: PathBuf,
}

impl ScratchTls {
    pub fn new() -> anyhow::Result<ScratchTls> {
        let dir = tempfile::tempdir().context("a directory for the run's CA and certificate")?;
        let ca = LocalCa::open_or_create_in(&dir.path().join("ca"))?;
        let ca_certificate = ca.certificate_path();
        let tls = TlsArgs {
            tls: TlsSource::SelfSigned,
            ..TlsArgs::plain()
        };
        tls.prepare_in(&dir.path().join("tls"), || Ok(ca))?;
        Ok(ScratchTls {
            dir,
            ca_certificate,
        })
    }

    /// The CA's certificate (PEM), the one a client must trust.
    pub fn ca_certificate(&self) -> &Path {
        &self.ca_certificate
    }

    /// The certificate and key, as the TLS deploy files read them (`WEBSTACK_TLS_DIR`).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }
}

/// The directory the TLS deploy files take the certificate and key from: `.secrets/tls/`,
/// or `WEBSTACK_TLS_DIR`'s.
pub fn tls_dir() -> PathBuf {
    match std::env::var_os(crate::stack::TLS_DIR_VARIABLE) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate::project_root().join(crate::stack::DEFAULT_TLS_DIR_FROM_ROOT),
    }
}

impl TlsArgs {
    /// Plain HTTP, for the commands that start a stack of their own.
    pub fn plain() -> TlsArgs {
        TlsArgs {
            tls: TlsSource::Off,
            names: Vec::new(),
            tls_certificate: None,
            tls_key: None,
            acme_directory: "staging".to_owned(),
            acme_email: None,
            acme_ca_file: None,
            acme_retry_secs: 300,
            acme_retry_max_secs: 21_600,
        }
    }

    /// Makes or checks the certificate and key for this source and writes them to
    /// [`tls_dir`]; `None` for plain HTTP.
    pub fn prepare(&self) -> anyhow::Result<Option<PathBuf>> {
        self.prepare_in(&tls_dir(), LocalCa::open_or_create)
    }

    /// [`TlsArgs::prepare`] into `dir`, with the local CA `ca` gives.
    pub fn prepare_in(
        &self,
        dir: &Path,
        ca: impl FnOnce() -> anyhow::Result<LocalCa>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let (chain, key) = match self.tls {
            TlsSource::Off => return Ok(None),
            TlsSource::Acme => {
                self.write_acme_settings(dir)?;
                return Ok(Some(dir.to_owned()));
            }
            TlsSource::SelfSigned => {
                let ca = ca()?;
                let issued = ca.issue(&self.names)?;
                eprintln!(
                    "tls: a certificate for {} signed by the local CA {}; to trust it: {}",
                    issued.names.join(", "),
                    ca.certificate_path().display(),
                    LocalCa::how_to_trust(&ca.certificate_path())
                );
                (issued.chain_pem, issued.key_pem)
            }
            TlsSource::Files => {
                let (certificate, key) = match (&self.tls_certificate, &self.tls_key) {
                    (Some(certificate), Some(key)) => (certificate, key),
                    _ => {
                        anyhow::bail!("--tls files needs --tls-certificate FILE and --tls-key FILE")
                    }
                };
                let chain = read(certificate)?;
                let key_pem = read(key)?;
                let checked = check_chain_and_key(&chain, &key_pem, &self.names, certificate, key)?;
                eprintln!("tls: {checked}");
                (chain, key_pem)
            }
        };
        create_private_dir(dir)?;
        for (secret, file) in crate::stack::front_tls().secret_files {
            let text = if secret == crate::stack::TLS_KEY_SECRET {
                &key
            } else {
                &chain
            };
            write_for_containers(&dir.join(file), text)?;
        }
        Ok(Some(dir.to_owned()))
    }
}

impl TlsArgs {
    /// `--tls acme`: the `acme` service's settings (`acme.env`) and the CA root it trusts
    /// (`acme-ca.pem`, blank for Mozilla's roots), checked here so a mistake shows before
    /// anything starts.
    fn write_acme_settings(&self, dir: &Path) -> anyhow::Result<()> {
        if self.names.is_empty() {
            anyhow::bail!(
                "--tls acme needs the domain names to get a certificate for: --tls-name example.com (each name's DNS must point at this machine, and port 80 must reach it)"
            );
        }
        for name in &self.names {
            let fully_qualified = name.contains('.')
                && name.parse::<std::net::IpAddr>().is_err()
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
            if !fully_qualified {
                anyhow::bail!(
                    "--tls-name {name:?}: an ACME CA certifies only public domain names (not IP addresses, wildcards or localhost); use --tls self-signed for those"
                );
            }
        }
        let directory = match self.acme_directory.as_str() {
            "staging" | "production" => self.acme_directory.clone(),
            url if url.starts_with("https://") => url.to_owned(),
            other => anyhow::bail!(
                "--acme-directory {other:?} is neither staging, production nor an https:// URL"
            ),
        };
        if !(1..=86_400).contains(&self.acme_retry_secs)
            || !(self.acme_retry_secs..=86_400).contains(&self.acme_retry_max_secs)
        {
            anyhow::bail!(
                "--acme-retry-secs and --acme-retry-max-secs must be from 1 to 86400, the first no more than the second"
            );
        }
        let ca = match &self.acme_ca_file {
            // A blank line: Mozilla's roots (a Swarm secret cannot be empty).
            None => "\n".to_owned(),
            Some(path) => {
                let text = read(path)?;
                if !text.contains("-----BEGIN CERTIFICATE-----") {
                    anyhow::bail!("{}: not a PEM certificate", path.display());
                }
                text
            }
        };
        let mut settings = format!(
            "# Written by `cargo xtask up --tls acme`; the acme service reads it (docs/https.md).\nACME_DOMAINS={}\nACME_DIRECTORY={directory}\nACME_RETRY_SECS={}\nACME_RETRY_MAX_SECS={}\n",
            self.names.join(","),
            self.acme_retry_secs,
            self.acme_retry_max_secs
        );
        if let Some(email) = &self.acme_email {
            if email.contains(char::is_whitespace) || !email.contains('@') {
                anyhow::bail!("--acme-email {email:?} is not an email address");
            }
            settings.push_str(&format!("ACME_EMAIL={email}\n"));
        }
        create_private_dir(dir)?;
        let acme = crate::stack::front_acme();
        write_for_containers(&dir.join(acme.env_file), &settings)?;
        for (_, file) in acme.secret_files {
            write_for_containers(&dir.join(file), &ca)?;
        }
        eprintln!(
            "tls: the acme service will get a certificate for {} from {directory}",
            self.names.join(", ")
        );
        Ok(())
    }
}

/// Only the owner may look inside on the host; the containers get the files through bind
/// mounts, which do not need the directory's mode.
/// Hex digits of the sha256 of the files that make a version.
pub const VERSION_DIGITS: usize = 12;

/// The version of the secrets' `files` (secret, file name) in `dir`, as [`TlsArgs::prepare`]
/// writes them: a short sha256 of them all. Compose gets the certificate and key's as a label
/// of the proxy, so that a new pair replaces it; Swarm names the secrets by it, since a Swarm
/// secret cannot change. A missing file fails, the error ending with `how` to write it.
pub fn files_version(
    dir: &Path,
    files: &[(&'static str, &'static str)],
    how: &str,
) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (_, file) in files {
        let path = dir.join(file);
        let contents =
            fs::read(&path).with_context(|| format!("read {}: {how}", path.display()))?;
        // Each file's length first, so that no two sets of files hash alike.
        hash.update((contents.len() as u64).to_be_bytes());
        hash.update(&contents);
    }
    Ok(hex::encode(hash.finalize())[..VERSION_DIGITS].to_owned())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict {}", dir.display()))
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Writes a secret file the way the Redis password is written: readable by the containers'
/// non-root user.
fn write_for_containers(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::secrets::write_secret(path, text)?;
    crate::secrets::make_readable_by_containers(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_ca_signs_a_certificate_in_its_own_directory_and_goes_with_it() {
        let scratch = ScratchTls::new().unwrap();
        let chain = fs::read_to_string(scratch.tls_dir().join("certificate.pem")).unwrap();
        let key = fs::read_to_string(scratch.tls_dir().join("key.pem")).unwrap();
        let ca = fs::read_to_string(scratch.ca_certificate()).unwrap();

        assert!(chain.ends_with(&ca), "the chain ends with the scratch CA");
        check_chain_and_key(
            &chain,
            &key,
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            Path::new("certificate.pem"),
            Path::new("key.pem"),
        )
        .unwrap();
        let dir = scratch.tls_dir();
        drop(scratch);
        assert!(!dir.exists());
    }
}
