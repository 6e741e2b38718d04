//! Debian without apt or dpkg, and nothing about the stack: deb822 text,
//! Debian's archives (URLs, mirror variables), their signed indexes
//! (`InRelease`, `Packages.xz`, RFC 2822 dates), version order, `.deb` and
//! ELF reading, and packages pinned, cached and unpacked.
//!
//! Which packages make which image, where the lock lives and which suites
//! the images take packages from are xtask's (`xtask/src/images/`).

pub mod archive;
pub mod deb;
pub mod deb822;
pub mod elf;
pub mod package;
pub mod release;
pub mod version;
