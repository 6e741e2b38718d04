//! `images --update-lock`: new pins from Debian's signed indexes.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;

use super::*;
use debian::LockedPackage;

/// `--update-lock`: the signed indexes first (any failure there changes
/// nothing), then the candidates' .debs (each checked against the signed
/// index before it enters the cache), then the lock, written whole.
pub(super) fn update_lock(root: &Path) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    update_lock_in(
        root,
        &BuildLayout::regular(root).cache,
        &release::keys_dir(root),
        release::SUITES,
        now,
    )
}

/// `update_lock` for the lock under `lock_root` and the given cache, keys
/// and suites (tests point these at scratch directories and a local server).
pub(super) fn update_lock_in(
    lock_root: &Path,
    cache: &DebianCache,
    keys_dir: &Path,
    suites: &[xtask_debian::release::Suite],
    now_unix: u64,
) -> anyhow::Result<()> {
    let root = lock_root;
    let old = LockFile::read(root).unwrap_or_default();
    let mut new = LockFile {
        tools: old.tools.clone(),
        rust_std: old.rust_std.clone(),
        ..LockFile::default()
    };
    for platform in Platform::ALL {
        let candidates = release::fetch_candidates(
            &cache.archives,
            keys_dir,
            suites,
            now_unix,
            platform.debian_architecture(),
        )?;
        let mut source = debian::CandidateSource {
            cache,
            candidates: &candidates,
            fetched: BTreeMap::new(),
        };
        // nix-instantiate runs on the host only; the images exist for every platform.
        let host_only = Some(platform) == Platform::host();
        for contents in [&DB_CONTENTS, &PROXY_CONTENTS, &NIX_CONTENTS] {
            if contents.image == NIX_CONTENTS.image && !host_only {
                continue;
            }
            let resolved =
                debian::resolve_contents(&mut source, contents, platform).with_context(|| {
                    format!(
                        "resolve the packages of image {} for {platform}",
                        contents.image
                    )
                })?;
            let packages = new.images.entry(contents.image.to_string()).or_default();
            for package in resolved.packages.values() {
                if !packages.contains(&package.locked) {
                    packages.push(package.locked.clone());
                }
            }
        }
    }
    // Sorted by name, then architecture: one list per image, both platforms.
    for packages in new.images.values_mut() {
        packages.sort_by(|left, right| {
            (&left.package, &left.architecture).cmp(&(&right.package, &right.architecture))
        });
    }
    let mut changes = Vec::new();
    for (image, packages) in &new.images {
        let old_packages: BTreeMap<String, &str> = old
            .images
            .get(image)
            .map(|packages| packages.iter().map(named_version).collect())
            .unwrap_or_default();
        let new_packages: BTreeMap<String, &str> = packages.iter().map(named_version).collect();
        for (package, version) in &new_packages {
            match old_packages.get(package) {
                None => changes.push(format!("{image}: + {package} {version}")),
                Some(old_version) if old_version != version => {
                    changes.push(format!("{image}: {package} {old_version} -> {version}"))
                }
                Some(_) => {}
            }
        }
        for (package, version) in &old_packages {
            if !new_packages.contains_key(package) {
                changes.push(format!("{image}: - {package} {version}"));
            }
        }
    }
    new.write(root)?;
    if changes.is_empty() {
        println!("{}: no changes", debian::LOCK_PATH);
    } else {
        println!("{} changed:", debian::LOCK_PATH);
        for change in changes {
            println!("  {change}");
        }
    }
    Ok(())
}

/// `libc6:arm64` → its version (`:amd64` left out, as the host's).
fn named_version(package: &LockedPackage) -> (String, &str) {
    let name = match package.architecture.as_str() {
        "amd64" | "all" => package.package.clone(),
        other => format!("{}:{other}", package.package),
    };
    (name, package.version.as_str())
}
