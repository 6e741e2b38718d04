//! The SPDX 2.3 JSON document, as structs whose fields are declared in the
//! order they are written (so the bytes never depend on a map's order).

use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: &'static str,
    pub data_license: &'static str,
    #[serde(rename = "SPDXID")]
    pub spdx_id: &'static str,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub document_describes: Vec<String>,
    pub packages: Vec<Package>,
    pub files: Vec<File>,
    pub relationships: Vec<Relationship>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    pub version_info: String,
    pub supplier: String,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub has_files: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    pub license_concluded: &'static str,
    pub license_declared: String,
    pub copyright_text: &'static str,
    pub external_refs: Vec<ExternalRef>,
    pub primary_package_purpose: &'static str,
}

/// SPDX's package verification code: the SHA-1 of the package's files'
/// SHA-1s (hex), sorted and concatenated.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationCode {
    pub package_verification_code_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct File {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub file_name: String,
    pub checksums: Vec<Checksum>,
    pub license_concluded: &'static str,
    pub copyright_text: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: &'static str,
    pub checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: &'static str,
    pub reference_type: &'static str,
    pub reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: &'static str,
    pub related_spdx_element: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedLicense {
    pub license_id: String,
    pub extracted_text: String,
    pub name: String,
}

/// `SPDXRef-<kind>-<name>`, with every character SPDX does not allow in an
/// identifier (letters, digits, `.` and `-`) turned into `-`.
pub fn id(kind: &str, name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '.' || character == '-' {
                character
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{cleaned}")
}

/// A package URL component: unreserved characters as they are, the rest
/// percent-encoded (`+` → `%2B`), as the purl specification wants.
pub fn purl_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_purls_keep_only_what_their_grammars_allow() {
        assert_eq!(
            id("Deb", "libstdc++6-amd64"),
            "SPDXRef-Deb-libstdc--6-amd64"
        );
        assert_eq!(
            id("File", "usr/local/bin/webapp"),
            "SPDXRef-File-usr-local-bin-webapp"
        );
        assert_eq!(purl_encode("2.75-10+deb13u1+b3"), "2.75-10%2Bdeb13u1%2Bb3");
        assert_eq!(purl_encode("sha256:ab"), "sha256%3Aab");
    }
}
