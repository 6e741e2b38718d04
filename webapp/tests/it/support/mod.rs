//! Test support: a real Redis server, the app in-process, and the built binary as a child process.

pub mod app;
pub mod binary;
pub mod redis_server;

pub use app::{spawn_app, spawn_app_with, TestApp};
pub use binary::BinaryApp;
pub use redis_server::RedisServer;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("read the ephemeral port")
        .port()
}

/// A Redis key prefix no other test uses, so tests sharing a server cannot see each other's keys.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "it-{}-{}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory removed when dropped.
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "webapp-it-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a response body as JSON, with the body in the panic message when it is not.
pub trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        let status = self.status();
        let text = self.text().await.expect("response body");
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{status} {text:?}: {error}"))
    }
}
