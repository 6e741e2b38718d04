//! `cargo xtask images`: builds the webapp, db (Redis) and proxy (nginx)
//! images without Docker's builder, a Dockerfile or a registry, bit for bit
//! the same on every clean build, and loads them into the local engine.
//!
//! Pipeline: a static-pie webapp binary from `cargo build`; Debian packages
//! pinned in deploy/images.lock.json, reduced to the files the binaries load
//! (`debian`); one deterministic layer per image (`layer`); config, manifest
//! and a hybrid docker-archive/OCI tar (`oci`); `docker load` and tags
//! (`docker`). `host_tools` runs the same redis and nginx on the host.

mod archive;
mod compose_v2;
#[cfg(test)]
mod containerd;
mod deb;
mod debian;
mod docker;
#[cfg(test)]
mod fetch_tests;
mod host_tools;
mod layer;
mod oci;
mod release;
mod staging;
#[cfg(test)]
mod tests;
mod webapp_binary;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

pub use compose_v2::pinned_compose_v2;
pub use host_tools::{host_tools, pinned_nix, pinned_package_file, HostTools};

use crate::stack;
use debian::{DebianCache, DebianContents, LockFile, LockedSource, PackageFile};
use layer::{FileContents, Rootfs};
use oci::RuntimeSettings;

pub use crate::stack::{StackImages, STABLE_TAG};
const REPOSITORY_PREFIX: &str = "webstack";
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
    /// Build everything twice in fresh directories (the second with a fresh
    /// cargo target dir at another path), fail if any digest differs or an
    /// image is over its size budget. Does not touch Docker.
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
                Some(_) => check_reproducible(sh, &root, &nginx_dir),
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
        let images = match &self.nginx_config_dir {
            None => ensure_images(sh)?,
            Some(nginx_dir) => ensure_images_with(sh, &root, nginx_dir)?,
        };
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
    /// The image id: `sha256:` + hex of the config blob.
    pub digest: String,
}

/// What one build produced for one image.
#[derive(Clone, Debug)]
pub struct ImageArtifact {
    pub name: &'static str,
    pub config_digest_hex: String,
    pub manifest_digest_hex: String,
    pub archive_sha256_hex: String,
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
        self.config_digest_hex[..12].to_string()
    }
}

/// Builds (incrementally) all three images, `docker load`s those whose content
/// tag is not in the engine yet and points the stable tag at each.
pub fn ensure_images(sh: &Shell) -> anyhow::Result<Vec<BuiltImage>> {
    let root = crate::project_root();
    let nginx_dir = root.join("nginx");
    ensure_images_with(sh, &root, &nginx_dir)
}

/// Builds the images once and loads them into every engine in
/// `docker_hosts` (`DOCKER_HOST` values): how the nodes of a cluster get
/// the images without a registry. Nothing is loaded into the engine the
/// shell itself points at.
pub fn ensure_images_on_engines(
    sh: &Shell,
    docker_hosts: &[String],
) -> anyhow::Result<Vec<BuiltImage>> {
    let root = crate::project_root();
    let nginx_dir = root.join("nginx");
    let layout = BuildLayout::regular(&root);
    let epoch = source_date_epoch(sh)?;
    let artifacts = build_all(sh, &root, &layout, &nginx_dir, epoch)?;
    let mut images = Vec::new();
    for docker_host in docker_hosts {
        let _engine = sh.push_env("DOCKER_HOST", docker_host);
        crate::docker::require_docker(sh)?;
        images.clear();
        for artifact in &artifacts {
            images.push(
                docker::load_and_tag(sh, artifact)
                    .with_context(|| format!("load {} into {docker_host}", artifact.name))?,
            );
        }
    }
    print_table(&artifacts);
    Ok(images)
}

