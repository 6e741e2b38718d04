//! Integration tests of the images against the real Docker engine, and of
//! the host tools against a real redis-server.
//!
//! The images are built (incrementally) and loaded once per test process;
//! every container gets a unique name and is removed even when a test fails.
//!
//! Tests that need Docker or Debian's archive are `#[ignore]`d, so a plain
//! `cargo test` stays hermetic; `cargo xtask ci` runs them with
//! `cargo test -p xtask -- --ignored`. Docker must then be running: they
//! fail, saying so, when it is not.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use xshell::{cmd, Shell};

use super::{
    debian::{self, LockFile, LockedSource},
    ensure_images, host_tools, BuildLayout, BuiltImage, Digest, Platform, DB_CONTENTS,
};

fn shell() -> Shell {
    let sh = Shell::new().unwrap();
    sh.change_dir(crate::project_root());
    sh
}

/// Builds and loads the images once for all tests of this process.
fn images() -> &'static [BuiltImage] {
    static IMAGES: OnceLock<Result<Vec<BuiltImage>, String>> = OnceLock::new();
    IMAGES
        .get_or_init(|| ensure_images(&shell()).map_err(|error| format!("{error:#}")))
        .as_deref()
        .unwrap_or_else(|error| {
            panic!("building and loading the images failed (is Docker running?): {error}")
        })
}

fn image(name: &str) -> &'static BuiltImage {
    images()
        .iter()
        .find(|image| image.name == name)
        .unwrap_or_else(|| panic!("no image named {name}"))
}

