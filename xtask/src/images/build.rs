//! One build of the three images: each image's files (the webapp binary,
//! the Debian contents, nginx's configuration, base files), its layer,
//! config and archive, reused when the inputs' fingerprint is unchanged.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{bail, Context};
use xshell::Shell;
use xtask_fetch::staging;

use super::*;

/// `root` and `nonroot` only, so tools can name the image's user.
pub(super) fn add_base_files(rootfs: &mut Rootfs) {
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

pub(super) fn labels(name: &str, description: &str) -> BTreeMap<String, String> {
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

/// The Debian contents of db or proxy from the pinned packages.
pub(super) fn debian_rootfs(
    root: &Path,
    cache: &DebianCache,
    contents: &DebianContents,
    platform: Platform,
) -> anyhow::Result<Rootfs> {
    Ok(debian_part(root, cache, contents, platform)?.rootfs)
}

/// An image's files from Debian packages, and the packages, for its SBOM.
struct DebianPart {
    rootfs: Rootfs,
    packages: Vec<sbom::DebianPackage>,
}

fn debian_part(
    root: &Path,
    cache: &DebianCache,
    contents: &DebianContents,
    platform: Platform,
) -> anyhow::Result<DebianPart> {
    let lock = LockFile::read(root)?;
    let mut source = LockedSource::for_image(cache, &lock, contents.image, platform)?;
    let resolved = debian::resolve_contents(&mut source, contents, platform)
        .with_context(|| format!("assemble the Debian files of image {}", contents.image))?;
    let packages = resolved
        .packages
        .values()
        .map(|package| sbom::DebianPackage::from_unpacked(package))
        .collect::<anyhow::Result<_>>()?;
    Ok(DebianPart {
        rootfs: resolved.rootfs,
        packages,
    })
}

/// One image of a platform: its files, settings and what its SBOM needs.
struct ImageInputs {
    name: &'static str,
    rootfs: Rootfs,
    settings: ContainerConfig,
    budget: u64,
    packages: Vec<sbom::DebianPackage>,
    /// The image paths the Debian packages provided.
    from_packages: BTreeSet<String>,
    /// The image's own programs: image path → the cargo package built into it.
    programs: &'static [(&'static str, &'static str)],
}

impl ImageInputs {
    fn from_debian(
        name: &'static str,
        debian: DebianPart,
        settings: ContainerConfig,
        budget: u64,
    ) -> ImageInputs {
        ImageInputs {
            name,
            from_packages: debian.rootfs.entries().keys().cloned().collect(),
            rootfs: debian.rootfs,
            settings,
            budget,
            packages: debian.packages,
            programs: &[],
        }
    }
}

/// Copies the top-level `*.conf` files of `nginx_dir` to /etc/nginx/, and
/// the error answers `errors/*.json` to /etc/nginx/errors/: the
/// configuration only, not the proxy crate beside it in nginx/proxy/ (whose
/// programs the image gets as built binaries).
pub(super) fn add_nginx_config(rootfs: &mut Rootfs, nginx_dir: &Path) -> anyhow::Result<()> {
    add_files_ending(rootfs, nginx_dir, "conf", "etc/nginx")?;
    for required in ["nginx.conf", "back.conf"] {
        if !rootfs.contains(&format!("etc/nginx/{required}")) {
            bail!(
                "{} has no {required}: the proxy image needs the repository's nginx/ configuration",
                nginx_dir.display()
            )
        }
    }
    // The front's own error answers (nginx.conf's /.errors/ location).
    add_files_ending(
        rootfs,
        &nginx_dir.join("errors"),
        "json",
        "etc/nginx/errors",
    )?;
    if !rootfs.contains("etc/nginx/errors/400.json") {
        bail!(
            "{} has no errors/400.json: the proxy image needs the repository's nginx/errors/",
            nginx_dir.display()
        )
    }
    Ok(())
}

/// Copies the files of `dir` (not its subdirectories) whose extension is
/// `extension` to `target` in the image.
fn add_files_ending(
    rootfs: &mut Rootfs,
    dir: &Path,
    extension: &str,
    target: &str,
) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("list {}", dir.display()))?
            .path();
        let wanted = path.extension().is_some_and(|found| found == extension);
        if !wanted || !path.is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            bail!("{} has a name that is not UTF-8", path.display())
        };
        rootfs.add_file(
            &format!("{target}/{name}"),
            FileContents::Bytes(
                fs::read(&path).with_context(|| format!("read {}", path.display()))?,
            ),
            0o644,
        );
    }
    Ok(())
}

