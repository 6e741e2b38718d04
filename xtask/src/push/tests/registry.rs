//! The pinned distribution registry on a free loopback port, for the push
//! tests: plain HTTP, or TLS with a CA and server certificate made here and
//! htpasswd (bcrypt) auth. Storage, config, certificates and the log live in
//! a temporary directory; dropping the handle kills the registry and
//! removes the directory.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;

use crate::poll::{self, Look};

/// How long a fresh registry may take to answer `/v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct TestRegistry {
    pub address: SocketAddr,
    /// The CA that signed the registry's certificate, as a PEM file.
    pub ca_file: Option<PathBuf>,
    /// The one user htpasswd knows, and its password.
    pub login: Option<(String, String)>,
    log_path: PathBuf,
    agent: ureq::Agent,
    child: Child,
    // Last: removed after the registry is dead.
    _dir: tempfile::TempDir,
}

/// A registry's answer to one request from the test.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub digest_header: Option<String>,
}

impl TestRegistry {
    /// Plain HTTP, no auth.
    pub fn plain() -> TestRegistry {
        TestRegistry::start(false).unwrap_or_else(|error| panic!("{error:?}"))
    }

    /// TLS with a certificate the test's own CA signed, and htpasswd auth
    /// for one user.
    pub fn tls_with_login() -> TestRegistry {
        TestRegistry::start(true).unwrap_or_else(|error| panic!("{error:?}"))
    }

    fn start(tls: bool) -> anyhow::Result<TestRegistry> {
        let program = crate::images::pins::ensure(&crate::images::pins::REGISTRY)?;
        let dir = tempfile::tempdir().context("make the registry's directory")?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("find a free loopback port")?
            .port();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {address}\n",
            storage.display()
        );
        let mut ca_file = None;
        let mut login = None;
        let mut tls_config = ureq::tls::TlsConfig::builder();
        if tls {
            let (ca_pem, certificate_pem, key_pem) = certificates()?;
            let ca_path = dir.path().join("ca.pem");
            let certificate_path = dir.path().join("registry.pem");
            let key_path = dir.path().join("registry-key.pem");
            std::fs::write(&ca_path, &ca_pem)?;
            std::fs::write(&certificate_path, certificate_pem)?;
            std::fs::write(&key_path, key_pem)?;
            let (username, password) = ("pusher".to_string(), "right-password".to_string());
            // The lowest cost bcrypt has: the file is for one test run.
            let hash = bcrypt::hash(&password, 4).context("hash the test password")?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{username}:{hash}\n"))?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n\
                 auth:\n  htpasswd:\n    realm: webstack-push-test\n    path: {}\n",
                certificate_path.display(),
                key_path.display(),
                htpasswd.display()
            ));
            let root = ureq::tls::Certificate::from_pem(ca_pem.as_bytes())
                .context("read the test CA back")?;
            tls_config =
                tls_config.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])));
            ca_file = Some(ca_path);
            login = Some((username, password));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.path().join("registry.log");
        let log = File::create(&log_path)?;
        let child = Command::new(&program)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .tls_config(tls_config.build())
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut registry = TestRegistry {
            address,
            ca_file,
            login,
            log_path,
            agent,
            child,
            _dir: dir,
        };
        registry.wait_until_serving()?;
        Ok(registry)
    }

    /// `/v2/` answers (200, or 401 when it wants a login).
    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path.clone();
        poll::until(
            START_TIMEOUT,
            Duration::from_millis(20),
            || {
                if let Some(status) = self.child.try_wait()? {
                    anyhow::bail!("the registry exited ({status}):\n{}", self.log());
                }
                Ok(match self.agent.get(self.url("/v2/")).call() {
                    Ok(_) => Look::Ready(()),
                    Err(error) => Look::NotYet(error.to_string()),
                })
            },
            |seen, waited| {
                anyhow::anyhow!(
                    "the registry did not answer /v2/ within {waited:?} ({seen}):\n{}",
                    read_log(&log_path)
                )
            },
        )
    }

    /// `host:port`, as a push target's registry.
    pub fn registry(&self) -> String {
        self.address.to_string()
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.address)
    }

    /// GET `path` with the test user's login (if any) and `accept`.
    pub fn get(&self, path: &str, accept: &str) -> Answer {
        let mut request = self.agent.get(self.url(path)).header("Accept", accept);
        if let Some((username, password)) = &self.login {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            request = request.header("Authorization", format!("Basic {basic}"));
        }
        let mut response = request
            .call()
            .unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", self.log()));
        let digest_header = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_else(|error| panic!("GET {path}: read the body: {error}"));
        Answer {
            status: response.status().as_u16(),
            body,
            digest_header,
        }
    }

    /// The tags of `repository`: none when the registry does not know it.
    pub fn tags(&self, repository: &str) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let answer = self.get(&format!("/v2/{repository}/tags/list"), "application/json");
        match answer.status {
            404 => Vec::new(),
            200 => serde_json::from_slice::<TagList>(&answer.body)
                .unwrap_or_else(|error| panic!("tag list of {repository}: {error}"))
                .tags
                .unwrap_or_default(),
            status => panic!(
                "tag list of {repository}: {status} {}",
                String::from_utf8_lossy(&answer.body)
            ),
        }
    }

    /// Everything the registry logged so far (requests, one line each).
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }
}

fn read_log(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a server certificate for 127.0.0.1 and localhost it signed:
/// (CA PEM, certificate PEM, key PEM).
fn certificates() -> anyhow::Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "webstack push test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut server_params = CertificateParams::new(vec!["localhost".to_string()])?;
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    server_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server = server_params.signed_by(&server_key, &ca)?;
    Ok((ca.pem(), server.pem(), server_key.serialize_pem()))
}
