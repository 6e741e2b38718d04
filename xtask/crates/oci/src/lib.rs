//! OCI images as bytes, for `cargo xtask images` and `push`: the sha256
//! `Digest`, the descriptor, manifest, index and config types, the
//! deterministic layer, the archive `docker load` reads (and reading it
//! back), and the in-toto and SPDX documents an image carries.
//!
//! It runs no process, opens no connection and knows nothing of Debian or
//! the stack: bytes in, bytes out. The only files it reads are those a
//! `Rootfs` names on the host and those whose sha256 is asked for.
//! Same inputs give the same bytes: that is what keeps image digests
//! stable, and each module says how.

pub mod archive;
pub mod digest;
pub mod image;
pub mod intoto;
pub mod layer;
pub mod spdx;

pub use archive::{
    archive_tar, image_blobs, image_index, read_archive, Attestation, ImageBlobs,
    MultiPlatformImage, PlatformImage,
};
pub use digest::Digest;
pub use image::{
    rfc3339_utc, Blob, ContainerConfig, Descriptor, Healthcheck, ImageConfig, Index, Manifest,
    Platform,
};
pub use layer::{FileContents, Rootfs, RootfsEntry};