/// How an image's container runs: everything comes from the one model the
/// deploy files are rendered from, except the description.
fn runtime_settings(
    model: &stack::Stack,
    service_name: &str,
    description: &str,
) -> anyhow::Result<ContainerConfig> {
    let service = model.service(service_name)?;
    Ok(ContainerConfig {
        entrypoint: stack::entrypoint(service_name)?,
        env: vec![DEFAULT_PATH.into()],
        exposed_ports: model
            .listening_ports(service)?
            .into_iter()
            .map(|port| (port, xtask_oci::image::EmptyObject {}))
            .collect(),
        healthcheck: Some(image_healthcheck(&service.healthcheck.command)),
        labels: labels(service_name, description),
        stop_signal: Some(service.stop_signal.into()),
        user: service.user.into(),
        working_dir: service.working_dir.into(),
    })
}

/// The healthcheck an image carries: `command`, every 10 s, 3 s each, three
/// failures in a row after a 5 s start (what `docker run` uses; Compose and
/// Swarm set the service's own).
fn image_healthcheck(command: &[String]) -> xtask_oci::Healthcheck {
    const SECOND_IN_NANOSECONDS: u64 = 1_000_000_000;
    xtask_oci::Healthcheck {
        interval: 10 * SECOND_IN_NANOSECONDS,
        retries: 3,
        start_period: 5 * SECOND_IN_NANOSECONDS,
        test: std::iter::once("CMD".to_string())
            .chain(command.iter().cloned())
            .collect(),
        timeout: 3 * SECOND_IN_NANOSECONDS,
    }
}

/// The webapp image's files: the static binary and nothing else.
fn webapp_rootfs(binaries: &webapp_binary::WebappBinaries) -> Rootfs {
    let mut webapp = Rootfs::new();
    add_base_files(&mut webapp);
    webapp.add_file(
        "usr/local/bin/webapp",
        FileContents::Path(binaries.webapp.clone()),
        0o755,
    );
    webapp
}

/// The db image: Redis from the pinned packages and its data directory.
fn db_image(
    root: &Path,
    cache: &DebianCache,
    platform: Platform,
    settings: ContainerConfig,
) -> anyhow::Result<ImageInputs> {
    let mut db = ImageInputs::from_debian(
        "db",
        debian_part(root, cache, &DB_CONTENTS, platform)?,
        settings,
        DB_BUDGET,
    );
    add_base_files(&mut db.rootfs);
    // Named volumes mounted here copy this ownership, so Redis can write.
    db.rootfs
        .add_directory("data", 0o755, u64::from(stack::NONROOT_ID));
    Ok(db)
}

/// The proxy image: nginx from the pinned packages, its configuration, the
/// proxy crate's two programs, and on amd64 the acme service's program.
fn proxy_image(
    root: &Path,
    cache: &DebianCache,
    nginx_dir: &Path,
    binaries: &webapp_binary::WebappBinaries,
    platform: Platform,
    settings: ContainerConfig,
) -> anyhow::Result<ImageInputs> {
    let mut image = ImageInputs::from_debian(
        "proxy",
        debian_part(root, cache, &PROXY_CONTENTS, platform)?,
        settings,
        PROXY_BUDGET,
    );
    image.programs = match binaries.acme {
        Some(_) => &[
            ("usr/local/bin/acme", "acme"),
            ("usr/local/bin/httpcheck", "proxy"),
            ("usr/local/bin/proxy-init", "proxy"),
        ],
        None => &[
            ("usr/local/bin/httpcheck", "proxy"),
            ("usr/local/bin/proxy-init", "proxy"),
        ],
    };
    let proxy = &mut image.rootfs;
    add_base_files(proxy);
    add_nginx_config(proxy, nginx_dir)?;
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
    if let Some(acme) = &binaries.acme {
        proxy.add_file(
            "usr/local/bin/acme",
            FileContents::Path(acme.clone()),
            0o755,
        );
    }
    // The acme service's state volume: a new named volume copies this ownership, so the
    // service (uid 65532) can write it; the front mounts it read-only.
    proxy.add_directory("run/acme", 0o755, u64::from(stack::NONROOT_ID));
    Ok(image)
}

