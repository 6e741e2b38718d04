//! One home for what xtask runs or builds with but does not compile from
//! this workspace, each pinned, and one [`ensure`] that gives its path,
//! fetching, checking and unpacking or building it first if no earlier run
//! did (downloads by the `xtask_fetch` crate, checked against the pin):
//! - a file of a Debian package the lock's `tools` part pins: Compose v2
//!   (`docker-compose`), the CNCF distribution registry (`docker-registry`),
//!   pebble (Let's Encrypt's ACME test server), the static `qemu-user`;
//! - a file of a package an image's part of the lock pins, such as
//!   redis-benchmark, which the db image leaves out;
//! - Rust's standard library for a target the toolchain lacks (the lock's
//!   `rust-std` part), as a sysroot in the tool cache (`rust_std.rs`);
//! - a crate's binary, built once per machine with `cargo install --locked`
//!   (`cargo.rs`: the load tool, cargo-auditable).
//!
//! The host tools (redis-server, redis-cli and nginx from the images' own
//! packages, and `nix-instantiate`) are whole trees with wrapper scripts,
//! written by `host_tools`; they are reached through here too.
//!
//! A module of `images` rather than a crate, and not a top-level module: a
//! Debian pin is read from the lock and unpacked by `images::debian`, which
//! is not a crate yet, and `images` itself ensures pins (rust-std,
//! cargo-auditable, qemu), so a module beside it would close a cycle.

mod cargo;
mod rust_std;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

use super::debian::{self, LockFile, LockedPackage, LOCK_PATH};
pub use super::host_tools::{host_tools, pinned_nix as nix, HostTools};
use super::BuildLayout;
pub use cargo::{PinnedTool, CARGO_AUDITABLE, OHA};

/// The lock's name for Compose v2 (Debian installs it as a CLI plugin; it
/// runs as a standalone `docker-compose` too, the same program as `docker
/// compose`).
pub const COMPOSE_V2: Pin<'static> = Pin::Tool {
    name: "docker-compose",
    path: "usr/libexec/docker/cli-plugins/docker-compose",
};

/// The registry (distribution 2.8): the push tests run it on loopback, the
/// simulated cluster on its own network.
pub const REGISTRY: Pin<'static> = Pin::Tool {
    name: "docker-registry",
    path: "usr/bin/docker-registry",
};

/// pebble; its package also ships the DNS server `pebble-challtestsrv`.
const PEBBLE: Pin<'static> = Pin::Tool {
    name: "pebble",
    path: "usr/bin/pebble",
};

/// The lock's name for Debian's static user-mode emulators.
pub const QEMU_TOOL: &str = "qemu-user";

/// Something pinned, and where in it the caller's file is.
#[derive(Clone, Copy)]
pub enum Pin<'a> {
    /// `path` inside the package the lock's `tools` part pins as `name`.
    Tool { name: &'a str, path: &'a str },
    /// `path` inside `package` as the lock pins it for `image`.
    ImagePackage {
        image: &'a str,
        package: &'a str,
        path: &'a str,
    },
    /// The sysroot holding Rust's standard library for `target`.
    RustStd { target: &'a str },
    /// A crate's binary, built by `cargo install` run from `sh`; built
    /// again when `usable` refuses the cached one (e.g. it answers
    /// `--version` with another version).
    Crate {
        sh: &'a Shell,
        tool: &'a PinnedTool,
        usable: &'a dyn Fn(&Path) -> bool,
    },
}

/// The path of `pin`, fetched, checked and unpacked (or built) on first
/// use; later calls, and for the tool cache later clones, reuse it.
pub fn ensure(pin: &Pin) -> anyhow::Result<PathBuf> {
    match pin {
        Pin::Tool { path, .. } | Pin::ImagePackage { path, .. } => {
            let root = crate::project_root();
            let locked = locked_package(&LockFile::read(&root)?, pin)?;
            file_of_package(&root, &locked, path)
        }
        Pin::RustStd { target } => {
            let lock = LockFile::read(&crate::project_root())?;
            let Some(pinned) = lock.rust_std.get(*target) else {
                bail!("{LOCK_PATH} pins no `rust-std` for {target}")
            };
            rust_std::ensure_sysroot(target, pinned)
        }
        Pin::Crate { sh, tool, usable } => cargo::ensure(sh, tool, usable),
    }
}

