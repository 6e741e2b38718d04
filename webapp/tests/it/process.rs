//! The built webapp binary as a real process: signals and graceful shutdown, exit codes, start-up
//! errors and `webapp healthcheck`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{unique_prefix, BinaryApp, RedisServer};

/// The app with this drain grace and no lame-duck period: it stops accepting at SIGTERM.
fn start_app(redis: &RedisServer, grace_secs: &str) -> BinaryApp {
    start_app_with_lame_duck(redis, grace_secs, "0")
}

fn start_app_with_lame_duck(
    redis: &RedisServer,
    grace_secs: &str,
    lame_duck_ms: &str,
) -> BinaryApp {
    BinaryApp::start(&[
        ("REDIS_URL", redis.url().as_str()),
        ("REDIS_KEY_PREFIX", &unique_prefix()),
        ("WEBAPP_SHUTDOWN_GRACE_SECS", grace_secs),
        ("WEBAPP_LAME_DUCK_MS", lame_duck_ms),
    ])
}

fn connect(app: &BinaryApp) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", app.port)).expect("connect to webapp");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set read timeout");
    stream
}

/// Waits until the listening socket is gone, i.e. the server stopped accepting.
fn wait_until_connections_are_refused(app: &BinaryApp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", app.port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "webapp still accepts connections 5 s after SIGTERM; output:\n{}",
            app.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a PUT's header with `Expect: 100-continue` and waits for the server's
/// `100 Continue`, which it sends once the handler reads the body: from then on the request
/// is in flight, not a connection still waiting to be accepted or read (which shutdown would
/// simply drop), however loaded the machine.
fn begin_upload(stream: &mut TcpStream, path: &str, length: usize) {
    stream
        .write_all(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send the request header");
    let interim = read_until(stream, "\r\n\r\n");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "expected 100 Continue, got {interim:?}"
    );
}

fn read_until(stream: &mut TcpStream, marker: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !String::from_utf8_lossy(&received).contains(marker) {
        let read = stream.read(&mut buffer).expect("read response");
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let redis = RedisServer::start();
    let mut app = start_app(&redis, "30");
    // A PUT whose body is only half sent: the handler is running, waiting for the rest.
    let mut stream = connect(&app);
    begin_upload(&mut stream, "/api/cache/in-flight", 10);
    stream.write_all(b"hello").expect("send the first half");

    app.send_sigterm();
    wait_until_connections_are_refused(&app);
    stream.write_all(b"world").expect("send the second half");
    let response = read_until(&mut stream, "\r\n\r\n");

    assert!(
        response.starts_with("HTTP/1.1 204"),
        "in-flight request got {response:?}"
    );
    let status = app.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        app.output()
    );
    let prefix_key = app
        .output()
        .lines()
        .find(|line| line.contains("\"listening\""))
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .and_then(|line| line["key_prefix"].as_str().map(str::to_owned))
        .expect("the listening log line names the key prefix");
    assert_eq!(
        redis.command(&["GET", &format!("{prefix_key}cache:in-flight")]),
        "helloworld"
    );
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn sigterm_does_not_wait_for_idle_keep_alive_connections() {
    let redis = RedisServer::start();
    let mut app = start_app(&redis, "30");
    let mut stream = connect(&app);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send request");
    let response = read_until(&mut stream, "live");
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    // The connection stays open and idle (HTTP/1.1 keep-alive).

    app.send_sigterm();

    // Far below the 30 s grace period: an idle connection must not hold shutdown up.
    let status = app.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        app.output()
    );
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn connection_stuck_mid_request_is_dropped_when_the_grace_period_ends() {
    let redis = RedisServer::start();
    let mut app = start_app(&redis, "1");
    let mut stream = connect(&app);
    begin_upload(&mut stream, "/api/cache/stuck", 10);
    stream.write_all(b"hal").expect("send part of the body");

    app.send_sigterm();

    let status = app.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        app.output()
    );
    assert!(
        app.output().contains("grace period over"),
        "{}",
        app.output()
    );
}

/// Sends one request on `stream` (kept alive) and reads its answer: status line to body.
fn request_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .expect("send request");
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let read = stream.read(&mut buffer).expect("read response");
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received);
        if read == 0 || text.ends_with('}') || text.ends_with("times.") {
            return text.into_owned();
        }
    }
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn after_sigterm_a_lame_duck_says_stopping_and_serves_on_then_drains_and_exits_0() {
    // Arrange: a lame-duck period far longer than the checks below take.
    let redis = RedisServer::start();
    let mut app = start_app_with_lame_duck(&redis, "10", "20000");
    let mut kept_alive = connect(&app);
    assert!(request_on(&mut kept_alive, "/readyz").starts_with("HTTP/1.1 200"));

    // Act
    app.send_sigterm();

    // Assert: not ready, "stopping", yet serving on new and kept-alive connections.
    let mut fresh = connect(&app);
    let deadline = Instant::now() + Duration::from_secs(10);
    let readyz = loop {
        let readyz = request_on(&mut fresh, "/readyz");
        if !readyz.starts_with("HTTP/1.1 200") || Instant::now() >= deadline {
            break readyz;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.contains(r#""status":"stopping""#), "{readyz}");
    for stream in [&mut fresh, &mut kept_alive] {
        let greeting = request_on(stream, "/");
        assert!(greeting.starts_with("HTTP/1.1 200"), "{greeting}");
        assert!(greeting.contains("I have been seen"), "{greeting}");
    }
    assert!(app.is_running());
    assert!(
        app.wait_for_output("\"stopping:", Duration::from_secs(10)),
        "{}",
        app.output()
    );
    assert!(!app.output().contains("shutting down: no new connections"));
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn a_lame_duck_stops_accepting_when_its_period_ends_closes_idle_connections_and_exits_0() {
    let redis = RedisServer::start();
    let mut app = start_app_with_lame_duck(&redis, "30", "1000");
    let mut idle = connect(&app);
    assert!(request_on(&mut idle, "/healthz").starts_with("HTTP/1.1 200"));

    app.send_sigterm();

    // Far below the 30 s grace: the idle connection does not hold the drain up.
    let status = app.wait_for_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        app.output()
    );
    let mut rest = Vec::new();
    let closed = idle.read_to_end(&mut rest).map(|_| rest.is_empty());
    assert!(closed.unwrap_or(true), "the idle connection got {rest:?}");
    let output = app.output();
    let lame_duck = output.find("\"stopping:").expect("the lame duck is logged");
    let drain = output
        .find("shutting down: no new connections")
        .expect("the drain is logged");
    assert!(lame_duck < drain, "{output}");
}

#[test]
fn bad_environment_value_stops_start_up_with_one_line_naming_the_variable() {
    for (variable, value) in [
        ("WEBAPP_PORT", "seventy"),
        ("LOG_FORMAT", "xml"),
        ("REDIS_POOL_SIZE", "0"),
        ("WEBAPP_SHUTDOWN_GRACE_SECS", "-1"),
        ("REDIS_URL", "http://example"),
        ("WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT", "0"),
        // Above WEBAPP_CACHE_MAX_ENTRIES (1024 by default).
        ("WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT", "2000"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_webapp"))
            .env(variable, value)
            .output()
            .expect("run webapp");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{variable}={value}: {stderr}"
        );
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

#[test]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
fn healthcheck_subcommand_exits_0_when_ready_and_1_when_not() {
    let mut redis = RedisServer::start();
    let app = start_app(&redis, "1");
    let healthcheck = || {
        Command::new(env!("CARGO_BIN_EXE_webapp"))
            .arg("healthcheck")
            .env("WEBAPP_PORT", app.port.to_string())
            .output()
            .expect("run webapp healthcheck")
            .status
            .code()
    };
    assert_eq!(healthcheck(), Some(0), "output:\n{}", app.output());

    redis.kill();

    assert_eq!(healthcheck(), Some(1));
}
