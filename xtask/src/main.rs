//! `cargo xtask`: the project's build, deploy and test driver.
//!
//! Every job is one subcommand, implemented in its own module as an args
//! struct with `fn run(self, sh: &Shell) -> anyhow::Result<()>`. Commands run
//! from the workspace root whatever directory cargo was started in.

mod bench;
mod ci;
mod cluster;
mod compose;
mod docker;
mod e2e;
mod flake;
mod images;
mod layers;
mod poll;
mod push;
mod render;
mod secrets;
mod stack;
mod swarm;
mod tls;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, run and test the proxy → webapp → Redis stack"
)]
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
    /// A Swarm of several engines on this machine, each in its own network namespace (root).
    Cluster(cluster::Cluster),
    /// Run the end-to-end tests against a fresh Compose stack, then remove it.
    E2e(e2e::E2e),
    /// Parse-check flake.nix and every other tracked .nix file (pinned nix-instantiate, or WEBSTACK_NIX_INSTANTIATE's).
    FlakeCheck(flake::FlakeCheck),
    /// Build the webapp, db and proxy images reproducibly and load them into Docker.
    Images(images::Images),
    /// Check that no crate of the workspace has an import cycle between its modules (read from `use` paths).
    Layers(layers::Layers),
    /// Build the images for every platform and push them to a registry: REGISTRY/PREFIX/{webapp,db,proxy}, by digest, then the content tag.
    Push(push::Push),
    /// Print what each image's SBOM (target/images/out/<architecture>/<image>.spdx.json)
    /// lists: Debian packages, crates, other files and licenses, with counts and sizes.
    Sbom(images::Sbom),
    /// Regenerate deploy/compose.yaml (and the other deploy files) from xtask/src/stack.rs.
    Render(render::Render),
    /// Run the stack with Docker Compose: up, down, status, logs, scale.
    #[command(subcommand)]
    Compose(ComposeCommand),
    /// Start the Compose stack (building images if needed) and wait until it is healthy (= compose up).
    Up(Box<compose::Up>),
    /// Stop and remove the Compose stack, --volumes: its data too (= compose down).
    Down(compose::Down),
    /// Show the Compose stack's containers and their health (= compose status).
    Status(compose::Status),
    /// Show the Compose stack's logs, or one service's (= compose logs).
    Logs(compose::Logs),
    /// Change the number of webapp replicas of the running Compose stack (= compose scale).
    Scale(compose::Scale),
    /// Deploy, update, inspect or remove the stack on Docker Swarm.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Deploy the stack on Docker Swarm and wait until it is healthy (= swarm deploy).
    SwarmDeploy(Box<swarm::deploy::SwarmDeploy>),
}

/// The Compose commands. The Compose stack is the default way to run it, so
/// each is also a top-level command (`cargo xtask up` = `cargo xtask compose up`).
#[derive(Subcommand)]
enum ComposeCommand {
    /// Start the stack (building images if needed) and wait until it is healthy.
    Up(Box<compose::Up>),
    /// Stop and remove the stack (--volumes: its data too).
    Down(compose::Down),
    /// Show the stack's containers and their health.
    Status(compose::Status),
    /// Show the stack's logs, or one service's.
    Logs(compose::Logs),
    /// Change the number of webapp replicas of the running stack.
    Scale(compose::Scale),
}

#[derive(Subcommand)]
enum SwarmCommand {
    /// Deploy the stack (creating a single-node swarm if there is none) and wait until it is healthy.
    Deploy(Box<swarm::deploy::SwarmDeploy>),
    /// Roll the stack to freshly built images; fails, saying why, if it rolled back.
    Update(swarm::update::SwarmUpdate),
    /// Show the stack's services, tasks and last rolling update.
    Status(swarm::status::SwarmStatus),
    /// Remove the stack (--volumes: its data too); leave the swarm if xtask created it.
    Rm(swarm::remove::SwarmRm),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Bench(cmd) => cmd.run(&sh),
        Command::Ci(cmd) => cmd.run(&sh),
        Command::Cluster(cmd) => cmd.run(&sh),
        Command::E2e(cmd) => cmd.run(&sh),
        Command::FlakeCheck(cmd) => cmd.run(&sh),
        Command::Images(cmd) => cmd.run(&sh),
        Command::Layers(cmd) => cmd.run(&sh),
        Command::Push(cmd) => cmd.run(&sh),
        Command::Sbom(cmd) => cmd.run(&sh),
        Command::Render(cmd) => cmd.run(&sh),
        Command::Compose(ComposeCommand::Up(cmd)) | Command::Up(cmd) => cmd.run(&sh),
        Command::Compose(ComposeCommand::Down(cmd)) | Command::Down(cmd) => cmd.run(&sh),
        Command::Compose(ComposeCommand::Status(cmd)) | Command::Status(cmd) => cmd.run(&sh),
        Command::Compose(ComposeCommand::Logs(cmd)) | Command::Logs(cmd) => cmd.run(&sh),
        Command::Compose(ComposeCommand::Scale(cmd)) | Command::Scale(cmd) => cmd.run(&sh),
        Command::Swarm(SwarmCommand::Deploy(cmd)) | Command::SwarmDeploy(cmd) => cmd.run(&sh),
        Command::Swarm(SwarmCommand::Update(cmd)) => cmd.run(&sh),
        Command::Swarm(SwarmCommand::Status(cmd)) => cmd.run(&sh),
        Command::Swarm(SwarmCommand::Rm(cmd)) => cmd.run(&sh),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// This clone's own tool directory, target/tools/: the host tools' trees
/// and wrapper scripts, and the tool cache when nothing names one.
pub fn clone_tools_dir() -> PathBuf {
    project_root().join("target").join("tools")
}

/// Where tools built or fetched once per machine are kept across clones
/// (`xtask_fetch::tool_cache_dir`: `$WEBSTACK_TOOL_CACHE`, the user's cache
/// directory, else [`clone_tools_dir`]).
pub fn tool_cache_dir() -> PathBuf {
    xtask_fetch::tool_cache_dir(|name| std::env::var(name).ok(), &clone_tools_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_take_the_grouped_and_the_short_names() {
        for args in [
            &["xtask", "swarm", "deploy", "-p", "demo"][..],
            &["xtask", "swarm-deploy", "--stack", "demo"][..],
            &["xtask", "swarm", "rm", "--project", "demo"][..],
            &["xtask", "compose", "up", "--replicas", "2", "-p", "demo"][..],
            &["xtask", "up", "--replicas", "2"][..],
            &["xtask", "compose", "scale", "4"][..],
            &["xtask", "compose", "logs", "webapp", "-f"][..],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|error| panic!("{args:?}: {error}"));
        }
    }

    #[test]
    fn swarm_deploy_is_the_only_short_swarm_command() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("swarm-deploy"), "{help}");
        for gone in ["swarm-update", "swarm-status", "swarm-rm"] {
            assert!(
                Cli::try_parse_from(["xtask", gone]).is_err(),
                "{gone} still parses"
            );
        }
    }
}
