//! A root filesystem described in memory, written out as a deterministic
//! layer: a tar with entries sorted by path, every mtime the same, numeric
//! owners only, then gzip without a timestamp.
//!
//! The only files it reads are those a `Rootfs` names on the host
//! (`FileContents::Path`), when the layer is written or fingerprinted.

use std::{
    collections::BTreeMap,
    fs,
    path::{Component, Path, PathBuf},
};

use anyhow::Context;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub enum FileContents {
    /// Read from the host when the layer is written (unpacked .deb files, the
    /// webapp binary): keeps tens of MiB out of memory until needed.
    Path(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
pub enum RootfsEntry {
    Directory { mode: u32, owner: u64 },
    File { contents: FileContents, mode: u32 },
    Symlink { target: String },
}

/// Paths are relative to `/`, without a leading or trailing slash. The
/// `BTreeMap` is what makes the tar order independent of the order files were
/// found in.
#[derive(Clone, Debug, Default)]
pub struct Rootfs {
    entries: BTreeMap<String, RootfsEntry>,
}

impl Rootfs {
    pub fn new() -> Rootfs {
        Rootfs::default()
    }

    pub fn entries(&self) -> &BTreeMap<String, RootfsEntry> {
        &self.entries
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize_image_path(path))
    }

    /// A directory; an existing one gets the new mode and owner (so `/data`
    /// can be handed to the nonroot user after a file created its parents).
    pub fn add_directory(&mut self, path: &str, mode: u32, owner: u64) {
        let path = normalize_image_path(path);
        self.add_parent_directories(&path);
        self.entries
            .insert(path, RootfsEntry::Directory { mode, owner });
    }

    pub fn add_file(&mut self, path: &str, contents: FileContents, mode: u32) {
        let path = normalize_image_path(path);
        self.add_parent_directories(&path);
        self.entries
            .insert(path, RootfsEntry::File { contents, mode });
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) {
        let path = normalize_image_path(path);
        self.add_parent_directories(&path);
        self.entries.insert(
            path,
            RootfsEntry::Symlink {
                target: target.to_string(),
            },
        );
    }

    /// The path `path` ends at once every symlink in it, in any component,
    /// is followed inside this rootfs (an absolute target is taken from the
    /// rootfs's `/`, never the host's). Stops after 40 links, as Linux does.
    pub fn resolve(&self, path: &str) -> String {
        let mut pending: std::collections::VecDeque<String> = normalize_image_path(path)
            .split('/')
            .filter(|part| !part.is_empty())
            .map(str::to_string)
            .collect();
        let mut resolved = String::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            let candidate = if resolved.is_empty() {
                part
            } else {
                format!("{resolved}/{part}")
            };
            match self.entries.get(&candidate) {
                Some(RootfsEntry::Symlink { target }) if links < 40 => {
                    links += 1;
                    let mut restart: std::collections::VecDeque<String> =
                        resolve_symlink_target(&candidate, target)
                            .split('/')
                            .filter(|part| !part.is_empty())
                            .map(str::to_string)
                            .collect();
                    restart.extend(pending);
                    pending = restart;
                    resolved.clear();
                }
                _ => resolved = candidate,
            }
        }
        resolved
    }

    /// Root-owned 0755 parents, as a package manager would leave them.
    fn add_parent_directories(&mut self, path: &str) {
        let mut prefix = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            self.entries
                .entry(prefix.clone())
                .or_insert(RootfsEntry::Directory {
                    mode: 0o755,
                    owner: 0,
                });
        }
    }

    /// The uncompressed layer tar. `mtime` is SOURCE_DATE_EPOCH for every entry.
    pub fn to_tar(&self, mtime: u64) -> anyhow::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(mtime);
            // User and group names stay empty: only numeric ids, so the host's
            // /etc/passwd cannot leak into the layer.
            match entry {
                RootfsEntry::Directory { mode, owner } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(*owner);
                    header.set_gid(*owner);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), std::io::empty())
                        .with_context(|| format!("add directory {path} to layer"))?;
                }
                RootfsEntry::File { contents, mode } => {
                    let bytes = match contents {
                        FileContents::Bytes(bytes) => bytes.clone(),
                        FileContents::Path(source) => fs::read(source)
                            .with_context(|| format!("read {} for /{path}", source.display()))?,
                    };
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_uid(0);
                    header.set_gid(0);
                    header.set_size(bytes.len() as u64);
                    builder
                        .append_data(&mut header, path, bytes.as_slice())
                        .with_context(|| format!("add file {path} to layer"))?;
                }
                RootfsEntry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_uid(0);
                    header.set_gid(0);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .with_context(|| format!("add symlink {path} to layer"))?;
                }
            }
        }
        builder.into_inner().context("finish layer tar")
    }

    /// A cheap digest of everything `to_tar` would read: paths, kinds, modes,
    /// owners, inline bytes, and for host files their path, size and mtime
    /// (not their contents: hashing ~30 MiB on every warm build is what this
    /// avoids). Equal fingerprints mean an earlier archive can be reused.
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        let mut hasher = Sha256::new();
        for (path, entry) in &self.entries {
            hasher.update(path.as_bytes());
            match entry {
                RootfsEntry::Directory { mode, owner } => {
                    hasher.update(format!("\0dir {mode} {owner}\0").as_bytes())
                }
                RootfsEntry::Symlink { target } => {
                    hasher.update(format!("\0link {target}\0").as_bytes())
                }
                RootfsEntry::File { contents, mode } => {
                    hasher.update(format!("\0file {mode}\0").as_bytes());
                    match contents {
                        FileContents::Bytes(bytes) => {
                            hasher.update(Digest::sha256(bytes).hex().as_bytes())
                        }
                        FileContents::Path(source) => {
                            let metadata = fs::metadata(source)
                                .with_context(|| format!("stat {}", source.display()))?;
                            let modified = metadata
                                .modified()
                                .ok()
                                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                                .map(|duration| duration.as_nanos())
                                .unwrap_or_default();
                            hasher.update(
                                format!("{} {} {modified}\0", source.display(), metadata.len())
                                    .as_bytes(),
                            )
                        }
                    }
                }
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// gzip with a fixed header (mtime 0, no file name, OS "unknown") and the
/// pinned pure-Rust deflate, miniz_oxide at level 9, called directly: the
/// compressed bytes, and so the layer digests, depend on nothing but the
/// input. (Not through flate2: another dependency enabling flate2's zlib-rs
/// feature would switch its backend, and every layer digest with it. These
/// are the bytes flate2's miniz_oxide backend wrote with
/// `GzBuilder::new().mtime(0).operating_system(255)` and `Compression::best()`.)
pub fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use miniz_oxide::{
        deflate::{core::CompressorOxide, stream::deflate},
        DataFormat, MZFlush, MZStatus,
    };
    const LEVEL: u8 = 9;
    // ID1 ID2, CM=deflate, FLG=0, MTIME=0, XFL=2 (best compression), OS=255.
    let mut output = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    let mut compressor = Box::<CompressorOxide>::default();
    compressor.set_format_and_level(DataFormat::Raw, LEVEL);
    let mut input = bytes;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let result = deflate(&mut compressor, input, &mut chunk, MZFlush::Finish);
        input = &input[result.bytes_consumed..];
        output.extend_from_slice(&chunk[..result.bytes_written]);
        match result.status {
            Ok(MZStatus::StreamEnd) => break,
            Ok(_) | Err(miniz_oxide::MZError::Buf) => continue,
            Err(error) => anyhow::bail!("gzip layer: deflate failed: {error:?}"),
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(bytes);
    output.extend_from_slice(&crc.finalize().to_le_bytes());
    output.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    Ok(output)
}

/// `/usr//lib/./x/` → `usr/lib/x`; `..` is resolved lexically (symlinks in
/// packages point at siblings or absolute paths, never through other links).
pub fn normalize_image_path(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    parts.join("/")
}

/// Where a symlink at `link_path` (image path) points, as an image path.
pub fn resolve_symlink_target(link_path: &str, target: &str) -> String {
    if target.starts_with('/') {
        normalize_image_path(target)
    } else {
        let parent = Path::new(link_path)
            .parent()
            .map(|parent| parent.to_string_lossy().into_owned())
            .unwrap_or_default();
        normalize_image_path(&format!("{parent}/{target}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The images' non-root user and group.
    const NONROOT_ID: u64 = 65532;

    fn entry_names_and_mtimes(tar_bytes: &[u8]) -> Vec<(String, u64, u64, String)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    header.mtime().unwrap(),
                    header.uid().unwrap(),
                    String::from_utf8_lossy(header.username_bytes().unwrap_or_default())
                        .into_owned(),
                )
            })
            .collect()
    }

    fn sample_rootfs(reverse: bool) -> Rootfs {
        let mut files = vec![
            ("usr/bin/zeta", b"z".to_vec()),
            ("etc/passwd", b"root:x:0:0::/:/sbin/nologin\n".to_vec()),
            ("usr/lib/alpha.so.1", b"elf".to_vec()),
            ("usr/bin/alpha", b"a".to_vec()),
        ];
        if reverse {
            files.reverse();
        }
        let mut rootfs = Rootfs::new();
        for (path, bytes) in files {
            rootfs.add_file(path, FileContents::Bytes(bytes), 0o755);
        }
        rootfs.add_symlink("usr/lib/alpha.so", "alpha.so.1");
        rootfs.add_directory("data", 0o755, NONROOT_ID);
        rootfs
    }

    #[test]
    fn tar_entries_are_sorted_with_fixed_mtime_whatever_the_insertion_order() {
        let forward = sample_rootfs(false).to_tar(1_700_000_000).unwrap();
        let backward = sample_rootfs(true).to_tar(1_700_000_000).unwrap();

        assert_eq!(forward, backward);
        let entries = entry_names_and_mtimes(&forward);
        let names: Vec<&str> = entries.iter().map(|entry| entry.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "data/",
                "etc/",
                "etc/passwd",
                "usr/",
                "usr/bin/",
                "usr/bin/alpha",
                "usr/bin/zeta",
                "usr/lib/",
                "usr/lib/alpha.so",
                "usr/lib/alpha.so.1"
            ]
        );
        assert!(entries.iter().all(|entry| entry.1 == 1_700_000_000));
        assert!(
            entries.iter().all(|entry| entry.3.is_empty()),
            "{entries:?}"
        );
        assert_eq!(entries[0].2, NONROOT_ID);
    }

    #[test]
    fn same_rootfs_gives_the_same_compressed_layer_bytes() {
        let first = gzip(&sample_rootfs(false).to_tar(42).unwrap()).unwrap();
        let second = gzip(&sample_rootfs(true).to_tar(42).unwrap()).unwrap();

        assert_eq!(first, second);
        // gzip header: no mtime (bytes 4..8 zero), OS byte 255.
        assert_eq!(&first[4..8], &[0, 0, 0, 0]);
        assert_eq!(first[9], 255);
    }

    #[test]
    fn gzip_output_is_pinned_to_the_miniz_oxide_backend() {
        // A different deflate implementation or level changes every layer
        // digest; this fixed vector notices it before the images do.
        let input: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let compressed = gzip(&input).unwrap();
        assert_eq!(
            Digest::sha256(&compressed).hex(),
            "18aa3d2e32ebc251503177cd4c7f32d38aefbd42a0fe1c52844d9fba8bad72d7",
            "gzip bytes changed: was flate2's backend or compression level changed?"
        );
    }

    #[test]
    fn resolve_follows_links_in_every_component_inside_the_rootfs() {
        // Debian 13's layout: /lib64 is base-files' link to usr/lib64, and
        // libc6's usr/lib64 loader is a link into the multiarch directory.
        let mut rootfs = Rootfs::new();
        rootfs.add_symlink("lib64", "usr/lib64");
        rootfs.add_symlink("lib", "usr/lib");
        rootfs.add_symlink(
            "usr/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        );
        rootfs.add_file(
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            FileContents::Bytes(b"elf".to_vec()),
            0o755,
        );
        assert_eq!(
            rootfs.resolve("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
        // Debian 12's layout: real directories, a link in the last component.
        let mut rootfs = Rootfs::new();
        rootfs.add_symlink(
            "lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        );
        assert_eq!(
            rootfs.resolve("lib64/ld-linux-x86-64.so.2"),
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
        // A loop ends instead of spinning.
        let mut rootfs = Rootfs::new();
        rootfs.add_symlink("a", "b");
        rootfs.add_symlink("b", "a");
        let _ = rootfs.resolve("a/x");
    }

    #[test]
    fn symlink_targets_resolve_relative_to_the_link_and_absolute_from_root() {
        assert_eq!(
            resolve_symlink_target("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld.so"),
            "lib/x86_64-linux-gnu/ld.so"
        );
        assert_eq!(
            resolve_symlink_target("usr/lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2.13"),
            "usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
        );
        assert_eq!(resolve_symlink_target("a/b/c", "../d"), "a/d");
    }
}
