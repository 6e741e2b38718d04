//! What `cargo xtask images --update-lock` reads instead of apt: the
//! suites the images take packages from, each read and checked by the
//! debian crate (`xtask_debian::release`: signed `InRelease`, then
//! `Packages.xz` against it) with the archive keys kept in deploy/keys/.
//!
//! Indexes are held in memory only: a bad signature, a wrong hash or a
//! truncated download fails before anything is written.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context;
use xtask_debian::{
    archive::{self, Archives, DEBIAN, DEBIAN_SECURITY},
    package::LockedPackage,
    release::{
        check_against_release, check_release_fields, inrelease_path, newest_candidates,
        packages_xz_name, read_packages_xz, release_sha256, trusted_keys, verify_inrelease, Suite,
    },
};

/// Where the archive keys live, relative to the workspace root.
pub const KEYS_DIR: &str = "deploy/keys";

/// The suites the images take packages from (what a Debian 13 machine's apt
/// sources list), in order of preference when two offer the same version.
pub const SUITES: &[Suite] = &[
    Suite {
        archive: DEBIAN,
        name: "trixie",
    },
    Suite {
        archive: DEBIAN,
        name: "trixie-updates",
    },
    Suite {
        archive: DEBIAN_SECURITY,
        name: "trixie-security",
    },
];

/// Far above any real index (bookworm's InRelease is 150 kB, its
/// Packages.xz 9 MB); a server sending more is refused.
const INRELEASE_LIMIT: u64 = 16 * 1024 * 1024;
const PACKAGES_LIMIT: u64 = 256 * 1024 * 1024;

/// Reads the signed indexes of `suites` from `archives` and returns the
/// candidates for `architecture` (and `all`); nothing is written anywhere.
pub fn fetch_candidates(
    archives: &Archives,
    keys_dir: &Path,
    suites: &[Suite],
    now_unix: u64,
    architecture: &str,
) -> anyhow::Result<BTreeMap<String, LockedPackage>> {
    let keys = trusted_keys(keys_dir)?;
    let mut per_suite = Vec::new();
    for suite in suites {
        let base_url = archives.base_url(suite.archive)?;
        let inrelease_url = format!("{base_url}/{}", inrelease_path(suite));
        eprintln!("images: reading {inrelease_url}");
        let inrelease =
            xtask_fetch::download_bytes(&inrelease_url, INRELEASE_LIMIT, archive::UNREACHABLE)
                .map_err(xtask_fetch::FetchError::into_anyhow)?;
        let release = verify_inrelease(&inrelease_url, &inrelease, &keys, KEYS_DIR)?;
        check_release_fields(&inrelease_url, &release, suite, now_unix)?;
        let listed = release_sha256(&release).with_context(|| format!("read {inrelease_url}"))?;
        let packages_name = packages_xz_name(architecture);
        let packages_url = format!("{base_url}/dists/{}/{packages_name}", suite.name);
        eprintln!("images: reading {packages_url}");
        let packages_xz =
            xtask_fetch::download_bytes(&packages_url, PACKAGES_LIMIT, archive::UNREACHABLE)
                .map_err(xtask_fetch::FetchError::into_anyhow)?;
        check_against_release(&packages_url, &packages_xz, listed.get(&packages_name))?;
        let stanzas = read_packages_xz(&packages_url, &packages_xz)?;
        per_suite.push((*suite, stanzas));
    }
    newest_candidates(&per_suite, architecture)
}

pub fn keys_dir(root: &Path) -> PathBuf {
    root.join(KEYS_DIR)
}
