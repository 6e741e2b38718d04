//! What each image says about itself, attached as BuildKit attaches it: an
//! attestation manifest per platform image, referenced from the image index
//! (`vnd.docker.reference.type: attestation-manifest`, platform
//! unknown/unknown), whose layers are in-toto statements about the image's
//! manifest digest: the SPDX SBOM (`https://spdx.dev/Document`) and SLSA
//! provenance (`https://slsa.dev/provenance/v1`).
//!
//! The provenance records what the build was made of and how: the source
//! commit (and whether the tree had uncommitted changes), the sha256 of
//! Cargo.lock and of deploy/images.lock.json, the Rust compiler and target,
//! the pinned `rust-std` for a cross target, the builder and
//! SOURCE_DATE_EPOCH. Nothing in it varies between two builds of the same
//! tree, so a rebuild gives the same statement: that is how it is checked.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use serde_json::value::RawValue;

use xtask_oci::intoto::{self, Predicate, SLSA_PREDICATE_TYPE, SPDX_PREDICATE_TYPE};
use xtask_oci::{Attestation, Digest};

use super::platform::Platform;

/// What went into one platform's build, for its provenance.
#[derive(Clone, Debug)]
pub struct BuildFacts {
    /// `git rev-parse HEAD`, if the source is a git checkout.
    pub commit: Option<String>,
    /// Tracked files differ from the commit.
    pub dirty: bool,
    pub source_date_epoch: u64,
    /// `rustc --version`.
    pub rustc: String,
    pub cargo_lock_sha256: String,
    pub images_lock_sha256: String,
    /// The pinned `rust-std` of a cross target: (url, sha256).
    pub rust_std: Option<(String, String)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Provenance<'a> {
    build_definition: BuildDefinition<'a>,
    run_details: RunDetails,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition<'a> {
    build_type: &'static str,
    external_parameters: ExternalParameters<'a>,
    internal_parameters: InternalParameters<'a>,
    resolved_dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalParameters<'a> {
    image: String,
    platform: String,
    source_commit: Option<&'a str>,
    source_dirty: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct InternalParameters<'a> {
    source_date_epoch: u64,
    #[serde(rename = "rustTarget")]
    rust_target: &'static str,
    #[serde(rename = "rustc")]
    rustc: &'a str,
}

#[derive(Serialize)]
struct Dependency {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    digest: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetails {
    builder: Builder,
}

#[derive(Serialize)]
struct Builder {
    id: &'static str,
    version: BTreeMap<&'static str, &'static str>,
}

/// The attestation of one platform image: its SBOM and its provenance, as
/// in-toto statements about its manifest digest.
pub fn attestation(
    name: &str,
    platform: Platform,
    manifest_digest: &Digest,
    sbom: &[u8],
    facts: &BuildFacts,
) -> anyhow::Result<Attestation> {
    let repository = format!("{}/{name}", super::REPOSITORY_PREFIX);
    let sbom_text = std::str::from_utf8(sbom).context("the SBOM is not UTF-8")?;
    let sbom_predicate = RawValue::from_string(sbom_text.trim_end().to_string())
        .context("the SBOM is not one JSON value")?;
    let provenance = serde_json::to_string(&provenance(&repository, platform, facts))
        .context("serialise the provenance")?;
    let provenance_predicate =
        RawValue::from_string(provenance).context("the provenance is not JSON")?;
    let subject_name = format!(
        "pkg:docker/{repository}?platform={}",
        platform.to_string().replace('/', "%2F")
    );
    intoto::attestation(
        &subject_name,
        manifest_digest,
        &[
            Predicate {
                predicate_type: SPDX_PREDICATE_TYPE,
                predicate: &sbom_predicate,
            },
            Predicate {
                predicate_type: SLSA_PREDICATE_TYPE,
                predicate: &provenance_predicate,
            },
        ],
    )
}

fn provenance<'a>(repository: &str, platform: Platform, facts: &'a BuildFacts) -> Provenance<'a> {
    let sha256 = |hex: &str| BTreeMap::from([("sha256", hex.to_string())]);
    let mut dependencies = Vec::new();
    if let Some(commit) = &facts.commit {
        dependencies.push(Dependency {
            name: "source".into(),
            uri: None,
            digest: BTreeMap::from([("gitCommit", commit.clone())]),
        });
    }
    dependencies.push(Dependency {
        name: "Cargo.lock".into(),
        uri: None,
        digest: sha256(&facts.cargo_lock_sha256),
    });
    dependencies.push(Dependency {
        name: "deploy/images.lock.json".into(),
        uri: None,
        digest: sha256(&facts.images_lock_sha256),
    });
    if let Some((url, hex)) = &facts.rust_std {
        dependencies.push(Dependency {
            name: format!("rust-std for {}", platform.rust_target()),
            uri: Some(url.clone()),
            digest: sha256(hex),
        });
    }
    Provenance {
        build_definition: BuildDefinition {
            build_type: "https://webstack.invalid/buildtypes/cargo-xtask-images/v1",
            external_parameters: ExternalParameters {
                image: repository.to_string(),
                platform: platform.to_string(),
                source_commit: facts.commit.as_deref(),
                source_dirty: facts.dirty,
            },
            internal_parameters: InternalParameters {
                source_date_epoch: facts.source_date_epoch,
                rust_target: platform.rust_target(),
                rustc: &facts.rustc,
            },
            resolved_dependencies: dependencies,
        },
        run_details: RunDetails {
            builder: Builder {
                id: "https://webstack.invalid/builders/cargo-xtask-images",
                version: BTreeMap::from([("xtask", env!("CARGO_PKG_VERSION"))]),
            },
        },
    }
}

