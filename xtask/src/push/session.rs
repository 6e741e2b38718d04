//! One connection to a registry through oci-client, and pushing one
//! multi-platform image over it in the order that keeps tags honest.
//!
//! Transport: HTTPS with the system's roots plus `--ca-file`'s. A loopback
//! registry that answers in plain HTTP is then spoken to in plain HTTP, as
//! Docker does for 127.0.0.0/8 (never when the HTTPS failure was a
//! certificate the client does not trust); any other host only with
//! `--insecure-http`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Once;

use anyhow::Context;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::{PushTarget, PushedImage};
use crate::images::{Blob, Digest, MultiPlatformImage};

/// The digest of no bytes: a blob question any registry can answer.
const EMPTY_BLOB_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A proxy that is never used (every host is exempt from it): only there
/// so that reqwest ignores the proxy variables for a loopback registry.
const UNUSED_PROXY: &str = "http://127.0.0.1:9";

pub struct Session<'a> {
    target: &'a PushTarget,
    client: Client,
    auth: RegistryAuth,
}

/// rustls needs a process-wide crypto provider: ring, which ureq already
/// builds (the default, aws-lc, would add a C build).
fn install_ring_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means a provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl<'a> Session<'a> {
    /// A client that has reached the registry's `/v2/` for `repository`
    /// (which also fetches a bearer token where the registry wants one).
    pub async fn connect(
        target: &'a PushTarget,
        auth: RegistryAuth,
        repository: &str,
    ) -> anyhow::Result<Session<'a>> {
        install_ring_provider();
        let extra_roots = match &target.ca_file {
            Some(path) => vec![Certificate {
                encoding: CertificateEncoding::Pem,
                data: std::fs::read(path)
                    .with_context(|| format!("read the CA file {}", path.display()))?,
            }],
            None => Vec::new(),
        };
        // reqwest follows the proxy variables unless the client names a
        // proxy; naming one that every host is exempt from (`*` for names,
        // the loopback networks for addresses) switches that off, so a
        // loopback registry is reached directly, as the fetch crate (http.rs)
        // reaches a loopback mirror.
        let (http_proxy, no_proxy) = if is_loopback(&target.registry) {
            (
                Some(UNUSED_PROXY.to_string()),
                Some("127.0.0.0/8,::1,localhost,*".to_string()),
            )
        } else {
            (None, None)
        };
        let client = |protocol| {
            Client::try_from(ClientConfig {
                protocol,
                http_proxy: http_proxy.clone(),
                no_proxy: no_proxy.clone(),
                extra_root_certificates: extra_roots.clone(),
                // Uploads one at a time: a failure then names one blob, and
                // the registry never holds two half uploads of one image.
                max_concurrent_upload: 1,
                ..ClientConfig::default()
            })
            .context("create the registry client (is --ca-file a PEM certificate?)")
        };
        let probe = Reference::with_tag(
            target.registry.clone(),
            repository.to_string(),
            "latest".to_string(),
        );
        let registry = &target.registry;
        if target.insecure_http {
            let session = Session {
                target,
                client: client(ClientProtocol::Http)?,
                auth,
            };
            session.login(&probe).await.with_context(|| {
                format!("reach the registry http://{registry}/v2/ (--insecure-http)")
            })?;
            return Ok(session);
        }
        let https = Session {
            target,
            client: client(ClientProtocol::Https)?,
            auth: auth.clone(),
        };
        let https_error = match https.login(&probe).await {
            Ok(()) => return Ok(https),
            Err(error) => error,
        };
        if is_certificate_error(&https_error) {
            return Err(anyhow::Error::new(https_error)).with_context(|| {
                format!(
                    "TLS: the certificate of https://{registry}/ is not trusted; give its CA with --ca-file PATH"
                )
            });
        }
        let transport_failed = matches!(https_error, OciDistributionError::RequestError(_));
        if transport_failed && is_loopback(registry) {
            let http = Session {
                target,
                client: client(ClientProtocol::Http)?,
                auth,
            };
            if http.answers_as_a_registry(&probe).await {
                eprintln!(
                    "push: {registry} is on loopback and answers plain HTTP: pushing over HTTP"
                );
                return Ok(http);
            }
        }
        let how = if is_loopback(registry) {
            "nor over plain HTTP, tried as it is on loopback"
        } else {
            "plain HTTP needs a loopback registry or --insecure-http"
        };
        Err(anyhow::Error::new(https_error))
            .with_context(|| format!("reach the registry https://{registry}/v2/ ({how})"))
    }

    /// Whether the registry takes this client's requests: `/v2/`, then a
    /// blob question answered (refused credentials count: they are the
    /// registry's answer). A TLS server asked in plain HTTP answers 400.
    async fn answers_as_a_registry(&self, reference: &Reference) -> bool {
        if self.login(reference).await.is_err() {
            return false;
        }
        match self.client.blob_exists(reference, EMPTY_BLOB_DIGEST).await {
            Ok(_) => true,
            Err(OciDistributionError::RequestError(error)) => {
                matches!(error.status().map(|code| code.as_u16()), Some(401 | 403))
            }
            Err(_) => false,
        }
    }

    async fn login(&self, reference: &Reference) -> Result<(), OciDistributionError> {
        self.client
            .auth(reference, &self.auth, RegistryOperation::Push)
            .await
            .map(|_| ())
    }

    fn reference(&self, repository: &str, digest_or_tag: ManifestName<'_>) -> Reference {
        let registry = self.target.registry.clone();
        match digest_or_tag {
            ManifestName::Digest(digest) => {
                Reference::with_digest(registry, repository.to_string(), digest.to_string())
            }
            ManifestName::Tag(tag) => Reference::with_tag(registry, repository.to_string(), tag),
        }
    }

    /// Blobs the registry lacks, each platform's manifest by digest, the
    /// index by digest, then the content tag.
    pub async fn push_image(&self, image: &MultiPlatformImage) -> anyhow::Result<PushedImage> {
        let registry = &self.target.registry;
        let repository = self.target.repository(image.name);
        let failed = |what: String| {
            format!(
                "push image {} to {registry}/{repository}: {what}",
                image.name
            )
        };
        let index_digest = image.index.digest();
        let by_index = self.reference(&repository, ManifestName::Digest(&index_digest));
        self.login(&by_index)
            .await
            .map_err(explain)
            .with_context(|| failed("log in for pushing".to_string()))?;

        let mut report = PushedImage {
            name: image.name,
            reference_by_digest: format!("{registry}/{repository}@{index_digest}"),
            content_tag: content_tag(&index_digest),
            blobs_sent: 0,
            blobs_skipped: 0,
            bytes_sent: 0,
        };
        let mut seen = BTreeSet::new();
        // Each platform's layers and config, then its attestation's
        // statements and config.
        let blobs = image.platforms.iter().flat_map(|platform| {
            platform.layers.iter().chain([&platform.config]).chain(
                platform
                    .attestation
                    .iter()
                    .flat_map(|attestation| attestation.layers.iter().chain([&attestation.config])),
            )
        });
        for blob in blobs {
            let digest = blob.digest();
            if !seen.insert(digest.clone()) {
                continue;
            }
            let exists = self
                .client
                .blob_exists(&by_index, &digest.to_string())
                .await
                .map_err(explain)
                .with_context(|| failed(format!("ask whether blob {digest} is there")))?;
            if exists {
                report.blobs_skipped += 1;
                continue;
            }
            self.client
                .push_blob(&by_index, blob.bytes.clone(), &digest.to_string())
                .await
                .map_err(explain)
                .with_context(|| failed(format!("upload blob {digest} ({} bytes)", blob.size())))?;
            report.blobs_sent += 1;
            report.bytes_sent += blob.size();
        }
        for platform in &image.platforms {
            let digest = platform.manifest.digest();
            self.push_manifest(
                &repository,
                ManifestName::Digest(&digest),
                &platform.manifest,
            )
            .await
            .with_context(|| failed(format!("put the {} manifest {digest}", platform.platform)))?;
            if let Some(attestation) = &platform.attestation {
                let digest = attestation.manifest.digest();
                self.push_manifest(
                    &repository,
                    ManifestName::Digest(&digest),
                    &attestation.manifest,
                )
                .await
                .with_context(|| {
                    failed(format!(
                        "put the attestation manifest {digest} of the {} image",
                        platform.platform
                    ))
                })?;
            }
        }
        self.push_manifest(
            &repository,
            ManifestName::Digest(&index_digest),
            &image.index,
        )
        .await
        .with_context(|| failed(format!("put the image index {index_digest}")))?;
        self.push_manifest(
            &repository,
            ManifestName::Tag(report.content_tag.clone()),
            &image.index,
        )
        .await
        .with_context(|| {
            failed(format!(
                "tag the index {index_digest} as {}",
                report.content_tag
            ))
        })?;
        Ok(report)
    }

    async fn push_manifest(
        &self,
        repository: &str,
        digest_or_tag: ManifestName<'_>,
        manifest: &Blob,
    ) -> anyhow::Result<()> {
        let reference = self.reference(repository, digest_or_tag);
        let content_type = manifest
            .media_type
            .parse()
            .with_context(|| format!("{:?} is no header value", manifest.media_type))?;
        self.client
            .push_manifest_raw(&reference, manifest.bytes.clone(), content_type)
            .await
            .map_err(explain)?;
        Ok(())
    }
}

