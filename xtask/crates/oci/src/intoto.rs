//! In-toto statements about an image, attached as BuildKit attaches them:
//! an attestation manifest per platform image whose layers are the
//! statements (uncompressed), each annotated with its predicate type, and
//! whose config names no platform. `archive` puts it in the image index
//! (`vnd.docker.reference.type: attestation-manifest`, platform
//! unknown/unknown).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::archive::Attestation;
use crate::digest::Digest;
use crate::image::{Blob, Descriptor, ImageConfig, Manifest, IN_TOTO_MEDIA_TYPE};

/// The predicate type of an SPDX document.
pub const SPDX_PREDICATE_TYPE: &str = "https://spdx.dev/Document";
/// The predicate type of SLSA provenance, version 1.
pub const SLSA_PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// What a statement says of its subject: the predicate's type and the
/// predicate, JSON as it was written.
pub struct Predicate<'a> {
    pub predicate_type: &'static str,
    pub predicate: &'a RawValue,
}

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    kind: &'static str,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: &'static str,
    predicate: &'a RawValue,
}

#[derive(Serialize)]
struct Subject {
    name: String,
    digest: BTreeMap<&'static str, String>,
}

/// The attestation of the image whose manifest digest is `manifest`, named
/// `subject_name` (a purl): one in-toto statement per predicate, in order.
pub fn attestation(
    subject_name: &str,
    manifest: &Digest,
    predicates: &[Predicate],
) -> anyhow::Result<Attestation> {
    let layers = predicates
        .iter()
        .map(|predicate| statement(subject_name, manifest, predicate))
        .collect::<anyhow::Result<Vec<Blob>>>()?;
    let config = ImageConfig::without_platform(layers.iter().map(Blob::digest).collect())
        .to_blob()
        .context("the attestation config")?;
    let manifest = Manifest::new(
        config.descriptor(),
        layers
            .iter()
            .zip(predicates)
            .map(|(layer, predicate)| Descriptor {
                annotations: BTreeMap::from([(
                    PREDICATE_TYPE_ANNOTATION.to_string(),
                    predicate.predicate_type.to_string(),
                )]),
                ..layer.descriptor()
            })
            .collect(),
    )
    .to_blob()
    .context("the attestation manifest")?;
    Ok(Attestation {
        manifest,
        config,
        layers,
    })
}

fn statement(subject_name: &str, manifest: &Digest, predicate: &Predicate) -> anyhow::Result<Blob> {
    let statement = Statement {
        kind: "https://in-toto.io/Statement/v1",
        subject: vec![Subject {
            name: subject_name.to_string(),
            digest: BTreeMap::from([("sha256", manifest.hex().to_string())]),
        }],
        predicate_type: predicate.predicate_type,
        predicate: predicate.predicate,
    };
    Ok(Blob {
        media_type: IN_TOTO_MEDIA_TYPE,
        bytes: serde_json::to_vec(&statement).context("serialise an in-toto statement")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_layers_annotated_with_their_predicate_type() {
        let sbom = RawValue::from_string(r#"{"spdxVersion":"SPDX-2.3"}"#.into()).unwrap();
        let provenance = RawValue::from_string(r#"{"buildDefinition":{}}"#.into()).unwrap();
        let manifest = Digest::sha256(b"manifest");
        let attestation = attestation(
            "pkg:docker/webstack/db?platform=linux%2Famd64",
            &manifest,
            &[
                Predicate {
                    predicate_type: SPDX_PREDICATE_TYPE,
                    predicate: &sbom,
                },
                Predicate {
                    predicate_type: SLSA_PREDICATE_TYPE,
                    predicate: &provenance,
                },
            ],
        )
        .unwrap();

        assert_eq!(
            String::from_utf8(attestation.layers[0].bytes.clone()).unwrap(),
            format!(
                concat!(
                    r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"#,
                    r#""name":"pkg:docker/webstack/db?platform=linux%2Famd64","#,
                    r#""digest":{{"sha256":"{}"}}}}],"#,
                    r#""predicateType":"https://spdx.dev/Document","#,
                    r#""predicate":{{"spdxVersion":"SPDX-2.3"}}}}"#
                ),
                manifest.hex()
            )
        );
        let read: Manifest = serde_json::from_slice(&attestation.manifest.bytes).unwrap();
        assert_eq!(read.config, attestation.config.descriptor());
        assert_eq!(
            read.layers
                .iter()
                .map(|layer| layer.annotations[PREDICATE_TYPE_ANNOTATION].as_str())
                .collect::<Vec<_>>(),
            [SPDX_PREDICATE_TYPE, SLSA_PREDICATE_TYPE]
        );
        let config: ImageConfig = serde_json::from_slice(&attestation.config.bytes).unwrap();
        assert_eq!(
            config.rootfs.diff_ids,
            [
                attestation.layers[0].digest(),
                attestation.layers[1].digest()
            ]
        );
    }
}
