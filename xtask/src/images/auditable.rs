//! The crate list embedded in the images' programs, the way `cargo auditable`
//! embeds it: a `.dep-v0` section holding zlib-compressed JSON (the format of
//! the rust-secure-code/cargo-auditable project), which `cargo audit bin`,
//! Trivy, Syft and Grype read from the binary itself.
//!
//! The build runs the real `cargo-auditable`, pinned, built once per machine
//! with `cargo install --locked` into the tool cache (like the load tool,
//! bench/oha.rs) and checked by the sha256 its build recorded. It wraps rustc
//! for the workspace's crates (`RUSTC_WORKSPACE_WRAPPER`): for each binary it
//! asks `cargo metadata` for that package's dependencies on that target with
//! its features, writes them into an object file of the target's format and
//! links it in, keeping its symbol against `--gc-sections`. The list holds no
//! path or time, so the images stay the same bytes on every build.
//!
//! [`embedded_crates`] reads the list back, with the project's decoder
//! (`auditable-info`), for the SBOM and the tests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use auditable_info::{audit_info_from_file, Limits};
use auditable_serde::DependencyKind;
use xshell::Shell;

/// The cached `cargo-auditable` binary, built there first if missing or if it
/// is not the file its build recorded. The first build compiles it (about a
/// minute on two cores, once per machine); later builds, from any clone,
/// reuse it.
pub fn ensure_cargo_auditable(sh: &Shell) -> anyhow::Result<PathBuf> {
    let pin = super::pins::Pin::Crate {
        sh,
        tool: &super::pins::CARGO_AUDITABLE,
        usable: &|_| true,
    };
    super::pins::ensure(&pin)
}

/// One crate of a binary's embedded list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EmbeddedCrate {
    pub name: String,
    pub version: String,
    /// `crates.io`, `local` (a path dependency, such as the workspace's own
    /// crates), `git` or `registry` (another registry), as cargo-auditable
    /// records it.
    pub source: String,
    /// Only needed to build the binary (a proc macro, a build script's
    /// dependency), not linked into it: cargo-auditable's `build` kind.
    pub is_build_kind: bool,
    /// The package the binary belongs to (`webapp`, `proxy`).
    pub is_root: bool,
}

