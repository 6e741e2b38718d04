//! Programs from crates.io that xtask runs (the load tool, cargo-auditable):
//! each pinned by version here, built once per machine with `cargo install
//! --locked` into the tool cache (`crate::tool_cache_dir`), and used only
//! while it is the very file its build recorded (sha256 beside it).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// cargo-auditable, which the images' programs are built with: the newest
/// release on crates.io when this was written (`cargo info cargo-auditable`,
/// 2026-12-05), so every machine embeds with the same tool.
pub const CARGO_AUDITABLE: PinnedTool = PinnedTool {
    package: "cargo-auditable",
    version: "0.7.7",
    binary: "cargo-auditable",
    caller: "images",
};

/// oha, the bench's load tool: the newest release on crates.io when the
/// bench was written (`cargo info oha`).
pub const OHA: PinnedTool = PinnedTool {
    package: "oha",
    version: "1.16.0",
    binary: "oha",
    caller: "bench",
};

/// A crate whose binary xtask runs.
pub struct PinnedTool {
    pub package: &'static str,
    pub version: &'static str,
    /// The binary `cargo install` puts in `bin/`.
    pub binary: &'static str,
    /// Who asks, for messages: `bench`, `images`.
    pub caller: &'static str,
}

/// `tool`'s cached binary, built first if it is missing, is not the file its
/// build recorded, or fails `usable` (e.g. answers `--version` with another
/// version). The first build compiles it; later runs, from any clone, reuse it.
pub(super) fn ensure(
    sh: &Shell,
    tool: &PinnedTool,
    usable: &dyn Fn(&Path) -> bool,
) -> anyhow::Result<PathBuf> {
    // One install at a time within this process (tests build in parallel);
    // a poisoned lock only means another install failed.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let PinnedTool {
        package,
        version,
        binary,
        caller,
    } = tool;
    let root = crate::tool_cache_dir().join(format!("{package}-{version}"));
    let installed = root.join("bin").join(binary);
    let record = root.join(format!("{binary}.sha256"));
    match cached_build_is_intact(&installed, &record) {
        Ok(true) if usable(&installed) => return Ok(installed),
        Ok(true) => eprintln!(
            "{caller}: {} is not {package} {version}; building it again",
            installed.display()
        ),
        Ok(false) => {}
        Err(reason) => eprintln!("{caller}: {reason}; building {package} again"),
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    cmd!(sh, "{cargo} --version")
        .quiet()
        .read()
        .with_context(|| {
            format!("cargo is needed to install {package}; install Rust with rustup")
        })?;
    eprintln!(
        "{caller}: building {package} {version} into {} (once per machine; {} moves it)",
        root.display(),
        xtask_fetch::TOOL_CACHE_VARIABLE
    );
    let spec = format!("{package}@{version}");
    // Its own target dir: installing neither waits on nor invalidates the
    // workspace's builds, and resumes if it is interrupted.
    let build_dir = root.join("build");
    cmd!(
        sh,
        "{cargo} install --locked --force {spec} --root {root} --target-dir {build_dir}"
    )
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .run()
    .with_context(|| format!("install {package} {version} with cargo install"))?;
    if !installed.is_file() || !usable(&installed) {
        bail!(
            "cargo install {spec} finished but {} is missing or not that version",
            installed.display()
        );
    }
    // Written whole or not at all: a torn record would only mean a rebuild,
    // but a rename costs nothing.
    xtask_fetch::write_atomically(
        &record,
        format!("{}\n", sha256_of_file(&installed)?).as_bytes(),
        0o666,
    )?;
    // The build directory is only needed to resume an interrupted build.
    let _ = std::fs::remove_dir_all(&build_dir);
    Ok(installed)
}

/// Whether the cached binary is the very file its build recorded (its
/// sha256 in `record`): `Ok(false)` when there is none yet, an error naming
/// the difference when it was changed or the record is damaged.
fn cached_build_is_intact(binary: &Path, record: &Path) -> Result<bool, String> {
    if !binary.exists() || !record.exists() {
        return Ok(false);
    }
    let recorded = std::fs::read_to_string(record)
        .map_err(|error| format!("cannot read {}: {error}", record.display()))?;
    let actual = sha256_of_file(binary).map_err(|error| format!("{error:#}"))?;
    if recorded.trim() != actual {
        return Err(format!(
            "{} has sha256 {actual}, but its build recorded {} in {}",
            binary.display(),
            recorded.trim(),
            record.display()
        ));
    }
    Ok(true)
}

/// The hex digits alone, as the record beside the binary holds them.
fn sha256_of_file(path: &Path) -> anyhow::Result<String> {
    Ok(xtask_oci::Digest::sha256_of_file(path)?.hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_build_is_used_only_while_it_is_the_file_its_build_recorded() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let binary = dir.path().join("tool");
        let record = dir.path().join("tool.sha256");
        assert_eq!(cached_build_is_intact(&binary, &record), Ok(false));
        std::fs::write(&binary, b"the build").expect("write binary");
        assert_eq!(cached_build_is_intact(&binary, &record), Ok(false));
        let digest = sha256_of_file(&binary).expect("digest");
        std::fs::write(&record, format!("{digest}\n")).expect("write record");
        assert_eq!(cached_build_is_intact(&binary, &record), Ok(true));
        std::fs::write(&binary, b"changed since").expect("change binary");
        let error = cached_build_is_intact(&binary, &record).expect_err("changed");
        assert!(error.contains(&digest), "{error}");
        assert!(error.contains("its build recorded"), "{error}");
    }
}
