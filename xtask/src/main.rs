//! `cargo xtask`: the project's build, deploy and test driver.
//!
//! Every job is one subcommand, implemented in its own module as an args
//! struct with `fn run(self, sh: &Shell) -> anyhow::Result<()>`. Commands run
//! from the workspace root whatever directory cargo was started in.

mod bench;
mod ci;
mod flake;
mod images;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the proxy → webapp → Redis stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure throughput, latency and memory through the proxy, with its ceilings.
    Bench(bench::Bench),
    /// Run every check and test the project has (what `.ci/run` runs).
    Ci(ci::Ci),
    /// Parse-check flake.nix and every other tracked .nix file (installs nix-bin as root).
    FlakeCheck(flake::FlakeCheck),
    /// Build the webapp, db and proxy images reproducibly and load them into Docker.
    Images(images::Images),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Bench(cmd) => cmd.run(&sh),
        Command::Ci(cmd) => cmd.run(&sh),
        Command::FlakeCheck(cmd) => cmd.run(&sh),
        Command::Images(cmd) => cmd.run(&sh),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
