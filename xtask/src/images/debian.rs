//! Debian packages as image contents: the lock file, downloads from
//! Debian's archives into a cache under target/ (size and sha256 checked),
//! unpacking in Rust, and choosing exactly the files the binaries need.
//!
//! The package set is derived from what the binaries really load (ELF
//! `NEEDED` entries), not from the `Depends` closure: redis-tools' closure is
//! 65 packages, its binaries need 15. A library is searched first in packages
//! already chosen, then in the `Depends` of the package whose ELF needs it, in
//! the order Debian lists them, so the package Debian names wins.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    rc::Rc,
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{
    archive::{self, Archives},
    deb,
    platform::Platform,
};

mod resolve;
pub use resolve::resolve_contents;

/// Where the lock lives, relative to the workspace root.
pub const LOCK_PATH: &str = "deploy/images.lock.json";

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

/// One pinned `rust-std` component (the lock's `rust-std` part).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedRustStd {
    /// The Rust release, the same as rust-toolchain.toml's channel.
    pub version: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

/// deploy/images.lock.json: per image, its packages sorted by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LockFile {
    pub images: BTreeMap<String, Vec<LockedPackage>>,
    /// Programs xtask runs on the host, by name: Compose v2 (`docker-compose`
    /// from Debian 13), for hosts that have no Compose v2 of their own.
    /// `--update-lock` keeps them as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, LockedPackage>,
    /// Rust's standard library for the image targets the toolchain lacks,
    /// by target (`aarch64-unknown-linux-musl`). `--update-lock` keeps it.
    #[serde(
        default,
        rename = "rust-std",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub rust_std: BTreeMap<String, PinnedRustStd>,
}

impl LockFile {
    pub fn read(root: &Path) -> anyhow::Result<LockFile> {
        let path = root.join(LOCK_PATH);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "read {} (create it with `cargo xtask images --update-lock`)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// The pin of `package` in `image`'s part, whatever its architecture.
    pub fn image_package(&self, image: &str, package: &str) -> Option<&LockedPackage> {
        self.images
            .get(image)
            .and_then(|packages| packages.iter().find(|locked| locked.package == package))
    }

    /// The pins of `image` for `platform`: its architecture's packages and
    /// the architecture-independent (`all`) ones.
    pub fn packages_for(
        &self,
        image: &str,
        platform: Platform,
    ) -> anyhow::Result<Vec<&LockedPackage>> {
        let Some(locked) = self.images.get(image) else {
            bail!(
                "{LOCK_PATH} has no entry for image {image}; run `cargo xtask images --update-lock`"
            )
        };
        let architecture = platform.debian_architecture();
        let packages: Vec<&LockedPackage> = locked
            .iter()
            .filter(|package| package.architecture == architecture || package.architecture == "all")
            .collect();
        if !packages
            .iter()
            .any(|package| package.architecture == architecture)
        {
            bail!(
                "{LOCK_PATH} pins no {architecture} packages for image {image}; run `cargo xtask images --update-lock`"
            )
        }
        Ok(packages)
    }

    /// Writes the whole file or nothing (temporary file, then rename).
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        let path = root.join(LOCK_PATH);
        let mut text = serde_json::to_string_pretty(self).context("serialise lock file")?;
        text.push('\n');
        xtask_fetch::write_atomically(&path, text.as_bytes(), 0o666)
    }
}

/// A file an image takes from a package: `source` inside the package,
/// installed at `destination`.
pub struct PackageFile {
    pub package: &'static str,
    pub source: &'static str,
    pub destination: &'static str,
}

/// The Debian part of an image: its ELF binaries (whose libraries are found
/// automatically) and plain data files.
pub struct DebianContents {
    pub image: &'static str,
    pub binaries: &'static [PackageFile],
    pub data_files: &'static [PackageFile],
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
    fn has_file(&self, path: &str) -> bool {
        fs::symlink_metadata(self.unpacked_dir.join(path)).is_ok()
    }

