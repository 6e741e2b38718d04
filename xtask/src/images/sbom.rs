//! The SBOM of each image and platform: an SPDX 2.3 JSON document written
//! beside the archive (`target/images/out/<architecture>/<name>.spdx.json`),
//! byte for byte the same for the same commit, and `cargo xtask sbom`,
//! which prints what one says.
//!
//! It lists every Debian package the image holds (version, architecture,
//! the `.deb`'s sha256 from the lock, source package, purl, license from
//! the package's copyright file), every crate compiled into each of the
//! image's own programs (what `cargo tree -e normal` lists for its package
//! and target, with Cargo.lock's checksum and the manifest's license), and
//! every file no package holds, with its sha256 and sha1; the image
//! CONTAINS the packages and files, a program DEPENDS_ON its crates.

mod crates;
mod licenses;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::Shell;
use xtask_oci::{spdx, Digest, FileContents, RootfsEntry};

pub use crates::{normal_dependencies, Crate};

use super::debian::{LockedPackage, UnpackedPackage};
use super::platform::Platform;
use super::{Rootfs, REPOSITORY_PREFIX};

/// The SBOM's path beside an image's archive.
pub fn sbom_path(archive_path: &Path) -> PathBuf {
    archive_path.with_extension("spdx.json")
}

/// A Debian package in an image.
pub struct DebianPackage {
    pub locked: LockedPackage,
    /// The source package and its version (`Source:`, else the package's own).
    pub source: (String, String),
    pub license: licenses::Declared,
}

impl DebianPackage {
    pub fn from_unpacked(unpacked: &UnpackedPackage) -> anyhow::Result<DebianPackage> {
        let locked = unpacked.locked.clone();
        let source_field = xtask_debian::deb822::control_field(&unpacked.control, "Source")
            .with_context(|| format!("read the control file of {}", locked.package))?;
        // `Source: glibc` or `Source: gcc-14 (14.2.0-19)`.
        let source = match source_field {
            None => (locked.package.clone(), locked.version.clone()),
            Some(field) => match field.split_once(' ') {
                Some((name, version)) => (
                    name.to_string(),
                    version
                        .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                        .to_string(),
                ),
                None => (field, locked.version.clone()),
            },
        };
        let license = licenses::declared(&unpacked.unpacked_dir, &locked.package);
        Ok(DebianPackage {
            locked,
            source,
            license,
        })
    }
}

/// What one image's SBOM describes.
pub struct ImageContents<'a> {
    pub name: &'static str,
    pub platform: Platform,
    pub manifest_digest: &'a Digest,
    /// RFC 3339, from SOURCE_DATE_EPOCH.
    pub created: &'a str,
    pub packages: &'a [DebianPackage],
    pub rootfs: &'a Rootfs,
    /// Image paths the Debian packages provided (with their links and
    /// status records): every other regular file is listed as a file.
    pub from_packages: &'a BTreeSet<String>,
    /// The crates of each of the image's own programs, by image path.
    pub programs: &'a BTreeMap<String, Vec<Crate>>,
}

const NOASSERTION: &str = "NOASSERTION";

