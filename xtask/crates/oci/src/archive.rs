//! One image as blobs, the archive `docker load` reads, and that archive
//! read back; several platforms' images under one image index.
//!
//! The archive is the hybrid form Docker 25's `docker save` writes: an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) for the
//! containerd image store plus a docker-archive `manifest.json` for the classic
//! store (Engine 20.10 reads only that), both pointing at the same blobs.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::{
    rfc3339_utc, Blob, ContainerConfig, Descriptor, History, ImageConfig, Index, Manifest,
    Platform, RootFs, IN_TOTO_MEDIA_TYPE, OCI_CONFIG_MEDIA_TYPE, OCI_LAYER_GZIP_MEDIA_TYPE,
    OCI_MANIFEST_MEDIA_TYPE,
};
use crate::layer::{gzip, FileContents, Rootfs};

/// One platform image's attestation manifest and the blobs it names (see
/// `intoto`, which writes them).
#[derive(Clone, Debug)]
pub struct Attestation {
    pub manifest: Blob,
    pub config: Blob,
    /// The in-toto statements.
    pub layers: Vec<Blob>,
}

/// `vnd.docker.reference.type` of an attestation manifest.
const ATTESTATION_MANIFEST: &str = "attestation-manifest";
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// An image index's entry for `attestation`, the attestation manifest of
/// the image whose manifest digest is `image_manifest`, as BuildKit
/// writes it (platform unknown/unknown, so that no runtime picks it).
fn attestation_descriptor(attestation: &Attestation, image_manifest: &Digest) -> Descriptor {
    Descriptor {
        annotations: BTreeMap::from([
            (
                "vnd.docker.reference.digest".to_string(),
                image_manifest.to_string(),
            ),
            (REFERENCE_TYPE.to_string(), ATTESTATION_MANIFEST.to_string()),
        ]),
        platform: Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
        }),
        ..attestation.manifest.descriptor()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveManifestEntry {
    config: String,
    layers: Vec<String>,
    repo_tags: Vec<String>,
}

/// One image, ready to be written as an archive.
pub struct ImageBlobs {
    pub config: Vec<u8>,
    pub layer_gzip: Vec<u8>,
    pub layer_uncompressed_size: u64,
    pub manifest: Vec<u8>,
}

impl ImageBlobs {
    /// The image id.
    pub fn config_digest(&self) -> Digest {
        Digest::sha256(&self.config)
    }
    pub fn manifest_digest(&self) -> Digest {
        Digest::sha256(&self.manifest)
    }
    pub fn layer_digest(&self) -> Digest {
        Digest::sha256(&self.layer_gzip)
    }
}

/// The config JSON of a linux image with one layer whose uncompressed
/// digest is `diff_id`. `created` is an RFC 3339 time.
pub fn image_config_json(
    config: &ContainerConfig,
    diff_id: Digest,
    created: &str,
    architecture: &str,
) -> anyhow::Result<Vec<u8>> {
    let config = ImageConfig {
        architecture: architecture.to_string(),
        config: Some(config.clone()),
        created: Some(created.to_string()),
        history: vec![History {
            created: created.to_string(),
            created_by: "cargo xtask images".to_string(),
        }],
        os: "linux".to_string(),
        rootfs: RootFs::layers(vec![diff_id]),
    };
    Ok(config.to_blob()?.bytes)
}