/// The facts of a build of this checkout for `platform`.
pub fn build_facts(
    sh: &xshell::Shell,
    root: &std::path::Path,
    epoch: u64,
    rust_std: Option<(String, String)>,
) -> anyhow::Result<BuildFacts> {
    let read_sha256 = |relative: &str| -> anyhow::Result<String> {
        Ok(Digest::sha256_of_file(&root.join(relative))?
            .hex()
            .to_string())
    };
    let commit = xshell::cmd!(sh, "git -C {root} rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|commit| commit.trim().to_string());
    let dirty = commit.is_some()
        && !xshell::cmd!(sh, "git -C {root} status --porcelain --untracked-files=no")
            .quiet()
            .read()
            .context("git status")?
            .trim()
            .is_empty();
    Ok(BuildFacts {
        commit,
        dirty,
        source_date_epoch: epoch,
        rustc: xshell::cmd!(sh, "rustc --version")
            .quiet()
            .read()
            .context("rustc --version")?
            .trim()
            .to_string(),
        cargo_lock_sha256: read_sha256("Cargo.lock")?,
        images_lock_sha256: read_sha256(super::debian::LOCK_PATH)?,
        rust_std,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtask_oci::{ContainerConfig, FileContents, Rootfs};

    fn facts(dirty: bool) -> BuildFacts {
        BuildFacts {
            commit: Some("c0ffee".repeat(6) + "c0ff"),
            dirty,
            source_date_epoch: 1_764_095_553,
            rustc: "rustc 1.95.0 (59807616e 2026-04-14)".into(),
            cargo_lock_sha256: "aa".repeat(32),
            images_lock_sha256: "bb".repeat(32),
            rust_std: Some((
                "https://static.rust-lang.org/x.tar.xz".into(),
                "cc".repeat(32),
            )),
        }
    }

    #[derive(serde::Deserialize)]
    struct ReadStatement {
        #[serde(rename = "predicateType")]
        predicate_type: String,
        subject: Vec<ReadSubject>,
        predicate: serde_json::Value,
    }

    #[derive(serde::Deserialize)]
    struct ReadSubject {
        digest: BTreeMap<String, String>,
    }

    #[test]
    fn the_archive_and_the_index_carry_the_attestation_as_buildkit_does() {
        let mut rootfs = Rootfs::new();
        rootfs.add_file("usr/bin/tool", FileContents::Bytes(b"tool".to_vec()), 0o755);
        let settings = ContainerConfig::default();
        let blobs = xtask_oci::image_blobs(&rootfs, &settings, "arm64", 7).unwrap();
        let manifest = blobs.manifest_digest();
        let manifest_hex = manifest.hex();
        let sbom = br#"{"spdxVersion": "SPDX-2.3", "name": "x"}"#;
        let attestation =
            attestation("db", Platform::Arm64, &manifest, sbom, &facts(false)).unwrap();
        let archive = xtask_oci::archive_tar(
            &blobs,
            "webstack/db",
            &["local".into()],
            Some(&attestation),
            7,
        )
        .unwrap();
        let read = xtask_oci::read_archive(archive.as_slice()).unwrap();

        assert_eq!(read.manifest.digest(), manifest);
        let read_attestation = read
            .attestation
            .as_ref()
            .expect("an attestation in the archive");
        assert_eq!(read_attestation.manifest, attestation.manifest);
        let statements: Vec<ReadStatement> = read_attestation
            .layers
            .iter()
            .map(|layer| serde_json::from_slice(&layer.bytes).unwrap())
            .collect();
        assert_eq!(
            statements
                .iter()
                .map(|statement| statement.predicate_type.as_str())
                .collect::<Vec<_>>(),
            [SPDX_PREDICATE_TYPE, SLSA_PREDICATE_TYPE]
        );
        for statement in &statements {
            assert_eq!(statement.subject[0].digest["sha256"], manifest_hex);
        }
        assert_eq!(statements[0].predicate["spdxVersion"], "SPDX-2.3");
        let provenance = &statements[1].predicate["buildDefinition"];
        assert_eq!(
            provenance["internalParameters"]["SOURCE_DATE_EPOCH"],
            1_764_095_553
        );
        assert_eq!(provenance["externalParameters"]["platform"], "linux/arm64");
        assert_eq!(provenance["externalParameters"]["sourceDirty"], false);

        let index = xtask_oci::image_index(&[read]).unwrap();
        let index: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["platform"]["architecture"], "arm64");
        assert_eq!(
            entries[1]["digest"],
            attestation.manifest.digest().to_string()
        );
        assert_eq!(entries[1]["platform"]["architecture"], "unknown");
        assert_eq!(
            entries[1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            entries[1]["annotations"]["vnd.docker.reference.digest"],
            manifest.to_string()
        );
    }

    #[test]
    fn the_same_build_gives_the_same_statements_and_a_dirty_tree_says_so() {
        let sbom = br#"{"spdxVersion": "SPDX-2.3"}"#;
        let manifest = Digest::sha256(b"manifest");
        let clean = attestation("webapp", Platform::Amd64, &manifest, sbom, &facts(false));
        let again = attestation("webapp", Platform::Amd64, &manifest, sbom, &facts(false));
        let dirty = attestation("webapp", Platform::Amd64, &manifest, sbom, &facts(true));

        let (clean, again, dirty) = (clean.unwrap(), again.unwrap(), dirty.unwrap());
        assert_eq!(clean.manifest, again.manifest);
        assert_eq!(clean.layers[0], dirty.layers[0], "the SBOM statement");
        assert_ne!(clean.layers[1], dirty.layers[1], "the provenance statement");
    }
}
