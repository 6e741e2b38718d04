//! `cargo xtask ci`: formatting, lints and every test suite, in the order a
//! failure is cheapest to find.

use xshell::{cmd, Shell};

#[derive(clap::Args)]
pub struct Ci {}

impl Ci {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        step("cargo fmt --check");
        cmd!(sh, "cargo fmt --all --check").run()?;
        step("cargo clippy");
        cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?;
        step("cargo test");
        cmd!(sh, "cargo test --workspace").run()?;
        Ok(())
    }
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}