/// The layer, config and manifest of a linux image of one layer, `rootfs`,
/// every time in it `source_date_epoch`.
pub fn image_blobs(
    rootfs: &Rootfs,
    config: &ContainerConfig,
    architecture: &str,
    source_date_epoch: u64,
) -> anyhow::Result<ImageBlobs> {
    let layer_tar = rootfs.to_tar(source_date_epoch)?;
    let layer_gzip = Blob {
        media_type: OCI_LAYER_GZIP_MEDIA_TYPE,
        bytes: gzip(&layer_tar)?,
    };
    let created = rfc3339_utc(source_date_epoch);
    let config = Blob {
        media_type: OCI_CONFIG_MEDIA_TYPE,
        bytes: image_config_json(config, Digest::sha256(&layer_tar), &created, architecture)?,
    };
    let manifest = Manifest::new(config.descriptor(), vec![layer_gzip.descriptor()]).to_blob()?;
    Ok(ImageBlobs {
        config: config.bytes,
        layer_gzip: layer_gzip.bytes,
        layer_uncompressed_size: layer_tar.len() as u64,
        manifest: manifest.bytes,
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
    let (config, layer, manifest) = (
        blobs.config_digest(),
        blobs.layer_digest(),
        blobs.manifest_digest(),
    );
    let index = Index::new(
        tags.iter()
            .map(|tag| Descriptor {
                annotations: BTreeMap::from([
                    (
                        "io.containerd.image.name".to_string(),
                        format!("docker.io/{repository}:{tag}"),
                    ),
                    ("org.opencontainers.image.ref.name".to_string(), tag.clone()),
                ]),
                digest: manifest.clone(),
                media_type: OCI_MANIFEST_MEDIA_TYPE.to_string(),
                platform: None,
                size: blobs.manifest.len() as u64,
            })
            .chain(attestation.map(|attestation| attestation_descriptor(attestation, &manifest)))
            .collect(),
    );
    // The classic store decompresses layers itself, so manifest.json can
    // point at the gzip blob the OCI manifest uses: one copy in the archive.
    let docker_manifest = vec![DockerArchiveManifestEntry {
        config: blob_path(&config),
        layers: vec![blob_path(&layer)],
        repo_tags: tags
            .iter()
            .map(|tag| format!("{repository}:{tag}"))
            .collect(),
    }];

    let mut archive = Rootfs::new();
    let mut add = |path: &str, bytes: Vec<u8>| {
        archive.add_file(path, FileContents::Bytes(bytes), 0o644);
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    add("index.json", index.to_blob()?.bytes);
    add(
        "manifest.json",
        serde_json::to_vec(&docker_manifest).context("serialise manifest.json")?,
    );
    for (digest, bytes) in [
        (&config, &blobs.config),
        (&layer, &blobs.layer_gzip),
        (&manifest, &blobs.manifest),
    ] {
        add(&blob_path(digest), bytes.clone());
    }
    for blob in attestation.iter().flat_map(|attestation| {
        attestation
            .layers
            .iter()
            .chain([&attestation.config, &attestation.manifest])
    }) {
        add(&blob_path(&blob.digest()), blob.bytes.clone());
    }
    archive.to_tar(source_date_epoch)
}

/// Where an image layout keeps the blob of `digest`.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// One platform's image as a registry stores it: the manifest and every
/// blob it names.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub platform: Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// Its SBOM and provenance, when the build attached them.
    pub attestation: Option<Attestation>,
}

/// One image for each platform it was built for, under one OCI image index:
/// what a registry serves to a host of either architecture.
#[derive(Clone, Debug)]
pub struct MultiPlatformImage {
    /// The image's name in its repository: "webapp", …
    pub name: &'static str,
    pub index: Blob,
    /// In the index's order.
    pub platforms: Vec<PlatformImage>,
}

/// The OCI image index over `platforms`, each manifest with its platform,
/// then their attestation manifests (as BuildKit orders them).
pub fn image_index(platforms: &[PlatformImage]) -> anyhow::Result<Blob> {
    let images = platforms.iter().map(|image| Descriptor {
        platform: Some(image.platform.clone()),
        ..image.manifest.descriptor()
    });
    let attestations = platforms.iter().filter_map(|image| {
        image
            .attestation
            .as_ref()
            .map(|attestation| attestation_descriptor(attestation, &image.manifest.digest()))
    });
    Index::new(images.chain(attestations).collect()).to_blob()
}

/// The files of a tar, by path.
fn files_of_tar(archive: impl std::io::Read) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().context("read the archive")? {
        let mut entry = entry.context("read the archive")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .with_context(|| format!("read {name} in the archive"))?;
        files.insert(name, bytes);
    }
    Ok(files)
}

/// The part of an image config that says its platform.
#[derive(Deserialize)]
struct ConfigPlatform {
    architecture: String,
    os: String,
}

/// The image an archive written by `archive_tar` holds, read back: its
/// manifest (the first in `index.json`; every entry names the same one),
/// config and layers, each checked against its digest.
pub fn read_archive(archive: impl std::io::Read) -> anyhow::Result<PlatformImage> {
    let files = files_of_tar(archive)?;
    let blob = |digest: &Digest, media_type: &'static str| -> anyhow::Result<Blob> {
        let bytes = files
            .get(&blob_path(digest))
            .with_context(|| format!("the archive has no blob {digest}"))?;
        if Digest::sha256(bytes) != *digest {
            anyhow::bail!("blob {digest} does not match its digest")
        }
        Ok(Blob {
            media_type,
            bytes: bytes.clone(),
        })
    };
    let manifest_of = |blob: &Blob| -> anyhow::Result<Manifest> {
        serde_json::from_slice(&blob.bytes).context("parse a manifest in the archive")
    };
    let index: Index = serde_json::from_slice(
        files
            .get("index.json")
            .context("the archive has no index.json")?,
    )
    .context("parse index.json")?;
    let first = index
        .manifests
        .first()
        .context("index.json lists no manifest")?;
    let manifest = blob(&first.digest, OCI_MANIFEST_MEDIA_TYPE)?;
    let parsed = manifest_of(&manifest)?;
    let config = blob(&parsed.config.digest, OCI_CONFIG_MEDIA_TYPE)?;
    let platform: ConfigPlatform =
        serde_json::from_slice(&config.bytes).context("parse the config")?;
    let layers = parsed
        .layers
        .iter()
        .map(|layer| blob(&layer.digest, OCI_LAYER_GZIP_MEDIA_TYPE))
        .collect::<anyhow::Result<_>>()?;
    let attestation = match index.manifests.iter().find(|entry| {
        entry.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION_MANIFEST)
    }) {
        None => None,
        Some(entry) => {
            let attestation_manifest = blob(&entry.digest, OCI_MANIFEST_MEDIA_TYPE)?;
            let parsed = manifest_of(&attestation_manifest)?;
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
        platform: Platform {
            architecture: platform.architecture,
            os: platform.os,
        },
        manifest,
        config,
        layers,
        attestation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Healthcheck;

    const SECOND_IN_NANOSECONDS: u64 = 1_000_000_000;

    fn config_with_labels_in_order(reverse: bool) -> ContainerConfig {
        let mut labels = vec![
            ("org.opencontainers.image.title", "db"),
            ("org.opencontainers.image.licenses", "MIT OR Apache-2.0"),
            ("com.example.zeta", "last"),
            ("com.example.alpha", "first"),
        ];
        let mut ports = vec!["6379/tcp", "16379/tcp", "80/tcp"];
        if reverse {
            labels.reverse();
            ports.reverse();
        }
        ContainerConfig {
            entrypoint: vec!["/usr/bin/redis-server".into()],
            env: vec!["PATH=/usr/bin".into()],
            exposed_ports: ports
                .into_iter()
                .map(|port| (port.to_string(), Default::default()))
                .collect(),
            healthcheck: Some(Healthcheck {
                interval: 10 * SECOND_IN_NANOSECONDS,
                retries: 3,
                start_period: 5 * SECOND_IN_NANOSECONDS,
                test: vec!["CMD".into(), "/usr/bin/true".into()],
                timeout: 3 * SECOND_IN_NANOSECONDS,
            }),
            labels: labels
                .into_iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            stop_signal: Some("SIGTERM".into()),
            user: "65532:65532".into(),
            working_dir: "/data".into(),
        }
    }

    #[test]
    fn config_json_is_stable_and_sorted_with_several_labels_and_ports() {
        let diff_id = || Digest::sha256(b"");
        let forward = image_config_json(
            &config_with_labels_in_order(false),
            diff_id(),
            "1970-01-01T00:00:00Z",
            "amd64",
        )
        .unwrap();
        let backward = image_config_json(
            &config_with_labels_in_order(true),
            diff_id(),
            "1970-01-01T00:00:00Z",
            "amd64",
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
                r#""os":"linux","rootfs":{"diff_ids":["#,
                r#""sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],"#,
                r#""type":"layers"}}"#
            )
        );
    }

    fn sample_archive(epoch: u64, attestation: Option<&Attestation>) -> (ImageBlobs, Vec<u8>) {
        let mut rootfs = Rootfs::new();
        rootfs.add_file(
            "usr/bin/tool",
            FileContents::Bytes(b"bytes".to_vec()),
            0o755,
        );
        let config = config_with_labels_in_order(false);
        let tags = vec!["local".to_string(), "0123456789ab".to_string()];
        let blobs = image_blobs(&rootfs, &config, "amd64", epoch).unwrap();
        let archive = archive_tar(&blobs, "webstack/db", &tags, attestation, epoch).unwrap();
        (blobs, archive)
    }

    #[test]
    fn archive_bytes_are_identical_for_identical_inputs() {
        let (_, first) = sample_archive(7, None);
        let (_, second) = sample_archive(7, None);
        let (_, later_epoch) = sample_archive(8, None);

        assert_eq!(first, second);
        assert_ne!(first, later_epoch, "SOURCE_DATE_EPOCH must reach the bytes");
    }

    #[test]
    fn an_archive_reads_back_as_the_blobs_it_was_written_from() {
        let statement = Blob {
            media_type: IN_TOTO_MEDIA_TYPE,
            bytes: b"{}".to_vec(),
        };
        let attestation = Attestation {
            config: Blob {
                media_type: OCI_CONFIG_MEDIA_TYPE,
                bytes: b"{\"x\":1}".to_vec(),
            },
            manifest: Blob {
                media_type: OCI_MANIFEST_MEDIA_TYPE,
                bytes: b"{\"y\":2}".to_vec(),
            },
            layers: vec![statement],
        };
        // The attestation manifest above is no manifest: reading stops there.
        let (_, archive) = sample_archive(7, Some(&attestation));
        assert!(read_archive(archive.as_slice()).is_err());

        let (blobs, archive) = sample_archive(7, None);
        let read = read_archive(archive.as_slice()).unwrap();
        assert_eq!(read.platform.to_string(), "linux/amd64");
        assert_eq!(read.manifest.bytes, blobs.manifest);
        assert_eq!(read.config.bytes, blobs.config);
        assert_eq!(read.layers.len(), 1);
        assert_eq!(read.layers[0].bytes, blobs.layer_gzip);
        assert!(read.attestation.is_none());
        let manifest: Manifest = serde_json::from_slice(&read.manifest.bytes).unwrap();
        assert_eq!(manifest.to_blob().unwrap().bytes, blobs.manifest);
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let (blobs, archive) = sample_archive(7, None);
        let mut files = files_of_tar(archive.as_slice()).unwrap();
        files.insert(blob_path(&blobs.layer_digest()), b"other".to_vec());
        let mut tampered = Rootfs::new();
        for (path, bytes) in files {
            tampered.add_file(&path, FileContents::Bytes(bytes), 0o644);
        }
        let error = read_archive(tampered.to_tar(7).unwrap().as_slice()).unwrap_err();
        assert!(
            format!("{error:#}").contains("does not match its digest"),
            "{error:#}"
        );
    }
}