fn ensure_images_with(
    sh: &Shell,
    root: &Path,
    nginx_dir: &Path,
) -> anyhow::Result<Vec<BuiltImage>> {
    // Probe first: no point in minutes of building for an engine we cannot reach.
    crate::docker::require_docker(sh)?;
    let layout = BuildLayout::regular(root);
    let epoch = source_date_epoch(sh)?;
    let artifacts = build_all(sh, root, &layout, nginx_dir, epoch)?;
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

/// `root` and `nonroot` only, so tools can name the image's user.
fn add_base_files(rootfs: &mut Rootfs) {
    let id = stack::NONROOT_ID;
    rootfs.add_file(
        "etc/passwd",
        FileContents::Bytes(
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{id}:{id}:nonroot:/home/nonroot:/sbin/nologin\n"
            )
            .into_bytes(),
        ),
        0o644,
    );
    rootfs.add_file(
        "etc/group",
        FileContents::Bytes(format!("root:x:0:\nnonroot:x:{id}:\n").into_bytes()),
        0o644,
    );
    // A mount point for `--tmpfs /tmp` on a read-only root.
    rootfs.add_directory("tmp", 0o1777, 0);
}

fn labels(name: &str, description: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.description".to_string(),
            description.to_string(),
        ),
        (
            "org.opencontainers.image.licenses".to_string(),
            "MIT OR Apache-2.0".to_string(),
        ),
        (
            "org.opencontainers.image.title".to_string(),
            format!("{REPOSITORY_PREFIX}/{name}"),
        ),
    ])
}

