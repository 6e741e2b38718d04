//! Certificates of a test's own, for the tests of `--tls files` (tests/tests/tls.rs under
//! Compose, tests/tests/swarm.rs under Swarm): a root, an intermediate, and server
//! certificates written as a user would hand them over (`--tls-certificate`, `--tls-key`).
//! Included by each test binary that needs it (`#[path] mod`).

use std::path::{Path, PathBuf};

/// A root CA and an intermediate it signed, both the test's own: the chains
/// deployed are the server's certificate and the intermediate, as a CA's
/// `fullchain.pem` is.
pub struct TestCa {
    pub root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    intermediate: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A chain and key written for `--tls-certificate` and `--tls-key`.
pub struct IssuedFiles {
    pub chain: PathBuf,
    pub key: PathBuf,
    pub leaf_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca = |name: &str, path_length: u8| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(path_length));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            params
        };
        let key = || rcgen::KeyPair::generate().expect("a key");
        let root = rcgen::CertifiedIssuer::self_signed(ca("webstack e2e root", 1), key())
            .expect("the root");
        let intermediate =
            rcgen::CertifiedIssuer::signed_by(ca("webstack e2e intermediate", 0), key(), &root)
                .expect("the intermediate");
        TestCa { root, intermediate }
    }

    /// A new server certificate for 127.0.0.1 and localhost, written into `dir`.
    pub fn issue(&self, dir: &Path) -> IssuedFiles {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("a key");
        let leaf = params
            .signed_by(&key, &self.intermediate)
            .expect("the server's certificate");
        std::fs::create_dir_all(dir).unwrap_or_else(|error| panic!("create {dir:?}: {error}"));
        let files = IssuedFiles {
            chain: dir.join("fullchain.pem"),
            key: dir.join("key.pem"),
            leaf_der: leaf.der().to_vec(),
        };
        let chain = format!("{}{}", leaf.pem(), self.intermediate.pem());
        for (path, text) in [(&files.chain, chain), (&files.key, key.serialize_pem())] {
            std::fs::write(path, text).unwrap_or_else(|error| panic!("write {path:?}: {error}"));
        }
        files
    }

    /// The root, as the clients of the tests trust it (and nothing else).
    pub fn root_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.root.pem().as_bytes()).expect("PEM")
    }
}

/// A directory of the test's own under the system's temporary directory,
/// removed when it is dropped (a failed test too).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("create {dir:?}: {error}"));
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One answer to `GET /` over HTTPS, and the certificate it came with.
pub struct HttpsAnswer {
    pub version: reqwest::Version,
    pub status: u16,
    pub body: String,
    pub leaf: Vec<u8>,
}

impl HttpsAnswer {
    /// The greeting, over HTTP/2, with exactly the certificate `leaf_der`.
    pub fn assert_greeting_over_http2_with(&self, leaf_der: &[u8]) {
        assert_eq!(self.version, reqwest::Version::HTTP_2, "ALPN chose HTTP/2");
        assert_eq!(self.status, 200);
        assert!(self.body.starts_with("Hello from "), "{}", self.body);
        assert!(
            self.leaf == leaf_der,
            "the proxy serves another certificate than the one deployed"
        );
    }
}

/// `GET /` at `url` (HTTPS, on loopback), trusting `root` alone.
pub async fn get_root(url: &str, root: reqwest::Certificate) -> HttpsAnswer {
    stack_contract::netguard::check_url(url, &[]).unwrap_or_else(|refused| panic!("{refused}"));
    let client = stack_tests::harness::http_client_builder()
        .tls_certs_only([root])
        .tls_info(true)
        .build()
        .expect("an HTTPS client");
    let response = client.get(url).send().await.expect("GET / over HTTPS");
    let leaf = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        .expect("the server's certificate")
        .to_vec();
    HttpsAnswer {
        version: response.version(),
        status: response.status().as_u16(),
        body: response.text().await.expect("body"),
        leaf,
    }
}
