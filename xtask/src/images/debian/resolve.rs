//! Choosing an image's files from its packages: the binaries, the libraries
//! their ELF `NEEDED` entries name (found in the packages already chosen,
//! then in the `Depends` of the package that needs them), the dynamic
//! loader, the data files, and a dpkg status record per package used.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    rc::Rc,
};

use anyhow::{bail, Context};

use super::{DebianContents, PackageSource, UnpackedPackage, LOCK_PATH};
use crate::images::platform::Platform;
use xtask_debian::elf;
use xtask_oci::layer::{normalize_image_path, resolve_symlink_target, FileContents, Rootfs};

/// Library directories ld.so searches by default on Debian for `platform`.
fn library_directories(platform: Platform) -> [String; 4] {
    let tuple = platform.multiarch_tuple();
    [
        format!("lib/{tuple}"),
        format!("usr/lib/{tuple}"),
        "lib".to_string(),
        "usr/lib".to_string(),
    ]
}

/// The image files taken from Debian packages, and the packages they came from.
pub struct ResolvedContents {
    pub rootfs: Rootfs,
    pub packages: BTreeMap<String, Rc<UnpackedPackage>>,
}

struct Resolver<'a, 'b> {
    source: &'a mut dyn PackageSource,
    image: &'b str,
    platform: Platform,
    chosen: BTreeMap<String, Rc<UnpackedPackage>>,
    rootfs: Rootfs,
    scanned: BTreeSet<String>,
    /// Top-level directories a file was found through only by their /usr
    /// alias: the image gets Debian's links for them (`lib64 -> usr/lib64`).
    usr_merged: BTreeSet<&'static str>,
}

impl Resolver<'_, '_> {
    fn require(&mut self, package: &str) -> anyhow::Result<Rc<UnpackedPackage>> {
        if let Some(chosen) = self.chosen.get(package) {
            return Ok(chosen.clone());
        }
        let Some(unpacked) = self.source.fetch(package)? else {
            bail!(
                "{LOCK_PATH} has no entry for package {package} (image {}); run `cargo xtask images --update-lock`",
                self.image
            )
        };
        self.chosen.insert(package.to_string(), unpacked.clone());
        Ok(unpacked)
    }

    /// The chosen package holding `path` (itself first, then its /usr
    /// alias), and the path it has.
    fn chosen_package_with(&mut self, path: &str) -> Option<(Rc<UnpackedPackage>, String)> {
        if let Some(package) = self.chosen.values().find(|package| package.has_file(path)) {
            return Some((package.clone(), path.to_string()));
        }
        let (package, (found, top)) = self
            .chosen
            .values()
            .find_map(|package| Some((package.clone(), package.locate(path)?)))?;
        self.usr_merged.extend(top);
        Some((package, found))
    }

