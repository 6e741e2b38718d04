//! The crates compiled into a program: what `cargo tree -e normal` lists for
//! its package and target (build scripts' and dev dependencies left out),
//! with each crate's license as its manifest declares it and its sha256
//! from Cargo.lock.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use xshell::{cmd, Shell};

/// One crate of a program.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// The manifest's `license` (an SPDX expression), if any.
    pub license: Option<String>,
    /// From Cargo.lock: the sha256 of the `.crate` crates.io serves; none
    /// for the workspace's own crates.
    pub checksum: Option<String>,
}

/// The normal dependencies of `package` built for `target`, itself included.
pub fn normal_dependencies(
    sh: &Shell,
    root: &Path,
    package: &str,
    target: &str,
) -> anyhow::Result<Vec<Crate>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let format = "{p}|{l}";
    let listed = cmd!(
        sh,
        "{cargo} tree --locked -e normal --no-dedupe --prefix none --format {format} --package {package} --target {target}"
    )
    .quiet()
    .read()
    .with_context(|| format!("cargo tree -e normal -p {package} --target {target}"))?;
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("read Cargo.lock")?;
    parse_tree(&listed, &lock_checksums(&lock))
}

/// `cargo tree` lines (`serde v1.0.229|MIT OR Apache-2.0`, `webapp v0.1.0
/// (/src/webapp)|…`, `serde_derive v1.0.229 (proc-macro)|…`) as crates,
/// each once, sorted.
fn parse_tree(
    listed: &str,
    checksums: &BTreeMap<(String, String), String>,
) -> anyhow::Result<Vec<Crate>> {
    let mut crates = std::collections::BTreeSet::new();
    for line in listed
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let (package, license) = line.split_once('|').unwrap_or((line, ""));
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            anyhow::bail!("cargo tree printed {line:?}, not `name vVERSION`")
        };
        let version = version.trim_start_matches('v').to_string();
        let license = license.trim();
        crates.insert(Crate {
            checksum: checksums.get(&(name.to_string(), version.clone())).cloned(),
            name: name.to_string(),
            version,
            // Old manifests wrote `MIT/Apache-2.0` for `MIT OR Apache-2.0`.
            license: (!license.is_empty()).then(|| {
                license
                    .replace('/', " OR ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        });
    }
    Ok(crates.into_iter().collect())
}

/// (name, version) → checksum, from Cargo.lock's `[[package]]` tables.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut checksums = BTreeMap::new();
    for table in lock.split("[[package]]").skip(1) {
        let value = |key: &str| {
            table.lines().find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|rest| rest.trim().strip_prefix('='))
                    .map(|value| value.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(version), Some(checksum)) =
            (value("name"), value("version"), value("checksum"))
        {
            checksums.insert((name, version), checksum);
        }
    }
    checksums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_lines_become_crates_with_the_locks_checksums() {
        let lock = "version = 4\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.229\"\n\
                    source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
                    checksum = \"abc\"\n\n[[package]]\nname = \"webapp\"\nversion = \"0.1.0\"\n";
        let listed = "webapp v0.1.0 (/src/webapp)|MIT OR Apache-2.0\n\
                      serde v1.0.229|MIT OR Apache-2.0\nserde v1.0.229|MIT OR Apache-2.0\n\
                      old v0.1.0|MIT / Apache-2.0\nbare v2.0.0|\n";

        let crates = parse_tree(listed, &lock_checksums(lock)).unwrap();

        let summary: Vec<(&str, Option<&str>, Option<&str>)> = crates
            .iter()
            .map(|c| (c.name.as_str(), c.license.as_deref(), c.checksum.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("bare", None, None),
                ("old", Some("MIT OR Apache-2.0"), None),
                ("serde", Some("MIT OR Apache-2.0"), Some("abc")),
                ("webapp", Some("MIT OR Apache-2.0"), None),
            ]
        );
    }
}
