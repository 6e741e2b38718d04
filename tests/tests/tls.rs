//! HTTPS at the front: the stack deployed with `--tls self-signed` over the plain Compose
//! file (`deploy/compose.tls.yaml`), by the HTTPS pass of `cargo xtask e2e`, which makes a
//! local CA of its own for it. Run without its variables, every test fails saying so.
//! The tests of `--tls files` (named `files_…`) then run apart, since they deploy a
//! certificate of their own CA.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stack_contract::netguard;
use stack_contract::variables::tls::{CA_VARIABLE, HTTPS_URL_VARIABLE};
use stack_contract::variables::{PORT_VARIABLE, PROJECT_VARIABLE, URL_VARIABLE, XTASK_VARIABLE};
use stack_tests::harness::{docker, http_client, http_client_builder, https_redirect};

#[path = "support/test_ca.rs"]
mod test_ca;
use test_ca::{ScratchDir, TestCa};

/// The stack as the HTTPS pass deployed it.
struct TlsStack {
    https_url: String,
    http_url: String,
    ca_pem: Vec<u8>,
}

impl TlsStack {
    fn from_environment() -> TlsStack {
        let read = |variable: &str| {
            std::env::var(variable).unwrap_or_else(|_| {
                panic!("{variable} is not set: these tests need a stack deployed with --tls; `cargo xtask e2e` runs them")
            })
        };
        let https_url = read(HTTPS_URL_VARIABLE);
        let http_url = read(URL_VARIABLE);
        for url in [&https_url, &http_url] {
            netguard::check_url(url, &[]).unwrap_or_else(|refused| panic!("{refused}"));
        }
        let ca = read(CA_VARIABLE);
        let ca_pem = std::fs::read(&ca).unwrap_or_else(|error| panic!("read {ca}: {error}"));
        TlsStack {
            https_url,
            http_url,
            ca_pem,
        }
    }

    /// A client that trusts the stack's CA and nothing else.
    fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).expect("the CA is PEM");
        http_client_builder()
            .tls_certs_only([ca])
            .build()
            .expect("an HTTPS client")
    }
}

#[tokio::test]
#[ignore = "needs a stack deployed with --tls; `cargo xtask e2e` starts one and runs it"]
async fn get_root_over_https_is_http2_with_a_chain_the_local_ca_signed() {
    let stack = TlsStack::from_environment();
    let client = stack.client();
    let answer = client
        .get(format!("{}/", stack.https_url))
        .send()
        .await
        .expect("GET / over HTTPS");
    assert_eq!(
        answer.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose HTTP/2"
    );
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers().get("strict-transport-security").is_none(),
        "HSTS is off unless asked for"
    );
    let body = answer.text().await.expect("body");
    assert!(body.starts_with("Hello from "), "{body}");

    // A client that does not trust the local CA is refused the handshake.
    let stranger = http_client();
    let refused = stranger.get(format!("{}/", stack.https_url)).send().await;
    assert!(
        refused.is_err(),
        "an untrusted chain was accepted: {refused:?}"
    );
    eprintln!("[e2e] GET / over HTTPS: HTTP/2, 200, the chain checks against the local CA; without it the handshake fails");
}

#[tokio::test]
#[ignore = "needs a stack deployed with --tls; `cargo xtask e2e` starts one and runs it"]
async fn the_proxys_own_errors_are_json_over_https_too() {
    let stack = TlsStack::from_environment();
    let client = stack.client();
    for (path, status) in [
        ("/no-such-page", 404),
        ("/metrics", 404),
        ("/api/cache/a%2fb", 400),
    ] {
        let answer = client
            .get(format!("{}{path}", stack.https_url))
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), status, "{path}");
        assert_eq!(
            answer
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok()),
            Some("application/json"),
            "{path}"
        );
        let body = answer.text().await.expect("body");
        assert!(body.starts_with("{\"error\":"), "{path}: {body}");
    }
}