    /// Copies `path` (following symlinks, each link copied too) from the
    /// chosen packages and scans the final file's libraries.
    fn add_with_links(&mut self, path: &str) -> anyhow::Result<()> {
        let mut current = path.to_string();
        for _ in 0..16 {
            let (package, found) = self.chosen_package_with(&current).with_context(|| {
                format!(
                    "no chosen package of image {} contains /{current}",
                    self.image
                )
            })?;
            current = found;
            let host_path = package.unpacked_dir.join(&current);
            let metadata = fs::symlink_metadata(&host_path)
                .with_context(|| format!("stat {}", host_path.display()))?;
            if metadata.file_type().is_symlink() {
                let target = fs::read_link(&host_path)
                    .with_context(|| format!("read link {}", host_path.display()))?;
                let target = target.to_string_lossy().into_owned();
                self.rootfs.add_symlink(&current, &target);
                current = resolve_symlink_target(&current, &target);
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            self.rootfs.add_file(
                &current,
                FileContents::Path(host_path.clone()),
                metadata.permissions().mode() & 0o777,
            );
            return self.scan_elf(&package, &current);
        }
        bail!(
            "too many symlinks resolving /{path} in image {}",
            self.image
        )
    }

    fn scan_elf(&mut self, owner: &Rc<UnpackedPackage>, path: &str) -> anyhow::Result<()> {
        if !self.scanned.insert(path.to_string()) {
            return Ok(());
        }
        let facts = elf::elf_facts(&owner.unpacked_dir.join(path))?;
        if let Some(interpreter) = facts.interpreter {
            let interpreter = normalize_image_path(&interpreter);
            let found = self.find_path(
                owner,
                std::slice::from_ref(&interpreter),
                &interpreter,
                path,
            )?;
            self.add_with_links(&found)?;
        }
        for soname in facts.needed {
            let library_path = self.find_library(owner, &soname, path)?;
            self.add_with_links(&library_path)?;
        }
        Ok(())
    }

    /// Finds `soname` in a library directory of the chosen packages, else
    /// of `owner`'s dependencies.
    fn find_library(
        &mut self,
        owner: &Rc<UnpackedPackage>,
        soname: &str,
        needed_by: &str,
    ) -> anyhow::Result<String> {
        let candidates: Vec<String> = library_directories(self.platform)
            .iter()
            .map(|directory| format!("{directory}/{soname}"))
            .collect();
        self.find_path(owner, &candidates, soname, needed_by)
    }

    /// The first of `candidates` (image paths) that a chosen package has;
    /// else the first package among `owner`'s dependencies, in Debian's
    /// order, that has one, which then joins the chosen packages.
    fn find_path(
        &mut self,
        owner: &Rc<UnpackedPackage>,
        candidates: &[String],
        what: &str,
        needed_by: &str,
    ) -> anyhow::Result<String> {
        // A package's own paths first, then their /usr aliases: a Debian 12
        // package is found exactly where it was before aliases existed.
        let first_in = |package: &UnpackedPackage| {
            candidates
                .iter()
                .find(|path| package.has_file(path))
                .map(|path| (path.clone(), None))
                .or_else(|| candidates.iter().find_map(|path| package.locate(path)))
        };
        for package in self.chosen.values() {
            if let Some((path, top)) = first_in(package) {
                self.usr_merged.extend(top);
                return Ok(path);
            }
        }
        let mut tried = Vec::new();
        for alternatives in owner.dependencies.clone() {
            for name in alternatives {
                if self.chosen.contains_key(&name) || tried.contains(&name) {
                    continue;
                }
                tried.push(name.clone());
                let Some(package) = self.source.fetch(&name)? else {
                    continue;
                };
                if let Some((path, top)) = first_in(&package) {
                    self.usr_merged.extend(top);
                    self.chosen.insert(name, package);
                    return Ok(path);
                }
            }
        }
        bail!(
            "image {}: /{needed_by} needs {what}, which no package in {LOCK_PATH} provides \
             (looked in the chosen packages and in {}'s dependencies {}); run `cargo xtask images --update-lock`",
            self.image,
            owner.locked.package,
            tried.join(", ")
        )
    }
}

/// Chooses the packages and files of one image: the binaries, the libraries
/// they load (and those libraries' libraries), the dynamic loader, the data
/// files, and a dpkg status.d record for each package used.
pub fn resolve_contents(
    source: &mut dyn PackageSource,
    contents: &DebianContents,
    platform: Platform,
) -> anyhow::Result<ResolvedContents> {
    let mut resolver = Resolver {
        source,
        image: contents.image,
        platform,
        chosen: BTreeMap::new(),
        rootfs: Rootfs::new(),
        scanned: BTreeSet::new(),
        usr_merged: BTreeSet::new(),
    };
    for file in contents.binaries.iter().chain(contents.data_files) {
        resolver.require(file.package)?;
    }
    for binary in contents.binaries {
        let package = resolver.require(binary.package)?;
        if !package.has_file(binary.source) {
            bail!(
                "package {} no longer contains /{}: adjust xtask/src/images/mod.rs",
                binary.package,
                binary.source
            )
        }
        resolver.rootfs.add_file(
            binary.destination,
            FileContents::Path(package.unpacked_dir.join(binary.source)),
            0o755,
        );
        resolver.scan_elf(&package, binary.source)?;
    }
    for file in contents.data_files {
        let package = resolver.require(file.package)?;
        resolver.rootfs.add_file(
            file.destination,
            FileContents::Path(package.unpacked_dir.join(file.source)),
            0o644,
        );
    }
    let Resolver {
        rootfs,
        chosen,
        usr_merged,
        ..
    } = resolver;
    let mut rootfs = rootfs;
    // Merged /usr (Debian 13): the binaries ask for /lib64/ld-linux-x86-64.so.2,
    // libc6 has it under usr/; base-files' links make the old paths work.
    for top in usr_merged {
        if let Some(clash) = rootfs
            .entries()
            .keys()
            .find(|path| *path == top || path.starts_with(&format!("{top}/")))
        {
            bail!(
                "image {}: /{top} must be a link to usr/{top} (merged /usr), but /{clash} is a real path; \
                 the pinned packages mix the merged and the split layout",
                contents.image
            )
        }
        rootfs.add_symlink(top, &format!("usr/{top}"));
    }
    // What distroless does: one control record per package, so scanners
    // (trivy, grype, syft) can list and match the packages.
    for package in chosen.values() {
        let control = &package.control;
        rootfs.add_file(
            &format!("var/lib/dpkg/status.d/{}", package.locked.package),
            FileContents::Bytes(
                format!("{}\nStatus: install ok installed\n", control.trim_end()).into_bytes(),
            ),
            0o644,
        );
    }
    Ok(ResolvedContents {
        rootfs,
        packages: chosen,
    })
}
