//! What xtask fetches and keeps, whoever asks: downloads checked against
//! their pin (size, sha256) before anything reads them, the tool cache's
//! root, and files and directories written under a temporary name and
//! renamed into place.
//!
//! It knows nothing of Debian, the lock or the stack: a URL, what its bytes
//! must be, and where they go. The one sha256 is `xtask_oci::Digest`'s.

pub mod cache;
pub mod http;
pub mod staging;

pub use cache::{tool_cache_dir, TOOL_CACHE_VARIABLE};
pub use http::{download_bytes, download_verified, proxy_for, Expected, FetchError};
pub use staging::{
    persist, persist_dir, remove_stale_temporaries, temporary_dir, temporary_file, write_atomically,
};
