//! Image config, manifests and the archive `docker load` reads.
//!
//! Every JSON document goes through structs whose fields are declared in
//! sorted order and `BTreeMap`s, never a `HashMap` (oci-spec's labels and
//! exposed ports are `HashMap`s outside `cfg(test)`, which makes digests
//! change from run to run while unit tests pass) and never `serde_json::Value`
//! (another crate enabling serde_json's `preserve_order` would change it).
//!
//! The archive is the hybrid form Docker 25's `docker save` writes: an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) for the
//! containerd image store plus a docker-archive `manifest.json` for the classic
//! store (Engine 20.10 reads only that), both pointing at the same blobs.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use super::layer::{sha256_hex, Rootfs};
use super::platform::Platform;

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// An in-toto statement, an attestation manifest's "layer".
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// One platform image's attestation manifest and the blobs it names (see
/// `attestation`, which writes them).
#[derive(Clone, Debug)]
pub struct Attestation {
    pub manifest: Blob,
    pub config: Blob,
    /// The in-toto statements.
    pub layers: Vec<Blob>,
}

/// What an image runs and how; the parts of the Docker/OCI config we use.
#[derive(Clone, Debug, Default)]
pub struct RuntimeSettings {
    pub entrypoint: Vec<String>,
    pub environment: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub healthcheck_command: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub user: String,
    pub working_dir: String,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    config: ContainerConfig<'a>,
    created: &'a str,
    history: Vec<History<'a>>,
    os: &'static str,
    rootfs: ConfigRootfs,
}

/// Docker's spelling (PascalCase), fields in sorted order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig<'a> {
    entrypoint: &'a [String],
    env: &'a [String],
    exposed_ports: BTreeMap<&'a str, EmptyObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Healthcheck<'a>>,
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
    user: &'a str,
    working_dir: &'a str,
}

#[derive(Serialize)]
struct EmptyObject {}

/// Docker's healthcheck extension of the image config; durations in
/// nanoseconds as Docker stores them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Healthcheck<'a> {
    interval: u64,
    retries: u32,
    start_period: u64,
    test: Vec<&'a str>,
    timeout: u64,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'static str,
}

#[derive(Serialize)]
struct ConfigRootfs {
    diff_ids: Vec<String>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
    digest: String,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<IndexPlatform>,
    size: u64,
}

/// An image index's entry for `attestation`, the attestation manifest of
/// the image whose manifest digest is `image_manifest_digest`, as BuildKit
/// writes it (platform unknown/unknown, so that no runtime picks it).
fn attestation_descriptor<'a>(
    attestation: &Attestation,
    image_manifest_digest: String,
) -> Descriptor<'a> {
    Descriptor {
        annotations: Some(BTreeMap::from([
            ("vnd.docker.reference.digest", image_manifest_digest),
            (
                "vnd.docker.reference.type",
                ATTESTATION_MANIFEST.to_string(),
            ),
        ])),
        digest: attestation.manifest.digest(),
        media_type: OCI_MANIFEST_MEDIA_TYPE,
        platform: Some(IndexPlatform {
            architecture: "unknown",
            os: "unknown",
        }),
        size: attestation.manifest.size(),
    }
}

/// `vnd.docker.reference.type` of an attestation manifest.
const ATTESTATION_MANIFEST: &str = "attestation-manifest";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
    media_type: &'static str,
    schema_version: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    manifests: Vec<Descriptor<'a>>,
    media_type: &'static str,
    schema_version: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveManifestEntry {
    config: String,
    layers: Vec<String>,
    repo_tags: Vec<String>,
}

const SECOND_IN_NANOSECONDS: u64 = 1_000_000_000;

