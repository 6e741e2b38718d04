//! Compose v2 for hosts that have none: Debian 13's `docker-compose`
//! package (a static-enough Go binary that needs only glibc), pinned in the
//! lock's `tools` part, downloaded and checked like every other `.deb`, and
//! unpacked under target/tools/. It runs as a standalone `docker-compose`,
//! which is the same program as the `docker compose` CLI plugin.

use std::path::PathBuf;

use anyhow::Context;

use super::debian::{self, LockFile};
use super::BuildLayout;

/// The lock's name for the Compose v2 package.
const TOOL: &str = "docker-compose";
/// Where the package keeps the program (Debian installs it as a CLI plugin).
const PROGRAM: &str = "usr/libexec/docker/cli-plugins/docker-compose";

/// The pinned Compose v2 program, downloading and unpacking it on first use.
pub fn pinned_compose_v2() -> anyhow::Result<PathBuf> {
    let root = crate::project_root();
    let lock = LockFile::read(&root)?;
    let locked = lock
        .tools
        .get(TOOL)
        .with_context(|| format!("{} pins no `{TOOL}` in its tools part", debian::LOCK_PATH))?;
    let cache = BuildLayout::regular(&root).cache;
    let deb = debian::ensure_locked_deb(&cache, locked)?;
    let unpacked = debian::unpack(&cache, locked, &deb)?;
    let program = unpacked.unpacked_dir.join(PROGRAM);
    if !program.is_file() {
        anyhow::bail!(
            "{} {} has no {PROGRAM}: pin a docker-compose 2.x package",
            locked.package,
            locked.version
        );
    }
    Ok(program)
}
