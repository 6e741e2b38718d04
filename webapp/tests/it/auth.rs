//! Redis AUTH through `REDIS_PASSWORD_FILE`: the right password works, a wrong one gives 503s
//! and a log line saying what to fix, and the process keeps running.

use std::time::Duration;

use crate::support::{spawn_app_with, unique_prefix, BinaryApp, RedisServer, ScratchDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn password_from_redis_password_file_authenticates() {
    let redis = RedisServer::start_with_password("correct horse");
    let directory = ScratchDir::new("password");
    let password_file = directory.0.join("redis-password");
    // Written like `echo ... > file`: the trailing newline is not part of the password.
    std::fs::write(&password_file, "correct horse\n").expect("write password file");
    let password_file = password_file.to_str().expect("utf-8 path");

    let app = spawn_app_with(
        &redis.url(),
        &unique_prefix(),
        &["--redis-password-file", password_file],
    )
    .await;

    assert_eq!(app.get("/").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn wrong_password_gives_503s_and_a_clear_log_line_without_crashing() {
    let redis = RedisServer::start_with_password("correct horse");
    let directory = ScratchDir::new("password");
    let password_file = directory.0.join("redis-password");
    std::fs::write(&password_file, "battery staple\n").expect("write password file");
    let redis_url = redis.url();
    let mut app = BinaryApp::start(&[
        ("REDIS_URL", redis_url.as_str()),
        (
            "REDIS_PASSWORD_FILE",
            password_file.to_str().expect("utf-8 path"),
        ),
        ("REDIS_KEY_PREFIX", &unique_prefix()),
    ]);

    for path in ["/", "/readyz"] {
        let status = proxy::probe::parse_http_url(&app.url(path))
            .and_then(|url| proxy::probe::get_status(&url))
            .expect("the app answers");
        assert_eq!(status, 503, "GET {path}");
    }

    assert!(
        app.is_running(),
        "webapp crashed; output:\n{}",
        app.output()
    );
    assert_eq!(proxy::probe::check(&app.url("/healthz")), 0);
    let logged = app.wait_for_output(
        "Redis refused authentication: check the password in REDIS_PASSWORD_FILE",
        Duration::from_secs(10),
    );
    let output = app.output();
    assert!(
        logged,
        "no clear authentication error in the log:\n{output}"
    );
    assert!(
        !output.contains("battery staple"),
        "the password leaked into the log:\n{output}"
    );
}

#[test]
fn unreadable_password_file_stops_start_up_with_a_message_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webapp"))
        .env("REDIS_PASSWORD_FILE", "/nonexistent/redis-password")
        .env("WEBAPP_PORT", "0")
        .output()
        .expect("run webapp");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("REDIS_PASSWORD_FILE=/nonexistent/redis-password"),
        "{stderr}"
    );
}
