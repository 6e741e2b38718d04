//! Reading `.deb`s in Rust, so `dpkg-deb` is not needed: a `.deb` is an
//! `ar` archive of `debian-binary`,
//! `control.tar.*` and `data.tar.*`, each tar compressed with xz, zstd or
//! gzip (or not at all).

use std::{
    fs,
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{bail, Context};

/// The decompressed stream of an `ar` member named `name` (`control.tar.xz` …).
fn decompressed<'a, R: Read + 'a>(name: &str, reader: R) -> anyhow::Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".tar.xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader))
    } else if name.ends_with(".tar.zst") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(reader)
                .map_err(|error| anyhow::anyhow!("{name}: not a zstd stream: {error}"))?,
        )
    } else if name.ends_with(".tar.gz") {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else if name.ends_with(".tar") {
        Box::new(reader)
    } else {
        bail!("unknown member compression {name}")
    })
}

/// Calls `visit` with the name and decompressed tar stream of the member
/// whose name starts with `prefix` (`control.tar` or `data.tar`).
fn with_member<T>(
    deb_path: &Path,
    prefix: &str,
    visit: impl FnOnce(&str, &mut dyn Read) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let file = fs::File::open(deb_path).with_context(|| format!("open {}", deb_path.display()))?;
    let mut archive = ar::Archive::new(BufReader::new(file));
    let mut names = Vec::new();
    while let Some(entry) = archive.next_entry() {
        let entry =
            entry.with_context(|| format!("read {} (not an ar archive?)", deb_path.display()))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if name.starts_with(prefix) {
            let mut stream = decompressed(&name, entry)
                .with_context(|| format!("read {name} in {}", deb_path.display()))?;
            return visit(&name, &mut stream)
                .with_context(|| format!("read {name} in {}", deb_path.display()));
        }
        names.push(name);
    }
    bail!(
        "{} has no {prefix}.* member (members: {})",
        deb_path.display(),
        names.join(", ")
    )
}

/// The package's `control` file, byte for byte (what `dpkg-deb --field`
/// prints without field names).
pub fn control_file(deb_path: &Path) -> anyhow::Result<String> {
    with_member(deb_path, "control.tar", |name, stream| {
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().context("read the tar")? {
            let mut entry = entry.context("read a tar entry")?;
            let path = entry.path().context("tar entry path")?.into_owned();
            let path = path.to_string_lossy();
            if path.trim_start_matches("./") == "control" {
                let mut text = String::new();
                entry
                    .read_to_string(&mut text)
                    .context("read control (not UTF-8?)")?;
                return Ok(text);
            }
        }
        bail!("{name} has no control file")
    })
}

/// Unpacks `data.tar.*` into `destination` (new or empty), with
/// the archive's permission bits exactly (no umask), as `dpkg-deb --extract`.
pub fn extract_data(deb_path: &Path, destination: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(destination).with_context(|| format!("create {}", destination.display()))?;
    with_member(deb_path, "data.tar", |_, stream| {
        let mut archive = tar::Archive::new(stream);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(false);
        archive.set_overwrite(true);
        archive
            .unpack(destination)
            .with_context(|| format!("unpack into {}", destination.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb822::control_field;

    /// A .deb written here, with each member compression Debian uses.
    fn write_deb(directory: &Path, compression: &str) -> std::path::PathBuf {
        let tar_of = |files: &[(&str, &[u8], u32)]| {
            let mut builder = tar::Builder::new(Vec::new());
            for (path, contents, mode) in files {
                let mut header = tar::Header::new_gnu();
                header.set_size(contents.len() as u64);
                header.set_mode(*mode);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, path, *contents).unwrap();
            }
            builder.into_inner().unwrap()
        };
        let compress = |bytes: Vec<u8>| -> Vec<u8> {
            match compression {
                "xz" => {
                    let mut output = Vec::new();
                    liblzma::read::XzEncoder::new(&bytes[..], 6)
                        .read_to_end(&mut output)
                        .unwrap();
                    output
                }
                "gz" => {
                    use std::io::Write;
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    encoder.write_all(&bytes).unwrap();
                    encoder.finish().unwrap()
                }
                _ => bytes,
            }
        };
        let suffix = match compression {
            "none" => String::new(),
            other => format!(".{other}"),
        };
        let control = compress(tar_of(&[(
            "./control",
            b"Package: demo\nVersion: 1.0\nDepends: libc6\n",
            0o644,
        )]));
        let data = compress(tar_of(&[
            ("./usr/bin/demo", b"#!demo\n", 0o4755),
            ("./etc/demo.conf", b"x = 1\n", 0o600),
        ]));
        let path = directory.join(format!("demo-{compression}.deb"));
        let mut builder = ar::Builder::new(fs::File::create(&path).unwrap());
        for (name, bytes) in [
            ("debian-binary".to_string(), b"2.0\n".to_vec()),
            (format!("control.tar{suffix}"), control),
            (format!("data.tar{suffix}"), data),
        ] {
            let header = ar::Header::new(name.into_bytes(), bytes.len() as u64);
            builder.append(&header, &bytes[..]).unwrap();
        }
        path
    }

    #[test]
    fn debs_unpack_with_exact_modes_whatever_the_compression() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!("xtask-deb-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&directory);
        fs::create_dir_all(&directory).unwrap();
        for compression in ["xz", "gz", "none"] {
            let deb = write_deb(&directory, compression);
            let control = control_file(&deb).unwrap();
            assert_eq!(
                control_field(&control, "Package").unwrap().as_deref(),
                Some("demo")
            );
            let tree = directory.join(format!("tree-{compression}"));
            extract_data(&deb, &tree).unwrap();
            let mode =
                |path: &str| fs::metadata(tree.join(path)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode("usr/bin/demo"), 0o4755, "{compression}");
            assert_eq!(mode("etc/demo.conf"), 0o600, "{compression}");
            assert_eq!(fs::read(tree.join("usr/bin/demo")).unwrap(), b"#!demo\n");
        }
        fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_deb_without_a_data_member_names_the_file() {
        let directory =
            std::env::temp_dir().join(format!("xtask-deb-test-empty-{}", std::process::id()));
        fs::create_dir_all(&directory).unwrap();
        let path = directory.join("empty.deb");
        let mut builder = ar::Builder::new(fs::File::create(&path).unwrap());
        builder
            .append(
                &ar::Header::new(b"debian-binary".to_vec(), 4),
                &b"2.0\n"[..],
            )
            .unwrap();
        drop(builder);
        let message = format!(
            "{:#}",
            extract_data(&path, &directory.join("t")).unwrap_err()
        );
        assert!(message.contains("empty.deb has no data.tar"), "{message}");
        fs::remove_dir_all(&directory).unwrap();
    }
}
