//! HTTPS at the front: the stack deployed with `--tls self-signed` over the plain Compose
//! file (`deploy/compose.tls.yaml`), by the HTTPS pass of `cargo xtask e2e`, which makes a
//! local CA of its own for it. Run without its variables, every test fails saying so.

use std::time::Duration;

use stack_contract::netguard;
use stack_contract::variables::tls::{CA_VARIABLE, HTTPS_URL_VARIABLE};
use stack_contract::variables::URL_VARIABLE;
use stack_tests::harness::{http_client, http_client_builder, https_redirect};

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
