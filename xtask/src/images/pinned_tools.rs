//! Programs for hosts that have none, from Debian 13's packages: Compose v2
//! (`docker-compose`), the CNCF distribution registry (`docker-registry`) and
//! pebble, Let's Encrypt's ACME test server, all static-enough Go binaries
//! that need only glibc. Each is pinned in the
//! lock's `tools` part, downloaded and checked like every other `.deb`, and
//! unpacked into the images' cache.

use std::path::PathBuf;

use anyhow::Context;

use super::debian::{self, LockFile};
use super::BuildLayout;

/// The pinned Compose v2 program. Debian installs it as a CLI plugin; it
/// runs as a standalone `docker-compose` too, the same program as `docker
/// compose`.
pub fn pinned_compose_v2() -> anyhow::Result<PathBuf> {
    pinned_tool(
        "docker-compose",
        "usr/libexec/docker/cli-plugins/docker-compose",
    )
}

/// The pinned registry (distribution 2.8): the push tests run it on
/// loopback, the simulated cluster on its own network.
pub fn pinned_registry() -> anyhow::Result<PathBuf> {
    pinned_tool("docker-registry", "usr/bin/docker-registry")
}

/// The pinned pebble, Let's Encrypt's ACME test server, and its DNS server
/// `pebble-challtestsrv`: the end-to-end tests' ACME CA. Returns the
/// directory the package unpacked into (`usr/bin/pebble` and
/// `usr/bin/pebble-challtestsrv` under it).
pub fn pinned_pebble() -> anyhow::Result<PathBuf> {
    let pebble = pinned_tool("pebble", "usr/bin/pebble")?;
    let root = pebble
        .ancestors()
        .nth(3)
        .context("pebble's unpacked directory")?
        .to_path_buf();
    if !root.join("usr/bin/pebble-challtestsrv").is_file() {
        anyhow::bail!("the pinned pebble package has no usr/bin/pebble-challtestsrv");
    }
    Ok(root)
}

/// `program` (a path inside the package) of the package the lock's `tools`
/// part pins as `name`, downloading and unpacking it on first use.
pub fn pinned_tool(name: &str, program: &str) -> anyhow::Result<PathBuf> {
    let root = crate::project_root();
    let lock = LockFile::read(&root)?;
    let locked = lock
        .tools
        .get(name)
        .with_context(|| format!("{} pins no `{name}` in its tools part", debian::LOCK_PATH))?;
    let cache = BuildLayout::regular(&root).cache;
    let deb = debian::ensure_locked_deb(&cache, locked)?;
    let unpacked = debian::unpack(&cache, locked, &deb)?;
    let path = unpacked.unpacked_dir.join(program);
    if !path.is_file() {
        anyhow::bail!(
            "{} {} has no {program}: pin a package that ships it",
            locked.package,
            locked.version
        );
    }
    Ok(path)
}