    /// Where this package keeps `path`: the path itself, else (a merged-/usr
    /// package, Debian 13) its place under usr/, with the top-level directory
    /// that the image must then link into /usr.
    fn locate(&self, path: &str) -> Option<(String, Option<&'static str>)> {
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

/// The pinned .deb in the cache, downloading it from its archive if needed
/// (size and sha256 checked before it enters the cache); refused if a cached
/// file's sha256 is not the locked one.
pub fn ensure_locked_deb(cache: &DebianCache, locked: &LockedPackage) -> anyhow::Result<PathBuf> {
    let LockedPackage {
        package,
        version,
        architecture,
        archive,
        ..
    } = locked;
    let deb_path = cache
        .deb_dir
        .join(deb_file_name(package, version, architecture));
    if !deb_path.exists() {
        let base_url = cache.archives.base_url(archive)?;
        let url = format!("{base_url}/{}", locked.filename);
        eprintln!("images: downloading {url}");
        let expected = xtask_fetch::Expected {
            size: locked.size,
            sha256: &locked.sha256,
        };
        match xtask_fetch::download_verified(&url, &deb_path, expected, archive::UNREACHABLE) {
            Ok(()) => {}
            Err(xtask_fetch::FetchError::Gone { url, status }) => bail!(
                "package {package} version {version} is gone from the {archive} archive \
                 ({url} answered {status}); Debian's security archive keeps only the newest build of a package. \
                 Run `cargo xtask images --update-lock` to move the pins in {LOCK_PATH} to what the archives offer now"
            ),
            Err(xtask_fetch::FetchError::Failed(error)) => {
                return Err(error.context(format!(
                    "download package {package} version {version} from the {archive} archive ({} = {base_url})",
                    Archives::variable(archive)
                )))
            }
        }
    }
    let actual = xtask_oci::Digest::sha256_of_file(&deb_path)?;
    let actual = actual.hex();
    if actual != locked.sha256 {
        bail!(
            "refusing package {package} {version}: {} has sha256 {actual}, but {LOCK_PATH} pins {}. \
             Delete the file to download it again, or run `cargo xtask images --update-lock` if the change is expected",
            deb_path.display(),
            locked.sha256
        )
    }
    Ok(deb_path)
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
        let value = deb::control_field(&control, field)
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

pub struct LockedSource<'a> {
    pub cache: &'a DebianCache,
    pub locked: BTreeMap<String, LockedPackage>,
    pub fetched: BTreeMap<String, Rc<UnpackedPackage>>,
}

impl<'a> LockedSource<'a> {
    /// The pins of `image` for `platform` (its architecture's and the
    /// architecture-independent ones).
    pub fn for_image(
        cache: &'a DebianCache,
        lock: &LockFile,
        image: &str,
        platform: Platform,
    ) -> anyhow::Result<LockedSource<'a>> {
        Ok(LockedSource {
            cache,
            locked: lock
                .packages_for(image, platform)?
                .into_iter()
                .map(|package| (package.package.clone(), package.clone()))
                .collect(),
            fetched: BTreeMap::new(),
        })
    }
}

impl PackageSource for LockedSource<'_> {
    fn fetch(&mut self, package: &str) -> anyhow::Result<Option<Rc<UnpackedPackage>>> {
        if let Some(unpacked) = self.fetched.get(package) {
            return Ok(Some(unpacked.clone()));
        }
        let Some(locked) = self.locked.get(package) else {
            return Ok(None);
        };
        let deb_path = ensure_locked_deb(self.cache, locked)?;
        let unpacked = Rc::new(unpack(self.cache, locked, &deb_path)?);
        self.fetched.insert(package.to_string(), unpacked.clone());
        Ok(Some(unpacked))
    }
}

/// The newest version of each package the archives' verified indexes list
/// (for `--update-lock`).
pub struct CandidateSource<'a> {
    pub cache: &'a DebianCache,
    pub candidates: &'a BTreeMap<String, LockedPackage>,
    /// `None` remembers packages the indexes do not have.
    pub fetched: BTreeMap<String, Option<Rc<UnpackedPackage>>>,
}

impl PackageSource for CandidateSource<'_> {
    fn fetch(&mut self, package: &str) -> anyhow::Result<Option<Rc<UnpackedPackage>>> {
        if let Some(fetched) = self.fetched.get(package) {
            return Ok(fetched.clone());
        }
        let fetched = match self.candidates.get(package) {
            Some(locked) => {
                let deb_path = ensure_locked_deb(self.cache, locked)?;
                Some(Rc::new(unpack(self.cache, locked, &deb_path)?))
            }
            None => None,
        };
        self.fetched.insert(package.to_string(), fetched.clone());
        Ok(fetched)
    }
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
