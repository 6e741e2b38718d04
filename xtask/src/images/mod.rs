//! `cargo xtask images`: builds the webapp, db (Redis) and proxy (nginx)
//! images without Docker's builder, a Dockerfile or a registry, bit for bit
//! the same on every clean build, and loads them into the local engine.
//!
//! Pipeline: a static-pie webapp binary from `cargo build`; Debian packages
//! pinned in deploy/images.lock.json, reduced to the files the binaries load
//! (`debian`); one deterministic layer per image, its config, manifest and
//! a hybrid docker-archive/OCI tar (the `xtask_oci` crate); `docker load`
//! and tags (`docker`). `host_tools` runs the same redis and nginx on the host.

mod attestation;
pub mod auditable;
mod build;
mod check;
#[cfg(test)]
mod containerd;
mod debian;
mod docker;
mod emulation;
#[cfg(test)]
mod fetch_tests;
mod host_tools;
mod lock;
pub mod pins;
mod platform;
mod release;
mod rust_std;
mod sbom;
#[cfg(test)]
mod tests;
mod webapp_binary;

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

use build::{build_all, debian_rootfs};
pub use check::{build_regular_within_budgets, check_reproducible_and_budgets};
use check::{check_reproducible, print_table, SecondBuild};
pub use emulation::{Emulation, Unavailable};
// ci.rs and e2e/acme.rs reach these by their old paths; new callers use `pins`.
use lock::update_lock;
pub use pins::{host_tools, pinned_pebble, HostTools};

use crate::stack;
use debian::{DebianCache, DebianContents, LockFile, LockedSource, PackageFile};
pub use platform::Platform;
pub use sbom::Sbom;
use xtask_debian::archive;
pub use xtask_oci::{Blob, Digest, MultiPlatformImage};
use xtask_oci::{ContainerConfig, FileContents, Rootfs};

pub use crate::stack::{StackImages, STABLE_TAG};
/// The images are `webstack/webapp` and so on, locally and under a registry's prefix.
pub const REPOSITORY_PREFIX: &str = "webstack";
const MEBIBYTE: u64 = 1024 * 1024;

impl StackImages {
    /// The content tags of one build's images.
    pub fn from_built(built: &[BuiltImage]) -> anyhow::Result<StackImages> {
        let content_tag_of = |name: &str| {
            built
                .iter()
                .find(|image| image.name == name)
                .map(|image| image.content_tag.clone())
                .with_context(|| format!("the image build produced no {name} image"))
        };
        Ok(StackImages {
            webapp: content_tag_of("webapp")?,
            db: content_tag_of("db")?,
            proxy: content_tag_of("proxy")?,
        })
    }
}

/// Build (and load) the container images, reproducibly, from pinned inputs.
#[derive(clap::Args)]
pub struct Images {
    /// Build everything from scratch in a fresh directory (its own cargo
    /// target dir at another path) and compare with the regular build, the
    /// one `up` runs; fail if any digest differs or an image is over its
    /// size budget. Does not touch Docker.
    #[arg(long)]
    check: bool,
    /// Move the Debian pins in deploy/images.lock.json to the newest versions
    /// the archives' signed indexes list now, print what changed, then build.
    #[arg(long)]
    update_lock: bool,
    /// Base URL of Debian's main archive (default http://deb.debian.org/debian),
    /// e.g. a local mirror or a snapshot archive.
    #[arg(long, value_name = "URL", env = archive::DEBIAN_MIRROR_VARIABLE)]
    debian_mirror: Option<String>,
    /// Base URL of Debian's security archive (default
    /// http://deb.debian.org/debian-security).
    #[arg(long, value_name = "URL", env = archive::DEBIAN_SECURITY_MIRROR_VARIABLE)]
    debian_security_mirror: Option<String>,
    /// nginx configuration directory copied to the proxy's /etc/nginx/
    /// (default: the repository's nginx/). For experiments only.
    #[arg(long, hide = true)]
    nginx_config_dir: Option<PathBuf>,
    /// The platforms to build (comma-separated): the host's by default;
    /// `--check` always builds all.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PLATFORM")]
    platform: Vec<Platform>,
    /// Only unpack redis-server, redis-cli and nginx from the pinned packages
    /// into target/tools/ and print the wrapper scripts' directory.
    #[arg(long, conflicts_with_all = ["check", "update_lock"])]
    host_tools: bool,
    /// After building, remove this project's older images from the engine:
    /// every `webstack/{webapp,db,proxy}` tag that is neither this build's
    /// nor `:local` nor used by a container (running or stopped).
    #[arg(long, conflicts_with_all = ["check", "host_tools"])]
    prune: bool,
}

