//! Empty: it exists so that Cargo resolves the host-side dependencies in
//! Cargo.toml's `[build-dependencies]` (see there).
fn main() {}