/// Builds the three images for each of `platforms` into
/// `layout.output_dir/<architecture>/` and returns what was written, the
/// platforms in the order given.
pub(super) fn build_all(
    sh: &Shell,
    root: &Path,
    layout: &BuildLayout,
    nginx_dir: &Path,
    epoch: u64,
    platforms: &[Platform],
) -> anyhow::Result<Vec<ImageArtifact>> {
    let mut artifacts = Vec::new();
    for &platform in platforms {
        artifacts.extend(build_platform(
            sh, root, layout, nginx_dir, epoch, platform,
        )?);
    }
    Ok(artifacts)
}

/// The three images of one platform.
fn build_platform(
    sh: &Shell,
    root: &Path,
    layout: &BuildLayout,
    nginx_dir: &Path,
    epoch: u64,
    platform: Platform,
) -> anyhow::Result<Vec<ImageArtifact>> {
    let binaries = webapp_binary::build(sh, root, &layout.cargo_target_dir, epoch, platform)
        .with_context(|| format!("build the webapp binaries for the {platform} images"))?;
    let model = stack::stack();
    let webapp = ImageInputs {
        name: "webapp",
        rootfs: webapp_rootfs(&binaries),
        settings: runtime_settings(
            &model,
            stack::WEBAPP,
            "The webstack web app: one static binary, nothing else",
        )?,
        budget: WEBAPP_BUDGET,
        packages: Vec::new(),
        from_packages: BTreeSet::new(),
        programs: &[("usr/local/bin/webapp", "webapp")],
    };
    let db = db_image(
        root,
        &layout.cache,
        platform,
        runtime_settings(
            &model,
            stack::DB,
            "Redis from pinned Debian packages, no shell",
        )?,
    )?;
    let proxy = proxy_image(
        root,
        &layout.cache,
        nginx_dir,
        &binaries,
        platform,
        runtime_settings(
            &model,
            stack::PROXY,
            "nginx from pinned Debian packages, no shell",
        )?,
    )?;

    let rust_std = LockFile::read(root)?
        .rust_std
        .get(platform.rust_target())
        .filter(|_| Some(platform) != Platform::host())
        .map(|pin| (pin.url.clone(), pin.sha256.clone()));
    let facts = attestation::build_facts(sh, root, epoch, rust_std)?;
    let output_dir = layout.output_dir.join(platform.oci_architecture());
    fs::create_dir_all(&output_dir).with_context(|| format!("create {}", output_dir.display()))?;
    let mut artifacts = Vec::new();
    for image in [&webapp, &db, &proxy] {
        let ImageInputs {
            name,
            rootfs,
            settings,
            budget,
            ..
        } = image;
        let (name, budget) = (*name, *budget);
        let archive_path = output_dir.join(format!("{name}.tar"));
        let record_path = output_dir.join(format!("{name}.json"));
        // The provenance names the commit, the locks and the compiler.
        let fingerprint = build_fingerprint(rootfs, settings, &format!("{facts:?}"), platform)?;
        if let Some(artifact) = reusable_artifact(&record_path, &fingerprint, &archive_path) {
            artifacts.push(ImageArtifact {
                name,
                platform,
                budget,
                archive_path,
                ..artifact
            });
            continue;
        }
        eprintln!("images: writing {name} ({platform})");
        let blobs = xtask_oci::image_blobs(rootfs, settings, platform.oci_architecture(), epoch)
            .with_context(|| format!("build image {name} for {platform}"))?;
        let repository = format!("{REPOSITORY_PREFIX}/{name}");
        let config_digest = blobs.config_digest();
        let manifest_digest = blobs.manifest_digest();
        let tags = vec![platform.stable_tag(), config_digest.short_hex().to_string()];
        let sbom = image_sbom(sh, root, image, platform, &manifest_digest, epoch)?;
        let attestation =
            attestation::attestation(name, platform, &manifest_digest, &sbom, &facts)?;
        let archive =
            xtask_oci::archive_tar(&blobs, &repository, &tags, Some(&attestation), epoch)?;
        staging::write_atomically(&sbom::sbom_path(&archive_path), &sbom, 0o666)?;
        staging::write_atomically(&archive_path, &archive, 0o666)?;
        let artifact = ImageArtifact {
            name,
            platform,
            sbom_sha256: Digest::sha256(&sbom),
            manifest_digest,
            archive_sha256: Digest::sha256(&archive),
            compressed_size: blobs.layer_gzip.len() as u64,
            uncompressed_size: blobs.layer_uncompressed_size,
            budget,
            config_digest,
            archive_path,
        };
        write_build_record(&record_path, &fingerprint, &artifact, archive.len() as u64)?;
        artifacts.push(artifact);
    }
    Ok(artifacts)
}

