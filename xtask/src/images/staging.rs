//! Names for files and directories that are written under a temporary name
//! and then renamed into place, so that a reader sees them whole or not at
//! all, and the cleanup of those a killed process left behind.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static TEMPORARY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file or directory name unique within this machine's running processes:
/// `<prefix>.tmp-<pid>-<n>`.
pub fn unique_temporary_name(prefix: &str) -> String {
    format!(
        "{prefix}.tmp-{}-{}",
        std::process::id(),
        TEMPORARY_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes temporary files (`<name>.tmp-<pid>-<n>`) that a process which is
/// no longer running left in `directory`, e.g. one killed mid-download.
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
