//! `cargo xtask layers`: no import cycle between the modules of a crate of
//! the workspace, read from the `use` paths of its sources.
//!
//! For each crate (each member's library, `src/main.rs` and every binary
//! under `src/bin/`, each its own crate root) every `.rs` file under `src/`
//! is a module: `src/images/debian.rs` is `images::debian`,
//! `src/images/mod.rs` is `images`, `src/main.rs` or `src/lib.rs` the crate
//! root (`crate`). The references are the `crate::…`, `super::…` and
//! `self::…` paths anywhere in the code (`use` groups expanded), each made
//! absolute from the file's module and resolved to the longest prefix that
//! is a module. Not read: comments, string and character literals, and test
//! code: an inline `#[cfg(test)] mod NAME { … }` (from the attribute to its
//! closing brace, counting braces once comments and strings are gone) and a
//! file module declared `#[cfg(test)] mod NAME;` (with its submodules).
//!
//! Known limits (the rules are simple on purpose): a path without a leading
//! `crate`/`super`/`self` (such as `images::x` in the crate root) is not a
//! reference; `super` is relative to the file, not to an inline module in
//! it; `#[path]` attributes are not followed; only the exact attribute
//! `#[cfg(test)]` marks test code.
//!
//! Two graphs per crate: modules (file level) and their first segment below
//! the crate root (top level: `images::debian` counts as `images`), both
//! without self-edges. Their strongly connected components of more than one
//! node are the cycles; each is printed with one `file:line` for every edge
//! inside it, and any cycle fails the command.

mod graph;
mod parse;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

use self::graph::{
    cycles_of, describe_cycle, layers_of, module_graph, parse_crate, top_level_graph,
};
use self::parse::{ModulePath, SourceFile};

/// Check that no crate of the workspace has an import cycle between its modules.
#[derive(clap::Args)]
pub struct Layers {}

impl Layers {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        check(&crate::project_root())
    }
}

/// Reads every crate of the workspace at `root`, prints each one's cycles
/// and fails if there is any.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut cycles = 0;
    for unit in workspace_crates(root)? {
        let parsed = parse_crate(&unit.files);
        let modules = module_graph(&parsed);
        let top = top_level_graph(&modules);
        let references: usize = parsed.iter().map(|file| file.references.len()).sum();
        println!(
            "{}: {} modules, {} references",
            unit.name,
            parsed.len(),
            references
        );
        for (level, graph) in [("module", &modules), ("top-level", &top)] {
            for component in cycles_of(graph) {
                cycles += 1;
                print!("{}", describe_cycle(level, graph, &component));
            }
        }
        // What ARCHITECTURE.md draws: the top-level modules, bottom first.
        if let Some(layers) = layers_of(&top).filter(|layers| layers.len() > 1) {
            for (number, layer) in layers.iter().enumerate() {
                println!("  layer {number}: {}", layer.join(", "));
            }
        }
    }
    if cycles > 0 {
        bail!("{cycles} import cycle(s) between modules (listed above)");
    }
    println!("no import cycle between modules");
    Ok(())
}

// ---------------------------------------------------------------------------
// Crates and files.

/// One crate root and the files that are its modules.
struct CrateUnit {
    name: String,
    files: Vec<SourceFile>,
}

/// The workspace members (from the root Cargo.toml) and the crates of each.
fn workspace_crates(root: &Path) -> anyhow::Result<Vec<CrateUnit>> {
    let manifest_path = root.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("read {}", manifest_path.display()))?;
    let members = workspace_members(&manifest);
    if members.is_empty() {
        bail!("no workspace members in {}", manifest_path.display());
    }
    let mut units = Vec::new();
    for member in members {
        let member_manifest = root.join(&member).join("Cargo.toml");
        let text = std::fs::read_to_string(&member_manifest)
            .with_context(|| format!("read {}", member_manifest.display()))?;
        let package = package_name(&text).unwrap_or_else(|| member.clone());
        units.extend(package_crates(
            root,
            &package,
            &root.join(&member).join("src"),
        )?);
    }
    Ok(units)
}

