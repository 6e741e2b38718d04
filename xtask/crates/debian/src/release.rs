//! Debian's signed indexes, as `cargo xtask images --update-lock` reads
//! them instead of apt: a suite's `InRelease`, whose OpenPGP signature must
//! verify against one of Debian's archive keys (fingerprints listed below),
//! then `Packages.xz`, taken only when its size and sha256 are those the
//! signed file lists. The newest version of each package over all suites is
//! the candidate, as apt would pick it.

use std::{cmp::Ordering, collections::BTreeMap, fs, io::Read, path::Path};

use anyhow::{bail, Context};
use pgp::{
    composed::{CleartextSignedMessage, Deserializable, SignedPublicKey},
    types::KeyDetails,
};

use crate::{deb822, package::LockedPackage, version::compare_versions};

/// The primary-key fingerprints of Debian's archive keys (xtask keeps the
/// files in deploy/keys/), from Debian's
/// debian-archive-keyring package (2023.3+deb12u2, `/etc/apt/trusted.gpg.d/`).
/// A key file whose fingerprint is not listed here is refused, so replacing
/// a file is not enough to change whom xtask trusts.
pub const TRUSTED_FINGERPRINTS: &[(&str, &str)] = &[
    (
        "debian-archive-bookworm-automatic.asc",
        "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8",
    ),
    (
        "debian-archive-bookworm-security-automatic.asc",
        "05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0",
    ),
    (
        "debian-archive-bookworm-stable.asc",
        "4D64FEC119C2029067D6E791F8D2585B8783D481",
    ),
    (
        "debian-archive-trixie-automatic.asc",
        "04B54C3CDCA79751B16BC6B5225629DF75B188BD",
    ),
    (
        "debian-archive-trixie-security-automatic.asc",
        "5E04A1E3223A19A20706E20F9904613D4CCE68C6",
    ),
    (
        "debian-archive-trixie-stable.asc",
        "41587F7DB8C774BCCF131416762F67A0B2C39DE4",
    ),
];

/// A suite of one archive.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    pub archive: &'static str,
    pub name: &'static str,
}

const COMPONENT: &str = "main";
/// The archive keys from `keys_dir`, each checked against
/// `TRUSTED_FINGERPRINTS`, with only the subkeys bound to it.
pub fn trusted_keys(keys_dir: &Path) -> anyhow::Result<Vec<SignedPublicKey>> {
    let mut keys = Vec::new();
    for (file, fingerprint) in TRUSTED_FINGERPRINTS {
        let path = keys_dir.join(file);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "read the Debian archive key {} (it is part of the repository)",
                path.display()
            )
        })?;
        let (mut key, _) = SignedPublicKey::from_string(&text)
            .map_err(|error| anyhow::anyhow!("{}: not an OpenPGP key: {error}", path.display()))?;
        let actual = hex::encode_upper(key.fingerprint().as_bytes());
        if actual != *fingerprint {
            bail!(
                "{} has fingerprint {actual}, but xtask/crates/debian/src/release.rs trusts {fingerprint} for it",
                path.display()
            )
        }
        // Only subkeys bound to the pinned primary key (binding signature
        // and, for signing subkeys, the back-signature) may sign. The keys'
        // third-party certifications are not checked: their signers are not
        // here, and trust comes from the pinned fingerprint.
        let primary = key.primary_key.clone();
        key.public_subkeys
            .retain(|subkey| subkey.verify_bindings(&primary).is_ok());
        keys.push(key);
    }
    Ok(keys)
}

/// The signed text of an `InRelease` file (line ends as in the file's
/// cleartext), when at least one signature verifies against a trusted key
/// or one of its subkeys; `keys_dir` is where the keys were read from, as
/// the message names it.
pub fn verify_inrelease(
    name: &str,
    bytes: &[u8],
    keys: &[SignedPublicKey],
    keys_dir: &str,
) -> anyhow::Result<String> {
    let text = std::str::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8 text"))?;
    let (message, _) = CleartextSignedMessage::from_string(text).map_err(|error| {
        anyhow::anyhow!("{name} is not an OpenPGP cleartext-signed file: {error}")
    })?;
    let verified = keys.iter().any(|key| {
        message.verify(key).is_ok()
            || key
                .public_subkeys
                .iter()
                .any(|subkey| message.verify(subkey).is_ok())
    });
    if !verified {
        bail!(
            "{name}: no signature verifies against Debian's archive keys in {keys_dir} \
             (a tampered or truncated file, or a mirror that is not Debian's); nothing was changed"
        )
    }
    Ok(message.signed_text().replace("\r\n", "\n"))
}

