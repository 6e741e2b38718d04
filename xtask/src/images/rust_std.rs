//! The Rust standard library for image targets the toolchain lacks.
//!
//! rust-toolchain.toml installs only the host's standard library. For the
//! arm64 images xtask fetches the official `rust-std` component of the same
//! release (pinned in the lock's `rust-std` part: URL, size, sha256),
//! unpacks it into a sysroot of its own in the tool cache, and links with
//! the toolchain's own `rust-lld` against the musl C library and start
//! files that component carries (`self-contained/`). No C cross compiler is
//! needed: neither the webapp nor the proxy crate builds C code. The user's
//! toolchain is never changed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use super::{archive, platform::Platform};
use xtask_fetch::staging;

/// One pinned `rust-std` component.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedRustStd {
    /// The Rust release, the same as rust-toolchain.toml's channel.
    pub version: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

/// How rustc builds for a target whose standard library is not installed.
#[derive(Clone, Debug)]
pub struct CrossTarget {
    /// Holds `lib/rustlib/<target>/`.
    pub sysroot: PathBuf,
    /// The toolchain's own `rust-lld`.
    pub linker: PathBuf,
}

/// What rustc needs to build for `platform`: nothing beyond the toolchain
/// for the host's platform, else a pinned sysroot and `rust-lld`. `pins` is
/// the lock's `rust-std` part.
pub fn cross_target(
    sh: &Shell,
    platform: Platform,
    pins: &std::collections::BTreeMap<String, PinnedRustStd>,
) -> anyhow::Result<Option<CrossTarget>> {
    if Some(platform) == Platform::host() {
        return Ok(None);
    }
    let target = platform.rust_target();
    let Some(pinned) = pins.get(target) else {
        bail!(
            "deploy/images.lock.json pins no `rust-std` for {target}, which the {platform} images need"
        )
    };
    let host_sysroot = PathBuf::from(
        cmd!(sh, "rustc --print sysroot")
            .quiet()
            .read()
            .context("ask rustc for its sysroot")?
            .trim(),
    );
    let host_target = Platform::host()
        .map(Platform::rust_target)
        .context("the images are built on x86_64 or aarch64 Linux only")?;
    let linker = host_sysroot
        .join("lib/rustlib")
        .join(host_target)
        .join("bin/rust-lld");
    if !linker.is_file() {
        bail!(
            "{} is missing: the toolchain's rust-lld links the {platform} images (reinstall the toolchain with rustup)",
            linker.display()
        )
    }
    let sysroot = ensure_sysroot(target, pinned)?;
    Ok(Some(CrossTarget { sysroot, linker }))
}

/// `<tool cache>/rust-std-<version>-<target>/`, fetched and unpacked the
/// first time (the download checked against the pin before it is used).
fn ensure_sysroot(target: &str, pinned: &PinnedRustStd) -> anyhow::Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// rust-toolchain.toml's `channel = "…"`.
    fn toolchain_channel() -> String {
        let text = fs::read_to_string(crate::project_root().join("rust-toolchain.toml")).unwrap();
        text.lines()
            .find_map(|line| line.trim().strip_prefix("channel = "))
            .map(|value| value.trim_matches('"').to_string())
            .expect("rust-toolchain.toml names a channel")
    }

    #[test]
    fn every_pinned_standard_library_is_the_toolchains_release_for_an_image_target() {
        let lock = crate::images::debian::LockFile::read(&crate::project_root()).unwrap();
        let channel = toolchain_channel();
        let cross: Vec<&str> = Platform::ALL
            .into_iter()
            .filter(|platform| Some(*platform) != Platform::host())
            .map(Platform::rust_target)
            .collect();
        assert_eq!(
            lock.rust_std.keys().map(String::as_str).collect::<Vec<_>>(),
            cross
        );
        for (target, pinned) in &lock.rust_std {
            assert_eq!(pinned.version, channel, "{target}");
            assert_eq!(
                pinned.url.rsplit('/').next(),
                Some(format!("rust-std-{channel}-{target}.tar.xz").as_str()),
                "{target}"
            );
            assert!(pinned.url.starts_with("https://static.rust-lang.org/dist/"));
            assert_eq!(pinned.sha256.len(), 64);
        }
    }
}
