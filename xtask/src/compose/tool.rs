//! Which Compose runs a project: the v2 plugin, the pinned Compose v2, or
//! `docker-compose` 1.29, and how each is invoked.

use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// Chooses the Compose implementation for every command: `v1` (a
/// `docker-compose` 1.x on PATH), `v2` (the `docker compose` plugin, else the
/// pinned Compose v2 from the lock), or `auto` (v2 if it can be had, else v1).
pub const COMPOSE_VARIABLE: &str = "WEBSTACK_COMPOSE";

/// Which Compose implementation runs the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeTool {
    /// `docker compose`, the v2 CLI plugin.
    Plugin,
    /// A standalone program: `docker-compose` 1.x on PATH, or the pinned v2.
    Standalone { program: PathBuf, v2: bool },
}

impl ComposeTool {
    /// As `WEBSTACK_COMPOSE` asks (default `auto`).
    pub fn detect(sh: &Shell) -> anyhow::Result<ComposeTool> {
        let wanted = sh.var(COMPOSE_VARIABLE).unwrap_or_default();
        match wanted.as_str() {
            "v1" => Self::v1(sh),
            "v2" => Self::v2(sh),
            "" | "auto" => Self::v2(sh).or_else(|v2_error| {
                Self::v1(sh).map_err(|v1_error| {
                    anyhow::anyhow!(
                        "no Compose found: {v2_error:#}; and {v1_error:#}. Install Docker's Compose plugin, or let xtask fetch the pinned one (it needs Debian's archive)"
                    )
                })
            }),
            other => bail!("{COMPOSE_VARIABLE}={other:?}: use v1, v2 or auto"),
        }
    }

    /// The `docker compose` plugin, else the pinned Compose v2.
    pub fn v2(sh: &Shell) -> anyhow::Result<ComposeTool> {
        let plugin = cmd!(sh, "docker compose version --short")
            .quiet()
            .ignore_stderr()
            .read();
        if plugin.is_ok_and(|version| version.trim_start_matches('v').starts_with('2')) {
            return Ok(ComposeTool::Plugin);
        }
        let program = crate::images::pins::ensure(&crate::images::pins::COMPOSE_V2)
            .context("get the pinned Compose v2 (no `docker compose` plugin is installed)")?;
        Ok(ComposeTool::Standalone { program, v2: true })
    }

    /// `docker-compose` 1.x on PATH.
    pub fn v1(sh: &Shell) -> anyhow::Result<ComposeTool> {
        let version = cmd!(sh, "docker-compose version --short")
            .quiet()
            .ignore_stderr()
            .read()
            .context("`docker-compose` (Compose 1.x) is not on PATH")?;
        if !version.trim().starts_with("1.") {
            bail!(
                "`docker-compose` on PATH is version {}, not 1.x",
                version.trim()
            );
        }
        Ok(ComposeTool::Standalone {
            program: PathBuf::from("docker-compose"),
            v2: false,
        })
    }

    /// "v1" or "v2", for messages and reports.
    pub fn generation(&self) -> &'static str {
        match self {
            ComposeTool::Standalone { v2: false, .. } => "v1",
            _ => "v2",
        }
    }

    /// The program and its leading arguments: `docker` + `compose`, or the
    /// standalone program.
    pub fn program_and_leading_arguments(&self) -> (PathBuf, &'static [&'static str]) {
        match self {
            ComposeTool::Plugin => (PathBuf::from("docker"), &["compose"]),
            ComposeTool::Standalone { program, .. } => (program.clone(), &[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_compose_choice_is_refused_naming_the_variable_and_the_choices() {
        let sh = Shell::new().expect("shell");
        sh.set_var(COMPOSE_VARIABLE, "v3");
        let message = format!(
            "{:#}",
            ComposeTool::detect(&sh).expect_err("v3 is no choice")
        );
        assert!(message.contains("WEBSTACK_COMPOSE=\"v3\""), "{message}");
        assert!(message.contains("v1, v2 or auto"), "{message}");
    }

    #[test]
    fn the_standalone_v1_and_the_plugin_name_their_generation_and_program() {
        let v1 = ComposeTool::Standalone {
            program: PathBuf::from("docker-compose"),
            v2: false,
        };
        assert_eq!(v1.generation(), "v1");
        assert_eq!(
            v1.program_and_leading_arguments().0,
            PathBuf::from("docker-compose")
        );
        let plugin = ComposeTool::Plugin;
        assert_eq!(plugin.generation(), "v2");
        assert_eq!(
            plugin.program_and_leading_arguments(),
            (PathBuf::from("docker"), &["compose"][..])
        );
    }
}
