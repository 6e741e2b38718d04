//! The built `httpcheck` as a process, against a loopback server that answers each path with a
//! fixed status: its exit code is what a container's healthcheck sees.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

/// Answers `GET /ok` with 200, `GET /busy` with 503 and anything else with 404, one connection
/// at a time, until the test process ends.
fn fixed_status_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            answer(stream);
        }
    });
    port
}

fn answer(mut stream: TcpStream) {
    let mut request_line = String::new();
    if BufReader::new(&stream)
        .read_line(&mut request_line)
        .is_err()
    {
        return;
    }
    let status = match request_line.split(' ').nth(1) {
        Some("/ok") => "200 OK",
        Some("/busy") => "503 Service Unavailable",
        _ => "404 Not Found",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

fn httpcheck(arguments: &[&str]) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_httpcheck"))
        .args(arguments)
        .output()
        .expect("run httpcheck")
        .status
        .code()
}

#[test]
fn exits_0_on_2xx_1_on_any_other_answer_or_none_and_2_on_misuse() {
    let port = fixed_status_server();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    assert_eq!(httpcheck(&[&url("/ok")]), Some(0));
    assert_eq!(httpcheck(&[&url("/busy")]), Some(1));
    assert_eq!(httpcheck(&[&url("/no-such-page")]), Some(1));

    // A port that was free a moment ago: the listener is dropped at the end of the block.
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("local address").port()
    };
    let closed = format!("http://127.0.0.1:{closed_port}/");
    assert_eq!(httpcheck(&[&closed]), Some(1), "nothing listens there");
    assert_eq!(httpcheck(&["https://127.0.0.1/"]), Some(1));

    assert_eq!(httpcheck(&[]), Some(2));
    assert_eq!(httpcheck(&["--help"]), Some(2));
    assert_eq!(httpcheck(&[&url("/ok"), "extra"]), Some(2));
}
