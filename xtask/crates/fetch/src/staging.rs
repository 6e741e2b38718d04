//! Files and directories written under a temporary name beside their final
//! path and then renamed into place (one filesystem, so the rename is
//! atomic): a reader sees them whole or not at all.
//!
//! `tempfile` creates them and removes them on every error path and panic.
//! Their names carry this process's id (`<name>.tmp-<pid>-<random>`), which
//! is how [`remove_stale_temporaries`] finds those of a process that was
//! killed, which no destructor removed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use tempfile::{Builder, NamedTempFile, TempDir};

fn builder<'a>(prefix: &'a str, mode: u32) -> Builder<'a, 'static> {
    let mut builder = Builder::new();
    builder
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(mode));
    builder
}

fn prefix(name: &str) -> String {
    format!("{name}.tmp-{}-", std::process::id())
}

/// A new empty file for `name` in `directory`, created with `mode` less the
/// umask (0o666 is what `fs::File::create` gives).
pub fn temporary_file(directory: &Path, name: &str, mode: u32) -> anyhow::Result<NamedTempFile> {
    builder(&prefix(name), mode)
        .tempfile_in(directory)
        .with_context(|| {
            format!(
                "create a temporary file for {name} in {}",
                directory.display()
            )
        })
}

/// A new empty directory for `name` in `directory`, with the mode
/// `fs::create_dir` would give it.
pub fn temporary_dir(directory: &Path, name: &str) -> anyhow::Result<TempDir> {
    builder(&prefix(name), 0o777)
        .tempdir_in(directory)
        .with_context(|| {
            format!(
                "create a temporary directory for {name} in {}",
                directory.display()
            )
        })
}

/// Renames a finished temporary file to `path`, replacing what was there.
pub fn persist(file: NamedTempFile, path: &Path) -> anyhow::Result<()> {
    file.as_file()
        .sync_all()
        .with_context(|| format!("write {}", file.path().display()))?;
    file.persist(path)
        .map_err(|error| error.error)
        .with_context(|| format!("move {} into place", path.display()))?;
    Ok(())
}

/// Writes `contents` to `path` whole or not at all; a new file gets `mode`
/// less the umask.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let directory = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut file = temporary_file(directory, &name, mode)?;
    file.write_all(contents)
        .with_context(|| format!("write {}", file.path().display()))?;
    persist(file, path)
}

/// Renames a finished temporary directory to `path`. When that fails
/// because another process put the same tree there first, the temporary
/// one is removed and `path` is used as it is.
pub fn persist_dir(directory: TempDir, path: &Path) {
    if fs::rename(directory.path(), path).is_ok() {
        let _moved: std::path::PathBuf = directory.keep();
    }
}

/// Removes temporary files (`<name>.tmp-<pid>-<random>`) that a process
/// which is no longer running left in `directory`, e.g. one killed
/// mid-download.
pub fn remove_stale_temporaries(directory: &Path) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, suffix)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        let Some(pid) = suffix.split('-').next() else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if !alive && entry.file_type().is_ok_and(|kind| kind.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_whole_and_a_killed_processs_temporaries_are_removed() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("lock.json");
        write_atomically(&path, b"one", 0o644).unwrap();
        write_atomically(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "{mode:o}");

        // What a killed process leaves: its pid (no such process) in the name.
        let stale = directory.path().join("x.deb.tmp-4194305-abc123");
        fs::write(&stale, b"partial").unwrap();
        let ours = temporary_file(directory.path(), "y.deb", 0o666).unwrap();
        remove_stale_temporaries(directory.path());
        assert!(!stale.exists());
        assert!(ours.path().exists(), "a running process's file stays");
        let names: Vec<_> = fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_directory_that_lost_the_race_is_removed() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("tree");
        let first = temporary_dir(parent.path(), "tree").unwrap();
        fs::write(first.path().join("a"), b"first").unwrap();
        persist_dir(first, &path);
        let second = temporary_dir(parent.path(), "tree").unwrap();
        fs::write(second.path().join("a"), b"second").unwrap();
        persist_dir(second, &path);
        assert_eq!(fs::read(path.join("a")).unwrap(), b"first");
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    }
}
