//! The OCI documents: descriptors, manifests, indexes and image configs, one
//! set of types that both writes and reads them.
//!
//! They are hand-written rather than oci-spec's, because their bytes are
//! the image digests: fields are declared in sorted order, maps are
//! `BTreeMap`s and nothing goes through `serde_json::Value`. oci-spec's
//! labels and exposed ports are `HashMap`s outside `cfg(test)` (digests
//! would change from run to run while unit tests pass), and a `Value` map's
//! order changes when any crate in the build enables serde_json's
//! `preserve_order`. Empty and absent optional fields are left out, as
//! Docker and BuildKit write them.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// An in-toto statement, an attestation manifest's "layer".
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// A blob and its media type; its digest is the sha256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn digest(&self) -> Digest {
        Digest::sha256(&self.bytes)
    }
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    /// The descriptor that names this blob, without annotations or platform.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            annotations: BTreeMap::new(),
            digest: self.digest(),
            media_type: self.media_type.to_string(),
            platform: None,
            size: self.size(),
        }
    }
}

/// `os/architecture` of an image, as an index entry and a config name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

impl Platform {
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.os, self.architecture)
    }
}

/// What a manifest or an index says of a blob it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub digest: Digest,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub size: u64,
}

/// An image manifest: a config and layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub media_type: String,
    pub schema_version: u32,
}

impl Manifest {
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            config,
            layers,
            media_type: OCI_MANIFEST_MEDIA_TYPE.to_string(),
            schema_version: 2,
        }
    }

    pub fn to_blob(&self) -> anyhow::Result<Blob> {
        Ok(Blob {
            media_type: OCI_MANIFEST_MEDIA_TYPE,
            bytes: to_json(self, "a manifest")?,
        })
    }
}

/// An image index: manifests, each of a platform, and what refers to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub manifests: Vec<Descriptor>,
    pub media_type: String,
    pub schema_version: u32,
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            manifests,
            media_type: OCI_INDEX_MEDIA_TYPE.to_string(),
            schema_version: 2,
        }
    }

    pub fn to_blob(&self) -> anyhow::Result<Blob> {
        Ok(Blob {
            media_type: OCI_INDEX_MEDIA_TYPE,
            bytes: to_json(self, "an image index")?,
        })
    }
}

/// An image config. `config` is what the image runs; `None` writes `{}`,
/// as in an attestation manifest's config, which runs nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    #[serde(default, serialize_with = "empty_object_for_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    pub os: String,
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// A config of no platform that runs nothing, whose layers are `diff_ids`:
    /// an attestation manifest's, as BuildKit writes it.
    pub fn without_platform(diff_ids: Vec<Digest>) -> ImageConfig {
        ImageConfig {
            architecture: "unknown".into(),
            config: None,
            created: None,
            history: Vec::new(),
            os: "unknown".into(),
            rootfs: RootFs::layers(diff_ids),
        }
    }

    pub fn to_blob(&self) -> anyhow::Result<Blob> {
        Ok(Blob {
            media_type: OCI_CONFIG_MEDIA_TYPE,
            bytes: to_json(self, "an image config")?,
        })
    }
}

fn empty_object_for_none<S: serde::Serializer>(
    config: &Option<ContainerConfig>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match config {
        Some(config) => config.serialize(serializer),
        None => EmptyObject {}.serialize(serializer),
    }
}

/// What an image runs and how: the parts of Docker's config the images use,
/// in Docker's spelling (PascalCase), fields in sorted order, each written
/// even when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    pub user: String,
    pub working_dir: String,
}

/// `{}`: the value of each exposed port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// Docker's healthcheck extension of the image config; durations in
/// nanoseconds as Docker stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    pub interval: u64,
    pub retries: u32,
    pub start_period: u64,
    /// `["CMD", program, arguments…]`.
    pub test: Vec<String>,
    pub timeout: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created: String,
    pub created_by: String,
}

/// The config's list of layers, by the digests of their uncompressed tars.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    pub diff_ids: Vec<Digest>,
    #[serde(rename = "type")]
    pub kind: String,
}

impl RootFs {
    pub fn layers(diff_ids: Vec<Digest>) -> RootFs {
        RootFs {
            diff_ids,
            kind: "layers".to_string(),
        }
    }
}

fn to_json(value: &impl Serialize, what: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    serde_json::to_vec(value).with_context(|| format!("serialise {what}"))
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), whole seconds.
pub fn rfc3339_utc(seconds: u64) -> String {
    let instant = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(instant).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_a_container_config_writes_an_empty_object() {
        let config = ImageConfig::without_platform(vec![Digest::sha256(b"")]);
        let blob = config.to_blob().unwrap();
        assert_eq!(
            String::from_utf8(blob.bytes.clone()).unwrap(),
            concat!(
                r#"{"architecture":"unknown","config":{},"os":"unknown","rootfs":{"diff_ids":"#,
                r#"["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],"#,
                r#""type":"layers"}}"#
            )
        );
        let read: ImageConfig = serde_json::from_slice(&blob.bytes).unwrap();
        assert_eq!(read.config, Some(ContainerConfig::default()));
        assert_eq!(read.rootfs, config.rootfs);
    }

    #[test]
    fn descriptors_leave_out_empty_annotations_and_no_platform_and_read_back() {
        let blob = Blob {
            media_type: OCI_CONFIG_MEDIA_TYPE,
            bytes: b"{}".to_vec(),
        };
        let plain = blob.descriptor();
        let text = serde_json::to_string(&plain).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"digest":"{}","mediaType":"{OCI_CONFIG_MEDIA_TYPE}","size":2}}"#,
                blob.digest()
            )
        );
        assert_eq!(serde_json::from_str::<Descriptor>(&text).unwrap(), plain);
        let with_platform = Descriptor {
            annotations: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            platform: Some(Platform::linux("arm64")),
            ..plain
        };
        let text = serde_json::to_string(&with_platform).unwrap();
        assert!(
            text.starts_with(r#"{"annotations":{"a":"1","b":"2"},"digest""#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""platform":{"architecture":"arm64","os":"linux"},"size":2}"#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<Descriptor>(&text).unwrap(),
            with_platform
        );
        assert_eq!(Platform::linux("arm64").to_string(), "linux/arm64");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_764_095_553), "2025-11-25T18:32:33Z");
    }
}