#[tokio::test]
#[ignore = "needs a stack deployed with --tls; `cargo xtask e2e` starts one and runs it"]
async fn port_80_redirects_to_https_with_308_and_keeps_acme_challenges() {
    let stack = TlsStack::from_environment();
    let client = http_client();
    let https_port = stack
        .https_url
        .rsplit(':')
        .next()
        .expect("a port in the HTTPS URL")
        .to_owned();
    let (status, location) = https_redirect(&format!("{}/api/hits?x=1", stack.http_url)).await;
    assert_eq!(status, 308);
    assert_eq!(
        location,
        Some(format!("https://localhost:{https_port}/api/hits?x=1"))
    );
    // Challenges are served from the ACME webroot, not redirected: one that is not there is
    // the proxy's JSON 404.
    let challenge = client
        .get(format!(
            "{}/.well-known/acme-challenge/none",
            stack.http_url
        ))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer");
    assert_eq!(challenge.status(), 404);
    let body = challenge.text().await.expect("body");
    assert_eq!(body.trim(), "{\"error\":\"not found\"}");
    eprintln!(
        "[e2e] port 80: 308 to https://localhost:{https_port}/..., ACME challenges answered there"
    );
}

// ---------------------------------------------------------------------------
// `--tls files`, run apart after the others (they deploy another CA's certificate).

#[tokio::test]
#[ignore = "needs a stack deployed with --tls; `cargo xtask e2e` starts one and runs it"]
async fn files_a_wrong_key_is_refused_naming_it_then_the_users_chain_is_served() {
    let stack = TlsStack::from_environment();
    let read = |variable: &str| {
        std::env::var(variable).unwrap_or_else(|_| {
            panic!("{variable} is not set: `cargo xtask e2e` runs this test with it")
        })
    };
    let project = read(PROJECT_VARIABLE);
    let up = FilesUp {
        xtask: PathBuf::from(read(XTASK_VARIABLE)),
        project: project.clone(),
        port: read(PORT_VARIABLE),
        https_port: stack
            .https_url
            .rsplit(':')
            .next()
            .expect("a port in the HTTPS URL")
            .to_owned(),
        replicas: docker(&[
            "ps",
            "--quiet",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            "label=com.docker.compose.service=webapp",
        ])
        .lines()
        .count()
        .to_string(),
        dir: ScratchDir::new(&format!("{project}-tls-files")),
    };
    let ca = TestCa::new();
    let mine = ca.issue(&up.dir.0.join("mine"));
    let other = ca.issue(&up.dir.0.join("other"));

    // A key that is not the certificate's: refused before anything is deployed, naming both
    // files, and the stack goes on serving the certificate it had.
    let refused = up.run(&mine.chain, &other.key);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "xtask up took a wrong key");
    assert!(
        said.contains(&format!(
            "{} is not the key of the first certificate in {}",
            other.key.display(),
            mine.chain.display()
        )),
        "xtask up said:\n{said}"
    );
    let before = stack
        .client()
        .get(format!("{}/", stack.https_url))
        .send()
        .await
        .expect("GET / over HTTPS after the refusal");
    assert_eq!(
        before.status(),
        200,
        "the stack still serves its certificate"
    );

    // The user's chain and key: checked, passed as Compose secrets, served over HTTP/2.
    let started = Instant::now();
    let deployed = up.run(&mine.chain, &mine.key);
    assert!(
        deployed.status.success(),
        "xtask up --tls files: {}\n{}",
        deployed.status,
        String::from_utf8_lossy(&deployed.stderr)
    );
    let took = started.elapsed();
    let answer = test_ca::get_root(&format!("{}/", stack.https_url), ca.root_certificate()).await;
    answer.assert_greeting_over_http2_with(&mine.leaf_der);
    eprintln!(
        "[e2e] up --tls files: a wrong key refused naming it; the user's chain served over HTTP/2 {took:.1?} after the up started"
    );
}

/// `cargo xtask up --tls files` of the project as it runs (its images, ports and replicas).
struct FilesUp {
    xtask: PathBuf,
    project: String,
    port: String,
    https_port: String,
    replicas: String,
    dir: ScratchDir,
}

impl FilesUp {
    fn run(&self, certificate: &std::path::Path, key: &std::path::Path) -> Output {
        Command::new(&self.xtask)
            .args([
                "up",
                "--skip-images",
                "--tls",
                "files",
                "--tls-name",
                "localhost",
            ])
            .args(["--project", &self.project, "--port", &self.port])
            .args([
                "--https-port",
                &self.https_port,
                "--replicas",
                &self.replicas,
            ])
            .arg("--tls-certificate")
            .arg(certificate)
            .arg("--tls-key")
            .arg(key)
            // Where xtask writes the copies Compose mounts (by default the checkout's
            // `.secrets/tls/`).
            .env("WEBSTACK_TLS_DIR", self.dir.0.join("deployed"))
            .output()
            .unwrap_or_else(|error| panic!("run xtask up: {error}"))
    }
}
