//! The SBOMs against SPDX's reference validator, the lock and `cargo tree`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use xshell::Shell;

use super::*;
use xtask_oci::{Digest, FileContents};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadDocument {
    packages: Vec<ReadPackage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadPackage {
    name: String,
    version_info: String,
    external_refs: Vec<ReadRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadRef {
    reference_locator: String,
}

fn shell() -> Shell {
    let sh = Shell::new().unwrap();
    sh.change_dir(crate::project_root());
    sh
}

/// Every platform's three artifacts, built (or reused) once per process.
fn artifacts() -> &'static [crate::images::ImageArtifact] {
    static ARTIFACTS: std::sync::OnceLock<Vec<crate::images::ImageArtifact>> =
        std::sync::OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let sh = shell();
        Platform::ALL
            .into_iter()
            .flat_map(|platform| crate::images::build_for(&sh, platform).unwrap())
            .collect()
    })
}

fn read(path: &Path) -> ReadDocument {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// (name, version) of the packages whose purl starts with `prefix`.
fn listed(document: &ReadDocument, prefix: &str) -> BTreeSet<(String, String)> {
    document
        .packages
        .iter()
        .filter(|package| {
            package
                .external_refs
                .iter()
                .any(|reference| reference.reference_locator.starts_with(prefix))
        })
        .map(|package| (package.name.clone(), package.version_info.clone()))
        .collect()
}

/// spdx-tools, pinned with every file's hash in xtask/python/spdx-tools.txt,
/// in a virtual environment under target/ (made once, kept while the
/// requirements are unchanged).
fn pyspdxtools() -> PathBuf {
    let requirements = crate::project_root().join("xtask/python/spdx-tools.txt");
    let text = std::fs::read(&requirements).unwrap();
    let venv = crate::project_root()
        .join("target/spdx-tools")
        .join(&Digest::sha256(&text).hex()[..16]);
    let program = venv.join("bin/pyspdxtools");
    if !program.is_file() {
        let run = |command: &mut Command| {
            let status = command.status().unwrap();
            assert!(status.success(), "{command:?}: {status}");
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--no-deps", "--require-hashes", "-r"])
            .arg(&requirements));
    }
    program
}

#[test]
#[ignore = "builds the images of both platforms and installs spdx-tools from PyPI; cargo xtask ci runs it"]
fn every_sbom_passes_spdx_tools_validation() {
    let validator = pyspdxtools();
    for artifact in artifacts() {
        let path = sbom_path(&artifact.archive_path);
        let output = Command::new(&validator)
            .arg("-i")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
#[ignore = "builds the images of both platforms; cargo xtask ci runs it"]
fn every_locked_debian_package_of_an_image_is_in_its_sbom_with_its_version() {
    let lock = crate::images::debian::LockFile::read(&crate::project_root()).unwrap();
    for artifact in artifacts() {
        let document = read(&sbom_path(&artifact.archive_path));
        let expected: BTreeSet<(String, String)> = match artifact.name {
            "webapp" => BTreeSet::new(),
            image => lock
                .packages_for(image, artifact.platform)
                .unwrap()
                .into_iter()
                .map(|package| (package.package.clone(), package.version.clone()))
                .collect(),
        };
        // The lock may pin a package an image no longer needs; the SBOM
        // lists exactly what the image holds, so every listed one is pinned
        // and every pin the resolver used is listed.
        let in_sbom = listed(&document, "pkg:deb/debian/");
        assert!(
            in_sbom.is_subset(&expected),
            "{} {}: {in_sbom:?} vs {expected:?}",
            artifact.name,
            artifact.platform
        );
        assert_eq!(
            in_sbom.len(),
            expected.len(),
            "{} {}: not every pinned package is listed: {:?}",
            artifact.name,
            artifact.platform,
            expected.difference(&in_sbom).collect::<Vec<_>>()
        );
    }
}

#[test]
#[ignore = "builds the images of both platforms; cargo xtask ci runs it"]
fn every_crate_cargo_tree_lists_for_a_program_is_in_its_images_sbom() {
    let sh = shell();
    for artifact in artifacts() {
        let packages: &[&str] = match (artifact.name, artifact.platform) {
            ("webapp", _) => &["webapp"],
            // The acme service's program is in the amd64 proxy image only (webapp_binary.rs).
            ("proxy", Platform::Amd64) => &["proxy", "acme"],
            ("proxy", _) => &["proxy"],
            _ => continue,
        };
        let target = artifact.platform.rust_target();
        let format = "{p}";
        let mut tree = String::new();
        for package in packages {
            tree += &xshell::cmd!(
                sh,
                "cargo tree -e normal --prefix none --format {format} -p {package} --target {target}"
            )
            .read()
            .unwrap();
            tree.push('\n');
        }
        let expected: BTreeSet<(String, String)> = tree
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some((
                    words.next()?.to_string(),
                    words.next()?.trim_start_matches('v').to_string(),
                ))
            })
            .collect();
        let document = read(&sbom_path(&artifact.archive_path));
        assert_eq!(
            listed(&document, "pkg:cargo/"),
            expected,
            "{} {}",
            artifact.name,
            artifact.platform
        );
        assert!(expected.iter().any(|(name, _)| name == "tokio"));
    }
}

#[test]
fn the_same_inputs_give_the_same_bytes_and_name_every_file() {
    let mut rootfs = Rootfs::new();
    rootfs.add_file(
        "usr/local/bin/tool",
        FileContents::Bytes(b"tool".to_vec()),
        0o755,
    );
    rootfs.add_file("etc/passwd", FileContents::Bytes(b"root".to_vec()), 0o644);
    rootfs.add_file(
        "usr/lib/libc.so.6",
        FileContents::Bytes(b"libc".to_vec()),
        0o644,
    );
    let from_packages = BTreeSet::from(["usr/lib/libc.so.6".to_string()]);
    let programs = BTreeMap::from([(
        "usr/local/bin/tool".to_string(),
        vec![Crate {
            name: "serde".into(),
            version: "1.0.0".into(),
            license: Some("MIT OR Apache-2.0".into()),
            checksum: Some("ab".repeat(32)),
        }],
    )]);
    let contents = ImageContents {
        name: "webapp",
        platform: Platform::Arm64,
        manifest_digest: &Digest::sha256(b"manifest"),
        created: "2026-12-05T00:00:00Z",
        packages: &[],
        rootfs: &rootfs,
        from_packages: &from_packages,
        programs: &programs,
    };

    let first = document(&contents).unwrap();
    let second = document(&contents).unwrap();

    assert_eq!(first, second);
    let text = String::from_utf8(first).unwrap();
    assert!(
        text.contains("\"fileName\": \"./usr/local/bin/tool\""),
        "{text}"
    );
    assert!(text.contains("\"fileName\": \"./etc/passwd\""), "{text}");
    assert!(
        !text.contains("libc.so.6"),
        "a packaged file is the package's: {text}"
    );
    assert!(
        text.contains("\"referenceLocator\": \"pkg:cargo/serde@1.0.0\""),
        "{text}"
    );
    assert!(
        text.contains("\"relationshipType\": \"DEPENDS_ON\""),
        "{text}"
    );
    assert!(text.contains("linux/arm64"), "{text}");
}

#[test]
#[ignore = "builds the images of both platforms; cargo xtask ci runs it"]
fn every_archive_attests_its_own_sbom_and_provenance() {
    #[derive(Deserialize)]
    struct Statement {
        #[serde(rename = "predicateType")]
        predicate_type: String,
        predicate: Box<serde_json::value::RawValue>,
    }
    for artifact in artifacts() {
        let image = crate::images::read_archive(&artifact.archive_path).unwrap();
        let attestation = image
            .attestation
            .unwrap_or_else(|| panic!("{} has no attestation", artifact.archive_path.display()));
        let statements: Vec<Statement> = attestation
            .layers
            .iter()
            .map(|layer| serde_json::from_slice(&layer.bytes).unwrap())
            .collect();
        let sbom = std::fs::read_to_string(sbom_path(&artifact.archive_path)).unwrap();
        assert_eq!(statements[0].predicate_type, "https://spdx.dev/Document");
        assert_eq!(statements[0].predicate.get(), sbom.trim_end());
        assert_eq!(
            statements[1].predicate_type,
            "https://slsa.dev/provenance/v1"
        );
        assert!(
            statements[1]
                .predicate
                .get()
                .contains(&format!("\"platform\":\"{}\"", artifact.platform)),
            "{}",
            statements[1].predicate.get()
        );
    }
}

#[test]
#[ignore = "builds the images of both platforms; cargo xtask ci runs it"]
fn the_crates_embedded_in_each_program_cover_its_sbom() {
    let cargo_target = crate::project_root().join("target/images/cargo-target");
    for artifact in artifacts() {
        let programs: &[&str] = match (artifact.name, artifact.platform) {
            ("webapp", _) => &["webapp"],
            ("proxy", Platform::Amd64) => &["proxy-init", "httpcheck", "acme"],
            ("proxy", _) => &["proxy-init", "httpcheck"],
            _ => continue,
        };
        let in_sbom = listed(&read(&sbom_path(&artifact.archive_path)), "pkg:cargo/");
        let mut recorded = BTreeSet::new();
        for program in programs {
            let binary = cargo_target
                .join(artifact.platform.rust_target())
                .join("release")
                .join(program);
            let embedded: BTreeSet<(String, String)> =
                crate::images::auditable::embedded_crates(&binary)
                    .unwrap()
                    .into_iter()
                    .map(|krate| (krate.name, krate.version))
                    .collect();
            // cargo-auditable resolves features over the whole workspace
            // (cargo-auditable#66), so it may record a few more crates that
            // only xtask or the tests enable; the SBOM lists what is built.
            let extra: Vec<_> = embedded.difference(&in_sbom).collect();
            println!(
                "{program} ({}): {} crates recorded, {} in the SBOM; recorded beyond it: {extra:?}",
                artifact.platform,
                embedded.len(),
                in_sbom.len()
            );
            recorded.extend(embedded);
        }
        // Every crate the SBOM lists is in the record of one of the image's programs.
        let missing: Vec<_> = in_sbom.difference(&recorded).collect();
        assert!(
            missing.is_empty(),
            "no program of {} ({}) records {missing:?}",
            artifact.name,
            artifact.platform
        );
    }
}