/// What the lock pins for a Debian `pin`, for reports: `redis-tools 5:8.0.2-3`.
pub fn package_of(pin: &Pin) -> anyhow::Result<String> {
    let locked = locked_package(&LockFile::read(&crate::project_root())?, pin)?;
    Ok(format!("{} {}", locked.package, locked.version))
}

/// The lock's entry for a Debian `pin`.
fn locked_package(lock: &LockFile, pin: &Pin) -> anyhow::Result<LockedPackage> {
    match pin {
        Pin::Tool { name, .. } => lock
            .tools
            .get(*name)
            .cloned()
            .with_context(|| format!("{LOCK_PATH} pins no `{name}` in its tools part")),
        Pin::ImagePackage { image, package, .. } => lock
            .image_package(image, package)
            .cloned()
            .with_context(|| {
                format!(
                    "{LOCK_PATH} pins no {package} in images.{image}: run `cargo xtask images --update-lock`"
                )
            }),
        Pin::RustStd { .. } | Pin::Crate { .. } => {
            bail!("not a Debian package: only the lock's tools and images parts pin those")
        }
    }
}

/// `path` inside the pinned package, downloading, checking and unpacking it
/// into the images' cache if no build did yet.
fn file_of_package(root: &Path, locked: &LockedPackage, path: &str) -> anyhow::Result<PathBuf> {
    let cache = BuildLayout::regular(root).cache;
    let deb = debian::ensure_locked_deb(&cache, locked)?;
    let unpacked = debian::unpack(&cache, locked, &deb)?;
    let file = unpacked.unpacked_dir.join(path);
    if !file.exists() {
        bail!(
            "{} {} has no {path} (looked in {}): pin a package that ships it",
            locked.package,
            locked.version,
            unpacked.unpacked_dir.display()
        );
    }
    Ok(file)
}

/// The pinned pebble, Let's Encrypt's ACME test server, and its DNS server
/// `pebble-challtestsrv`: the end-to-end tests' ACME CA. Returns the
/// directory the package unpacked into (`usr/bin/pebble` and
/// `usr/bin/pebble-challtestsrv` under it).
pub fn pinned_pebble() -> anyhow::Result<PathBuf> {
    let pebble = ensure(&PEBBLE)?;
    let root = pebble
        .ancestors()
        .nth(3)
        .context("pebble's unpacked directory")?
        .to_path_buf();
    if !root.join("usr/bin/pebble-challtestsrv").is_file() {
        bail!("the pinned pebble package has no usr/bin/pebble-challtestsrv");
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_debian_pin_named_here_is_in_the_checked_in_lock() {
        let lock = LockFile::read(&crate::project_root()).expect("the lock");
        let qemu = Pin::Tool {
            name: QEMU_TOOL,
            path: "usr/bin/qemu-aarch64",
        };
        for pin in [COMPOSE_V2, REGISTRY, PEBBLE, qemu] {
            let Pin::Tool { name, .. } = pin else {
                unreachable!("only tools are named here")
            };
            let locked = locked_package(&lock, &pin).expect(name);
            assert!(!locked.package.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_pin_the_lock_lacks_is_an_error_naming_the_part_it_was_looked_for_in() {
        let lock = LockFile::default();
        let tool = Pin::Tool {
            name: "no-such-tool",
            path: "usr/bin/x",
        };
        let message = format!("{:#}", locked_package(&lock, &tool).unwrap_err());
        assert!(
            message.contains("pins no `no-such-tool` in its tools part"),
            "{message}"
        );
        let file = Pin::ImagePackage {
            image: "db",
            package: "no-such-package",
            path: "usr/bin/x",
        };
        let message = format!("{:#}", locked_package(&lock, &file).unwrap_err());
        assert!(
            message.contains("pins no no-such-package in images.db"),
            "{message}"
        );
        let sysroot = Pin::RustStd {
            target: "aarch64-unknown-linux-musl",
        };
        assert!(locked_package(&lock, &sysroot).is_err());
    }
}
