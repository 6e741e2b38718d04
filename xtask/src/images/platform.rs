//! The platforms the images are built for, and what each one is called by
//! the tools that meet it: OCI/Docker, Debian, Rust and the ELF loader.

use std::fmt;

/// A `linux/<arch>` platform of the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Platform {
    /// linux/amd64 (x86_64).
    Amd64,
    /// linux/arm64 (aarch64).
    Arm64,
}

impl Platform {
    /// Every platform, in the order an image index lists them.
    pub const ALL: [Platform; 2] = [Platform::Amd64, Platform::Arm64];

    /// The platform of the machine xtask runs on, if the images exist for it.
    pub fn host() -> Option<Platform> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Platform::Amd64),
            "aarch64" => Some(Platform::Arm64),
            _ => None,
        }
    }

    /// `architecture` in an OCI config and index (`GOARCH`): amd64, arm64.
    pub fn oci_architecture(self) -> &'static str {
        match self {
            Platform::Amd64 => "amd64",
            Platform::Arm64 => "arm64",
        }
    }

    /// The platform as an OCI index entry names it.
    pub fn oci(self) -> xtask_oci::Platform {
        xtask_oci::Platform::linux(self.oci_architecture())
    }

    /// Debian's name of the architecture (the `_arm64.deb` suffix).
    pub fn debian_architecture(self) -> &'static str {
        self.oci_architecture()
    }

    /// The Rust target the image's own programs are compiled for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Platform::Amd64 => "x86_64-unknown-linux-gnu",
            Platform::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's multiarch library directory name.
    pub fn multiarch_tuple(self) -> &'static str {
        match self {
            Platform::Amd64 => "x86_64-linux-gnu",
            Platform::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// `uname -m`, and the name qemu-user gives its emulator.
    pub fn machine(self) -> &'static str {
        match self {
            Platform::Amd64 => "x86_64",
            Platform::Arm64 => "aarch64",
        }
    }

    /// The stable tag of this platform's images in a local engine: amd64
    /// keeps `local` (what the deploy files default to); others get their
    /// own, so loading them never replaces the host's images.
    pub fn stable_tag(self) -> String {
        match self {
            Platform::Amd64 => super::STABLE_TAG.to_string(),
            other => format!("{}-{}", super::STABLE_TAG, other.oci_architecture()),
        }
    }
}

impl fmt::Display for Platform {
    /// `linux/amd64`, as Docker spells a platform.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "linux/{}", self.oci_architecture())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_agree_with_each_tool() {
        assert_eq!(Platform::Arm64.to_string(), "linux/arm64");
        assert_eq!(Platform::Amd64.stable_tag(), "local");
        assert_eq!(Platform::Arm64.stable_tag(), "local-arm64");
        assert_eq!(Platform::host(), Some(Platform::Amd64));
    }
}
