//! `images --check`: a build from scratch and the regular build must give
//! identical bytes, and every image must stay within its size budget.

use std::{fs, path::Path};

use anyhow::{bail, Context};
use xshell::Shell;

use super::*;

pub(super) fn mebibytes(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MEBIBYTE as f64)
}

pub(super) fn print_table(artifacts: &[ImageArtifact]) {
    println!(
        "{:<8} {:<12} {:<71} {:>11} {:>13} {:>8}",
        "image", "platform", "digest (image id)", "compressed", "uncompressed", "budget"
    );
    for artifact in artifacts {
        println!(
            "{:<8} {:<12} {:<71} {:>11} {:>13} {:>8}",
            artifact.name,
            artifact.platform.to_string(),
            artifact.config_digest.to_string(),
            mebibytes(artifact.compressed_size),
            mebibytes(artifact.uncompressed_size),
            format!("{} MiB", artifact.budget / MEBIBYTE),
        );
    }
}

/// Budgets hold for every image, or an error listing the offenders.
pub fn check_budgets(artifacts: &[ImageArtifact]) -> anyhow::Result<()> {
    let over: Vec<String> = artifacts
        .iter()
        .filter(|artifact| artifact.compressed_size > artifact.budget)
        .map(|artifact| {
            format!(
                "{} ({}) is {} compressed, over its {} budget",
                artifact.name,
                artifact.platform,
                mebibytes(artifact.compressed_size),
                mebibytes(artifact.budget)
            )
        })
        .collect();
    if !over.is_empty() {
        bail!("image size budget exceeded: {}", over.join("; "))
    }
    Ok(())
}

/// What `cargo xtask images --check` does (for `cargo xtask ci`): a build
/// from scratch, in a fresh directory, and the regular build (the images
/// `up` runs, in target/images/out/<architecture>/) must give identical bytes, within the
/// size budgets. On a fresh clone both are from scratch; later, the regular
/// one reuses its own cargo target dir, so the check also proves that the
/// images a user runs are the ones a clean build gives. Comparing against
/// the regular build rather than a second fresh one saves a full release
/// build, which `up` and the end-to-end tests would otherwise do again.
pub fn check_reproducible_and_budgets(sh: &Shell) -> anyhow::Result<()> {
    let root = crate::project_root();
    check_reproducible(sh, &root, &root.join("nginx"), SecondBuild::Regular)
}

/// The regular build of every platform's images (what `up` and the
/// end-to-end tests run), within the size budgets, without loading them:
/// the first half of `images --check`, which `cargo xtask ci` runs before
/// the end-to-end steps and leaves the from-scratch half to run beside them.
pub fn build_regular_within_budgets(sh: &Shell) -> anyhow::Result<()> {
    let root = crate::project_root();
    let epoch = source_date_epoch(sh)?;
    let artifacts = build_all(
        sh,
        &root,
        &BuildLayout::regular(&root),
        &root.join("nginx"),
        epoch,
        &Platform::ALL,
    )?;
    print_table(&artifacts);
    check_budgets(&artifacts)
}

/// A build of the check in `check_dir/{name}…`. Builds in directories and
/// cargo target dirs at different paths, so absolute paths or stale
/// artefacts leaking into the bytes show up. Only the .deb download cache is
/// shared with the regular build: its files are checked against the lock's
/// sha256 on every use.
fn check_layout(check_dir: &Path, regular: &BuildLayout, name: &str) -> BuildLayout {
    BuildLayout {
        output_dir: check_dir.join(name),
        cargo_target_dir: check_dir.join(format!("{name}-cargo-target")),
        cache: DebianCache {
            deb_dir: regular.cache.deb_dir.clone(),
            unpack_dir: check_dir.join(format!("{name}-unpacked")),
            archives: regular.cache.archives.clone(),
        },
    }
}

/// One line per image whose archive, config or manifest differs between
/// the two builds.
fn differences(first_builds: &[ImageArtifact], second_builds: &[ImageArtifact]) -> Vec<String> {
    let mut differences = Vec::new();
    for (first, second) in first_builds.iter().zip(second_builds) {
        if first.archive_sha256 != second.archive_sha256
            || first.sbom_sha256 != second.sbom_sha256
            || first.config_digest != second.config_digest
            || first.manifest_digest != second.manifest_digest
        {
            differences.push(format!(
                "{} ({}): image id {} vs {} (archives {} and {}, SBOMs beside them)",
                first.name,
                first.platform,
                first.config_digest,
                second.config_digest,
                first.archive_path.display(),
                second.archive_path.display()
            ));
        }
    }
    differences
}

/// The build the fresh one is compared with.
pub(super) enum SecondBuild {
    /// The regular build in target/images/out/.
    Regular,
    /// A second build from scratch (with a custom nginx configuration, which
    /// must not end up in the regular images).
    Fresh,
}

pub(super) fn check_reproducible(
    sh: &Shell,
    root: &Path,
    nginx_dir: &Path,
    second_build: SecondBuild,
) -> anyhow::Result<()> {
    let check_dir = BuildLayout::images_dir(root).join("check");
    if check_dir.exists() {
        fs::remove_dir_all(&check_dir)
            .with_context(|| format!("remove the previous check in {}", check_dir.display()))?;
    }
    let regular = BuildLayout::regular(root);
    let first = check_layout(&check_dir, &regular, "first");
    let (second, second_name) = match second_build {
        SecondBuild::Regular => (regular, "the regular build, target/images/out/"),
        SecondBuild::Fresh => (
            check_layout(&check_dir, &regular, "second"),
            "second build, fresh cargo target dir (a full release build)",
        ),
    };
    // One source date for both builds: a commit made while they run must not
    // make them differ.
    let epoch = source_date_epoch(sh)?;
    eprintln!("images --check: first build, fresh cargo target dir (a full release build)");
    let started = std::time::Instant::now();
    let first_artifacts = build_all(sh, root, &first, nginx_dir, epoch, &Platform::ALL)?;
    eprintln!(
        "images --check: first build took {:.0?}; now {second_name}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let second_artifacts = build_all(sh, root, &second, nginx_dir, epoch, &Platform::ALL)?;
    eprintln!(
        "images --check: second build took {:.0?}",
        started.elapsed()
    );
    print_table(&first_artifacts);
    let differences = differences(&first_artifacts, &second_artifacts);
    if !differences.is_empty() {
        bail!(
            "images are not reproducible: {}. Compare the archives (e.g. with diffoscope) to find the difference",
            differences.join("; ")
        )
    }
    check_budgets(&first_artifacts)?;
    println!("images --check: both builds gave identical bytes for all images, all within budget");
    // The fresh target dirs are ~1 GiB each; the evidence is in the archives.
    for layout in [&first, &second] {
        if layout.cargo_target_dir.starts_with(&check_dir) {
            fs::remove_dir_all(&layout.cargo_target_dir)
                .with_context(|| format!("remove {}", layout.cargo_target_dir.display()))?;
        }
    }
    Ok(())
}