/// The crates of one package: its library (`src/lib.rs` and the modules
/// below `src/`), `src/main.rs` (which owns those modules when there is no
/// library) and each binary under `src/bin/` (`NAME.rs`, or `NAME/main.rs`
/// with its modules).
fn package_crates(root: &Path, package: &str, src: &Path) -> anyhow::Result<Vec<CrateUnit>> {
    let bin = src.join("bin");
    let lib = src.join("lib.rs");
    let main = src.join("main.rs");
    let has_lib = lib.is_file();
    let mut units = Vec::new();
    let mut library = Vec::new();
    for path in rs_files(src)? {
        if path.starts_with(&bin) || (has_lib && path == main) {
            continue;
        }
        library.push(source_file(root, src, &path)?);
    }
    if !library.is_empty() {
        let kind = if has_lib { "lib" } else { "bin" };
        units.push(CrateUnit {
            name: format!("{package} ({kind})"),
            files: library,
        });
    }
    if has_lib && main.is_file() {
        units.push(CrateUnit {
            name: format!("{package} (bin {package})"),
            files: vec![source_file(root, src, &main)?],
        });
    }
    if bin.is_dir() {
        for entry in sorted_entries(&bin)? {
            let (name, files) = if entry.is_dir() {
                let mut files = Vec::new();
                for path in rs_files(&entry)? {
                    files.push(source_file(root, &entry, &path)?);
                }
                (file_name(&entry), files)
            } else if entry.extension().is_some_and(|extension| extension == "rs") {
                let mut file = source_file(root, &bin, &entry)?;
                file.module = Vec::new();
                (stem(&entry), vec![file])
            } else {
                continue;
            };
            units.push(CrateUnit {
                name: format!("{package} (bin {name})"),
                files,
            });
        }
    }
    Ok(units)
}

fn source_file(root: &Path, base: &Path, path: &Path) -> anyhow::Result<SourceFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let relative = path.strip_prefix(base).unwrap_or(path);
    let shown = path.strip_prefix(root).unwrap_or(path);
    Ok(SourceFile {
        path: shown.display().to_string(),
        module: module_of(relative),
        text,
    })
}

/// The module of a file, from its path relative to the crate's source
/// directory: `images/debian.rs` is `images::debian`, `images/mod.rs` is
/// `images`, `main.rs` and `lib.rs` are the root.
pub fn module_of(relative: &Path) -> ModulePath {
    let mut segments: ModulePath = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = segments.last_mut() {
        if let Some(stem) = last.strip_suffix(".rs") {
            *last = stem.to_string();
        }
    }
    let is_root = segments.len() == 1 && matches!(segments[0].as_str(), "main" | "lib");
    if is_root || segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

/// Every `.rs` file under `directory`, in a stable order.
fn rs_files(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in sorted_entries(directory)? {
        if entry.is_dir() {
            files.extend(rs_files(&entry)?);
        } else if entry.extension().is_some_and(|extension| extension == "rs") {
            files.push(entry);
        }
    }
    Ok(files)
}

fn sorted_entries(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let read = || -> std::io::Result<Vec<PathBuf>> {
        let mut entries = std::fs::read_dir(directory)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<std::io::Result<Vec<_>>>()?;
        entries.sort();
        Ok(entries)
    };
    read().with_context(|| format!("list {}", directory.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `members = [...]` of a workspace manifest (a plain text read: the
/// list is one array of strings).
pub fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest.get(open + 1..close)
        .unwrap_or_default()
        .split(',')
        .map(|member| member.trim().trim_matches('"').to_string())
        .filter(|member| !member.is_empty())
        .collect()
}

/// The `name` of a package manifest's `[package]` table.
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some((key, value)) = line.split_once('=') {
            if in_package && key.trim() == "name" {
                return Some(value.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}
