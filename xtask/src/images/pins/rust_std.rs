//! Rust's standard library for a target the toolchain lacks: the official
//! `rust-std` component the lock pins, fetched once per machine (checked
//! against its size and sha256) and unpacked as a sysroot of its own in the
//! tool cache.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use xtask_fetch::staging;

use crate::images::debian::PinnedRustStd;
use xtask_debian::archive;

/// `<tool cache>/rust-std-<version>-<target>/`, fetched and unpacked the
/// first time (the download checked against the pin before it is used).
pub(super) fn ensure_sysroot(target: &str, pinned: &PinnedRustStd) -> anyhow::Result<PathBuf> {
    let cache = crate::tool_cache_dir();
    let name = format!("rust-std-{}-{target}", pinned.version);
    let sysroot = cache.join(&name);
    if sysroot.join(libc_in_sysroot(target)).is_file() {
        return Ok(sysroot);
    }
    let download = cache.join(format!("{name}.tar.xz"));
    let expected = xtask_fetch::Expected {
        size: pinned.size,
        sha256: &pinned.sha256,
    };
    eprintln!(
        "images: fetching Rust's standard library for {target} ({} MB, once per machine) from {}",
        pinned.size / 1_000_000,
        pinned.url
    );
    // The message an unreachable server gives is the archive's, as before.
    xtask_fetch::download_verified(&pinned.url, &download, expected, archive::UNREACHABLE)
        .map_err(xtask_fetch::FetchError::into_anyhow)?;
    let staging = staging::temporary_dir(&cache, &name)?;
    unpack_component(&download, target, staging.path())
        .with_context(|| format!("unpack {}", download.display()))?;
    staging::persist_dir(staging, &sysroot);
    fs::remove_file(&download).with_context(|| format!("remove {}", download.display()))?;
    if !sysroot.join(libc_in_sysroot(target)).is_file() {
        bail!(
            "{} has no {}: is the pin a rust-std component for {target}?",
            pinned.url,
            libc_in_sysroot(target)
        )
    }
    Ok(sysroot)
}

/// The musl C library the component links with; its presence marks a
/// complete sysroot.
fn libc_in_sysroot(target: &str) -> String {
    format!("lib/rustlib/{target}/lib/self-contained/libc.a")
}

/// Unpacks the component's `lib/rustlib/<target>/` into `sysroot`.
fn unpack_component(download: &Path, target: &str, sysroot: &Path) -> anyhow::Result<()> {
    let file = fs::File::open(download)?;
    let mut archive = tar::Archive::new(liblzma::read::XzDecoder::new(file));
    let wanted = format!("lib/rustlib/{target}/");
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        // rust-std-<version>-<target>/rust-std-<target>/lib/rustlib/<target>/…
        let inside: PathBuf = path.components().skip(2).collect();
        let Some(text) = inside.to_str() else {
            continue;
        };
        if !text.starts_with(&wanted) {
            continue;
        }
        let destination = sysroot.join(&inside);
        if entry.header().entry_type().is_dir() {
            fs::create_dir_all(&destination)?;
        } else if entry.header().entry_type().is_file() {
            if let Some(parent) = destination.parent() {
                fs::create_dir_all(parent)?;
            }
            entry.unpack(&destination)?;
        }
    }
    Ok(())
}
