//! What `cargo xtask sbom` prints of one SBOM, read back from its JSON.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    packages: Vec<Package>,
    #[serde(default)]
    files: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    license_declared: String,
    #[serde(default)]
    checksums: Vec<Checksum>,
    #[serde(default)]
    external_refs: Vec<ExternalRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    checksum_value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_locator: String,
}

/// Counts and sizes of one SBOM.
pub struct Summary {
    debian_packages: usize,
    deb_bytes: u64,
    crates: usize,
    files: usize,
    /// Each license identifier the packages and crates declare, with how
    /// many of them name it (NOASSERTION: those that declare none).
    identifiers: BTreeMap<String, usize>,
}

impl Summary {
    /// `deb_sizes`: a `.deb`'s sha256 → its size, from the lock.
    pub fn of(bytes: &[u8], deb_sizes: &BTreeMap<&str, u64>) -> anyhow::Result<Summary> {
        let document: Document = serde_json::from_slice(bytes).context("parse the SPDX JSON")?;
        let kind = |package: &Package, prefix: &str| {
            package
                .external_refs
                .iter()
                .any(|reference| reference.reference_locator.starts_with(prefix))
        };
        let debian: Vec<&Package> = document
            .packages
            .iter()
            .filter(|package| kind(package, "pkg:deb/"))
            .collect();
        let crates: Vec<&Package> = document
            .packages
            .iter()
            .filter(|package| kind(package, "pkg:cargo/"))
            .collect();
        let mut identifiers = BTreeMap::new();
        for package in debian.iter().chain(&crates) {
            let named: std::collections::BTreeSet<&str> = package
                .license_declared
                .split(|c: char| c == '(' || c == ')' || c.is_whitespace())
                .filter(|word| !matches!(*word, "" | "AND" | "OR" | "WITH"))
                .collect();
            for identifier in named {
                *identifiers.entry(identifier.to_string()).or_insert(0) += 1;
            }
        }
        Ok(Summary {
            debian_packages: debian.len(),
            deb_bytes: debian
                .iter()
                .flat_map(|package| &package.checksums)
                .filter_map(|checksum| deb_sizes.get(checksum.checksum_value.as_str()))
                .sum(),
            crates: crates.len(),
            files: document.files.len(),
            identifiers,
        })
    }

    pub fn text(&self) -> String {
        let distinct = self
            .identifiers
            .keys()
            .filter(|identifier| *identifier != "NOASSERTION")
            .count();
        let mut text = format!(
            "  Debian packages {:>4}  (their .debs: {:.2} MiB)\n  crates          {:>4}\n  other files     {:>4}\n  licenses        {distinct:>4}  (identifier: packages and crates naming it)\n",
            self.debian_packages,
            self.deb_bytes as f64 / (1024.0 * 1024.0),
            self.crates,
            self.files,
        );
        let mut by_count: Vec<(&String, &usize)> = self.identifiers.iter().collect();
        by_count.sort_by(|left, right| right.1.cmp(left.1).then(left.0.cmp(right.0)));
        for (identifier, count) in by_count {
            text.push_str(&format!("    {count:>4}  {identifier}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_packages_crates_files_and_licenses() {
        let json = br#"{"packages":[
            {"licenseDeclared":"NOASSERTION","externalRefs":[{"referenceLocator":"pkg:oci/db@x"}]},
            {"licenseDeclared":"GPL-2.0-or-later AND MIT","checksums":[{"checksumValue":"aa"}],"externalRefs":[{"referenceLocator":"pkg:deb/debian/a@1"}]},
            {"licenseDeclared":"MIT OR Apache-2.0","externalRefs":[{"referenceLocator":"pkg:cargo/serde@1"}]},
            {"licenseDeclared":"MIT OR Apache-2.0","externalRefs":[{"referenceLocator":"pkg:cargo/axum@1"}]}
        ],"files":[{},{}]}"#;

        let summary = Summary::of(json, &BTreeMap::from([("aa", 2 * 1024 * 1024)])).unwrap();

        assert_eq!(
            (summary.debian_packages, summary.crates, summary.files),
            (1, 2, 2)
        );
        assert_eq!(summary.deb_bytes, 2 * 1024 * 1024);
        let text = summary.text();
        assert!(text.contains("licenses           3"), "{text}");
        assert!(
            text.contains("       3  MIT\n       2  Apache-2.0\n       1  GPL-2.0-or-later\n"),
            "{text}"
        );
    }
}
