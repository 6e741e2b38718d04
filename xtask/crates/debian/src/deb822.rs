//! deb822, Debian's format of paragraphs of `Field: value` lines: control
//! files, signed Release files, Packages indexes, DEP-5 copyright files.

use anyhow::Context;
pub use deb822_fast::borrowed::BorrowedParagraph as Paragraph;

/// The paragraphs of a deb822 text (a control file, a signed Release, a
/// Packages index): the one parser for all of them. Each field's lines are
/// borrowed from `text`, continuation lines without their leading blanks.
pub fn paragraphs(text: &str) -> anyhow::Result<Vec<Paragraph<'_>>> {
    deb822_fast::borrowed::parse_borrowed(text)
        .context("not deb822 text (paragraphs of Field: value lines)")
}

/// One field of a paragraph, its lines trimmed and joined with newlines;
/// `None` when absent. Names compare case-insensitively.
pub fn field(paragraph: &Paragraph, name: &str) -> Option<String> {
    let lines = paragraph.get(name)?;
    Some(
        lines
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// One field of the first paragraph of a control file.
pub fn control_field(control: &str, name: &str) -> anyhow::Result<Option<String>> {
    Ok(paragraphs(control)?
        .first()
        .and_then(|paragraph| field(paragraph, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_fields_are_found_case_insensitively_with_continuations() {
        let control = "Package: nginx\nVersion: 1.22.1-9 \nDepends: libc6 (>= 2.34),\n libssl3 (>= 3.0.0)\nDescription: small\n more\n";
        let field = |name| control_field(control, name).unwrap();
        assert_eq!(field("package").as_deref(), Some("nginx"));
        assert_eq!(field("Version").as_deref(), Some("1.22.1-9"));
        assert_eq!(
            field("Depends").as_deref(),
            Some("libc6 (>= 2.34),\nlibssl3 (>= 3.0.0)")
        );
        assert_eq!(field("Pre-Depends"), None);
    }

    #[test]
    fn paragraphs_are_split_at_blank_lines_and_bad_text_is_refused() {
        let text = "Package: a\nVersion: 1\n\n\nPackage: b\nDescription: x\n .\n y\n";
        let parsed = paragraphs(text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(field(&parsed[1], "package").as_deref(), Some("b"));
        assert_eq!(field(&parsed[1], "Description").as_deref(), Some("x\n.\ny"));
        assert!(paragraphs("Package: a\nno colon here\n").is_err());
        assert!(control_field(" indented first line\n", "Package").is_err());
    }
}