/// The SPDX 2.3 JSON document of one image.
pub fn document(contents: &ImageContents) -> anyhow::Result<Vec<u8>> {
    let architecture = contents.platform.oci_architecture();
    let repository = format!("{REPOSITORY_PREFIX}/{}", contents.name);
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![spdx::Package {
        spdx_id: image_id.clone(),
        name: repository.clone(),
        version_info: contents.manifest_digest.to_string(),
        supplier: NOASSERTION.into(),
        download_location: NOASSERTION.into(),
        // Its files are those no package holds (filled in below).
        files_analyzed: true,
        package_verification_code: None,
        has_files: Vec::new(),
        checksums: vec![spdx::Checksum {
            algorithm: "SHA256",
            checksum_value: contents.manifest_digest.hex().to_string(),
        }],
        source_info: None,
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION,
        external_refs: vec![purl(format!(
            "pkg:oci/{}@{}?arch={architecture}&repository_url={}",
            contents.name,
            spdx::purl_encode(&contents.manifest_digest.to_string()),
            spdx::purl_encode(&repository),
        ))],
        primary_package_purpose: "CONTAINER",
    }];
    let mut relationships = vec![spdx::Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: image_id.clone(),
    }];
    let mut references = BTreeSet::new();
    for package in contents.packages {
        let locked = &package.locked;
        let id = spdx::id(
            "Deb",
            &format!("{}-{}", locked.package, locked.architecture),
        );
        references.extend(package.license.references.iter().cloned());
        packages.push(spdx::Package {
            spdx_id: id.clone(),
            name: locked.package.clone(),
            version_info: locked.version.clone(),
            supplier: "Organization: Debian".into(),
            download_location: format!(
                "http://deb.debian.org/{}/{}",
                locked.archive, locked.filename
            ),
            files_analyzed: false,
            package_verification_code: None,
            has_files: Vec::new(),
            checksums: vec![spdx::Checksum {
                algorithm: "SHA256",
                checksum_value: locked.sha256.clone(),
            }],
            source_info: Some(format!(
                "built package from: {} {}",
                package.source.0, package.source.1
            )),
            license_concluded: NOASSERTION,
            license_declared: package.license.expression.clone(),
            copyright_text: NOASSERTION,
            external_refs: vec![purl(debian_purl(locked))],
            primary_package_purpose: "LIBRARY",
        });
        relationships.push(contains(&image_id, &id));
    }
    let mut crate_packages = BTreeMap::new();
    let mut files = Vec::new();
    let mut file_sha1s = Vec::new();
    for (path, entry) in contents.rootfs.entries() {
        let RootfsEntry::File {
            contents: bytes, ..
        } = entry
        else {
            continue;
        };
        if contents.from_packages.contains(path) {
            continue;
        }
        let bytes = match bytes {
            FileContents::Bytes(bytes) => bytes.clone(),
            FileContents::Path(source) => {
                std::fs::read(source).with_context(|| format!("read {}", source.display()))?
            }
        };
        let id = spdx::id("File", path);
        let sha1 = hex::encode(<sha1::Sha1 as sha1::Digest>::digest(&bytes));
        file_sha1s.push(sha1.clone());
        files.push(spdx::File {
            spdx_id: id.clone(),
            file_name: format!("./{path}"),
            checksums: vec![
                spdx::Checksum {
                    algorithm: "SHA1",
                    checksum_value: sha1,
                },
                spdx::Checksum {
                    algorithm: "SHA256",
                    checksum_value: Digest::sha256(&bytes).hex().to_string(),
                },
            ],
            license_concluded: NOASSERTION,
            copyright_text: NOASSERTION,
        });
        relationships.push(contains(&image_id, &id));
        for krate in contents.programs.get(path).into_iter().flatten() {
            let crate_id = spdx::id("Crate", &format!("{}-{}", krate.name, krate.version));
            crate_packages
                .entry(crate_id.clone())
                .or_insert_with(|| crate_package(&crate_id, krate));
            relationships.push(spdx::Relationship {
                spdx_element_id: id.clone(),
                relationship_type: "DEPENDS_ON",
                related_spdx_element: crate_id,
            });
        }
    }
    file_sha1s.sort();
    packages[0].package_verification_code = Some(spdx::VerificationCode {
        package_verification_code_value: hex::encode(<sha1::Sha1 as sha1::Digest>::digest(
            file_sha1s.concat().as_bytes(),
        )),
    });
    packages[0].has_files = files.iter().map(|file| file.spdx_id.clone()).collect();
    packages.extend(crate_packages.into_values());
    let document = spdx::Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{repository} {}", contents.platform),
        document_namespace: format!(
            "https://webstack.invalid/spdx/{}/{architecture}/{}",
            contents.name, contents.manifest_digest.hex()
        ),
        creation_info: spdx::CreationInfo {
            created: contents.created.to_string(),
            creators: vec![format!(
                "Tool: webstack-xtask-images-{}",
                env!("CARGO_PKG_VERSION")
            )],
        },
        document_describes: vec![image_id],
        packages,
        files,
        relationships,
        has_extracted_licensing_infos: references
            .into_iter()
            .map(|(license_id, name)| spdx::ExtractedLicense {
                extracted_text: format!(
                    "The Debian license {name:?}: see the package's /usr/share/doc/<package>/copyright"
                ),
                license_id,
                name,
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&document).context("serialise the SBOM")?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn contains(image: &str, element: &str) -> spdx::Relationship {
    spdx::Relationship {
        spdx_element_id: image.to_string(),
        relationship_type: "CONTAINS",
        related_spdx_element: element.to_string(),
    }
}

fn purl(locator: String) -> spdx::ExternalRef {
    spdx::ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: locator,
    }
}