/// What each image runs: the model holds only what comes after it
/// (`Service::command`, given in the deploy files).
pub fn entrypoint(service: &str) -> anyhow::Result<Vec<String>> {
    let parts: &[&str] = match service {
        stack::WEBAPP => &["/usr/local/bin/webapp"],
        stack::DB => &["/usr/bin/redis-server"],
        // Runs the front and back nginx and keeps the back's list of
        // replicas equal to DNS (webapp/src/bin/proxy-init.rs).
        stack::PROXY => &["/usr/local/bin/proxy-init"],
        other => bail!("xtask builds no image for service {other:?}"),
    };
    Ok(parts.iter().map(|part| part.to_string()).collect())
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
const PROXY_BUDGET: u64 = 7 * MEBIBYTE;

/// The Debian contents of db or proxy from the pinned packages.
fn debian_rootfs(
    root: &Path,
    cache: &DebianCache,
    contents: &DebianContents,
) -> anyhow::Result<Rootfs> {
    let lock = LockFile::read(root)?;
    let Some(locked) = lock.images.get(contents.image) else {
        bail!(
            "{} has no entry for image {}; run `cargo xtask images --update-lock`",
            debian::LOCK_PATH,
            contents.image
        )
    };
    let mut source = LockedSource {
        cache,
        locked: locked
            .iter()
            .map(|package| (package.package.clone(), package.clone()))
            .collect(),
        fetched: BTreeMap::new(),
    };
    let resolved = debian::resolve_contents(&mut source, contents)
        .with_context(|| format!("assemble the Debian files of image {}", contents.image))?;
    Ok(resolved.rootfs)
}

/// Copies every regular file under `nginx_dir` to /etc/nginx/.
fn add_nginx_config(rootfs: &mut Rootfs, nginx_dir: &Path) -> anyhow::Result<()> {
    let mut pending = vec![nginx_dir.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = fs::read_dir(&directory)
            .with_context(|| format!("list nginx configuration in {}", directory.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("list {}", directory.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                let relative = path
                    .strip_prefix(nginx_dir)
                    .context("nginx file outside its directory")?
                    .to_string_lossy()
                    .into_owned();
                rootfs.add_file(
                    &format!("etc/nginx/{relative}"),
                    FileContents::Bytes(
                        fs::read(&path).with_context(|| format!("read {}", path.display()))?,
                    ),
                    0o644,
                );
            }
        }
    }
    for required in ["nginx.conf", "back.conf"] {
        if !rootfs.contains(&format!("etc/nginx/{required}")) {
            bail!(
                "{} has no {required}: the proxy image needs the repository's nginx/ configuration",
                nginx_dir.display()
            )
        }
    }
    Ok(())
}

/// Builds the three images into `layout.output_dir` and returns what was written.
fn build_all(
    sh: &Shell,
    root: &Path,
    layout: &BuildLayout,
    nginx_dir: &Path,
    epoch: u64,
) -> anyhow::Result<Vec<ImageArtifact>> {
    let binaries = webapp_binary::build(sh, root, &layout.cargo_target_dir, epoch)
        .context("build the webapp binaries for the images")?;

    // What the containers run as and how they are checked and stopped comes
    // from the one model the deploy files are rendered from.
    let model = stack::stack();
    let model_webapp = model.service(stack::WEBAPP)?;
    let model_db = model.service(stack::DB)?;
    let model_proxy = model.service(stack::PROXY)?;
    let mut webapp = Rootfs::new();
    add_base_files(&mut webapp);
    webapp.add_file(
        "usr/local/bin/webapp",
        FileContents::Path(binaries.webapp.clone()),
        0o755,
    );
    let webapp_settings = RuntimeSettings {
        entrypoint: entrypoint(stack::WEBAPP)?,
        environment: vec![DEFAULT_PATH.into()],
        exposed_ports: model.listening_ports(model_webapp)?,
        healthcheck_command: Some(model_webapp.healthcheck.command.clone()),
        labels: labels(
            "webapp",
            "The webstack web app: one static binary, nothing else",
        ),
        stop_signal: Some(model_webapp.stop_signal.into()),
        user: model_webapp.user.into(),
        working_dir: model_webapp.working_dir()?.into(),
    };

    let mut db = debian_rootfs(root, &layout.cache, &DB_CONTENTS)?;
    add_base_files(&mut db);
    // Named volumes mounted here copy this ownership, so Redis can write.
    db.add_directory("data", 0o755, u64::from(stack::NONROOT_ID));
    let db_settings = RuntimeSettings {
        entrypoint: entrypoint(stack::DB)?,
        environment: vec![DEFAULT_PATH.into()],
        exposed_ports: model.listening_ports(model_db)?,
        healthcheck_command: Some(model_db.healthcheck.command.clone()),
        labels: labels("db", "Redis from pinned Debian packages, no shell"),
        stop_signal: Some(model_db.stop_signal.into()),
        user: model_db.user.into(),
        working_dir: model_db.working_dir()?.into(),
    };

    let mut proxy = debian_rootfs(root, &layout.cache, &PROXY_CONTENTS)?;
    add_base_files(&mut proxy);
    add_nginx_config(&mut proxy, nginx_dir)?;
    proxy.add_file(
        "usr/local/bin/httpcheck",
        FileContents::Path(binaries.httpcheck.clone()),
        0o755,
    );
    proxy.add_file(
        "usr/local/bin/proxy-init",
        FileContents::Path(binaries.proxy_init.clone()),
        0o755,
    );
    let proxy_settings = RuntimeSettings {
        entrypoint: entrypoint(stack::PROXY)?,
        environment: vec![DEFAULT_PATH.into()],
        exposed_ports: model.listening_ports(model_proxy)?,
        healthcheck_command: Some(model_proxy.healthcheck.command.clone()),
        labels: labels("proxy", "nginx from pinned Debian packages, no shell"),
        stop_signal: Some(model_proxy.stop_signal.into()),
        user: model_proxy.user.into(),
        working_dir: model_proxy.working_dir()?.into(),
    };

    fs::create_dir_all(&layout.output_dir)
        .with_context(|| format!("create {}", layout.output_dir.display()))?;
    let mut artifacts = Vec::new();
    for (name, rootfs, settings, budget) in [
        ("webapp", &webapp, &webapp_settings, WEBAPP_BUDGET),
        ("db", &db, &db_settings, DB_BUDGET),
        ("proxy", &proxy, &proxy_settings, PROXY_BUDGET),
    ] {
        let archive_path = layout.output_dir.join(format!("{name}.tar"));
        let record_path = layout.output_dir.join(format!("{name}.json"));
        let fingerprint = build_fingerprint(rootfs, settings, epoch)?;
        if let Some(artifact) = reusable_artifact(&record_path, &fingerprint, &archive_path) {
            artifacts.push(ImageArtifact {
                name,
                budget,
                archive_path,
                ..artifact
            });
            continue;
        }
        eprintln!("images: writing {name}");
        let blobs = oci::image_blobs(rootfs, settings, epoch)
            .with_context(|| format!("build image {name}"))?;
        let repository = format!("{REPOSITORY_PREFIX}/{name}");
        let config_digest_hex = blobs.config_digest_hex();
        let tags = vec![STABLE_TAG.to_string(), config_digest_hex[..12].to_string()];
        let archive = oci::archive_tar(&blobs, &repository, &tags, epoch)?;
        let temporary = layout
            .output_dir
            .join(staging::unique_temporary_name(&format!("{name}.tar")));
        fs::write(&temporary, &archive)
            .with_context(|| format!("write {}", temporary.display()))?;
        fs::rename(&temporary, &archive_path)
            .with_context(|| format!("write {}", archive_path.display()))?;
        let artifact = ImageArtifact {
            name,
            manifest_digest_hex: blobs.manifest_digest_hex(),
            archive_sha256_hex: layer::sha256_hex(&archive),
            compressed_size: blobs.layer_gzip.len() as u64,
            uncompressed_size: blobs.layer_uncompressed_size,
            budget,
            config_digest_hex,
            archive_path,
        };
        write_build_record(&record_path, &fingerprint, &artifact, archive.len() as u64)?;
        artifacts.push(artifact);
    }
    Ok(artifacts)
}

/// What `build_all` remembers about an archive it wrote, next to it.
#[derive(serde::Serialize, serde::Deserialize)]
struct BuildRecord {
    fingerprint: String,
    archive_size: u64,
    config_digest_hex: String,
    manifest_digest_hex: String,
    archive_sha256_hex: String,
    compressed_size: u64,
    uncompressed_size: u64,
}

/// Inputs of one image: its files (see `Rootfs::fingerprint`), settings,
/// source date, and the xtask binary itself (a changed writer must rewrite).
fn build_fingerprint(
    rootfs: &Rootfs,
    settings: &RuntimeSettings,
    epoch: u64,
) -> anyhow::Result<String> {
    let executable = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|duration| duration.as_nanos())
        .unwrap_or_default();
    Ok(layer::sha256_hex(
        format!(
            "{}\0{settings:?}\0{epoch}\0{executable}",
            rootfs.fingerprint()?
        )
        .as_bytes(),
    ))
}

/// The earlier artifact when its record matches `fingerprint` and its
/// archive is still there, whole.
fn reusable_artifact(
    record_path: &Path,
    fingerprint: &str,
    archive_path: &Path,
) -> Option<ImageArtifact> {
    let record: BuildRecord = serde_json::from_slice(&fs::read(record_path).ok()?).ok()?;
    let archive_size = fs::metadata(archive_path).ok()?.len();
    if record.fingerprint != fingerprint || record.archive_size != archive_size {
        return None;
    }
    Some(ImageArtifact {
        name: "",
        config_digest_hex: record.config_digest_hex,
        manifest_digest_hex: record.manifest_digest_hex,
        archive_sha256_hex: record.archive_sha256_hex,
        compressed_size: record.compressed_size,
        uncompressed_size: record.uncompressed_size,
        budget: 0,
        archive_path: archive_path.to_path_buf(),
    })
}

fn write_build_record(
    record_path: &Path,
    fingerprint: &str,
    artifact: &ImageArtifact,
    archive_size: u64,
) -> anyhow::Result<()> {
    let record = BuildRecord {
        fingerprint: fingerprint.to_string(),
        archive_size,
        config_digest_hex: artifact.config_digest_hex.clone(),
        manifest_digest_hex: artifact.manifest_digest_hex.clone(),
        archive_sha256_hex: artifact.archive_sha256_hex.clone(),
        compressed_size: artifact.compressed_size,
        uncompressed_size: artifact.uncompressed_size,
    };
    let bytes = serde_json::to_vec_pretty(&record).context("serialise build record")?;
    fs::write(record_path, bytes).with_context(|| format!("write {}", record_path.display()))
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MEBIBYTE as f64)
}

