//! The download and verification failure paths, hermetically: a tiny HTTP
//! server on 127.0.0.1 in the test plays Debian's archive, and the signed
//! index fixtures in testdata/ are real files from Debian's archive
//! (bookworm-updates, verified against the keys in deploy/keys/).
//!
//! Each failure must be a clear error naming the file, and leave the cache
//! (and the lock) as they were.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use xtask_debian::{
    archive::{Archives, DEBIAN},
    release::{self as signed, Suite},
};

use super::{
    debian::{self, DebianCache, LockFile, LockedPackage},
    release,
};

const INRELEASE: &[u8] = include_bytes!("testdata/bookworm-updates.InRelease");
const PACKAGES_XZ: &[u8] = include_bytes!("testdata/bookworm-updates.Packages.xz");
/// The fixture's `Date:` (Sat, 28 Nov 2026 02:15:35 UTC); it has no Valid-Until.
const FIXTURE_TIME: u64 = 1_795_832_135;
const UPDATES: Suite = Suite {
    archive: DEBIAN,
    name: "bookworm-updates",
};

#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    /// Announces the whole length, sends only the first half, closes.
    Truncated(Vec<u8>),
    Status(u16),
}

/// An HTTP/1.1 server on 127.0.0.1 answering one request per connection
/// from a fixed table (404 for anything else). Its thread ends with the
/// test process.
struct LocalArchive {
    base_url: String,
    requests: Arc<AtomicUsize>,
}

