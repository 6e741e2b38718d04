//! A certificate chain and key the user brings (`--tls files`), checked before any container
//! sees them: both parse, the key is the certificate's, each certificate of the chain is
//! signed by the next, and the server's certificate is valid now and for the names given.
//! With rustls and its ring provider, which xtask already has for registries.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// What was checked, for the one line `up` prints.
#[derive(Debug)]
pub struct Checked {
    certificates: usize,
    names: Vec<String>,
}

impl fmt::Display for Checked {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "a chain of {} certificate(s) and its key, valid now",
            self.certificates
        )?;
        if !self.names.is_empty() {
            write!(formatter, " for {}", self.names.join(", "))?;
        }
        Ok(())
    }
}

/// Checks `chain_pem` (the server's certificate first) against `key_pem` and `names` (each
/// must be in the certificate); errors name the file at fault.
pub fn check_chain_and_key(
    chain_pem: &str,
    key_pem: &str,
    names: &[String],
    chain_path: &Path,
    key_path: &Path,
) -> anyhow::Result<Checked> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|error| {
            anyhow::anyhow!(
                "{}: not a PEM certificate chain: {error}",
                chain_path.display()
            )
        })?;
    let Some(server) = chain.first() else {
        bail!(
            "{}: no certificate in it (PEM, `-----BEGIN CERTIFICATE-----`)",
            chain_path.display()
        );
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|error| {
        anyhow::anyhow!("{}: not a PEM private key: {error}", key_path.display())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| {
            format!(
                "{}: a private key of a kind TLS cannot use",
                key_path.display()
            )
        })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing_key)
        .keys_match()
        .map_err(|error| {
            anyhow::anyhow!(
                "{} is not the key of the first certificate in {}: {error}",
                key_path.display(),
                chain_path.display()
            )
        })?;

    // The chain must hold together up to its last certificate, taken as the anchor (the CA's
    // own certificate, or the last intermediate a CA sends): the server's certificate is then
    // checked for its dates, its use (server authentication) and its names.
    let anchor = chain.last().unwrap_or(server);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(anchor.clone()).with_context(|| {
        format!(
            "{}: its last certificate cannot anchor the chain",
            chain_path.display()
        )
    })?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("set up the certificate check")?;
    let intermediates = &chain[1..];
    let now = UnixTime::now();
    let mut checked_names = Vec::new();
    let first_name = names
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".to_owned());
    for name in std::iter::once(&first_name).chain(names.iter().skip(1)) {
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            anyhow::anyhow!("--tls-name {name:?} is neither a DNS name nor an IP address")
        })?;
        match verifier.verify_server_cert(server, intermediates, &server_name, &[], now) {
            Ok(_) => checked_names.push(name.clone()),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if names.is_empty() => {}
            Err(error) => bail!("{}: {error}", chain_path.display()),
        }
    }
    Ok(Checked {
        certificates: chain.len(),
        names: checked_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    fn issued(names: &[&str], days: (i32, i32)) -> (String, String, String) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params.not_before = rcgen::date_time_ymd(2026 + days.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026 + days.1, 1, 1);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &ca).unwrap();
        (
            format!("{}{}", certificate.pem(), ca.pem()),
            key.serialize_pem(),
            ca.pem(),
        )
    }

    fn check(chain: &str, key: &str, names: &[&str]) -> anyhow::Result<Checked> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        check_chain_and_key(
            chain,
            key,
            &names,
            Path::new("chain.pem"),
            Path::new("key.pem"),
        )
    }

    #[test]
    fn a_chain_with_its_key_for_its_names_is_taken() {
        let (chain, key, _) = issued(&["example.org", "www.example.org"], (-1, 5));
        let checked = check(&chain, &key, &["example.org", "www.example.org"]).unwrap();
        assert_eq!(
            checked.to_string(),
            "a chain of 2 certificate(s) and its key, valid now for example.org, www.example.org"
        );
        // Without names, any name the certificate holds will do.
        assert!(check(&chain, &key, &[]).is_ok());
    }

    #[test]
    fn a_wrong_key_an_expired_certificate_or_another_name_is_refused_saying_so() {
        let (chain, key, _) = issued(&["example.org"], (-1, 5));
        let (_, other_key, _) = issued(&["example.org"], (-1, 5));
        let wrong = check(&chain, &other_key, &[]).unwrap_err().to_string();
        assert!(
            wrong.contains("key.pem is not the key of the first certificate in chain.pem"),
            "{wrong}"
        );

        let (expired, expired_key, _) = issued(&["example.org"], (-3, -1));
        let error = check(&expired, &expired_key, &[]).unwrap_err().to_string();
        assert!(
            error.starts_with("chain.pem: ") && error.contains("expired"),
            "{error}"
        );

        let error = check(&chain, &key, &["example.com"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("chain.pem") && error.contains("name"),
            "{error}"
        );

        let error = check("not pem", &key, &[]).unwrap_err().to_string();
        assert!(error.contains("chain.pem: no certificate"), "{error}");
        let error = check(&chain, "not a key", &[]).unwrap_err().to_string();
        assert!(error.contains("key.pem: not a PEM private key"), "{error}");
    }
}
