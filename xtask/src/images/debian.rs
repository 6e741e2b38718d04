//! Debian packages as image contents: the lock file, downloads from
//! Debian's archives into a cache under target/ (size and sha256 checked),
//! and choosing exactly the files the binaries need. What a package is, its
//! cache and its unpacking are the debian crate's (`xtask_debian::package`),
//! re-exported here with the lock's other types.
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
use xtask_debian::archive::{self, Archives};
pub use xtask_debian::package::{
    deb_file_name, unpack, DebianCache, LockedPackage, PackageSource, UnpackedPackage,
};

use super::platform::Platform;

mod resolve;
pub use resolve::resolve_contents;

/// Where the lock lives, relative to the workspace root.
pub const LOCK_PATH: &str = "deploy/images.lock.json";

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