/// The SBOM of one image (see `sbom`): its packages, files, and the
/// crates of its own programs as `cargo tree` lists them for the platform.
fn image_sbom(
    sh: &Shell,
    root: &Path,
    image: &ImageInputs,
    platform: Platform,
    manifest_digest: &Digest,
    epoch: u64,
) -> anyhow::Result<Vec<u8>> {
    let mut programs = BTreeMap::new();
    for (path, package) in image.programs {
        programs.insert(
            path.to_string(),
            sbom::normal_dependencies(sh, root, package, platform.rust_target())?,
        );
    }
    sbom::document(&sbom::ImageContents {
        name: image.name,
        platform,
        manifest_digest,
        created: &xtask_oci::rfc3339_utc(epoch),
        packages: &image.packages,
        rootfs: &image.rootfs,
        from_packages: &image.from_packages,
        programs: &programs,
    })
    .with_context(|| format!("write the SBOM of {} ({platform})", image.name))
}

/// What `build_all` remembers about an archive it wrote, next to it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct BuildRecord {
    fingerprint: String,
    archive_size: u64,
    config_digest: Digest,
    manifest_digest: Digest,
    archive_sha256: Digest,
    sbom_sha256: Digest,
    compressed_size: u64,
    uncompressed_size: u64,
}

/// Inputs of one image: its files (see `Rootfs::fingerprint`), settings,
/// what its provenance records (source date, commit, locks, compiler), and
/// the xtask binary itself (a changed writer must rewrite).
pub(super) fn build_fingerprint(
    rootfs: &Rootfs,
    settings: &ContainerConfig,
    build_facts: &str,
    platform: Platform,
) -> anyhow::Result<String> {
    let executable = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|duration| duration.as_nanos())
        .unwrap_or_default();
    Ok(Digest::sha256(
        format!(
            "{}\0{settings:?}\0{build_facts}\0{platform}\0{executable}",
            rootfs.fingerprint()?
        )
        .as_bytes(),
    )
    .hex()
    .to_string())
}

/// The earlier artifact when its record matches `fingerprint` and its
/// archive is still there, whole.
pub(super) fn reusable_artifact(
    record_path: &Path,
    fingerprint: &str,
    archive_path: &Path,
) -> Option<ImageArtifact> {
    let record: BuildRecord = serde_json::from_slice(&fs::read(record_path).ok()?).ok()?;
    let archive_size = fs::metadata(archive_path).ok()?.len();
    if record.fingerprint != fingerprint || record.archive_size != archive_size {
        return None;
    }
    // The SBOM beside it, whole (it is written before the archive).
    let sbom = fs::read(sbom::sbom_path(archive_path)).ok()?;
    if Digest::sha256(&sbom) != record.sbom_sha256 {
        return None;
    }
    Some(ImageArtifact {
        name: "",
        platform: Platform::Amd64,
        config_digest: record.config_digest,
        manifest_digest: record.manifest_digest,
        archive_sha256: record.archive_sha256,
        sbom_sha256: record.sbom_sha256,
        compressed_size: record.compressed_size,
        uncompressed_size: record.uncompressed_size,
        budget: 0,
        archive_path: archive_path.to_path_buf(),
    })
}

