//! The request log of the real binary: one line per request with its request id, written in
//! batches off the request path, at least every `LOG_FLUSH_INTERVAL_MS` when idle, all of it at
//! SIGTERM, and a dropped-lines counter in `/metrics`.
//!
//! No timing is asserted beyond "arrives" and "does not hang": the bounds are generous.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{unique_prefix, BinaryApp, RedisServer};

/// Generous: the default flush interval is one second.
const ARRIVES_WITHIN: Duration = Duration::from_secs(10);

fn start_app(redis: &RedisServer, extra: &[(&str, &str)]) -> BinaryApp {
    let redis_url = redis.url();
    let prefix = unique_prefix();
    let mut environment = vec![
        ("REDIS_URL", redis_url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("WEBAPP_SHUTDOWN_GRACE_SECS", "5"),
    ];
    environment.extend_from_slice(extra);
    BinaryApp::start(&environment)
}

/// One HTTP/1.1 request on its own connection; returns the whole response.
fn get(app: &BinaryApp, path: &str, request_id: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).expect("connect to webapp");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}

fn logged_id(request_id: &str) -> String {
    format!("\"request_id\":\"{request_id}\"")
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn a_request_line_with_its_id_arrives_while_the_app_sits_idle() {
    let redis = RedisServer::start();
    let mut app = start_app(&redis, &[]);
    let request_id = format!("idle-{}", std::process::id());

    let response = get(&app, "/", &request_id);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");

    // Nothing else happens: only the periodic flush can write the line.
    assert!(
        app.wait_for_output(&logged_id(&request_id), ARRIVES_WITHIN),
        "no log line for {request_id} within {ARRIVES_WITHIN:?}; output:\n{}",
        app.output()
    );
    assert!(app.is_running());
    let line = app
        .output()
        .lines()
        .find(|line| line.contains(&logged_id(&request_id)))
        .map(str::to_owned)
        .unwrap_or_default();
    let entry: serde_json::Value = serde_json::from_str(&line).expect("the line is JSON");
    assert_eq!(entry["route"], "/");
    assert_eq!(entry["status"], 200);
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn lines_still_batched_at_sigterm_are_all_written_before_exit() {
    let redis = RedisServer::start();
    // An hour between flushes, and less than a batch of lines: only shutdown writes them.
    let mut app = start_app(&redis, &[("LOG_FLUSH_INTERVAL_MS", "3600000")]);
    let ids: Vec<String> = (0..100)
        .map(|number| format!("sigterm-{}-{number}", std::process::id()))
        .collect();
    for id in &ids {
        let response = get(&app, "/healthz", id);
        assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !app.output().contains(&logged_id(&ids[0])),
        "lines were written before a batch filled or the interval passed; output:\n{}",
        app.output()
    );

    app.send_sigterm();
    let status = app.wait_for_exit(ARRIVES_WITHIN);

    assert!(status.success(), "exit status {status}");
    let output = app.output();
    assert!(
        output.contains("all connections closed, exiting"),
        "{output}"
    );
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !output.contains(&logged_id(id)))
        .collect();
    assert!(
        missing.is_empty(),
        "no log line for {missing:?}; output:\n{output}"
    );
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn metrics_count_dropped_log_lines() {
    let redis = RedisServer::start();
    let app = start_app(&redis, &[]);

    let response = get(&app, "/metrics", "metrics-dropped");

    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(
        response.contains("\nwebapp_log_lines_dropped_total 0\n"),
        "{response}"
    );
}

#[test]
fn a_bad_flush_interval_stops_start_up_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webapp"))
        .env("LOG_FLUSH_INTERVAL_MS", "0")
        .output()
        .expect("run webapp");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LOG_FLUSH_INTERVAL_MS"), "{stderr}");
}