/// Where a manifest goes: under its digest, or under a tag.
enum ManifestName<'a> {
    Digest(&'a Digest),
    Tag(String),
}

/// The tag pushed last: the index digest's first 12 hex digits, so it
/// names exactly one multi-platform image.
pub fn content_tag(index_digest: &Digest) -> String {
    index_digest.short_hex().to_string()
}

/// The client's error, with what the registry answered spelled out and a
/// hint for refused credentials.
fn explain(error: OciDistributionError) -> anyhow::Error {
    let status = match &error {
        OciDistributionError::RequestError(request) => request.status().map(|code| code.as_u16()),
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::UnauthorizedError { .. } => Some(401),
        _ => None,
    };
    let hint = match status {
        Some(401) => Some("the registry refused the credentials (401 Unauthorized): check --username and the password, or `docker login`"),
        Some(403) => Some("the registry refused access (403 Forbidden): the user may not push to this repository"),
        _ if is_certificate_error(&error) => Some("TLS: the registry's certificate is not trusted; give its CA with --ca-file PATH"),
        _ => None,
    };
    let error = anyhow::Error::new(error);
    match hint {
        Some(hint) => error.context(hint),
        None => error,
    }
}

/// Whether rustls refused the server's certificate, somewhere in the chain.
fn is_certificate_error(error: &OciDistributionError) -> bool {
    matches!(
        rustls_error(error),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate | rustls::AlertDescription::UnknownCA
                )
        )
    )
}

/// The rustls error in `error`'s chain. An `io::Error` wrapping another
/// error hides it from `source()` (it returns the inner error's source),
/// so each one is opened with `get_ref`.
fn rustls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let wrapped = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| rustls_error(inner as &(dyn std::error::Error + 'static)));
    wrapped.or_else(|| error.source().and_then(rustls_error))
}

/// 127.0.0.0/8, ::1 and localhost, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(host, port)| {
            if port.bytes().all(|byte| byte.is_ascii_digit()) && !host.contains(':') {
                host
            } else {
                registry
            }
        })
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_127_8_ipv6_one_and_localhost() {
        for loopback in [
            "127.0.0.1:5000",
            "127.3.2.1",
            "localhost:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(loopback), "{loopback}");
        }
        for remote in [
            "registry.example.com",
            "10.0.0.1:5000",
            "128.0.0.1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn content_tag_is_twelve_hex_digits_of_the_index() {
        let digest = Digest::from_hex(&"0123456789abcdef".repeat(4)).unwrap();
        assert_eq!(content_tag(&digest), "0123456789ab");
    }
}
