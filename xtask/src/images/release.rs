//! What `cargo xtask images --update-lock` reads instead of apt: each
//! suite's `InRelease`, whose OpenPGP signature must verify against one of
//! Debian's archive keys kept in deploy/keys/ (fingerprints listed below),
//! then `Packages.xz`, taken only when its size and sha256 are those the
//! signed file lists. The newest version of each package over all suites is
//! the candidate, as apt would pick it.
//!
//! Indexes are held in memory only: a bad signature, a wrong hash or a
//! truncated download fails before anything is written.

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use pgp::{
    composed::{CleartextSignedMessage, Deserializable, SignedPublicKey},
    types::KeyDetails,
};

use super::{
    archive::{self, Archives, DEBIAN, DEBIAN_SECURITY},
    deb,
    debian::LockedPackage,
};

/// Where the archive keys live, relative to the workspace root.
pub const KEYS_DIR: &str = "deploy/keys";

/// The primary-key fingerprints of the keys in deploy/keys/, from Debian's
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

/// The suites the images take packages from (what a Debian 13 machine's apt
/// sources list), in order of preference when two offer the same version.
pub const SUITES: &[Suite] = &[
    Suite {
        archive: DEBIAN,
        name: "trixie",
    },
    Suite {
        archive: DEBIAN,
        name: "trixie-updates",
    },
    Suite {
        archive: DEBIAN_SECURITY,
        name: "trixie-security",
    },
];
const COMPONENT: &str = "main";
/// Far above any real index (bookworm's InRelease is 150 kB, its
/// Packages.xz 9 MB); a server sending more is refused.
const INRELEASE_LIMIT: u64 = 16 * 1024 * 1024;
const PACKAGES_LIMIT: u64 = 256 * 1024 * 1024;

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
                "{} has fingerprint {actual}, but xtask/src/images/release.rs trusts {fingerprint} for it",
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
/// or one of its subkeys.
pub fn verify_inrelease(
    name: &str,
    bytes: &[u8],
    keys: &[SignedPublicKey],
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
            "{name}: no signature verifies against Debian's archive keys in {KEYS_DIR} \
             (a tampered or truncated file, or a mirror that is not Debian's); nothing was changed"
        )
    }
    Ok(message.signed_text().replace("\r\n", "\n"))
}

