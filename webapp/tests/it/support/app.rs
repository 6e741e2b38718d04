//! The app running in-process on `127.0.0.1:0`, with a unique key prefix, plus an HTTP client.

use std::sync::{Arc, Once};
use std::time::Duration;

use clap::Parser as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use webapp::config::{LogFormat, Settings};
use webapp::{telemetry, AppState};

use super::unique_prefix;

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub key_prefix: String,
    pub client: reqwest::Client,
    pub state: AppState,
    /// Starts the app's shutdown, as SIGTERM does for the binary.
    shutdown: Arc<Notify>,
}

/// Logs go nowhere unless `TEST_LOG` is set, then to stdout (shown for failing tests).
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = if std::env::var_os("TEST_LOG").is_some() {
            telemetry::get_subscriber("debug", LogFormat::Text, std::io::stdout)
        } else {
            telemetry::get_subscriber("debug", LogFormat::Text, std::io::sink)
        };
        telemetry::init_subscriber(subscriber).expect("install the test log subscriber");
    });
}

/// Settings as the binary would parse them, plus test overrides (port 0, unique key prefix).
pub fn test_settings(redis_url: &str, key_prefix: &str, extra_arguments: &[&str]) -> Settings {
    let mut arguments = vec![
        "webapp",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--redis-url",
        redis_url,
        "--redis-key-prefix",
        key_prefix,
    ];
    if !extra_arguments.contains(&"--replica") {
        arguments.extend_from_slice(&["--replica", "test-replica"]);
    }
    arguments.extend_from_slice(extra_arguments);
    Settings::try_parse_from(arguments).expect("test settings parse")
}

/// Starts the app on a free port, sharing Redis and key prefix with whoever passes the same ones.
pub async fn spawn_app_with(
    redis_url: &str,
    key_prefix: &str,
    extra_arguments: &[&str],
) -> TestApp {
    init_logging();
    let settings = test_settings(redis_url, key_prefix, extra_arguments);
    let state = AppState::from_settings(&settings).expect("build the app state");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = format!("http://{}", listener.local_addr().expect("local address"));
    let shutdown = Arc::new(Notify::new());
    let shutdown_signal = Arc::clone(&shutdown);
    tokio::spawn(webapp::run(
        listener,
        state.clone(),
        async move { shutdown_signal.notified().await },
        Duration::from_secs(1),
    ));
    // Built with the rest of the workspace (`cargo test --workspace`), reqwest
    // gets the features xtask's registry client turns on, rustls without a
    // crypto provider, and then wants a process-wide provider even for
    // plain HTTP: install ring's (no-op when one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestApp {
        address,
        key_prefix: key_prefix.to_owned(),
        client: reqwest::Client::builder()
            // Generous: only to turn a hang into a failure, never a timing assertion.
            .timeout(Duration::from_secs(10))
            // The app is on loopback; a proxy from the environment must not
            // carry the tests' requests off the machine.
            .no_proxy()
            .build()
            .expect("build the HTTP client"),
        state,
        shutdown,
    }
}

/// Starts the app against `redis_url` with a fresh key prefix.
pub async fn spawn_app(redis_url: &str) -> TestApp {
    spawn_app_with(redis_url, &unique_prefix(), &[]).await
}

impl TestApp {
    /// Starts shutting the app down, as SIGTERM does the binary.
    pub fn begin_shutdown(&self) {
        self.shutdown.notify_one();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("PUT {path}: {error}"))
    }

    /// `PUT` as the front nginx passes on a request from `address`: with `X-Real-IP` set to it.
    pub async fn put_from(
        &self,
        address: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header("X-Real-IP", address)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("PUT {path} from {address}: {error}"))
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("DELETE {path}: {error}"))
    }
}