fn print_table(artifacts: &[ImageArtifact]) {
    println!(
        "{:<8} {:<71} {:>11} {:>13} {:>8}",
        "image", "digest (image id)", "compressed", "uncompressed", "budget"
    );
    for artifact in artifacts {
        println!(
            "{:<8} sha256:{:<64} {:>11} {:>13} {:>8}",
            artifact.name,
            artifact.config_digest_hex,
            mebibytes(artifact.compressed_size),
            mebibytes(artifact.uncompressed_size),
            format!("{} MiB", artifact.budget / MEBIBYTE),
        );
    }
}

/// Budgets hold for every image, or an error listing the offenders.
pub fn check_budgets(artifacts: &[ImageArtifact]) -> anyhow::Result<()> {
    let over: Vec<String> = artifacts
        .iter()
        .filter(|artifact| artifact.compressed_size > artifact.budget)
        .map(|artifact| {
            format!(
                "{} is {} compressed, over its {} budget",
                artifact.name,
                mebibytes(artifact.compressed_size),
                mebibytes(artifact.budget)
            )
        })
        .collect();
    if !over.is_empty() {
        bail!("image size budget exceeded: {}", over.join("; "))
    }
    Ok(())
}

/// What `cargo xtask images --check` does (for `cargo xtask ci`): two builds
/// in fresh directories must give identical bytes, within the size budgets.
pub fn check_reproducible_and_budgets(sh: &Shell) -> anyhow::Result<()> {
    let root = crate::project_root();
    check_reproducible(sh, &root, &root.join("nginx"))
}