/// The `SHA256:` field of a Release file: path → (size, sha256).
pub fn release_sha256(release: &str) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    let mut files = BTreeMap::new();
    let paragraphs = deb822::paragraphs(release)?;
    let lines = paragraphs
        .first()
        .and_then(|paragraph| paragraph.get("SHA256"))
        .unwrap_or_default();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [sha256, size, path] = fields[..] {
            if let Ok(size) = size.parse() {
                files.insert(path.to_string(), (size, sha256.to_ascii_lowercase()));
            }
        }
    }
    Ok(files)
}

/// Checks `bytes` (downloaded as `name`) against the signed index entry.
pub fn check_against_release(
    name: &str,
    bytes: &[u8],
    expected: Option<&(u64, String)>,
) -> anyhow::Result<()> {
    let Some((size, sha256)) = expected else {
        bail!("{name} is not listed in the suite's signed InRelease; nothing was changed")
    };
    if bytes.len() as u64 != *size {
        bail!(
            "{name}: got {} bytes, the signed InRelease lists {size} (truncated or replaced); nothing was changed",
            bytes.len()
        )
    }
    let actual = xtask_oci::Digest::sha256(bytes);
    let actual = actual.hex();
    if actual != sha256.as_str() {
        bail!(
            "{name}: sha256 {actual} differs from {sha256} in the signed InRelease; nothing was changed"
        )
    }
    Ok(())
}

/// The stanzas of a downloaded (and checked) `Packages.xz`, named `name`.
pub fn read_packages_xz(
    name: &str,
    packages_xz: &[u8],
) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut text = String::new();
    liblzma::read::XzDecoder::new_multi_decoder(packages_xz)
        .read_to_string(&mut text)
        .with_context(|| format!("decompress {name}"))?;
    parse_packages(&text).with_context(|| format!("read {name}"))
}

/// Stanzas of a Packages file, as field → value maps.
pub fn parse_packages(text: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    Ok(deb822::paragraphs(text)?
        .iter()
        .map(|paragraph| {
            paragraph
                .iter()
                .filter_map(|field| {
                    Some((
                        field.name().to_string(),
                        deb822::field(paragraph, field.name())?,
                    ))
                })
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|fields| fields.contains_key("Package"))
        .collect())
}

/// The locked form of a Packages stanza of `suite`.
fn locked_from_stanza(
    suite: &Suite,
    fields: &BTreeMap<String, String>,
) -> anyhow::Result<LockedPackage> {
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .with_context(|| format!("a {} Packages stanza lacks {name}: {fields:?}", suite.name))
    };
    Ok(LockedPackage {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
        archive: suite.archive.to_string(),
        suite: suite.name.to_string(),
        filename: field("Filename")?,
        size: field("Size")?
            .parse()
            .with_context(|| format!("Size of {fields:?}"))?,
        sha256: field("SHA256")?.to_ascii_lowercase(),
    })
}

/// Where the index files of `suite` are, relative to the archive's base URL.
pub fn inrelease_path(suite: &Suite) -> String {
    format!("dists/{}/InRelease", suite.name)
}

/// `main/binary-<architecture>/Packages.xz`, as the Release file lists it.
pub fn packages_xz_name(architecture: &str) -> String {
    format!("{COMPONENT}/binary-{architecture}/Packages.xz")
}

/// Picks, per package, the highest version over all suites' stanzas (the
/// earlier suite wins a tie), as apt's candidate.
pub fn newest_candidates(
    per_suite: &[(Suite, Vec<BTreeMap<String, String>>)],
    wanted_architecture: &str,
) -> anyhow::Result<BTreeMap<String, LockedPackage>> {
    let mut candidates: BTreeMap<String, LockedPackage> = BTreeMap::new();
    for (suite, stanzas) in per_suite {
        for stanza in stanzas {
            let architecture = stanza.get("Architecture").map(String::as_str);
            if architecture != Some(wanted_architecture) && architecture != Some("all") {
                continue;
            }
            let locked = locked_from_stanza(suite, stanza)?;
            let replace = match candidates.get(&locked.package) {
                None => true,
                Some(current) => {
                    compare_versions(&locked.version, &current.version) == Ordering::Greater
                }
            };
            if replace {
                candidates.insert(locked.package.clone(), locked);
            }
        }
    }
    Ok(candidates)
}

/// The signed Release fields that tie it to `suite` and to now: `Codename`
/// must be the suite asked for (so a mirror cannot pass off another suite's
/// index), and `Valid-Until`, where the archive sets one, must not be past
/// (so an old index cannot be replayed).
pub fn check_release_fields(
    name: &str,
    release: &str,
    suite: &Suite,
    now_unix: u64,
) -> anyhow::Result<()> {
    let codename = deb822::control_field(release, "Codename")
        .with_context(|| format!("{name}: the signed Release"))?;
    if codename.as_deref() != Some(suite.name) {
        bail!(
            "{name}: the signed Release is for {codename:?}, not {}; nothing was changed",
            suite.name
        )
    }
    if let Some(valid_until) = deb822::control_field(release, "Valid-Until")
        .with_context(|| format!("{name}: the signed Release"))?
    {
        let until = parse_release_date(&valid_until)
            .with_context(|| format!("{name}: Valid-Until {valid_until:?}"))?;
        if until < now_unix {
            bail!(
                "{name}: the signed Release expired at {valid_until} (Valid-Until); \
                 the mirror is stale or replays an old index; nothing was changed"
            )
        }
    }
    Ok(())
}

