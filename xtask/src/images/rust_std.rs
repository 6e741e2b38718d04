//! The Rust standard library for image targets the toolchain lacks.
//!
//! rust-toolchain.toml installs only the host's standard library. For the
//! arm64 images xtask fetches the official `rust-std` component of the same
//! release (pinned in the lock's `rust-std` part: URL, size, sha256;
//! `pins` fetches it and unpacks it into a sysroot of its own in the tool
//! cache), and links with the toolchain's own `rust-lld` against the musl C
//! library and start files that component carries (`self-contained/`). No C cross compiler is
//! needed: neither the webapp nor the proxy crate builds C code. The user's
//! toolchain is never changed.

use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{pins, platform::Platform};

/// How rustc builds for a target whose standard library is not installed.
#[derive(Clone, Debug)]
pub struct CrossTarget {
    /// Holds `lib/rustlib/<target>/`.
    pub sysroot: PathBuf,
    /// The toolchain's own `rust-lld`.
    pub linker: PathBuf,
}

/// What rustc needs to build for `platform`: nothing beyond the toolchain
/// for the host's platform, else the pinned sysroot and `rust-lld`.
pub fn cross_target(sh: &Shell, platform: Platform) -> anyhow::Result<Option<CrossTarget>> {
    if Some(platform) == Platform::host() {
        return Ok(None);
    }
    let target = platform.rust_target();
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
    let sysroot = pins::ensure(&pins::Pin::RustStd { target }).with_context(|| {
        format!("Rust's standard library for {target}, which the {platform} images need")
    })?;
    Ok(Some(CrossTarget { sysroot, linker }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
