//! The one sha256 digest type: what an OCI descriptor names a blob by, and
//! the hash every pin and cache check compares.

use std::{fmt, io::Read, path::Path, str::FromStr};

use anyhow::Context;
use sha2::Sha256;

/// A sha256 digest, written `sha256:<64 lowercase hex digits>` (Display,
/// FromStr, serde) as OCI descriptors and Docker's image ids spell it;
/// `hex()` gives the digits alone, as lock files and `blobs/sha256/` do.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

const PREFIX: &str = "sha256:";

impl Digest {
    /// The sha256 of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The sha256 of everything `reader` yields, read in chunks.
    pub fn sha256_of_reader(mut reader: impl Read) -> std::io::Result<Digest> {
        use sha2::Digest as _;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => hasher.update(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Digest {
            hex: hex::encode(hasher.finalize()),
        })
    }

    /// The sha256 of the file at `path`.
    pub fn sha256_of_file(path: &Path) -> anyhow::Result<Digest> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        Digest::sha256_of_reader(file).with_context(|| format!("read {}", path.display()))
    }

    /// From 64 hex digits (either case), as a lock or `blobs/sha256/` names it.
    pub fn from_hex(hex: &str) -> Result<Digest, ParseDigestError> {
        if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(ParseDigestError(hex.to_string()));
        }
        Ok(Digest {
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The 64 lowercase hex digits, without `sha256:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits: Docker's short image id, the images' content tags.
    pub fn short_hex(&self) -> &str {
        &self.hex[..12]
    }
}

/// Not `sha256:` and 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError(String);

impl fmt::Display for ParseDigestError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:?} is not a sha256 digest (sha256: and 64 hex digits)",
            self.0
        )
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(text: &str) -> Result<Digest, ParseDigestError> {
        let hex = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| ParseDigestError(text.to_string()))?;
        Digest::from_hex(hex).map_err(|_| ParseDigestError(text.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{PREFIX}{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

/// A digest equals the text `sha256:<hex>` (what `docker inspect` prints).
impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        other.strip_prefix(PREFIX) == Some(self.hex.as_str())
    }
}

impl PartialEq<Digest> for str {
    fn eq(&self, other: &Digest) -> bool {
        other == self
    }
}

impl PartialEq<Digest> for &str {
    fn eq(&self, other: &Digest) -> bool {
        other == *self
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_digest_is_written_and_read_as_sha256_and_its_hex() {
        let digest = Digest::sha256(b"");
        assert_eq!(digest.hex(), EMPTY);
        assert_eq!(digest.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(digest.short_hex(), &EMPTY[..12]);
        assert_eq!(
            format!("sha256:{EMPTY}").parse::<Digest>(),
            Ok(digest.clone())
        );
        assert_eq!(Digest::from_hex(&EMPTY.to_uppercase()), Ok(digest.clone()));
        assert_eq!(
            serde_json::to_string(&digest).unwrap(),
            format!("\"sha256:{EMPTY}\"")
        );
        assert_eq!(
            serde_json::from_str::<Digest>(&format!("\"sha256:{EMPTY}\"")).unwrap(),
            digest
        );
        assert!(digest == *format!("sha256:{EMPTY}").as_str());
        assert!(format!("sha256:{EMPTY}").as_str() == digest);
    }

    #[test]
    fn anything_but_sha256_and_64_hex_digits_is_refused() {
        for text in [
            EMPTY.to_string(),
            format!("sha512:{EMPTY}"),
            format!("sha256:{}", &EMPTY[1..]),
            format!("sha256:{}g", &EMPTY[1..]),
            "sha256:".to_string(),
        ] {
            assert!(text.parse::<Digest>().is_err(), "{text}");
        }
        assert!(serde_json::from_str::<Digest>("\"sha256:ab\"").is_err());
        assert!(Digest::from_hex("ab").is_err());
    }

    #[test]
    fn a_reader_and_a_file_hash_as_their_bytes_do() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expected = Digest::sha256(&bytes);
        assert_eq!(
            Digest::sha256_of_reader(bytes.as_slice()).unwrap(),
            expected
        );
        let path = std::env::temp_dir().join(format!("xtask-oci-digest-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let from_file = Digest::sha256_of_file(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_file.unwrap(), expected);
        let missing = Digest::sha256_of_file(&path).unwrap_err();
        assert!(format!("{missing:#}").contains("open"), "{missing:#}");
    }
}
