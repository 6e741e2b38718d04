//! `httpcheck URL`: exit 0 if an `http://` URL answers 2xx, else 1.
//!
//! For images with no shell or curl (the nginx proxy image runs it as its HEALTHCHECK).
//! Uses only the probe shared with `webapp healthcheck`, with no async runtime, so the binary
//! stays small.

use std::process::ExitCode;

use proxy::probe;

fn main() -> ExitCode {
    let mut arguments = std::env::args().skip(1);
    match (arguments.next(), arguments.next()) {
        (Some(url), None) if url != "-h" && url != "--help" => ExitCode::from(probe::check(&url)),
        _ => {
            eprintln!("usage: httpcheck http://HOST:PORT/PATH  (exit 0 on a 2xx answer, else 1)");
            ExitCode::from(2)
        }
    }
}