/// `pkg:deb/debian/libcap2@2.75-10%2Bdeb13u1%2Bb3?arch=amd64&distro=debian-13&epoch=1`:
/// the version without its epoch, which is a qualifier, as the purl
/// specification and the scanners write it.
fn debian_purl(locked: &LockedPackage) -> String {
    let (epoch, version) = match locked.version.split_once(':') {
        Some((epoch, version)) => (Some(epoch), version),
        None => (None, locked.version.as_str()),
    };
    let mut purl = format!(
        "pkg:deb/debian/{}@{}?arch={}&distro=debian-13",
        spdx::purl_encode(&locked.package),
        spdx::purl_encode(version),
        locked.architecture
    );
    if let Some(epoch) = epoch {
        purl.push_str(&format!("&epoch={epoch}"));
    }
    purl
}

fn crate_package(id: &str, krate: &Crate) -> spdx::Package {
    let registry = krate.checksum.is_some();
    spdx::Package {
        spdx_id: id.to_string(),
        name: krate.name.clone(),
        version_info: krate.version.clone(),
        supplier: NOASSERTION.into(),
        download_location: if registry {
            format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                krate.name, krate.version
            )
        } else {
            NOASSERTION.into()
        },
        files_analyzed: false,
        package_verification_code: None,
        has_files: Vec::new(),
        checksums: krate
            .checksum
            .iter()
            .map(|checksum| spdx::Checksum {
                algorithm: "SHA256",
                checksum_value: checksum.clone(),
            })
            .collect(),
        source_info: (!registry).then(|| "this repository's own crate".to_string()),
        license_concluded: NOASSERTION,
        license_declared: krate.license.clone().unwrap_or_else(|| NOASSERTION.into()),
        copyright_text: NOASSERTION,
        external_refs: vec![purl(format!(
            "pkg:cargo/{}@{}",
            spdx::purl_encode(&krate.name),
            spdx::purl_encode(&krate.version)
        ))],
        primary_package_purpose: if registry { "LIBRARY" } else { "APPLICATION" },
    }
}

/// Print what the SBOMs of the images say: packages, crates, other files
/// and licenses, with counts and sizes.
#[derive(clap::Args)]
pub struct Sbom {
    /// Only this image (webapp, db or proxy); default: all three.
    #[arg(value_parser = ["webapp", "db", "proxy"])]
    image: Option<String>,
    /// The platform whose images to describe (built first if need be).
    #[arg(long, value_enum, default_value_t = Platform::Amd64)]
    platform: Platform,
}

impl Sbom {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let artifacts = super::build_for(sh, self.platform)?;
        let lock = super::debian::LockFile::read(&crate::project_root())?;
        let deb_sizes: BTreeMap<&str, u64> = lock
            .images
            .values()
            .flatten()
            .map(|package| (package.sha256.as_str(), package.size))
            .collect();
        for artifact in artifacts.iter().filter(|artifact| {
            self.image
                .as_deref()
                .is_none_or(|name| name == artifact.name)
        }) {
            let path = sbom_path(&artifact.archive_path);
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let summary = summary::Summary::of(&bytes, &deb_sizes)
                .with_context(|| format!("read {}", path.display()))?;
            println!(
                "{REPOSITORY_PREFIX}/{} {} ({}, {} bytes)",
                artifact.name,
                artifact.platform,
                path.display(),
                bytes.len()
            );
            print!("{}", summary.text());
        }
        Ok(())
    }
}

mod summary;

#[cfg(test)]
mod tests;