/// The config JSON for an image with one layer whose uncompressed digest is
/// `diff_id_hex`. `created` is an RFC 3339 time derived from SOURCE_DATE_EPOCH.
pub fn image_config_json(
    settings: &RuntimeSettings,
    diff_id_hex: &str,
    created: &str,
    platform: Platform,
) -> anyhow::Result<Vec<u8>> {
    let config = ImageConfig {
        architecture: platform.oci_architecture(),
        config: ContainerConfig {
            entrypoint: &settings.entrypoint,
            env: &settings.environment,
            exposed_ports: settings
                .exposed_ports
                .iter()
                .map(|port| (port.as_str(), EmptyObject {}))
                .collect(),
            healthcheck: settings
                .healthcheck_command
                .as_ref()
                .map(|command| Healthcheck {
                    interval: 10 * SECOND_IN_NANOSECONDS,
                    retries: 3,
                    start_period: 5 * SECOND_IN_NANOSECONDS,
                    test: std::iter::once("CMD")
                        .chain(command.iter().map(String::as_str))
                        .collect(),
                    timeout: 3 * SECOND_IN_NANOSECONDS,
                }),
            labels: &settings.labels,
            stop_signal: settings.stop_signal.as_deref(),
            user: &settings.user,
            working_dir: &settings.working_dir,
        },
        created,
        history: vec![History {
            created,
            created_by: "cargo xtask images",
        }],
        os: "linux",
        rootfs: ConfigRootfs {
            diff_ids: vec![format!("sha256:{diff_id_hex}")],
            kind: "layers",
        },
    };
    serde_json::to_vec(&config).context("serialise image config")
}

/// One image, ready to be written as an archive.
pub struct ImageBlobs {
    pub config: Vec<u8>,
    pub layer_gzip: Vec<u8>,
    pub layer_uncompressed_size: u64,
    pub manifest: Vec<u8>,
}

impl ImageBlobs {
    pub fn config_digest_hex(&self) -> String {
        sha256_hex(&self.config)
    }
    pub fn manifest_digest_hex(&self) -> String {
        sha256_hex(&self.manifest)
    }
    pub fn layer_digest_hex(&self) -> String {
        sha256_hex(&self.layer_gzip)
    }
}

/// Builds the layer, config and manifest for a rootfs.
pub fn image_blobs(
    rootfs: &Rootfs,
    settings: &RuntimeSettings,
    source_date_epoch: u64,
    platform: Platform,
) -> anyhow::Result<ImageBlobs> {
    let layer_tar = rootfs.to_tar(source_date_epoch)?;
    let layer_gzip = super::layer::gzip(&layer_tar)?;
    let created = rfc3339_utc(source_date_epoch);
    let config = image_config_json(settings, &sha256_hex(&layer_tar), &created, platform)?;
    let manifest = Manifest {
        config: Descriptor {
            annotations: None,
            digest: format!("sha256:{}", sha256_hex(&config)),
            media_type: OCI_CONFIG_MEDIA_TYPE,
            platform: None,
            size: config.len() as u64,
        },
        layers: vec![Descriptor {
            annotations: None,
            digest: format!("sha256:{}", sha256_hex(&layer_gzip)),
            media_type: OCI_LAYER_GZIP_MEDIA_TYPE,
            platform: None,
            size: layer_gzip.len() as u64,
        }],
        media_type: OCI_MANIFEST_MEDIA_TYPE,
        schema_version: 2,
    };
    let manifest = serde_json::to_vec(&manifest).context("serialise image manifest")?;
    Ok(ImageBlobs {
        config,
        layer_gzip,
        layer_uncompressed_size: layer_tar.len() as u64,
        manifest,
    })
}

