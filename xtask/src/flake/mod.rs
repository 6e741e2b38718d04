//! `cargo xtask flake-check` and the tests of `flake.nix`, which run without
//! Nix's binary cache or GitHub.
//!
//! This machine (and CI) cannot fetch nixpkgs or rust-overlay, so the flake is
//! never built here. What runs instead, with the `nix-instantiate` of Debian's
//! `nix-bin` pinned in deploy/images.lock.json (fetched, checked and unpacked
//! by `images::pins::nix`; evaluation only, no root, /nix or daemon), or the
//! one `WEBSTACK_NIX_INSTANTIATE` names:
//! - `check`: every tracked `.nix` file, and every file under xtask/nix/,
//!   must parse (`nix-instantiate --parse`).
//! - the tests below (the ignored tier: `cargo xtask ci` runs them) evaluate
//!   the flake's `outputs` with stand-in inputs (xtask/nix/eval-flake.nix,
//!   stand-in-nixpkgs.nix, flake-inputs.nix) and compare the JSON they print
//!   with docs/nix.md, `rust-toolchain.toml` and the stack model
//!   (xtask/src/stack.rs) the Debian images are built from.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

/// The page that documents the Nix path: its tool list and version table are checked.
#[cfg(test)]
const NIX_DOC: &str = "docs/nix.md";

/// Names a `nix-instantiate` to use instead of the pinned one (your own
/// Nix's, say).
pub const NIX_INSTANTIATE_VARIABLE: &str = "WEBSTACK_NIX_INSTANTIATE";

/// The checked-in Nix expressions the checks evaluate, relative to the
/// workspace root.
const NIX_EXPRESSIONS_DIR: &str = "xtask/nix";

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// Parse-check flake.nix and every other tracked .nix file, with the pinned
/// nix-instantiate (or the one given).
#[derive(clap::Args)]
pub struct FlakeCheck {
    /// The nix-instantiate to run instead of the pinned one from
    /// deploy/images.lock.json, e.g. your own Nix's:
    /// `--nix-instantiate "$(command -v nix-instantiate)"`.
    #[arg(long, value_name = "PROGRAM", env = NIX_INSTANTIATE_VARIABLE)]
    nix_instantiate: Option<PathBuf>,
}

impl FlakeCheck {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let nix = NixInstantiate::given_or_pinned(self.nix_instantiate.map(OsString::from))?;
        check(sh, &nix)
    }
}

/// A `nix-instantiate` that runs, and where it came from (for messages).
#[derive(Clone, Debug)]
pub struct NixInstantiate {
    pub program: PathBuf,
    pub origin: String,
}

impl NixInstantiate {
    /// `WEBSTACK_NIX_INSTANTIATE` when it is set, else the pinned one.
    pub fn from_environment_or_pinned() -> anyhow::Result<NixInstantiate> {
        NixInstantiate::given_or_pinned(std::env::var_os(NIX_INSTANTIATE_VARIABLE))
    }

    /// `given` (a program name or path) when there is one, else the
    /// pinned nix-bin, downloaded and unpacked on first use. Fails in one
    /// line naming what is missing: never a silent skip.
    pub fn given_or_pinned(given: Option<OsString>) -> anyhow::Result<NixInstantiate> {
        let nix = match given.filter(|program| !program.is_empty()) {
            Some(program) => NixInstantiate {
                origin: format!(
                    "{} (from --nix-instantiate or {NIX_INSTANTIATE_VARIABLE})",
                    program.to_string_lossy()
                ),
                program: PathBuf::from(program),
            },
            None => match crate::images::pins::nix() {
                Ok(pinned) => NixInstantiate {
                    program: pinned.nix_instantiate,
                    origin: format!("the pinned {}", pinned.package),
                },
                Err(error) => bail!(
                    "no nix-instantiate: the pinned nix-bin from {} could not be obtained ({error:#}); \
                     fix that, or set {NIX_INSTANTIATE_VARIABLE} to a nix-instantiate of your own",
                    "deploy/images.lock.json"
                ),
            },
        };
        let version = std::process::Command::new(&nix.program)
            .arg("--version")
            .output();
        match version {
            Ok(output) if output.status.success() => Ok(nix),
            Ok(output) => bail!(
                "no nix-instantiate: {} ({}) exited with {} on --version: {}",
                nix.program.display(),
                nix.origin,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => bail!(
                "no nix-instantiate: cannot run {} ({}): {error}",
                nix.program.display(),
                nix.origin
            ),
        }
    }
}

/// Parses `flake.nix`, every other `.nix` file git tracks and every file
/// under xtask/nix/. Runs from the workspace root.
pub fn check(sh: &Shell, nix: &NixInstantiate) -> anyhow::Result<()> {
    let nix_files = nix_files_to_check(sh)?;
    for nix_file in &nix_files {
        parse_nix_file(sh, nix, nix_file)?;
    }
    let names: Vec<String> = nix_files
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    eprintln!(
        "flake-check: {} .nix file(s) parse with {}: {}",
        names.len(),
        nix.origin,
        names.join(", ")
    );
    Ok(())
}

/// `flake.nix` plus every other `.nix` file git tracks, plus the checks'
/// own expressions under xtask/nix/, relative to the workspace root: a new
/// file is checked even before it is committed.
fn nix_files_to_check(sh: &Shell) -> anyhow::Result<Vec<PathBuf>> {
    let root = crate::project_root();
    let _at_root = sh.push_dir(&root);
    // One pathspec argument; git's own wildcard matching spans directories.
    let nix_pathspec = "*.nix";
    let tracked = cmd!(sh, "git ls-files -- {nix_pathspec}")
        .read()
        .context("list the .nix files git tracks")?;
    let mut nix_files: Vec<PathBuf> = tracked.lines().map(PathBuf::from).collect();
    if !nix_files.iter().any(|path| path == Path::new("flake.nix")) {
        if !root.join("flake.nix").is_file() {
            bail!("flake.nix is missing at the workspace root: restore it from git");
        }
        nix_files.insert(0, PathBuf::from("flake.nix"));
    }
    let expressions_dir = root.join(NIX_EXPRESSIONS_DIR);
    let entries = std::fs::read_dir(&expressions_dir)
        .with_context(|| format!("list {}", expressions_dir.display()))?;
    let mut expressions = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("list {}", expressions_dir.display()))?
            .path();
        if path.extension().is_some_and(|extension| extension == "nix") {
            let relative = Path::new(NIX_EXPRESSIONS_DIR).join(
                path.file_name()
                    .context("a directory entry without a name")?,
            );
            expressions.push(relative);
        }
    }
    expressions.sort();
    for relative in expressions {
        if !nix_files.contains(&relative) {
            nix_files.push(relative);
        }
    }
    Ok(nix_files)
}

/// Fails with nix-instantiate's own message when the file is not valid Nix
/// syntax.
fn parse_nix_file(sh: &Shell, nix: &NixInstantiate, nix_file: &Path) -> anyhow::Result<()> {
    let _at_root = sh.push_dir(crate::project_root());
    let program = &nix.program;
    let output = cmd!(sh, "{program} --parse {nix_file}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run {} --parse", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} is not valid Nix, fix this syntax error:\n{}",
            nix_file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
