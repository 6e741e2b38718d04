//! Debian packages as files: the pin of one `.deb` (what it is, where the
//! archive keeps it, what its bytes must be), its place in a cache, and the
//! unpacked tree with its control file and dependencies.

use std::{
    fs,
    path::{Path, PathBuf},
    rc::Rc,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{archive::Archives, deb, deb822};

/// Top-level directories that are links into /usr on a merged-/usr system
/// (Debian 13: base-files ships `/lib64 -> usr/lib64` and the like, and
/// packages ship their files under usr/ only).
const USR_MERGED_DIRECTORIES: &[&str] = &["bin", "sbin", "lib", "lib64"];

/// `lib64/ld-linux-x86-64.so.2` → (`lib64`, `usr/lib64/ld-linux-x86-64.so.2`):
/// where a merged-/usr package keeps a file asked for by its unmerged path.
fn usr_merged_alias(path: &str) -> Option<(&'static str, String)> {
    let top = path.split('/').next()?;
    let top = USR_MERGED_DIRECTORIES
        .iter()
        .find(|directory| **directory == top)?;
    Some((top, format!("usr/{path}")))
}

/// One pinned package: what it is, where the archive keeps it, and what its
/// bytes must be.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedPackage {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// "debian" or "debian-security": which base URL `filename` is under.
    pub archive: String,
    /// The suite whose signed index listed it (trixie, trixie-security, …).
    pub suite: String,
    /// The path in the archive, e.g. `pool/main/z/zlib/zlib1g_….deb`.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// A downloaded, verified and unpacked package.
#[derive(Debug)]
pub struct UnpackedPackage {
    pub locked: LockedPackage,
    pub unpacked_dir: PathBuf,
    /// The package's control file, as in the .deb.
    pub control: String,
    /// Pre-Depends then Depends, each a list of alternatives (names only).
    pub dependencies: Vec<Vec<String>>,
}

impl UnpackedPackage {
    pub fn has_file(&self, path: &str) -> bool {
        fs::symlink_metadata(self.unpacked_dir.join(path)).is_ok()
    }

    /// Where this package keeps `path`: the path itself, else (a merged-/usr
    /// package, Debian 13) its place under usr/, with the top-level directory
    /// that the image must then link into /usr.
    pub fn locate(&self, path: &str) -> Option<(String, Option<&'static str>)> {
        if self.has_file(path) {
            return Some((path.to_string(), None));
        }
        let (top, alias) = usr_merged_alias(path)?;
        self.has_file(&alias).then_some((alias, Some(top)))
    }
}

/// Paths of the caches under target/, and the archives that fill them.
#[derive(Clone, Debug)]
pub struct DebianCache {
    /// Downloaded .debs, shared by every build (each use re-checks its sha256).
    pub deb_dir: PathBuf,
    /// Unpacked trees, keyed by package and sha256.
    pub unpack_dir: PathBuf,
    /// Where missing .debs are downloaded from.
    pub archives: Archives,
}

/// The cache's name for a .deb: apt's, with the epoch colon escaped.
pub fn deb_file_name(package: &str, version: &str, architecture: &str) -> String {
    format!(
        "{package}_{}_{architecture}.deb",
        version.replace(':', "%3a")
    )
}

/// Unpacks a verified .deb (once; later calls reuse the tree).
pub fn unpack(
    cache: &DebianCache,
    locked: &LockedPackage,
    deb_path: &Path,
) -> anyhow::Result<UnpackedPackage> {
    let unpacked_dir =
        cache
            .unpack_dir
            .join(format!("{}_{}", locked.package, &locked.sha256[..16]));
    if !unpacked_dir.exists() {
        fs::create_dir_all(&cache.unpack_dir)
            .with_context(|| format!("create {}", cache.unpack_dir.display()))?;
        let staging = xtask_fetch::temporary_dir(&cache.unpack_dir, &locked.package)?;
        deb::extract_data(deb_path, staging.path())
            .with_context(|| format!("unpack {}", deb_path.display()))?;
        // Another build may have unpacked the same package meanwhile; its
        // tree is identical, so losing the race is fine.
        xtask_fetch::persist_dir(staging, &unpacked_dir);
    }
    let control = deb::control_file(deb_path)?;
    let mut dependencies = Vec::new();
    for field in ["Pre-Depends", "Depends"] {
        let value = deb822::control_field(&control, field)
            .with_context(|| format!("read the control file of {}", deb_path.display()))?;
        if let Some(value) = value {
            dependencies.extend(parse_dependency_field(&value));
        }
    }
    Ok(UnpackedPackage {
        locked: locked.clone(),
        unpacked_dir,
        control,
        dependencies,
    })
}

/// `libc6 (>= 2.34), lsb-base | systemd-sysv, libfoo:any` → names, with
/// alternatives kept together and in order.
pub fn parse_dependency_field(value: &str) -> Vec<Vec<String>> {
    value
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alternative| {
                    let name = alternative.split_whitespace().next()?;
                    let name = name.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|group| !group.is_empty())
        .collect()
}

/// Gives packages by name: from the lock for builds, from the archives'
/// current indexes for `--update-lock`.
pub trait PackageSource {
    /// `Ok(None)`: this source has no such package (not an error by itself:
    /// most `Depends` entries are not needed).
    fn fetch(&mut self, package: &str) -> anyhow::Result<Option<Rc<UnpackedPackage>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_field_keeps_alternatives_in_order_without_versions() {
        assert_eq!(
            parse_dependency_field(
                "libc6 (>= 2.34), lsb-base (>= 3.2-14) | systemd-sysv, libgcc-s1:any, debconf (>= 0.5) | debconf-2.0"
            ),
            vec![
                vec!["libc6".to_string()],
                vec!["lsb-base".to_string(), "systemd-sysv".to_string()],
                vec!["libgcc-s1".to_string()],
                vec!["debconf".to_string(), "debconf-2.0".to_string()],
            ]
        );
        assert!(parse_dependency_field("").is_empty());
    }

    #[test]
    fn a_merged_usr_package_is_found_by_the_unmerged_path_only_where_it_lacks_it() {
        let scratch = tempfile::tempdir().unwrap();
        let directory = scratch.path().to_path_buf();
        let unpacked = |files: &[&str]| {
            for file in files {
                let path = directory.join(file);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, b"").unwrap();
            }
            UnpackedPackage {
                locked: LockedPackage {
                    package: "libc6".into(),
                    version: "1".into(),
                    architecture: "amd64".into(),
                    archive: "debian".into(),
                    suite: "trixie".into(),
                    filename: "pool/libc6.deb".into(),
                    size: 1,
                    sha256: "00".into(),
                },
                unpacked_dir: directory.clone(),
                control: String::new(),
                dependencies: Vec::new(),
            }
        };
        // Debian 13's libc6: the loader only under usr/.
        let merged = unpacked(&["usr/lib64/ld-linux-x86-64.so.2", "usr/bin/ldd"]);
        assert_eq!(
            merged.locate("lib64/ld-linux-x86-64.so.2"),
            Some(("usr/lib64/ld-linux-x86-64.so.2".to_string(), Some("lib64")))
        );
        assert_eq!(merged.locate("etc/ld.so.conf"), None);
        assert_eq!(
            merged.locate("usr/bin/ldd"),
            Some(("usr/bin/ldd".to_string(), None))
        );
        // Debian 12's: the path itself wins, no link is asked for.
        let split = unpacked(&["lib64/ld-linux-x86-64.so.2"]);
        assert_eq!(
            split.locate("lib64/ld-linux-x86-64.so.2"),
            Some(("lib64/ld-linux-x86-64.so.2".to_string(), None))
        );
    }

    #[test]
    fn deb_file_names_escape_the_epoch_colon_like_apt() {
        assert_eq!(
            deb_file_name("redis-tools", "5:7.0.15-1~deb12u10", "amd64"),
            "redis-tools_5%3a7.0.15-1~deb12u10_amd64.deb"
        );
    }
}
