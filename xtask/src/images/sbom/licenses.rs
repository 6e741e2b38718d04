//! A Debian package's licenses, from its machine-readable copyright file
//! (DEP-5: `/usr/share/doc/<package>/copyright`), as an SPDX expression.
//!
//! Debian's short names mostly differ from SPDX's (`GPL-2+`, `Expat`,
//! `BSD-3-clause`): known ones are mapped, the rest become
//! `LicenseRef-Debian-<name>` and are declared in the document with a
//! pointer to the copyright file. A free-form copyright file gives
//! NOASSERTION, as does a package whose documentation is another package's.

use std::collections::BTreeSet;
use std::path::Path;

use xtask_debian::deb822;

/// Debian short name (lowercase) → SPDX identifier.
const KNOWN: &[(&str, &str)] = &[
    ("0bsd", "0BSD"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("curl", "curl"),
    ("expat", "MIT"),
    ("fsfap", "FSFAP"),
    ("fsfullr", "FSFULLR"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("isc", "ISC"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("mit", "MIT"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("oldap-2.8", "OLDAP-2.8"),
    ("openssl", "OpenSSL"),
    ("x11", "X11"),
    ("zlib", "Zlib"),
];

/// What a package declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// An SPDX license expression, or NOASSERTION.
    pub expression: String,
    /// `LicenseRef-…` identifiers the expression uses, with Debian's name.
    pub references: BTreeSet<(String, String)>,
}

impl Declared {
    fn unknown() -> Declared {
        Declared {
            expression: "NOASSERTION".to_string(),
            references: BTreeSet::new(),
        }
    }
}

/// The licenses of `package`, unpacked in `unpacked_dir`.
pub fn declared(unpacked_dir: &Path, package: &str) -> Declared {
    let path = unpacked_dir
        .join("usr/share/doc")
        .join(package)
        .join("copyright");
    // A link to another package's documentation (libgcc-s1 → gcc-14-base)
    // names a file this package does not hold.
    match std::fs::read_to_string(&path) {
        Ok(text) => from_copyright(&text),
        Err(_) => Declared::unknown(),
    }
}

/// The licenses a DEP-5 copyright file names in its `License:` fields, each
/// distinct one once, joined with AND (a package is under all of them).
pub fn from_copyright(text: &str) -> Declared {
    let Ok(paragraphs) = deb822::paragraphs(text) else {
        return Declared::unknown();
    };
    let machine_readable = paragraphs
        .first()
        .and_then(|header| deb822::field(header, "Format"))
        .is_some_and(|format| format.contains("copyright-format"));
    if !machine_readable {
        return Declared::unknown();
    }
    let mut terms = BTreeSet::new();
    let mut references = BTreeSet::new();
    for paragraph in &paragraphs {
        if deb822::field(paragraph, "Files").is_none() {
            continue;
        }
        let Some(license) = deb822::field(paragraph, "License") else {
            continue;
        };
        // The first line is the name; the rest is its text.
        let Some(name) = license.lines().next().map(str::trim) else {
            continue;
        };
        if !name.is_empty() {
            terms.insert(expression(name, &mut references));
        }
    }
    if terms.is_empty() {
        return Declared::unknown();
    }
    let expression = if terms.len() == 1 {
        terms.into_iter().collect::<Vec<_>>().join("")
    } else {
        terms
            .iter()
            .map(|term| {
                if term.contains(' ') {
                    format!("({term})")
                } else {
                    term.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    Declared {
        expression,
        references,
    }
}

/// One `License:` name (`GPL-2+ or Artistic`, `BSD-3-clause and MIT`) as an
/// SPDX expression; an exception clause makes the whole name one reference.
fn expression(name: &str, references: &mut BTreeSet<(String, String)>) -> String {
    if name.contains(" with ") || name.contains(',') {
        return reference(name, references);
    }
    for (debian_operator, spdx_operator) in [(" or ", " OR "), (" and ", " AND ")] {
        if name.contains(debian_operator) {
            return name
                .split(debian_operator)
                .map(|part| expression(part.trim(), references))
                .collect::<Vec<_>>()
                .join(spdx_operator);
        }
    }
    let lowercase = name.to_ascii_lowercase();
    match KNOWN.iter().find(|(debian, _)| *debian == lowercase) {
        Some((_, spdx)) => (*spdx).to_string(),
        None => reference(name, references),
    }
}

fn reference(name: &str, references: &mut BTreeSet<(String, String)>) -> String {
    // An SPDX identifier's characters, as the document's own identifiers.
    let id = xtask_oci::spdx::id("LicenseRef", &format!("Debian-{name}"));
    let id = id.trim_start_matches("SPDXRef-").to_string();
    references.insert((id.clone(), name.to_string()));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_names_become_spdx_and_the_rest_references() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
                    Files: *\nLicense: GPL-2+ or Artistic\n\n\
                    Files: lib/*\nLicense: Expat\n text of the licence\n\n\
                    Files: debian/*\nLicense: GPL-2+ with Autoconf exception\n\n\
                    License: Expat\n stand-alone text\n";

        let declared = from_copyright(text);

        assert_eq!(
            declared.expression,
            "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-Debian-GPL-2--with-Autoconf-exception AND MIT"
        );
        assert_eq!(
            declared.references,
            BTreeSet::from([(
                "LicenseRef-Debian-GPL-2--with-Autoconf-exception".to_string(),
                "GPL-2+ with Autoconf exception".to_string()
            )])
        );
    }

    #[test]
    fn a_free_form_copyright_file_asserts_nothing() {
        assert_eq!(
            from_copyright("This package was debianized by someone.\n").expression,
            "NOASSERTION"
        );
    }
}