/// The `SHA256:` field of a Release file: path → (size, sha256).
pub fn release_sha256(release: &str) -> anyhow::Result<BTreeMap<String, (u64, String)>> {
    let mut files = BTreeMap::new();
    let paragraphs = deb::paragraphs(release)?;
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

/// Stanzas of a Packages file, as field → value maps.
pub fn parse_packages(text: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    Ok(deb::paragraphs(text)?
        .iter()
        .map(|paragraph| {
            paragraph
                .iter()
                .filter_map(|field| {
                    Some((
                        field.name().to_string(),
                        deb::field(paragraph, field.name())?,
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
    let codename = deb::control_field(release, "Codename")
        .with_context(|| format!("{name}: the signed Release"))?;
    if codename.as_deref() != Some(suite.name) {
        bail!(
            "{name}: the signed Release is for {codename:?}, not {}; nothing was changed",
            suite.name
        )
    }
    if let Some(valid_until) = deb::control_field(release, "Valid-Until")
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

/// Reads the signed indexes of `suites` from `archives` and returns the
/// candidates for `architecture` (and `all`); nothing is written anywhere.
pub fn fetch_candidates(
    archives: &Archives,
    keys_dir: &Path,
    suites: &[Suite],
    now_unix: u64,
    architecture: &str,
) -> anyhow::Result<BTreeMap<String, LockedPackage>> {
    let keys = trusted_keys(keys_dir)?;
    let mut per_suite = Vec::new();
    for suite in suites {
        let base_url = archives.base_url(suite.archive)?;
        let inrelease_url = format!("{base_url}/{}", inrelease_path(suite));
        eprintln!("images: reading {inrelease_url}");
        let inrelease =
            xtask_fetch::download_bytes(&inrelease_url, INRELEASE_LIMIT, archive::UNREACHABLE)
                .map_err(xtask_fetch::FetchError::into_anyhow)?;
        let release = verify_inrelease(&inrelease_url, &inrelease, &keys)?;
        check_release_fields(&inrelease_url, &release, suite, now_unix)?;
        let listed = release_sha256(&release).with_context(|| format!("read {inrelease_url}"))?;
        let packages_name = packages_xz_name(architecture);
        let packages_url = format!("{base_url}/dists/{}/{packages_name}", suite.name);
        eprintln!("images: reading {packages_url}");
        let packages_xz =
            xtask_fetch::download_bytes(&packages_url, PACKAGES_LIMIT, archive::UNREACHABLE)
                .map_err(xtask_fetch::FetchError::into_anyhow)?;
        check_against_release(&packages_url, &packages_xz, listed.get(&packages_name))?;
        let mut text = String::new();
        liblzma::read::XzDecoder::new_multi_decoder(&packages_xz[..])
            .read_to_string(&mut text)
            .with_context(|| format!("decompress {packages_url}"))?;
        let stanzas = parse_packages(&text).with_context(|| format!("read {packages_url}"))?;
        per_suite.push((*suite, stanzas));
    }
    newest_candidates(&per_suite, architecture)
}

pub fn keys_dir(root: &Path) -> PathBuf {
    root.join(KEYS_DIR)
}

/// Debian's version order (deb-version(7)): epoch, then upstream version and
/// revision, each compared as alternating non-digit and digit runs, where
/// `~` sorts before everything, even the end of the string.
pub fn compare_versions(left: &str, right: &str) -> Ordering {
    fn split(version: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match version.split_once(':') {
            Some((epoch, rest)) if epoch.bytes().all(|byte| byte.is_ascii_digit()) => {
                (epoch.parse().unwrap_or(0), rest)
            }
            _ => (0, version),
        };
        match rest.rsplit_once('-') {
            Some((upstream, revision)) => (epoch, upstream, revision),
            None => (epoch, rest, ""),
        }
    }
    fn order(byte: Option<u8>) -> i32 {
        match byte {
            None => 0,
            Some(b'~') => -1,
            Some(byte) if byte.is_ascii_alphabetic() => i32::from(byte),
            Some(byte) => i32::from(byte) + 256,
        }
    }
    fn compare_part(left: &str, right: &str) -> Ordering {
        let (mut left, mut right) = (left.as_bytes(), right.as_bytes());
        while !left.is_empty() || !right.is_empty() {
            // Non-digit prefix, character by character.
            while left.first().is_some_and(|byte| !byte.is_ascii_digit())
                || right.first().is_some_and(|byte| !byte.is_ascii_digit())
            {
                let left_byte = left.first().copied().filter(|byte| !byte.is_ascii_digit());
                let right_byte = right.first().copied().filter(|byte| !byte.is_ascii_digit());
                match order(left_byte).cmp(&order(right_byte)) {
                    Ordering::Equal => {}
                    unequal => return unequal,
                }
                if left_byte.is_some() {
                    left = &left[1..];
                }
                if right_byte.is_some() {
                    right = &right[1..];
                }
            }
            // Digit run, numerically (leading zeros ignored).
            let digits = |bytes: &[u8]| bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let (left_count, right_count) = (digits(left), digits(right));
            let trim = |run: &[u8]| -> Vec<u8> {
                run.iter()
                    .copied()
                    .skip_while(|byte| *byte == b'0')
                    .collect()
            };
            let (left_run, right_run) = (trim(&left[..left_count]), trim(&right[..right_count]));
            match left_run
                .len()
                .cmp(&right_run.len())
                .then_with(|| left_run.cmp(&right_run))
            {
                Ordering::Equal => {}
                unequal => return unequal,
            }
            left = &left[left_count..];
            right = &right[right_count..];
        }
        Ordering::Equal
    }
    let (left_epoch, left_upstream, left_revision) = split(left);
    let (right_epoch, right_upstream, right_revision) = split(right);
    left_epoch
        .cmp(&right_epoch)
        .then_with(|| compare_part(left_upstream, right_upstream))
        .then_with(|| compare_part(left_revision, right_revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_dpkg_does() {
        let ordered = [
            "1.0~rc1",
            "1.0",
            "1.0-1",
            "1.0-1+deb12u1",
            "1.0-1+deb12u10",
            "1.0a",
            "1.2.13.dfsg-1",
            "1.10",
            "1:0.1",
            "5:7.0.15-1~deb12u10",
            "5:7.0.15-1",
        ];
        for window in ordered.windows(2) {
            assert_eq!(
                compare_versions(window[0], window[1]),
                Ordering::Less,
                "{} < {}",
                window[0],
                window[1]
            );
            assert_eq!(compare_versions(window[1], window[0]), Ordering::Greater);
        }
        assert_eq!(compare_versions("1.01", "1.1"), Ordering::Equal);
        assert_eq!(
            compare_versions("2.36-9+deb12u14", "2.36-9+deb12u9"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("3.0.22-1~deb12u2", "3.0.22-1~deb12u1"),
            Ordering::Greater
        );
        for (lower, higher) in [
            ("1.0~rc1", "1.0"),
            ("2.0", "1:1.0"),
            ("1.0-1", "1.0-1+deb13u1"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0+b1"),
            ("1.0-1", "1.0-1.1"),
            ("1.0-1~bpo13+1", "1.0-1"),
            ("0:1.0-2", "1.0-10"),
            ("1.0-a", "1.0-+"),
            ("9", "18446744073709551616"),
        ] {
            assert_eq!(
                compare_versions(lower, higher),
                Ordering::Less,
                "{lower} < {higher}"
            );
            assert_eq!(compare_versions(higher, lower), Ordering::Greater);
        }
        assert_eq!(compare_versions("0:1.0-1", "1.0-1"), Ordering::Equal);
        assert_eq!(compare_versions("1.0-01", "1.0-1"), Ordering::Equal);
    }

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
        let candidates = newest_candidates(
            &[
                (
                    SUITES[0],
                    vec![
                        stanza("libssl3", "3.0.17-1~deb12u2", "amd64"),
                        stanza("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
                        stanza("other-arch", "1", "arm64"),
                    ],
                ),
                (
                    SUITES[2],
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
        assert_eq!(candidates["libssl3"].suite, SUITES[2].name);
        assert_eq!(candidates["libssl3"].archive, "debian-security");
        assert_eq!(
            candidates["zlib1g"].suite, SUITES[0].name,
            "a tie keeps the earlier suite"
        );
        assert_eq!(candidates["nginx-common"].architecture, "all");
        assert_eq!(candidates["zlib1g"].sha256, "aa");
        assert!(!candidates.contains_key("other-arch"));
    }
}