/// The hybrid docker-archive + OCI-layout tar for `docker load`. `repository`
/// is e.g. `webstack/webapp`; every tag in `tags` is loaded.
pub fn archive_tar(
    blobs: &ImageBlobs,
    repository: &str,
    tags: &[String],
    attestation: Option<&Attestation>,
    source_date_epoch: u64,
) -> anyhow::Result<Vec<u8>> {
    let config_hex = blobs.config_digest_hex();
    let layer_hex = blobs.layer_digest_hex();
    let manifest_hex = blobs.manifest_digest_hex();

    let index = Index {
        manifests: tags
            .iter()
            .map(|tag| Descriptor {
                annotations: Some(BTreeMap::from([
                    (
                        "io.containerd.image.name",
                        format!("docker.io/{repository}:{tag}"),
                    ),
                    ("org.opencontainers.image.ref.name", tag.clone()),
                ])),
                digest: format!("sha256:{manifest_hex}"),
                media_type: OCI_MANIFEST_MEDIA_TYPE,
                platform: None,
                size: blobs.manifest.len() as u64,
            })
            .chain(attestation.map(|attestation| {
                attestation_descriptor(attestation, format!("sha256:{manifest_hex}"))
            }))
            .collect(),
        media_type: OCI_INDEX_MEDIA_TYPE,
        schema_version: 2,
    };
    // The classic store decompresses layers itself, so manifest.json can
    // point at the gzip blob the OCI manifest uses: one copy in the archive.
    let docker_manifest = vec![DockerArchiveManifestEntry {
        config: format!("blobs/sha256/{config_hex}"),
        layers: vec![format!("blobs/sha256/{layer_hex}")],
        repo_tags: tags
            .iter()
            .map(|tag| format!("{repository}:{tag}"))
            .collect(),
    }];

    let mut archive = Rootfs::new();
    use super::layer::FileContents::Bytes;
    archive.add_file(
        "oci-layout",
        Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        0o644,
    );
    archive.add_file(
        "index.json",
        Bytes(serde_json::to_vec(&index).context("serialise index.json")?),
        0o644,
    );
    archive.add_file(
        "manifest.json",
        Bytes(serde_json::to_vec(&docker_manifest).context("serialise manifest.json")?),
        0o644,
    );
    for (hex, bytes) in [
        (&config_hex, &blobs.config),
        (&layer_hex, &blobs.layer_gzip),
        (&manifest_hex, &blobs.manifest),
    ] {
        archive.add_file(&format!("blobs/sha256/{hex}"), Bytes(bytes.clone()), 0o644);
    }
    for blob in attestation.iter().flat_map(|attestation| {
        attestation
            .layers
            .iter()
            .chain([&attestation.config, &attestation.manifest])
    }) {
        archive.add_file(
            &format!("blobs/sha256/{}", sha256_hex(&blob.bytes)),
            Bytes(blob.bytes.clone()),
            0o644,
        );
    }
    archive.to_tar(source_date_epoch)
}

/// A blob and its media type; its digest is the sha256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.bytes))
    }
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// One platform's image as a registry stores it: the manifest and every
/// blob it names.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub platform: Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// Its SBOM and provenance (`attestation`), when the build attached them.
    pub attestation: Option<Attestation>,
}

/// One image for each platform it was built for, under one OCI image index:
/// what `cargo xtask push` sends, and what a registry serves to a host of
/// either architecture.
#[derive(Clone, Debug)]
pub struct MultiPlatformImage {
    /// "webapp", "db" or "proxy".
    pub name: &'static str,
    pub index: Blob,
    /// In the index's order (`Platform::ALL`'s).
    pub platforms: Vec<PlatformImage>,
}

#[derive(Serialize)]
struct IndexPlatform {
    architecture: &'static str,
    os: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlatformIndex<'a> {
    manifests: Vec<Descriptor<'a>>,
    media_type: &'static str,
    schema_version: u32,
}

/// The OCI image index over `platforms`, each manifest with its platform,
/// then their attestation manifests (as BuildKit orders them).
pub fn image_index(platforms: &[PlatformImage]) -> anyhow::Result<Blob> {
    let images = platforms.iter().map(|image| Descriptor {
        annotations: None,
        digest: image.manifest.digest(),
        media_type: OCI_MANIFEST_MEDIA_TYPE,
        platform: Some(IndexPlatform {
            architecture: image.platform.oci_architecture(),
            os: "linux",
        }),
        size: image.manifest.size(),
    });
    let attestations = platforms.iter().filter_map(|image| {
        image
            .attestation
            .as_ref()
            .map(|attestation| attestation_descriptor(attestation, image.manifest.digest()))
    });
    let index = PlatformIndex {
        manifests: images.chain(attestations).collect(),
        media_type: OCI_INDEX_MEDIA_TYPE,
        schema_version: 2,
    };
    Ok(Blob {
        media_type: OCI_INDEX_MEDIA_TYPE,
        bytes: serde_json::to_vec(&index).context("serialise the image index")?,
    })
}