fn check_reproducible(sh: &Shell, root: &Path, nginx_dir: &Path) -> anyhow::Result<()> {
    let check_dir = BuildLayout::images_dir(root).join("check");
    if check_dir.exists() {
        fs::remove_dir_all(&check_dir)
            .with_context(|| format!("remove the previous check in {}", check_dir.display()))?;
    }
    let regular = BuildLayout::regular(root);
    // Two builds from scratch, in fresh directories and with fresh cargo
    // target dirs at different paths, so absolute paths or stale artefacts
    // leaking into the bytes show up. Only the .deb download cache is shared:
    // its files are checked against the lock's sha256 on every use.
    let first = BuildLayout {
        output_dir: check_dir.join("first"),
        cargo_target_dir: check_dir.join("first-cargo-target"),
        cache: DebianCache {
            deb_dir: regular.cache.deb_dir.clone(),
            unpack_dir: check_dir.join("first-unpacked"),
            archives: regular.cache.archives.clone(),
        },
    };
    let second = BuildLayout {
        output_dir: check_dir.join("second"),
        cargo_target_dir: check_dir.join("second-cargo-target"),
        cache: DebianCache {
            deb_dir: regular.cache.deb_dir.clone(),
            unpack_dir: check_dir.join("second-unpacked"),
            archives: regular.cache.archives.clone(),
        },
    };
    // One source date for both builds: a commit made while they run must not
    // make them differ.
    let epoch = source_date_epoch(sh)?;
    eprintln!("images --check: first build, fresh cargo target dir (a full release build)");
    let started = std::time::Instant::now();
    let first_artifacts = build_all(sh, root, &first, nginx_dir, epoch)?;
    eprintln!(
        "images --check: first build took {:.0?}; second build, fresh cargo target dir (a full release build)",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let second_artifacts = build_all(sh, root, &second, nginx_dir, epoch)?;
    eprintln!(
        "images --check: second build took {:.0?}",
        started.elapsed()
    );
    print_table(&first_artifacts);
    let mut differences = Vec::new();
    for (first, second) in first_artifacts.iter().zip(&second_artifacts) {
        if first.archive_sha256_hex != second.archive_sha256_hex
            || first.config_digest_hex != second.config_digest_hex
            || first.manifest_digest_hex != second.manifest_digest_hex
        {
            differences.push(format!(
                "{}: image id {} vs {} (archives {} and {})",
                first.name,
                first.config_digest_hex,
                second.config_digest_hex,
                first.archive_path.display(),
                second.archive_path.display()
            ));
        }
    }
    if !differences.is_empty() {
        bail!(
            "images are not reproducible: {}. Compare the archives (e.g. with diffoscope) to find the difference",
            differences.join("; ")
        )
    }
    check_budgets(&first_artifacts)?;
    println!("images --check: both builds gave identical bytes for all images, all within budget");
    // The fresh target dirs are ~1 GiB each; the evidence is in the archives.
    for layout in [&first, &second] {
        fs::remove_dir_all(&layout.cargo_target_dir)
            .with_context(|| format!("remove {}", layout.cargo_target_dir.display()))?;
    }
    Ok(())
}

/// `--update-lock`: the signed indexes first (any failure there changes
/// nothing), then the candidates' .debs (each checked against the signed
/// index before it enters the cache), then the lock, written whole.
fn update_lock(root: &Path) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    update_lock_in(
        root,
        &BuildLayout::regular(root).cache,
        &release::keys_dir(root),
        release::SUITES,
        now,
    )
}