impl Images {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let root = crate::project_root();
        let nginx_dir = (self.nginx_config_dir.clone()).unwrap_or_else(|| root.join("nginx"));
        archive::set_flag_overrides(
            self.debian_mirror.clone(),
            self.debian_security_mirror.clone(),
        );
        if self.update_lock {
            update_lock(&root)?;
        }
        if self.check {
            return match &self.nginx_config_dir {
                None => check_reproducible_and_budgets(sh),
                Some(_) => check_reproducible(sh, &root, &nginx_dir, SecondBuild::Fresh),
            };
        }
        if self.host_tools {
            let tools: HostTools = host_tools(sh)?;
            for tool in [
                &tools.bin_dir,
                &tools.redis_server,
                &tools.redis_cli,
                &tools.nginx,
            ] {
                println!("{}", tool.display());
            }
            return Ok(());
        }
        let platforms = match &self.platform[..] {
            [] => vec![host_platform()?],
            chosen => chosen.to_vec(),
        };
        let mut images = Vec::new();
        for platform in platforms {
            images.extend(ensure_images_with(sh, &root, &nginx_dir, platform)?);
        }
        for image in &images {
            println!(
                "{} {} = {} ({})",
                image.name, image.stable_tag, image.content_tag, image.digest
            );
        }
        if self.prune {
            docker::prune_old_images(sh, &images)?;
        }
        Ok(())
    }
}

/// One image in the local engine (the contract other xtask modules use).
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// "webapp", "db" or "proxy".
    pub name: &'static str,
    /// e.g. `webstack/webapp:local`.
    pub stable_tag: String,
    /// e.g. `webstack/webapp:0123456789ab`.
    pub content_tag: String,
    /// The image id: the digest of the config blob.
    pub digest: Digest,
}

/// What one build produced for one image.
#[derive(Clone, Debug)]
pub struct ImageArtifact {
    pub name: &'static str,
    pub platform: Platform,
    /// The image id.
    pub config_digest: Digest,
    pub manifest_digest: Digest,
    pub archive_sha256: Digest,
    /// Of the SPDX SBOM beside the archive (`sbom::sbom_path`).
    pub sbom_sha256: Digest,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub budget: u64,
    pub archive_path: PathBuf,
}

impl ImageArtifact {
    pub fn repository(&self) -> String {
        format!("{REPOSITORY_PREFIX}/{}", self.name)
    }
    pub fn content_tag(&self) -> String {
        self.config_digest.short_hex().to_string()
    }
}

/// Builds (incrementally) all three images, `docker load`s those whose content
/// tag is not in the engine yet and points the stable tag at each.
pub fn ensure_images(sh: &Shell) -> anyhow::Result<Vec<BuiltImage>> {
    ensure_images_for(sh, host_platform()?)
}

/// `ensure_images` for `platform`'s images, tagged with its stable tag
/// (`local-arm64` …) so they never replace the host's.
pub fn ensure_images_for(sh: &Shell, platform: Platform) -> anyhow::Result<Vec<BuiltImage>> {
    let root = crate::project_root();
    let nginx_dir = root.join("nginx");
    ensure_images_with(sh, &root, &nginx_dir, platform)
}

/// The platform whose images this machine runs natively.
fn host_platform() -> anyhow::Result<Platform> {
    Platform::host().with_context(|| {
        format!(
            "the images exist for linux/amd64 and linux/arm64; this machine is {}",
            std::env::consts::ARCH
        )
    })
}

/// Builds the images for `platforms` (regular layout, incrementally) and
/// returns each as one multi-platform image: what `cargo xtask push` sends.
/// Touches no Docker engine.
pub fn multi_platform_images(
    sh: &Shell,
    platforms: &[Platform],
) -> anyhow::Result<Vec<MultiPlatformImage>> {
    let root = crate::project_root();
    let nginx_dir = root.join("nginx");
    let layout = BuildLayout::regular(&root);
    let epoch = source_date_epoch(sh)?;
    let artifacts = build_all(sh, &root, &layout, &nginx_dir, epoch, platforms)?;
    print_table(&artifacts);
    let mut images = Vec::new();
    for name in crate::stack::IMAGE_SERVICES {
        let mut platforms = Vec::new();
        for artifact in artifacts.iter().filter(|artifact| artifact.name == name) {
            let image = read_archive(&artifact.archive_path)?;
            if image.platform != artifact.platform.oci() {
                anyhow::bail!(
                    "{} holds a {} image, not {}",
                    artifact.archive_path.display(),
                    image.platform,
                    artifact.platform
                )
            }
            platforms.push(image);
        }
        images.push(MultiPlatformImage {
            name,
            index: xtask_oci::image_index(&platforms)?,
            platforms,
        });
    }
    Ok(images)
}

/// The image an archive of `build_all` holds, read back for a push.
fn read_archive(path: &Path) -> anyhow::Result<xtask_oci::PlatformImage> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    xtask_oci::read_archive(std::io::BufReader::new(file))
        .with_context(|| format!("read the image archive {}", path.display()))
}