#[derive(serde::Deserialize)]
struct ReadDescriptor {
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct ReadIndex {
    manifests: Vec<ReadDescriptor>,
}

#[derive(serde::Deserialize)]
struct ReadManifest {
    config: ReadDescriptor,
    layers: Vec<ReadDescriptor>,
}

#[derive(serde::Deserialize)]
struct ReadConfig {
    architecture: String,
}

/// The image an archive written by `archive_tar` holds, read back: its
/// manifest (the first in `index.json`; every entry names the same one),
/// config and layers, each checked against its digest.
pub fn read_archive(path: &std::path::Path) -> anyhow::Result<PlatformImage> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(file);
    for entry in archive
        .entries()
        .with_context(|| format!("read {}", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("read {}", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .with_context(|| format!("read {name} in {}", path.display()))?;
        files.insert(name, bytes);
    }
    let blob = |digest: &str, media_type: &'static str| -> anyhow::Result<Blob> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let bytes = files
            .get(&format!("blobs/sha256/{hex}"))
            .with_context(|| format!("{} has no blob {digest}", path.display()))?;
        if sha256_hex(bytes) != hex {
            anyhow::bail!(
                "{}: blob {digest} does not match its digest",
                path.display()
            )
        }
        Ok(Blob {
            media_type,
            bytes: bytes.clone(),
        })
    };
    let index: ReadIndex = serde_json::from_slice(
        files
            .get("index.json")
            .with_context(|| format!("{} has no index.json", path.display()))?,
    )
    .with_context(|| format!("parse index.json in {}", path.display()))?;
    let first = index
        .manifests
        .first()
        .with_context(|| format!("{}: index.json lists no manifest", path.display()))?;
    let manifest = blob(&first.digest, OCI_MANIFEST_MEDIA_TYPE)?;
    let parsed: ReadManifest = serde_json::from_slice(&manifest.bytes)
        .with_context(|| format!("parse the manifest in {}", path.display()))?;
    let config = blob(&parsed.config.digest, OCI_CONFIG_MEDIA_TYPE)?;
    let architecture = serde_json::from_slice::<ReadConfig>(&config.bytes)
        .with_context(|| format!("parse the config in {}", path.display()))?
        .architecture;
    let platform = Platform::ALL
        .into_iter()
        .find(|platform| platform.oci_architecture() == architecture)
        .with_context(|| format!("{}: unknown architecture {architecture:?}", path.display()))?;
    let layers = parsed
        .layers
        .iter()
        .map(|layer| blob(&layer.digest, OCI_LAYER_GZIP_MEDIA_TYPE))
        .collect::<anyhow::Result<_>>()?;
    let attestation = match index.manifests.iter().find(|entry| {
        entry
            .annotations
            .get("vnd.docker.reference.type")
            .map(String::as_str)
            == Some(ATTESTATION_MANIFEST)
    }) {
        None => None,
        Some(entry) => {
            let attestation_manifest = blob(&entry.digest, OCI_MANIFEST_MEDIA_TYPE)?;
            let parsed: ReadManifest = serde_json::from_slice(&attestation_manifest.bytes)
                .with_context(|| format!("parse the attestation manifest in {}", path.display()))?;
            Some(Attestation {
                config: blob(&parsed.config.digest, OCI_CONFIG_MEDIA_TYPE)?,
                layers: parsed
                    .layers
                    .iter()
                    .map(|layer| blob(&layer.digest, IN_TOTO_MEDIA_TYPE))
                    .collect::<anyhow::Result<_>>()?,
                manifest: attestation_manifest,
            })
        }
    };
    Ok(PlatformImage {
        platform,
        manifest,
        config,
        layers,
        attestation,
    })
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), whole seconds.
pub fn rfc3339_utc(seconds: u64) -> String {
    let instant = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(instant).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with_labels_in_order(reverse: bool) -> RuntimeSettings {
        let mut labels = vec![
            ("org.opencontainers.image.title", "db"),
            ("org.opencontainers.image.licenses", "MIT OR Apache-2.0"),
            ("com.example.zeta", "last"),
            ("com.example.alpha", "first"),
        ];
        let mut ports = vec![
            "6379/tcp".to_string(),
            "16379/tcp".to_string(),
            "80/tcp".to_string(),
        ];
        if reverse {
            labels.reverse();
            ports.reverse();
        }
        let mut label_map = BTreeMap::new();
        for (key, value) in labels {
            label_map.insert(key.to_string(), value.to_string());
        }
        RuntimeSettings {
            entrypoint: vec!["/usr/bin/redis-server".into()],
            environment: vec!["PATH=/usr/bin".into()],
            exposed_ports: ports,
            healthcheck_command: Some(vec!["/usr/bin/true".into()]),
            labels: label_map,
            stop_signal: Some("SIGTERM".into()),
            user: "65532:65532".into(),
            working_dir: "/data".into(),
        }
    }

    #[test]
    fn config_json_is_stable_and_sorted_with_several_labels_and_ports() {
        let forward = image_config_json(
            &settings_with_labels_in_order(false),
            "ab",
            "1970-01-01T00:00:00Z",
            Platform::Amd64,
        )
        .unwrap();
        let backward = image_config_json(
            &settings_with_labels_in_order(true),
            "ab",
            "1970-01-01T00:00:00Z",
            Platform::Amd64,
        )
        .unwrap();

        assert_eq!(forward, backward);
        assert_eq!(
            String::from_utf8(forward).unwrap(),
            concat!(
                r#"{"architecture":"amd64","config":{"Entrypoint":["/usr/bin/redis-server"],"#,
                r#""Env":["PATH=/usr/bin"],"ExposedPorts":{"16379/tcp":{},"6379/tcp":{},"80/tcp":{}},"#,
                r#""Healthcheck":{"Interval":10000000000,"Retries":3,"StartPeriod":5000000000,"#,
                r#""Test":["CMD","/usr/bin/true"],"Timeout":3000000000},"#,
                r#""Labels":{"com.example.alpha":"first","com.example.zeta":"last","#,
                r#""org.opencontainers.image.licenses":"MIT OR Apache-2.0","#,
                r#""org.opencontainers.image.title":"db"},"StopSignal":"SIGTERM","#,
                r#""User":"65532:65532","WorkingDir":"/data"},"created":"1970-01-01T00:00:00Z","#,
                r#""history":[{"created":"1970-01-01T00:00:00Z","created_by":"cargo xtask images"}],"#,
                r#""os":"linux","rootfs":{"diff_ids":["sha256:ab"],"type":"layers"}}"#
            )
        );
    }

    #[test]
    fn archive_bytes_are_identical_for_identical_inputs() {
        let mut rootfs = Rootfs::new();
        rootfs.add_file(
            "usr/bin/tool",
            super::super::layer::FileContents::Bytes(b"bytes".to_vec()),
            0o755,
        );
        let settings = settings_with_labels_in_order(false);
        let tags = vec!["local".to_string(), "0123456789ab".to_string()];

        let first = archive_tar(
            &image_blobs(&rootfs, &settings, 7, Platform::Amd64).unwrap(),
            "webstack/db",
            &tags,
            None,
            7,
        )
        .unwrap();
        let second = archive_tar(
            &image_blobs(&rootfs, &settings, 7, Platform::Amd64).unwrap(),
            "webstack/db",
            &tags,
            None,
            7,
        )
        .unwrap();
        let later_epoch = archive_tar(
            &image_blobs(&rootfs, &settings, 8, Platform::Amd64).unwrap(),
            "webstack/db",
            &tags,
            None,
            8,
        )
        .unwrap();

        assert_eq!(first, second);
        assert_ne!(first, later_epoch, "SOURCE_DATE_EPOCH must reach the bytes");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_764_095_553), "2025-11-25T18:32:33Z");
    }
}