/// `update_lock` for the lock under `lock_root` and the given cache, keys
/// and suites (tests point these at scratch directories and a local server).
fn update_lock_in(
    lock_root: &Path,
    cache: &DebianCache,
    keys_dir: &Path,
    suites: &[release::Suite],
    now_unix: u64,
) -> anyhow::Result<()> {
    let root = lock_root;
    let old = LockFile::read(root).unwrap_or_default();
    let candidates = release::fetch_candidates(&cache.archives, keys_dir, suites, now_unix)?;
    let mut source = debian::CandidateSource {
        cache,
        candidates: &candidates,
        fetched: BTreeMap::new(),
    };
    let mut new = LockFile {
        tools: old.tools.clone(),
        ..LockFile::default()
    };
    for contents in [&DB_CONTENTS, &PROXY_CONTENTS, &NIX_CONTENTS] {
        let resolved = debian::resolve_contents(&mut source, contents)
            .with_context(|| format!("resolve the packages of image {}", contents.image))?;
        new.images.insert(
            contents.image.to_string(),
            resolved
                .packages
                .values()
                .map(|package| package.locked.clone())
                .collect(),
        );
    }
    let mut changes = Vec::new();
    for (image, packages) in &new.images {
        let old_packages: BTreeMap<&str, &str> = old
            .images
            .get(image)
            .map(|packages| {
                packages
                    .iter()
                    .map(|package| (package.package.as_str(), package.version.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let new_packages: BTreeMap<&str, &str> = packages
            .iter()
            .map(|package| (package.package.as_str(), package.version.as_str()))
            .collect();
        for (package, version) in &new_packages {
            match old_packages.get(package) {
                None => changes.push(format!("{image}: + {package} {version}")),
                Some(old_version) if old_version != version => {
                    changes.push(format!("{image}: {package} {old_version} -> {version}"))
                }
                Some(_) => {}
            }
        }
        for (package, version) in &old_packages {
            if !new_packages.contains_key(package) {
                changes.push(format!("{image}: - {package} {version}"));
            }
        }
    }
    new.write(root)?;
    if changes.is_empty() {
        println!("{}: no changes", debian::LOCK_PATH);
    } else {
        println!("{} changed:", debian::LOCK_PATH);
        for change in changes {
            println!("  {change}");
        }
    }
    Ok(())
}