fn unique_name(purpose: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "webstack-images-test-{purpose}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container this test created; removed on drop, also after a panic.
struct Container {
    name: String,
}

impl Container {
    /// `docker run --detach --read-only` plus `extra` options, then `image`
    /// and its arguments.
    fn start(purpose: &str, extra: &[&str], image: &str, arguments: &[&str]) -> Container {
        let sh = shell();
        let name = unique_name(purpose);
        let container = Container { name: name.clone() };
        cmd!(
            sh,
            "docker run --detach --read-only --name {name} {extra...} {image} {arguments...}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .unwrap();
        container
    }

    fn logs(&self) -> String {
        let sh = shell();
        let name = &self.name;
        let output = cmd!(sh, "docker logs {name}")
            .quiet()
            .ignore_status()
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn main_process_uid(&self) -> u64 {
        let sh = shell();
        let name = &self.name;
        let format = "{{.State.Pid}}";
        let pid = cmd!(sh, "docker inspect --format {format} {name}")
            .quiet()
            .read()
            .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        let uid_line = status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .unwrap();
        uid_line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "--force", "--volumes", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[ignore = "needs Docker and Debian's archive; cargo xtask ci runs it"]
fn webapp_image_answers_healthz_as_nonroot_on_a_read_only_root() {
    let image = &image("webapp").content_tag;
    let container = Container::start("webapp", &["--publish", "127.0.0.1:0:5000"], image, &[]);
    let sh = shell();
    let name = &container.name;
    let published = cmd!(sh, "docker port {name} 5000/tcp")
        .quiet()
        .read()
        .unwrap();
    let port: u16 = published
        .lines()
        .next()
        .and_then(|line| line.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `docker port` output {published:?}"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while Instant::now() < deadline {
        status = http_get_status(port, "/healthz");
        if status == Some(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(
        status,
        Some(200),
        "webapp did not answer /healthz; logs:\n{}",
        container.logs()
    );
    assert_eq!(
        container.main_process_uid(),
        u64::from(crate::stack::NONROOT_ID)
    );
}

#[test]
#[ignore = "needs Docker and Debian's archive; cargo xtask ci runs it"]
fn db_image_answers_ping_through_its_own_redis_cli_as_nonroot() {
    let image = &image("db").content_tag;
    let container = Container::start("db", &[], image, &["--save", "", "--appendonly", "no"]);
    let sh = shell();
    let name = &container.name;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reply = String::new();
    while Instant::now() < deadline {
        reply = cmd!(sh, "docker exec {name} /usr/bin/redis-cli ping")
            .quiet()
            .ignore_status()
            .read()
            .unwrap_or_default();
        if reply.trim() == "PONG" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(reply.trim(), "PONG", "logs:\n{}", container.logs());
    assert_eq!(
        container.main_process_uid(),
        u64::from(crate::stack::NONROOT_ID)
    );
}

#[test]
#[ignore = "needs Docker and Debian's archive; cargo xtask ci runs it"]
fn proxy_image_passes_nginx_config_test_read_only_with_its_tmpfs_and_socket_directory() {
    let image = &image("proxy").content_tag;
    let sh = shell();
    let name = unique_name("proxy");
    let _cleanup = Container { name: name.clone() };

    // nginx -t binds the listening sockets, the back's unix socket among
    // them, in the socket volume's directory.
    let socket_dir = crate::stack::PROXY_SOCKET_DIR;
    let output = cmd!(
        sh,
        "docker run --name {name} --read-only --tmpfs /tmp --tmpfs {socket_dir} {image} -t"
    )
    .quiet()
    .ignore_status()
    .output()
    .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nginx -t failed:\n{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");

    // With HTTPS (`PROXY_TLS=on`), the front's other configuration too, with a certificate of
    // a local CA where the TLS deploy files put it.
    let certificates = tempfile::tempdir().unwrap();
    let ca = crate::tls::LocalCa::open_or_create_in(&certificates.path().join("ca")).unwrap();
    let issued = ca.issue(&[]).unwrap();
    std::fs::write(
        certificates.path().join("tls_certificate"),
        issued.chain_pem,
    )
    .unwrap();
    std::fs::write(certificates.path().join("tls_key"), issued.key_pem).unwrap();
    // Each file on its own, readable by the image's user (its directory is not).
    let mounts: Vec<String> = ["tls_certificate", "tls_key"]
        .iter()
        .flat_map(|name| {
            let path = certificates.path().join(name);
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            [
                "-v".to_owned(),
                format!("{}:/run/secrets/{name}:ro", path.display()),
            ]
        })
        .collect();
    let tls_name = unique_name("proxy-tls");
    let _tls_cleanup = Container {
        name: tls_name.clone(),
    };
    let output = cmd!(
        sh,
        "docker run --name {tls_name} --read-only --tmpfs /tmp --tmpfs {socket_dir} -e PROXY_TLS=on {mounts...} {image} -t"
    )
    .quiet()
    .ignore_status()
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "nginx -t with TLS failed:\n{stderr}"
    );
    assert!(
        stderr.contains("nginx-tls.conf test is successful"),
        "{stderr}"
    );
}

/// Every path in the image's filesystem, from `docker export` of a created
/// (never started) container.
fn image_paths(image: &str) -> Vec<String> {
    let sh = shell();
    let name = unique_name("export");
    let _cleanup = Container { name: name.clone() };
    cmd!(sh, "docker create --name {name} {image}")
        .quiet()
        .ignore_stdout()
        .run()
        .unwrap();
    let exported = cmd!(sh, "docker export {name}")
        .quiet()
        .output()
        .unwrap()
        .stdout;
    let mut archive = tar::Archive::new(exported.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs Docker and Debian's archive; cargo xtask ci runs it"]
fn no_image_contains_a_shell_or_package_manager() {
    let forbidden = [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "bin/dash",
        "bin/busybox",
        "usr/bin/apt",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
    ];
    for image in images() {
        let paths = image_paths(&image.content_tag);
        assert!(
            paths.iter().any(|path| path == "etc/passwd"),
            "{}: export looks empty: {paths:?}",
            image.name
        );
        let found: Vec<&String> = paths
            .iter()
            .filter(|path| forbidden.contains(&path.as_str()))
            .collect();
        assert!(found.is_empty(), "{} contains {found:?}", image.name);
    }
}

#[test]
#[ignore = "needs Docker and Debian's archive; cargo xtask ci runs it"]
fn content_tag_points_at_the_built_image_id_and_stable_tag_exists() {
    let sh = shell();
    for image in images() {
        assert_eq!(
            super::docker::image_id(&sh, &image.content_tag).as_deref(),
            Some(image.digest.to_string().as_str()),
            "{}",
            image.content_tag
        );
        assert!(image.content_tag.ends_with(image.digest.short_hex()));
        // Not compared with the digest: a concurrent build from another
        // commit (another SOURCE_DATE_EPOCH) may have moved it meanwhile.
        assert!(
            super::docker::image_id(&sh, &image.stable_tag).is_some(),
            "{}",
            image.stable_tag
        );
    }
}

/// A redis-server started from the host wrapper; killed on drop.
struct HostRedis {
    child: Child,
}

impl Drop for HostRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs Debian's archive (or a cached download); cargo xtask ci runs it"]
fn host_tools_redis_server_answers_ping_through_host_redis_cli() {
    let tools = host_tools(&shell()).unwrap();
    assert!(tools.redis_server.starts_with(&tools.bin_dir));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let server = HostRedis {
        child: Command::new(&tools.redis_server)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reply = String::new();
    while Instant::now() < deadline {
        let output = Command::new(&tools.redis_cli)
            .args(["-p", &port, "ping"])
            .output()
            .unwrap();
        reply = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if reply == "PONG" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    assert_eq!(reply, "PONG");
    drop(server);
}

#[test]
#[ignore = "needs Debian's archive (or a cached download); cargo xtask ci runs it"]
fn host_tools_nginx_runs_with_the_pinned_libraries() {
    let tools = host_tools(&shell()).unwrap();

    let output = Command::new(&tools.nginx).arg("-v").output().unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("nginx version: nginx/1."), "{stderr}");
}

#[test]
#[ignore = "needs Debian's archive (or a cached download); cargo xtask ci runs it"]
fn a_lock_missing_the_package_of_a_needed_library_names_the_library() {
    let lock = LockFile::read(&crate::project_root()).unwrap();
    let cache = BuildLayout::regular(&crate::project_root()).cache;
    let mut source = LockedSource::for_image(&cache, &lock, "db", Platform::Amd64).unwrap();
    source.locked.remove("libjemalloc2");

    let error = match debian::resolve_contents(&mut source, &DB_CONTENTS, Platform::Amd64) {
        Ok(_) => panic!("resolving db without libjemalloc2 succeeded"),
        Err(error) => error,
    };

    let message = format!("{error:#}");
    assert!(message.contains("needs libjemalloc.so.2"), "{message}");
    assert!(message.contains("--update-lock"), "{message}");
}

#[test]
fn an_image_over_its_compressed_size_budget_fails_naming_it() {
    let artifact = |name: &'static str, compressed_size: u64| super::ImageArtifact {
        name,
        platform: Platform::Arm64,
        config_digest: Digest::sha256(b""),
        manifest_digest: Digest::sha256(b""),
        archive_sha256: Digest::sha256(b""),
        sbom_sha256: Digest::sha256(b""),
        compressed_size,
        uncompressed_size: compressed_size * 2,
        budget: 4 * 1024 * 1024,
        archive_path: std::path::PathBuf::new(),
    };

    let within = super::check::check_budgets(&[artifact("webapp", 4 * 1024 * 1024)]);
    let over = super::check::check_budgets(&[
        artifact("webapp", 1024),
        artifact("db", 4 * 1024 * 1024 + 1),
    ]);

    assert!(within.is_ok());
    let message = format!("{:#}", over.unwrap_err());
    assert!(
        message.contains("db (linux/arm64) is 4.00 MiB compressed"),
        "{message}"
    );
    assert!(!message.contains("webapp"), "{message}");
}

/// A scratch directory outside the checkout, removed on drop.
struct OutsideDirectory(std::path::PathBuf);

impl OutsideDirectory {
    fn new(purpose: &str) -> OutsideDirectory {
        let path = std::env::temp_dir().join(unique_name(purpose));
        std::fs::create_dir_all(&path).unwrap();
        assert!(!path.starts_with(crate::project_root()));
        OutsideDirectory(path)
    }
}

impl Drop for OutsideDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs Debian's archive (or a cached download); cargo xtask ci runs it"]
fn host_tools_start_with_an_empty_environment_from_outside_the_checkout() {
    let tools = host_tools(&shell()).unwrap();
    let outside = OutsideDirectory::new("host-tools");
    // Nothing from the caller: no PATH to find libraries or helpers by, an
    // empty LD_LIBRARY_PATH, and a working directory outside the checkout.
    let run = |tool: &std::path::Path, argument: &str| {
        let output = Command::new(tool)
            .arg(argument)
            .env_clear()
            .env("LD_LIBRARY_PATH", "")
            .current_dir(&outside.0)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} {argument}: {}",
            tool.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    // The upstream versions the lock pins: `5:8.0.2-3+deb13u3` → `8.0.2`.
    let lock = LockFile::read(&crate::project_root()).unwrap();
    let upstream = |image: &str, package: &str| {
        let locked = lock.images[image]
            .iter()
            .filter(|locked| locked.architecture != "arm64")
            .find(|locked| locked.package == package)
            .unwrap_or_else(|| panic!("the lock has no {package} in image {image}"));
        let version = locked
            .version
            .split_once(':')
            .map_or(&*locked.version, |(_, rest)| rest);
        version
            .rsplit_once('-')
            .map_or(version, |(upstream, _)| upstream)
            .to_string()
    };
    let redis = upstream("db", "redis-tools");
    let server = run(&tools.redis_server, "--version");
    assert!(
        server.contains(&format!("Redis server v={redis} ")),
        "{server}"
    );
    let cli = run(&tools.redis_cli, "--version");
    assert!(cli.contains(&format!("redis-cli {redis}")), "{cli}");
    let nginx = run(&tools.nginx, "-v");
    assert!(
        nginx.contains(&format!(
            "nginx version: nginx/{}",
            upstream("proxy", "nginx")
        )),
        "{nginx}"
    );
    let wrapper = std::fs::read_to_string(&tools.redis_server).unwrap();
    assert!(
        wrapper.contains("--inhibit-cache --library-path"),
        "{wrapper}"
    );
}

/// Where `name` is on this process's PATH.
fn on_path(name: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

#[test]
#[ignore = "needs Docker and Debian's archive; cargo xtask ci runs it"]
fn images_built_with_only_cargo_rustc_docker_and_git_on_path_have_the_same_digests() {
    let expected: Vec<String> = images()
        .iter()
        .map(|image| format!("{} = {}", image.name, image.digest))
        .collect();
    // cargo, rustc, docker, git, and what cargo needs to compile and link
    // (the C compiler, assembler, linker and archiver): no apt-get,
    // apt-cache, dpkg, dpkg-deb, readelf, not even a shell.
    let bin = OutsideDirectory::new("minimal-path");
    for tool in ["cargo", "rustc", "docker", "git", "cc", "as", "ld", "ar"] {
        std::os::unix::fs::symlink(on_path(tool), bin.0.join(tool)).unwrap();
    }
    for forbidden in ["apt-get", "apt-cache", "dpkg", "dpkg-deb", "readelf", "sh"] {
        assert!(!bin.0.join(forbidden).exists());
    }

    let output = Command::new(on_path("cargo"))
        .args(["run", "--quiet", "--package", "xtask", "--", "images"])
        .current_dir(crate::project_root())
        .env("PATH", &bin.0)
        // As for a user: the cargo found on PATH builds the webapp.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo xtask images with PATH={}: {stdout}{}",
        bin.0.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    // Lines like `db webstack/db:local = webstack/db:… (sha256:…)`.
    let built: Vec<String> = stdout
        .lines()
        .filter_map(|line| {
            let name = line.split_whitespace().next()?;
            let digest = line.rsplit_once('(')?.1.strip_suffix(')')?;
            digest
                .starts_with("sha256:")
                .then(|| format!("{name} = {digest}"))
        })
        .collect();
    assert_eq!(built, expected, "{stdout}");
}

#[test]
#[ignore = "needs Debian's archive (or the images' cache); cargo xtask ci runs it"]
fn a_pinned_package_file_left_out_of_the_image_runs_on_the_host() {
    use super::pins::{ensure, package_of, Pin};
    let file = |package, path| Pin::ImagePackage {
        image: "db",
        package,
        path,
    };
    let benchmark_pin = file("redis-tools", "usr/bin/redis-benchmark");
    let benchmark = ensure(&benchmark_pin).expect("redis-benchmark from the pinned redis-tools");
    let package = package_of(&benchmark_pin).expect("the pinned redis-tools");
    assert!(package.starts_with("redis-tools "), "{package}");
    let header = std::fs::read(&benchmark).expect("read redis-benchmark");
    assert_eq!(&header[..4], b"\x7fELF", "{}", benchmark.display());
    let missing = ensure(&file("redis-tools", "usr/bin/no-such-tool"))
        .expect_err("no such file in the package");
    assert!(
        format!("{missing:#}").contains("has no usr/bin/no-such-tool"),
        "{missing:#}"
    );
    let unpinned = ensure(&file("no-such-package", "usr/bin/x")).expect_err("not pinned");
    assert!(
        format!("{unpinned:#}").contains("pins no no-such-package"),
        "{unpinned:#}"
    );
}