/// `Sat, 05 Dec 2026 02:53:00 UTC` (RFC 2822, as Release files write it)
/// → seconds since the epoch.
pub fn parse_release_date(text: &str) -> anyhow::Result<u64> {
    const PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let timestamp = PARSER
        .parse_timestamp(text)
        .with_context(|| format!("{text:?} is not an RFC 2822 date"))?;
    u64::try_from(timestamp.as_second()).context("before 1970")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{DEBIAN, DEBIAN_SECURITY};

    #[test]
    fn release_dates_parse_to_unix_seconds() {
        assert_eq!(
            parse_release_date("Thu, 01 Jan 1970 00:00:00 UTC").unwrap(),
            0
        );
        assert_eq!(
            parse_release_date("Tue, 14 Nov 2023 22:13:20 UTC").unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_release_date("Sat, 29 Feb 2020 12:00:00 UTC").unwrap(),
            1_582_977_600
        );
        assert_eq!(
            parse_release_date("Sat, 28 Nov 2026 02:15:35 UTC").unwrap(),
            1_795_832_135
        );
        assert_eq!(
            parse_release_date("Sat, 28 Nov 2026 04:15:35 +0200").unwrap(),
            1_795_832_135,
            "an offset other than UTC counts"
        );
        assert!(parse_release_date("yesterday").is_err());
        assert!(parse_release_date("Sat, 30 Feb 2026 00:00:00 UTC").is_err());
        assert!(parse_release_date("Wed, 31 Dec 1969 23:59:59 UTC").is_err());
    }

    #[test]
    fn packages_stanzas_become_field_maps() {
        let text = "Package: zlib1g\nVersion: 1:1.3.dfsg-3\nDescription: compression\n library\nSHA256: AB\n\nPackage: nginx\nVersion: 1.26.3-3\n";
        let stanzas = parse_packages(text).unwrap();
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0]["Version"], "1:1.3.dfsg-3");
        assert_eq!(stanzas[0]["Description"], "compression\nlibrary");
        assert_eq!(stanzas[1]["Package"], "nginx");
        assert!(parse_packages("Package: a\n broken\nnot a field\n").is_err());
    }

    #[test]
    fn the_sha256_section_of_a_release_file_is_read() {
        let release = "Origin: Debian\nMD5Sum:\n 0123 10 main/binary-amd64/Packages.xz\nSHA256:\n ABCDEF 42 main/binary-amd64/Packages.xz\n 99 7 main/Contents-amd64\n";
        let files = release_sha256(release).unwrap();
        assert_eq!(
            files.get("main/binary-amd64/Packages.xz"),
            Some(&(42, "abcdef".to_string()))
        );
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn the_newest_version_over_all_suites_is_the_candidate() {
        let stanza = |package: &str, version: &str, architecture: &str| {
            BTreeMap::from([
                ("Package".to_string(), package.to_string()),
                ("Version".to_string(), version.to_string()),
                ("Architecture".to_string(), architecture.to_string()),
                (
                    "Filename".to_string(),
                    format!("pool/{package}_{version}.deb"),
                ),
                ("Size".to_string(), "1".to_string()),
                ("SHA256".to_string(), "AA".to_string()),
            ])
        };
        let suite = |archive, name| Suite { archive, name };
        let (main, security) = (
            suite(DEBIAN, "trixie"),
            suite(DEBIAN_SECURITY, "trixie-security"),
        );
        let candidates = newest_candidates(
            &[
                (
                    main,
                    vec![
                        stanza("libssl3", "3.0.17-1~deb12u2", "amd64"),
                        stanza("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
                        stanza("other-arch", "1", "arm64"),
                    ],
                ),
                (
                    security,
                    vec![
                        stanza("libssl3", "3.0.22-1~deb12u2", "amd64"),
                        stanza("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
                        stanza("nginx-common", "1.22.1-9+deb12u11", "all"),
                    ],
                ),
            ],
            "amd64",
        )
        .unwrap();
        assert_eq!(candidates["libssl3"].suite, security.name);
        assert_eq!(candidates["libssl3"].archive, "debian-security");
        assert_eq!(
            candidates["zlib1g"].suite, main.name,
            "a tie keeps the earlier suite"
        );
        assert_eq!(candidates["nginx-common"].architecture, "all");
        assert_eq!(candidates["zlib1g"].sha256, "aa");
        assert!(!candidates.contains_key("other-arch"));
    }
}
