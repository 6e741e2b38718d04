//! `cargo xtask push REGISTRY/PREFIX`: the images, one OCI image index per
//! image over every platform built, into a registry over the OCI
//! distribution API.
//!
//! Order is what keeps a tag honest: blobs first (those the registry has are
//! skipped), then each platform's manifest by digest, then the index by
//! digest, and only then the content tag. A push that fails anywhere leaves
//! at most unreferenced blobs and manifests, never a tag on a half-pushed
//! image. `push_images` is the same without clap, for `swarm deploy`.

mod credentials;
mod session;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use xshell::Shell;

use crate::images::{self, MultiPlatformImage, Platform};
pub use credentials::Credentials;

/// Build the images and push them to a registry: blobs it lacks, each
/// platform's manifest and the index by digest, then the content tag.
#[derive(clap::Args)]
pub struct Push {
    /// Where to: the registry's host[:port], then the repository prefix
    /// (`registry.example.com/team`, `127.0.0.1:5000/webstack`); the images
    /// become PREFIX/webapp, PREFIX/db and PREFIX/proxy.
    #[arg(value_name = "REGISTRY/PREFIX")]
    pub target: String,
    /// The platforms to build and push, under one index per image.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Platform::ALL)]
    pub platform: Vec<Platform>,
    /// Log in as this user, the password read from stdin (needs
    /// --password-stdin). Without it, Docker's config.json (`docker login`,
    /// credential helpers) is used, or nothing.
    #[arg(long, short = 'u', requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password for --username from stdin (it never goes on the
    /// command line).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// A PEM file of CA certificates to trust besides the system's roots.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Talk plain HTTP to a registry that is not on loopback (loopback
    /// registries answering plain HTTP need no flag).
    #[arg(long)]
    pub insecure_http: bool,
}

impl Push {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let credentials = match self.username {
            Some(username) => Credentials::Basic {
                password: credentials::read_password_from_stdin()?,
                username,
            },
            None => Credentials::DockerConfig,
        };
        let target = PushTarget {
            ca_file: self.ca_file,
            credentials,
            insecure_http: self.insecure_http,
            ..PushTarget::parse(&self.target)?
        };
        let mut platforms = self.platform;
        platforms.sort();
        platforms.dedup();
        let images = images::multi_platform_images(sh, &platforms)?;
        let started = Instant::now();
        let pushed = push_images(sh, &target, &images)?;
        for image in &pushed {
            println!("{}", image.reference_by_digest);
        }
        eprintln!(
            "push: {} images to {} in {:.1} s",
            pushed.len(),
            target.registry,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Where and how to push.
#[derive(Clone, Debug)]
pub struct PushTarget {
    /// `host[:port]`, as in an image reference.
    pub registry: String,
    /// The repository path the image names go under; may be empty.
    pub prefix: String,
    pub credentials: Credentials,
    /// Extra CA certificates (PEM) to trust besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP to a registry that is not on loopback.
    pub insecure_http: bool,
}

impl PushTarget {
    /// `REGISTRY[/PREFIX]`, with Docker's credentials, the system's roots
    /// and HTTPS (plain HTTP only if a loopback registry answers so).
    pub fn parse(target: &str) -> anyhow::Result<PushTarget> {
        let (registry, prefix) = target.split_once('/').unwrap_or((target, ""));
        let prefix = prefix.trim_end_matches('/');
        if registry.is_empty() || registry.contains("://") || target.contains("://") {
            anyhow::bail!(
                "{target:?} is not REGISTRY/PREFIX: give the registry as host[:port] without a scheme, e.g. 127.0.0.1:5000/webstack"
            );
        }
        let valid_path = prefix.split('/').all(|component| {
            !component.is_empty()
                && component.bytes().all(|byte| {
                    byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte)
                })
        });
        if !prefix.is_empty() && !valid_path {
            anyhow::bail!(
                "{prefix:?} is not a repository prefix: lower-case letters, digits, `.`, `_`, `-` and `/` between non-empty parts"
            );
        }
        Ok(PushTarget {
            registry: registry.to_string(),
            prefix: prefix.to_string(),
            credentials: Credentials::DockerConfig,
            ca_file: None,
            insecure_http: false,
        })
    }

    /// `PREFIX/<name>`, the repository of one image.
    pub fn repository(&self, image_name: &str) -> String {
        if self.prefix.is_empty() {
            image_name.to_string()
        } else {
            format!("{}/{image_name}", self.prefix)
        }
    }
}

/// One image as pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    /// "webapp", "db" or "proxy".
    pub name: &'static str,
    /// `REGISTRY/PREFIX/<name>@sha256:<index digest>`: what to deploy.
    pub reference_by_digest: String,
    /// The tag pushed last: the index digest's first 12 hex digits.
    pub content_tag: String,
    pub blobs_sent: usize,
    pub blobs_skipped: usize,
    pub bytes_sent: u64,
}

/// Pushes `images` to `target` (blobs the registry lacks, manifests and
/// index by digest, then the content tag), printing one line per image.
pub fn push_images(
    sh: &Shell,
    target: &PushTarget,
    images: &[MultiPlatformImage],
) -> anyhow::Result<Vec<PushedImage>> {
    let auth = target
        .credentials
        .resolve(sh, &target.registry)
        .with_context(|| format!("find credentials for {}", target.registry))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime for the registry client")?;
    runtime.block_on(async {
        let first = images.first().map_or("webapp", |image| image.name);
        let repository = target.repository(first);
        let session = session::Session::connect(target, auth, &repository)
            .await
            .with_context(|| format!("push image {first} to {}/{repository}", target.registry))?;
        let mut pushed = Vec::new();
        for image in images {
            let started = Instant::now();
            let report = session.push_image(image).await?;
            eprintln!(
                "push: {} ({} blobs sent, {} already there, {} bytes sent, {:.1} s; tag {})",
                report.reference_by_digest,
                report.blobs_sent,
                report.blobs_skipped,
                report.bytes_sent,
                started.elapsed().as_secs_f64(),
                report.content_tag,
            );
            pushed.push(report);
        }
        Ok(pushed)
    })
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn target_splits_registry_and_prefix() {
        let target = PushTarget::parse("127.0.0.1:5000/team/webstack/").unwrap();
        assert_eq!(target.registry, "127.0.0.1:5000");
        assert_eq!(target.repository("db"), "team/webstack/db");
        let bare = PushTarget::parse("registry.example.com").unwrap();
        assert_eq!(bare.repository("db"), "db");
    }

    #[test]
    fn target_refuses_schemes_and_bad_prefixes() {
        for bad in [
            "https://registry.example.com/x",
            "registry.example.com/Team",
            "registry.example.com//x",
            "/x",
        ] {
            assert!(PushTarget::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