pub(super) fn write_build_record(
    record_path: &Path,
    fingerprint: &str,
    artifact: &ImageArtifact,
    archive_size: u64,
) -> anyhow::Result<()> {
    let record = BuildRecord {
        fingerprint: fingerprint.to_string(),
        archive_size,
        config_digest: artifact.config_digest.clone(),
        manifest_digest: artifact.manifest_digest.clone(),
        archive_sha256: artifact.archive_sha256.clone(),
        sbom_sha256: artifact.sbom_sha256.clone(),
        compressed_size: artifact.compressed_size,
        uncompressed_size: artifact.uncompressed_size,
    };
    let bytes = serde_json::to_vec_pretty(&record).context("serialise build record")?;
    fs::write(record_path, bytes).with_context(|| format!("write {}", record_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtask_oci::RootfsEntry;

    /// The files `add_nginx_config` added (besides their parent directories),
    /// with their bytes.
    fn nginx_files(nginx_dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut rootfs = Rootfs::new();
        add_nginx_config(&mut rootfs, nginx_dir)?;
        let mut files = BTreeMap::new();
        for (path, entry) in rootfs.entries() {
            match entry {
                RootfsEntry::Directory { .. } => {}
                RootfsEntry::File {
                    contents: FileContents::Bytes(bytes),
                    mode: 0o644,
                } => {
                    files.insert(path.clone(), bytes.clone());
                }
                other => panic!("{path} is not a plain 0644 file: {other:?}"),
            }
        }
        Ok(files)
    }

    /// A directory with these files, removed when the returned guard drops.
    fn scratch_nginx_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let directory = tempfile::Builder::new()
            .prefix("xtask-nginx")
            .tempdir()
            .unwrap();
        for (name, text) in files {
            let path = directory.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        directory
    }

    #[test]
    fn only_the_top_level_conf_files_are_copied() {
        let directory = scratch_nginx_dir(&[
            ("nginx.conf", "front"),
            ("back.conf", "back"),
            ("webapp-proxy.conf", "included"),
            ("notes.md", "not configuration"),
            ("errors/400.json", "{}"),
            ("errors/README", "not an answer"),
            ("proxy/Cargo.toml", "[package]"),
            ("proxy/src/lib.rs", "pub mod probe;"),
            ("proxy/tests/fixture.conf", "a crate's file"),
        ]);

        let files = nginx_files(directory.path()).unwrap();

        assert_eq!(
            files,
            BTreeMap::from([
                ("etc/nginx/back.conf".to_string(), b"back".to_vec()),
                ("etc/nginx/nginx.conf".to_string(), b"front".to_vec()),
                ("etc/nginx/errors/400.json".to_string(), b"{}".to_vec()),
                (
                    "etc/nginx/webapp-proxy.conf".to_string(),
                    b"included".to_vec()
                ),
            ])
        );
    }

    #[test]
    fn a_missing_back_conf_is_named_with_the_directory() {
        let directory = scratch_nginx_dir(&[("nginx.conf", "front")]);

        let error = nginx_files(directory.path()).unwrap_err().to_string();

        assert!(error.contains("has no back.conf"), "{error}");
        assert!(
            error.contains(&directory.path().display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn the_repositorys_nginx_directory_gives_its_configuration_and_no_crate_file() {
        let files = nginx_files(&crate::project_root().join("nginx")).unwrap();

        let names: Vec<&str> = files
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with("etc/nginx/errors/"))
            .collect();
        assert_eq!(
            names,
            [
                "etc/nginx/back.conf",
                "etc/nginx/front-http.conf",
                "etc/nginx/front-server.conf",
                "etc/nginx/nginx-tls.conf",
                "etc/nginx/nginx.conf",
                "etc/nginx/webapp-proxy.conf"
            ]
        );
        // Every answer the front's configuration names is there, as JSON.
        let config =
            fs::read_to_string(crate::project_root().join("nginx/front-server.conf")).unwrap();
        for status in [
            "400", "404", "405", "413", "414", "429", "431", "500", "501", "502", "503", "504",
            "505",
        ] {
            assert!(config.contains(&format!("error_page {status} ")) || status == "431");
            let body = &files[&format!("etc/nginx/errors/{status}.json")];
            let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(parsed["error"].is_string(), "{status}.json");
        }
    }
}