impl LocalArchive {
    fn start(routes: BTreeMap<String, Reply>) -> LocalArchive {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/debian", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &routes);
            }
        });
        LocalArchive { base_url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, routes: &BTreeMap<String, Reply>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let path = path.strip_prefix("/debian/").unwrap_or(path);
    let reply = routes.get(path).cloned().unwrap_or(Reply::Status(404));
    match reply {
        Reply::Body(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        Reply::Truncated(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body[..body.len() / 2])?;
        }
        Reply::Status(status) => {
            write!(
                stream,
                "HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
    }
    stream.flush()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(purpose: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "xtask-fetch-test-{purpose}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn cache(&self, base_url: &str) -> DebianCache {
        DebianCache {
            deb_dir: self.0.join("debs"),
            unpack_dir: self.0.join("unpacked"),
            archives: Archives {
                debian: base_url.to_string(),
                debian_security: base_url.replace("/debian", "/debian-security"),
            },
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every file under `directory` (empty when it does not exist).
fn files_under(directory: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

const POOL_PATH: &str = "pool/main/d/demo/demo_1.0-1_amd64.deb";

fn demo_deb_bytes() -> Vec<u8> {
    (0..50_000u32).map(|index| (index % 251) as u8).collect()
}

fn pinned(bytes: &[u8]) -> LockedPackage {
    LockedPackage {
        package: "demo".into(),
        version: "1:1.0-1".into(),
        architecture: "amd64".into(),
        archive: DEBIAN.into(),
        suite: "bookworm".into(),
        filename: POOL_PATH.into(),
        size: bytes.len() as u64,
        sha256: xtask_oci::Digest::sha256(bytes).hex().to_string(),
    }
}

#[test]
fn a_pinned_deb_is_downloaded_checked_and_then_served_from_the_cache() {
    let bytes = demo_deb_bytes();
    let server = LocalArchive::start(BTreeMap::from([(
        POOL_PATH.to_string(),
        Reply::Body(bytes.clone()),
    )]));
    let scratch = Scratch::new("good");
    let cache = scratch.cache(&server.base_url);

    let path = debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap();
    let again = debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap();

    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(path, again);
    assert!(path.ends_with("demo_1%3a1.0-1_amd64.deb"), "{path:?}");
    assert_eq!(server.requests(), 1, "the second call must use the cache");
    assert_eq!(files_under(&cache.deb_dir).len(), 1);
}

#[test]
fn a_deb_with_one_flipped_byte_is_refused_and_nothing_is_cached() {
    let bytes = demo_deb_bytes();
    let mut tampered = bytes.clone();
    tampered[1234] ^= 0x01;
    let server = LocalArchive::start(BTreeMap::from([(
        POOL_PATH.to_string(),
        Reply::Body(tampered),
    )]));
    let scratch = Scratch::new("flipped");
    let cache = scratch.cache(&server.base_url);

    let error = debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap_err();

    let message = format!("{error:#}");
    assert!(message.contains(POOL_PATH), "{message}");
    assert!(message.contains("sha256"), "{message}");
    assert!(
        message.contains("package demo version 1:1.0-1"),
        "{message}"
    );
    assert_eq!(files_under(&cache.deb_dir), Vec::<String>::new());
}

#[test]
fn a_truncated_download_is_refused_and_nothing_is_cached() {
    let bytes = demo_deb_bytes();
    let server = LocalArchive::start(BTreeMap::from([(
        POOL_PATH.to_string(),
        Reply::Truncated(bytes.clone()),
    )]));
    let scratch = Scratch::new("truncated");
    let cache = scratch.cache(&server.base_url);

    let error = debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap_err();

    let message = format!("{error:#}");
    assert!(message.contains(POOL_PATH), "{message}");
    assert!(message.contains("truncated"), "{message}");
    assert_eq!(files_under(&cache.deb_dir), Vec::<String>::new());
}

#[test]
fn a_deb_longer_than_pinned_is_refused_and_nothing_is_cached() {
    let bytes = demo_deb_bytes();
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing");
    let server = LocalArchive::start(BTreeMap::from([(
        POOL_PATH.to_string(),
        Reply::Body(longer),
    )]));
    let scratch = Scratch::new("longer");
    let cache = scratch.cache(&server.base_url);

    let message = format!(
        "{:#}",
        debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap_err()
    );

    assert!(message.contains("the lock expects 50000"), "{message}");
    assert_eq!(files_under(&cache.deb_dir), Vec::<String>::new());
}

#[test]
fn a_pin_gone_from_the_archive_names_package_version_archive_and_the_command() {
    let bytes = demo_deb_bytes();
    let server = LocalArchive::start(BTreeMap::new());
    let scratch = Scratch::new("gone");
    let cache = scratch.cache(&server.base_url);

    let message = format!(
        "{:#}",
        debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap_err()
    );

    assert!(
        message.contains("package demo version 1:1.0-1 is gone from the debian archive"),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");
    assert!(
        message.contains("cargo xtask images --update-lock"),
        "{message}"
    );
    assert_eq!(files_under(&cache.deb_dir), Vec::<String>::new());
}

#[test]
fn an_unreachable_archive_is_a_clear_error_and_nothing_is_cached() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = Scratch::new("unreachable");
    let cache = scratch.cache(&format!("http://127.0.0.1:{port}/debian"));
    let bytes = demo_deb_bytes();

    let message = format!(
        "{:#}",
        debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap_err()
    );

    assert!(message.contains("cannot download"), "{message}");
    assert!(message.contains(POOL_PATH), "{message}");
    assert!(message.contains("WEBSTACK_DEBIAN_MIRROR"), "{message}");
    assert_eq!(files_under(&cache.deb_dir), Vec::<String>::new());
}

#[test]
fn a_cached_deb_whose_sha256_differs_from_the_lock_is_refused_naming_the_package() {
    let bytes = demo_deb_bytes();
    let scratch = Scratch::new("cached");
    let cache = scratch.cache("http://127.0.0.1:9/debian");
    let pin = pinned(&bytes);
    fs::create_dir_all(&cache.deb_dir).unwrap();
    let cached = cache
        .deb_dir
        .join(debian::deb_file_name(&pin.package, &pin.version, "amd64"));
    fs::write(&cached, b"something else").unwrap();

    let message = format!("{:#}", debian::ensure_locked_deb(&cache, &pin).unwrap_err());

    assert!(
        message.contains("refusing package demo 1:1.0-1"),
        "{message}"
    );
    assert_eq!(fs::read(&cached).unwrap(), b"something else");
}

fn index_routes(inrelease: &[u8], packages_xz: Reply) -> BTreeMap<String, Reply> {
    BTreeMap::from([
        (
            "dists/bookworm-updates/InRelease".to_string(),
            Reply::Body(inrelease.to_vec()),
        ),
        (
            "dists/bookworm-updates/main/binary-amd64/Packages.xz".to_string(),
            packages_xz,
        ),
    ])
}

fn keys_dir() -> PathBuf {
    release::keys_dir(&crate::project_root())
}

#[test]
fn the_real_signed_index_verifies_and_yields_candidates() {
    let server = LocalArchive::start(index_routes(INRELEASE, Reply::Body(PACKAGES_XZ.to_vec())));
    let scratch = Scratch::new("index");
    let cache = scratch.cache(&server.base_url);

    let candidates = release::fetch_candidates(
        &cache.archives,
        &keys_dir(),
        &[UPDATES],
        FIXTURE_TIME,
        "amd64",
    )
    .unwrap();

    assert!(!candidates.is_empty());
    for candidate in candidates.values() {
        assert_eq!(candidate.suite, "bookworm-updates");
        assert!(candidate.filename.starts_with("pool/"), "{candidate:?}");
        assert_eq!(candidate.sha256.len(), 64);
    }
}

/// The lock and cache of a scratch checkout, and `update_lock_in` against
/// `routes`; returns the error text after checking nothing changed.
fn failed_update_lock(purpose: &str, routes: BTreeMap<String, Reply>) -> String {
    let server = LocalArchive::start(routes);
    let scratch = Scratch::new(purpose);
    let lock_path = scratch.0.join(debian::LOCK_PATH);
    fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let lock_before = fs::read(crate::project_root().join(debian::LOCK_PATH)).unwrap();
    fs::write(&lock_path, &lock_before).unwrap();
    let cache = scratch.cache(&server.base_url);

    let error =
        super::lock::update_lock_in(&scratch.0, &cache, &keys_dir(), &[UPDATES], FIXTURE_TIME)
            .unwrap_err();

    assert_eq!(fs::read(&lock_path).unwrap(), lock_before, "lock changed");
    assert_eq!(files_under(&cache.deb_dir), Vec::<String>::new());
    assert_eq!(files_under(&cache.unpack_dir), Vec::<String>::new());
    assert_eq!(
        files_under(lock_path.parent().unwrap()),
        vec![lock_path.display().to_string()],
        "no temporary lock left"
    );
    LockFile::read(&scratch.0).unwrap();
    format!("{error:#}")
}

#[test]
fn a_tampered_inrelease_is_refused_naming_it_and_nothing_changes() {
    let text = String::from_utf8(INRELEASE.to_vec()).unwrap();
    // One hex digit of the signed Packages.xz hash changed.
    let line = text
        .lines()
        .find(|line| line.contains("main/binary-amd64/Packages.xz") && line.len() > 80)
        .unwrap();
    let digit = line.trim_start().chars().next().unwrap();
    let other = if digit == '0' { '1' } else { '0' };
    let tampered_line = line.replacen(digit, &other.to_string(), 1);
    let tampered = text.replacen(line, &tampered_line, 1);
    assert_ne!(tampered, text);

    let message = failed_update_lock(
        "tampered",
        index_routes(tampered.as_bytes(), Reply::Body(PACKAGES_XZ.to_vec())),
    );

    assert!(
        message.contains("dists/bookworm-updates/InRelease"),
        "{message}"
    );
    assert!(message.contains("no signature verifies"), "{message}");
}

#[test]
fn an_inrelease_signed_by_no_listed_key_is_refused() {
    let error =
        signed::verify_inrelease("InRelease", INRELEASE, &[], release::KEYS_DIR).unwrap_err();
    assert!(format!("{error:#}").contains("no signature verifies"));
}

#[test]
fn a_packages_xz_whose_hash_differs_is_refused_naming_it_and_nothing_changes() {
    let mut flipped = PACKAGES_XZ.to_vec();
    flipped[100] ^= 0x01;

    let message = failed_update_lock(
        "packages-hash",
        index_routes(INRELEASE, Reply::Body(flipped)),
    );

    assert!(
        message.contains("dists/bookworm-updates/main/binary-amd64/Packages.xz"),
        "{message}"
    );
    assert!(message.contains("differs"), "{message}");
}

#[test]
fn a_truncated_packages_xz_is_refused_naming_it_and_nothing_changes() {
    let message = failed_update_lock(
        "packages-truncated",
        index_routes(INRELEASE, Reply::Truncated(PACKAGES_XZ.to_vec())),
    );

    assert!(
        message.contains("dists/bookworm-updates/main/binary-amd64/Packages.xz"),
        "{message}"
    );
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn an_index_of_another_suite_is_refused() {
    let other = Suite {
        archive: DEBIAN,
        name: "bookworm",
    };
    let release = "Origin: Debian\nCodename: bookworm-updates\n";
    let message = format!(
        "{:#}",
        signed::check_release_fields("InRelease", release, &other, FIXTURE_TIME).unwrap_err()
    );
    assert!(message.contains("not bookworm"), "{message}");
    let expired = "Codename: bookworm\nValid-Until: Sat, 05 Dec 2020 02:53:00 UTC\n";
    let message = format!(
        "{:#}",
        signed::check_release_fields("InRelease", expired, &other, FIXTURE_TIME).unwrap_err()
    );
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn the_archive_keys_in_the_repository_match_their_listed_fingerprints() {
    let keys = signed::trusted_keys(&keys_dir()).unwrap();
    assert_eq!(keys.len(), signed::TRUSTED_FINGERPRINTS.len());
}

#[test]
fn an_archive_key_file_with_another_key_is_refused() {
    let scratch = Scratch::new("keys");
    for (file, _) in signed::TRUSTED_FINGERPRINTS {
        fs::copy(keys_dir().join(file), scratch.0.join(file)).unwrap();
    }
    let (first, _) = signed::TRUSTED_FINGERPRINTS[0];
    let (second, _) = signed::TRUSTED_FINGERPRINTS[1];
    fs::copy(keys_dir().join(second), scratch.0.join(first)).unwrap();

    let message = format!("{:#}", signed::trusted_keys(&scratch.0).unwrap_err());

    assert!(message.contains(first), "{message}");
    assert!(message.contains("fingerprint"), "{message}");
}

#[test]
fn a_download_killed_halfway_leaves_nothing_the_next_download_keeps() {
    let bytes = demo_deb_bytes();
    let server = LocalArchive::start(BTreeMap::from([(
        POOL_PATH.to_string(),
        Reply::Body(bytes.clone()),
    )]));
    let scratch = Scratch::new("stale");
    let cache = scratch.cache(&server.base_url);
    fs::create_dir_all(&cache.deb_dir).unwrap();
    // What a killed process leaves: pid 0 is never a running process's.
    let stale = cache.deb_dir.join("demo_1%3a1.0-1_amd64.deb.tmp-0-0");
    fs::write(&stale, &bytes[..100]).unwrap();

    let path = debian::ensure_locked_deb(&cache, &pinned(&bytes)).unwrap();

    assert!(!stale.exists());
    assert_eq!(
        files_under(&cache.deb_dir),
        vec![path.display().to_string()]
    );
}