/// The crate list `cargo auditable` embedded in `binary` (an ELF of any
/// architecture; nothing is run), in the order it was embedded. An error
/// when the binary has none.
pub fn embedded_crates(binary: &Path) -> anyhow::Result<Vec<EmbeddedCrate>> {
    let info = audit_info_from_file(binary, Limits::default()).with_context(|| {
        format!(
            "read the crate list cargo-auditable embeds from {}",
            binary.display()
        )
    })?;
    Ok(info
        .packages
        .into_iter()
        .map(|package| EmbeddedCrate {
            name: package.name,
            version: package.version.to_string(),
            source: String::from(package.source),
            is_build_kind: package.kind == DependencyKind::Build,
            is_root: package.root,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::images::{platform::Platform, source_date_epoch, webapp_binary};
    use xshell::cmd;

    /// name → the versions Cargo.lock holds of it.
    fn locked_versions(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
        let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for package in lock.split("[[package]]").skip(1) {
            let field = |key: &str| {
                package.lines().find_map(|line| {
                    line.strip_prefix(key)
                        .and_then(|rest| rest.trim().strip_prefix('='))
                        .map(|value| value.trim().trim_matches('"').to_string())
                })
            };
            let (Some(name), Some(version)) = (field("name "), field("version ")) else {
                panic!("a [[package]] of Cargo.lock without name or version: {package}")
            };
            versions.entry(name).or_default().insert(version);
        }
        versions
    }

    /// `(name, version)` of every crate `cargo tree -e normal` lists for
    /// `packages` (`-p` each, so with the features those packages enable
    /// together) on `target`.
    fn cargo_tree(sh: &Shell, packages: &[&str], target: &str) -> BTreeSet<(String, String)> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let format = "{p}";
        let selection: Vec<String> = packages.iter().map(|p| format!("--package={p}")).collect();
        let tree = cmd!(
            sh,
            "{cargo} tree --locked -e normal {selection...} --target {target} --prefix none --format {format}"
        )
        .read()
        .unwrap();
        tree.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next().unwrap().to_string();
                let version = words.next().unwrap().trim_start_matches('v').to_string();
                (name, version)
            })
            .collect()
    }

    /// Builds (incrementally, in the images' own cargo target dir, with the
    /// images' flags) the programs of `platform`, and checks the webapp's
    /// embedded list against Cargo.lock and `cargo tree`.
    fn check_webapp_list(platform: Platform) {
        let root = crate::project_root();
        let sh = Shell::new().unwrap();
        sh.change_dir(&root);
        let epoch = source_date_epoch(&sh).unwrap();
        let target_dir = root.join("target").join("images").join("cargo-target");
        let binaries = webapp_binary::build(&sh, &root, &target_dir, epoch, platform).unwrap();
        let bytes = std::fs::read(&binaries.webapp).unwrap();
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        let expected_machine = match platform {
            Platform::Amd64 => goblin::elf::header::EM_X86_64,
            Platform::Arm64 => goblin::elf::header::EM_AARCH64,
        };
        assert_eq!(elf.header.e_machine, expected_machine);
        // The release profile strips symbols, and the linker collects unused
        // sections: the list must have survived both.
        assert!(
            elf.syms.is_empty(),
            "{} is not stripped",
            binaries.webapp.display()
        );
        let crates = embedded_crates(&binaries.webapp).unwrap();
        let roots: Vec<&EmbeddedCrate> = crates.iter().filter(|c| c.is_root).collect();
        assert_eq!(roots.len(), 1, "{roots:?}");
        assert_eq!(roots[0].name, "webapp");
        assert_eq!(roots[0].source, "local");

        let locked = locked_versions(&root);
        for name in ["webapp", "axum", "tokio", "deadpool-redis"] {
            let listed: Vec<&EmbeddedCrate> = crates.iter().filter(|c| c.name == name).collect();
            assert_eq!(listed.len(), 1, "{name}: {listed:?}");
            assert!(!listed[0].is_build_kind, "{name} is linked in: {listed:?}");
            assert!(
                locked[name].contains(&listed[0].version),
                "{name} {} is not the version of Cargo.lock ({:?})",
                listed[0].version,
                locked[name]
            );
        }
        // Every crate, of either kind, at a version Cargo.lock holds.
        for listed in &crates {
            assert!(
                locked
                    .get(&listed.name)
                    .is_some_and(|versions| versions.contains(&listed.version)),
                "{} {} is not in Cargo.lock",
                listed.name,
                listed.version
            );
        }
        // Nothing compiled in is missing: every crate cargo tree lists for
        // webapp on this target is listed, linked ones as runtime.
        let target = platform.rust_target();
        let tree = cargo_tree(&sh, &["webapp"], target);
        let listed = |name: &str, version: &str| {
            crates
                .iter()
                .find(|c| c.name == name && c.version == version)
        };
        for (name, version) in &tree {
            assert!(
                listed(name, version).is_some(),
                "{name} {version} is a dependency of webapp on {target} (cargo tree -e normal) but not in its embedded list"
            );
        }
        // Linked crates only, as far as cargo-auditable can tell: it asks
        // `cargo metadata`, which unifies features over the whole workspace
        // (rust-secure-code/cargo-auditable#66), so it also lists crates that
        // features of other members (xtask, tests) would pull in. Such a
        // crate is not compiled by this build at all: it is not in the tree
        // of the packages it builds together (webapp and proxy), for this target.
        let built = cargo_tree(&sh, &["webapp", "proxy"], target);
        let mut not_compiled = Vec::new();
        for c in crates.iter().filter(|c| !c.is_build_kind) {
            let key = (c.name.clone(), c.version.clone());
            if tree.contains(&key) {
                continue;
            }
            assert!(
                !built.contains(&key),
                "{} {} is compiled for {target} and listed as linked into webapp, but cargo tree does not put it under webapp",
                c.name,
                c.version
            );
            not_compiled.push(format!("{} {}", c.name, c.version));
        }
        eprintln!(
            "{platform}: listed as runtime though not compiled (cargo-auditable#66): {}",
            not_compiled.join(", ")
        );
        // Proc macros run in the compiler, never in the binary.
        for proc_macro in ["tokio-macros", "serde_derive"] {
            if let Some(listed) = crates.iter().find(|c| c.name == proc_macro) {
                assert!(listed.is_build_kind, "{listed:?}");
            }
        }
        let runtime = crates.iter().filter(|c| !c.is_build_kind).count();
        eprintln!(
            "{platform}: {} lists {} crates ({runtime} linked, {} build only)",
            binaries.webapp.display(),
            crates.len(),
            crates.len() - runtime
        );
        // The proxy's programs carry their own lists, not the webapp's.
        for program in [&binaries.proxy_init, &binaries.httpcheck] {
            let crates = embedded_crates(program).unwrap();
            let root_names: Vec<&str> = crates
                .iter()
                .filter(|c| c.is_root)
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(root_names, ["proxy"], "{}", program.display());
            assert!(!crates.iter().any(|c| c.name == "axum" && !c.is_build_kind));
        }
    }

    #[test]
    #[ignore = "builds the release binaries; cargo xtask ci runs it"]
    fn the_host_webapp_binary_embeds_its_linked_crates() {
        check_webapp_list(Platform::host().unwrap());
    }

    #[test]
    #[ignore = "builds the release binaries; cargo xtask ci runs it"]
    fn the_arm64_webapp_binary_embeds_its_linked_crates() {
        check_webapp_list(Platform::Arm64);
    }

    #[test]
    fn a_binary_without_a_list_is_an_error_naming_it() {
        let error = embedded_crates(Path::new("/bin/true")).unwrap_err();
        assert!(format!("{error:#}").contains("/bin/true"), "{error:#}");
    }
}