/// The regular build of `platform`'s three images (incremental; no Docker).
pub fn build_for(sh: &Shell, platform: Platform) -> anyhow::Result<Vec<ImageArtifact>> {
    let root = crate::project_root();
    let layout = BuildLayout::regular(&root);
    let epoch = source_date_epoch(sh)?;
    build_all(sh, &root, &layout, &root.join("nginx"), epoch, &[platform])
}

fn ensure_images_with(
    sh: &Shell,
    root: &Path,
    nginx_dir: &Path,
    platform: Platform,
) -> anyhow::Result<Vec<BuiltImage>> {
    // Probe first: no point in minutes of building for an engine we cannot reach.
    crate::docker::require_docker(sh)?;
    let layout = BuildLayout::regular(root);
    let epoch = source_date_epoch(sh)?;
    let artifacts = build_all(sh, root, &layout, nginx_dir, epoch, &[platform])?;
    let mut images = Vec::new();
    for artifact in &artifacts {
        images.push(docker::load_and_tag(sh, artifact)?);
    }
    print_table(&artifacts);
    Ok(images)
}

/// Where one build keeps its work.
struct BuildLayout {
    output_dir: PathBuf,
    cargo_target_dir: PathBuf,
    cache: DebianCache,
}

impl BuildLayout {
    fn images_dir(root: &Path) -> PathBuf {
        root.join("target").join("images")
    }

    /// The everyday layout: caches reused, so warm builds take seconds.
    fn regular(root: &Path) -> BuildLayout {
        let images_dir = BuildLayout::images_dir(root);
        BuildLayout {
            output_dir: images_dir.join("out"),
            cargo_target_dir: images_dir.join("cargo-target"),
            cache: DebianCache {
                deb_dir: images_dir.join("debs"),
                unpack_dir: images_dir.join("unpacked"),
                archives: archive::Archives::configured(),
            },
        }
    }
}

/// The source date: SOURCE_DATE_EPOCH if set, else the last commit's time.
pub fn source_date_epoch(sh: &Shell) -> anyhow::Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"));
    }
    let output = cmd!(sh, "git log -1 --format=%ct").quiet().read().context(
        "read the last commit's time (set SOURCE_DATE_EPOCH when building outside a git checkout)",
    )?;
    output
        .trim()
        .parse()
        .with_context(|| format!("git printed {output:?} for the last commit's time"))
}

const DEFAULT_PATH: &str = "PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin";

/// The Debian part of the db image. The `redis-server` binary is the same
/// file as redis-check-rdb in redis-tools (the redis-server package only
/// holds a symlink and config); Redis picks its mode from argv[0].
const DB_CONTENTS: DebianContents = DebianContents {
    image: "db",
    binaries: &[
        PackageFile {
            package: "redis-tools",
            source: "usr/bin/redis-check-rdb",
            destination: "usr/bin/redis-server",
        },
        PackageFile {
            package: "redis-tools",
            source: "usr/bin/redis-cli",
            destination: "usr/bin/redis-cli",
        },
    ],
    data_files: &[],
};

/// The Debian part of the proxy image: `nginx-light`/`nginx-core` are
/// meta-packages, the binary is in `nginx`; of nginx-common only mime.types
/// is needed.
const PROXY_CONTENTS: DebianContents = DebianContents {
    image: "proxy",
    binaries: &[PackageFile {
        package: "nginx",
        source: "usr/sbin/nginx",
        destination: "usr/sbin/nginx",
    }],
    data_files: &[PackageFile {
        package: "nginx-common",
        source: "etc/nginx/mime.types",
        destination: "etc/nginx/mime.types",
    }],
};

/// Not an image: Debian 13's `nix-bin` (Nix 2.26), whose one binary is
/// every `nix-*` command, picked by the name it is started as. The flake
/// checks run it as `nix-instantiate` through `host_tools::pinned_nix`, with
/// the libraries it loads found by ELF `NEEDED` like an image's; pinned in
/// the lock's `images` part under this name so `--update-lock` moves it too.
const NIX_CONTENTS: DebianContents = DebianContents {
    image: "nix",
    binaries: &[PackageFile {
        package: "nix-bin",
        source: "usr/bin/nix",
        destination: "usr/bin/nix-instantiate",
    }],
    data_files: &[],
};

/// Compressed-size budgets (sum of gzip layers).
const WEBAPP_BUDGET: u64 = 4 * MEBIBYTE;
const DB_BUDGET: u64 = 9 * MEBIBYTE;
/// The proxy's grew by about 2.4 MiB with `acme` (amd64): instant-acme, hyper, rustls and
/// ring, for the `--tls acme` service, which runs the proxy image rather than a fourth one.
const PROXY_BUDGET: u64 = 9 * MEBIBYTE;
