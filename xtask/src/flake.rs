//! `cargo xtask flake-check`: the checks of `flake.nix` that run without Nix's
//! binary cache or GitHub.
//!
//! This machine (and CI) cannot fetch nixpkgs or rust-overlay, so the flake is
//! never built here. What runs instead, with a `nix-instantiate` that is on
//! PATH (xtask installs nothing; without one these checks are skipped, saying
//! so in one line):
//! - `check`: every tracked `.nix` file must parse (`nix-instantiate --parse`).
//! - the tests below evaluate the flake's `outputs` function with a stand-in
//!   for nixpkgs that knows only the tools docs/nix.md promises, then compare
//!   what the dev shell contains and which toolchain file the flake reads with
//!   docs/nix.md and `rust-toolchain.toml`.

use std::path::{Path, PathBuf};

/// The page that documents the Nix path: its tool list and version table are checked.
#[cfg(test)]
const NIX_DOC: &str = "docs/nix.md";

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

/// Parse-check `flake.nix` and every other tracked `.nix` file.
#[derive(clap::Args)]
pub struct FlakeCheck {}

impl FlakeCheck {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        check(sh)
    }
}

/// Parses `flake.nix` and every other `.nix` file git tracks, with the
/// `nix-instantiate` on PATH; skipped, saying why, when there is none. Runs
/// from the workspace root.
pub fn check(sh: &Shell) -> anyhow::Result<()> {
    if !nix_instantiate_available(sh, "flake-check") {
        return Ok(());
    }
    let nix_files = nix_files_to_check(sh)?;
    for nix_file in &nix_files {
        parse_nix_file(sh, nix_file)?;
    }
    let names: Vec<String> = nix_files
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    eprintln!(
        "flake-check: {} .nix file(s) parse: {}",
        names.len(),
        names.join(", ")
    );
    Ok(())
}

/// Whether `nix-instantiate` runs; when it does not, prints one line saying
/// that `what` is skipped and why. Nothing is installed: xtask never calls a
/// package manager.
pub fn nix_instantiate_available(sh: &Shell, what: &str) -> bool {
    let available = nix_instantiate_works(sh);
    if !available {
        eprintln!(
            "{what}: skipped: no nix-instantiate on PATH (install Nix to run the flake checks)"
        );
    }
    available
}

fn nix_instantiate_works(sh: &Shell) -> bool {
    cmd!(sh, "nix-instantiate --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// `flake.nix` plus every other `.nix` file git tracks, relative to the
/// workspace root. `flake.nix` is checked even before it is committed.
fn nix_files_to_check(sh: &Shell) -> anyhow::Result<Vec<PathBuf>> {
    let _at_root = sh.push_dir(crate::project_root());
    // One pathspec argument; git's own wildcard matching spans directories.
    let nix_pathspec = "*.nix";
    let tracked = cmd!(sh, "git ls-files -- {nix_pathspec}")
        .read()
        .context("list the .nix files git tracks")?;
    let mut nix_files: Vec<PathBuf> = tracked.lines().map(PathBuf::from).collect();
    if !nix_files.iter().any(|path| path == Path::new("flake.nix")) {
        if !crate::project_root().join("flake.nix").is_file() {
            bail!("flake.nix is missing at the workspace root: restore it from git");
        }
        nix_files.insert(0, PathBuf::from("flake.nix"));
    }
    Ok(nix_files)
}

/// Fails with nix-instantiate's own message when the file is not valid Nix
/// syntax.
fn parse_nix_file(sh: &Shell, nix_file: &Path) -> anyhow::Result<()> {
    let _at_root = sh.push_dir(crate::project_root());
    let output = cmd!(sh, "nix-instantiate --parse {nix_file}")
        .quiet()
        .ignore_status()
        .output()
        .context("run nix-instantiate --parse")?;
    if !output.status.success() {
        bail!(
            "{} is not valid Nix, fix this syntax error:\n{}",
            nix_file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{SystemTime, UNIX_EPOCH};

    /// Markers around docs/nix.md's machine-readable list of what `nix develop`
    /// provides.
    const TOOL_LIST_START: &str = "<!-- nix-develop-tools -->";
    const TOOL_LIST_END: &str = "<!-- /nix-develop-tools -->";

    /// docs/nix.md's name for the Rust toolchain entry; the stand-in nixpkgs
    /// gives the toolchain rust-overlay would build this name.
    const TOOLCHAIN_ENTRY: &str = "rust-toolchain";

    fn project_shell() -> anyhow::Result<Shell> {
        let sh = Shell::new()?;
        sh.change_dir(crate::project_root());
        Ok(sh)
    }

    fn read_project_file(relative_path: &str) -> anyhow::Result<String> {
        let path = crate::project_root().join(relative_path);
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct ScratchDirectory(PathBuf);

    impl ScratchDirectory {
        fn new(purpose: &str) -> anyhow::Result<Self> {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
            let path = std::env::temp_dir()
                .join(format!("webstack-{purpose}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
            Ok(Self(path))
        }
    }

    impl Drop for ScratchDirectory {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One bullet of docs/nix.md list: "- `name`: what it is".
    #[derive(Debug)]
    struct ReadmeTool {
        name: String,
        line: String,
    }

    fn readme_tools() -> anyhow::Result<Vec<ReadmeTool>> {
        let readme = read_project_file(NIX_DOC)?;
        let start = readme
            .find(TOOL_LIST_START)
            .with_context(|| format!("docs/nix.md has no {TOOL_LIST_START} marker"))?;
        let end = readme[start..].find(TOOL_LIST_END).with_context(|| {
            format!("docs/nix.md has no {TOOL_LIST_END} after {TOOL_LIST_START}")
        })? + start;
        let mut tools = Vec::new();
        for line in readme[start + TOOL_LIST_START.len()..end].lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let name = line
                .strip_prefix("- `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_owned())
                .with_context(|| {
                    format!("docs/nix.md tool list line is not \"- `name`: description\": {line}")
                })?;
            tools.push(ReadmeTool {
                name,
                line: line.to_owned(),
            });
        }
        if tools.is_empty() {
            bail!("docs/nix.md's nix-develop-tools list is empty");
        }
        Ok(tools)
    }

    /// The Rust version docs/nix.md's toolchain bullet states ("Rust 1.95.0").
    fn readme_rust_version(tools: &[ReadmeTool]) -> anyhow::Result<String> {
        let entry = tools
            .iter()
            .find(|tool| tool.name == TOOLCHAIN_ENTRY)
            .with_context(|| format!("docs/nix.md tool list has no `{TOOLCHAIN_ENTRY}` entry"))?;
        let after = entry
            .line
            .split_once("Rust ")
            .map(|(_, after)| after)
            .with_context(|| {
                format!(
                    "docs/nix.md toolchain entry names no \"Rust X.Y.Z\": {}",
                    entry.line
                )
            })?;
        let version: String = after
            .chars()
            .take_while(|character| character.is_ascii_digit() || *character == '.')
            .collect();
        let version = version.trim_end_matches('.').to_owned();
        if version.split('.').count() != 3 {
            bail!(
                "docs/nix.md toolchain entry's version is not X.Y.Z: {}",
                entry.line
            );
        }
        Ok(version)
    }

    /// `channel` from rust-toolchain.toml's `[toolchain]` table.
    fn pinned_rust_channel() -> anyhow::Result<String> {
        let toolchain_file = read_project_file("rust-toolchain.toml")?;
        let mut in_toolchain_table = false;
        for line in toolchain_file.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_toolchain_table = line == "[toolchain]";
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                if in_toolchain_table && key.trim() == "channel" {
                    return Ok(value.trim().trim_matches('"').to_owned());
                }
            }
        }
        bail!("rust-toolchain.toml has no channel in its [toolchain] table")
    }

    /// What evaluating the flake's dev shell against the stand-in nixpkgs gives.
    #[derive(Debug)]
    struct EvaluatedDevShell {
        /// nixpkgs attribute names, in the order of the shell's `packages`.
        package_names: Vec<String>,
        /// The file handed to `rust-bin.fromRustupToolchainFile`.
        toolchain_file: PathBuf,
        /// `toolchain.channel` from that file, as the flake's evaluation read it.
        toolchain_channel: String,
    }

    /// Evaluates `result_expression` (Nix, yielding a string, with the flake's
    /// `outputs` in scope) after calling the real flake.nix's `outputs` with a
    /// stand-in for nixpkgs, which cannot be fetched here. The stand-in has
    /// only the packages named in `known_tool_names` plus the functions the
    /// dev shell and images are built with, so a package docs/nix.md does not
    /// list makes the evaluation fail with "attribute ... missing". Returns the
    /// string without its quotes; callers keep to plain names and paths, so no
    /// escapes need undoing.
    fn evaluate_flake_with_stand_in_nixpkgs(
        known_tool_names: &[String],
        result_expression: &str,
    ) -> anyhow::Result<String> {
        let sh = project_shell()?;
        if !nix_instantiate_works(&sh) {
            bail!("nix-instantiate is not on PATH");
        }
        let scratch = ScratchDirectory::new("flake-eval")?;

        let tool_name_list: Vec<String> = known_tool_names
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect();
        let stand_in_nixpkgs = format!(
            r#"{{ system, overlays }}:
let
  stubPackage = name: {{ stubName = name; outPath = "/nix/store/stub-${{name}}"; }};
  toolNames = [ {tool_names} ];
in
builtins.listToAttrs (map (name: {{ inherit name; value = stubPackage name; }}) toolNames)
// {{
  mkShell = arguments: arguments;
  dockerTools.streamLayeredImage = arguments: arguments;
  rust-bin.fromRustupToolchainFile = file: stubPackage "{toolchain_entry}" // {{
    toolchainFile = toString file;
    toolchainChannel = (builtins.fromTOML (builtins.readFile file)).toolchain.channel;
  }};
}}
"#,
            tool_names = tool_name_list.join(" "),
            toolchain_entry = TOOLCHAIN_ENTRY,
        );
        std::fs::write(scratch.0.join("default.nix"), stand_in_nixpkgs)
            .context("write the stand-in nixpkgs")?;

        let flake_path = crate::project_root().join("flake.nix");
        let expression = format!(
            r#"let
  flake = import {flake};
  standInNixpkgs = {{
    outPath = "{stand_in}";
    lib.genAttrs = names: makeValue:
      builtins.listToAttrs (map (name: {{ inherit name; value = makeValue name; }}) names);
  }};
  outputs = flake.outputs {{
    self = outputs;
    nixpkgs = standInNixpkgs;
    rust-overlay = {{ overlays.default = final: previous: {{ }}; }};
  }};
in
{result_expression}"#,
            flake = flake_path.display(),
            stand_in = scratch.0.display(),
        );
        let printed = cmd!(sh, "nix-instantiate --eval --expr {expression}")
            .read()
            .context("evaluate flake.nix against the stand-in nixpkgs")?;
        let unquoted = printed
            .trim()
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .with_context(|| format!("nix-instantiate printed no string: {printed}"))?;
        Ok(unquoted.to_owned())
    }

    /// The dev shell of `devShells.x86_64-linux.default`, evaluated against
    /// the stand-in nixpkgs.
    fn evaluate_dev_shell(known_tool_names: &[String]) -> anyhow::Result<EvaluatedDevShell> {
        let result_expression = format!(
            r#"let
  shell = outputs.devShells.x86_64-linux.default;
  toolchain = builtins.head (builtins.filter (package: package.stubName == "{TOOLCHAIN_ENTRY}") shell.packages);
in
builtins.concatStringsSep "|" [
  (builtins.concatStringsSep "," (map (package: package.stubName) shell.packages))
  toolchain.toolchainFile
  toolchain.toolchainChannel
]"#
        );
        let printed = evaluate_flake_with_stand_in_nixpkgs(known_tool_names, &result_expression)?;
        let fields: Vec<&str> = printed.split('|').collect();
        let [package_names, toolchain_file, toolchain_channel] = fields[..] else {
            bail!("unexpected evaluation result: {printed}");
        };
        Ok(EvaluatedDevShell {
            package_names: package_names.split(',').map(str::to_owned).collect(),
            toolchain_file: PathBuf::from(toolchain_file),
            toolchain_channel: toolchain_channel.to_owned(),
        })
    }

    #[test]
    fn every_tracked_nix_file_parses() -> anyhow::Result<()> {
        let sh = project_shell()?;
        check(&sh)
    }

    #[test]
    fn parse_check_rejects_a_nix_file_with_a_syntax_error() -> anyhow::Result<()> {
        let sh = project_shell()?;
        if !nix_instantiate_available(&sh, "parse_check_rejects_a_nix_file_with_a_syntax_error") {
            return Ok(());
        }
        let scratch = ScratchDirectory::new("flake-parse")?;
        let broken = scratch.0.join("broken.nix");
        std::fs::write(&broken, "{ inputs = { nixpkgs.url = \"x\"; ; }")?;

        let outcome = parse_nix_file(&sh, &broken);

        let error = match outcome {
            Ok(()) => panic!("a file with a syntax error passed the parse check"),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            error.contains("broken.nix") && error.contains("syntax error"),
            "the parse check's error should name the file and nix's reason: {error}"
        );
        Ok(())
    }

    #[test]
    fn flake_builds_the_toolchain_from_the_repos_rust_toolchain_toml() -> anyhow::Result<()> {
        if !nix_instantiate_available(
            &project_shell()?,
            "flake_builds_the_toolchain_from_the_repos_rust_toolchain_toml",
        ) {
            return Ok(());
        }
        let tools = readme_tools()?;
        let tool_names: Vec<String> = tools.iter().map(|tool| tool.name.clone()).collect();
        let pinned_channel = pinned_rust_channel()?;

        let shell = evaluate_dev_shell(&tool_names)?;

        assert_eq!(
            shell.toolchain_file,
            crate::project_root().join("rust-toolchain.toml"),
            "flake.nix must build its toolchain with rust-bin.fromRustupToolchainFile ./rust-toolchain.toml"
        );
        assert_eq!(
            shell.toolchain_channel, pinned_channel,
            "the toolchain file the flake reads pins another channel than rust-toolchain.toml"
        );
        assert_eq!(
            readme_rust_version(&tools)?,
            pinned_channel,
            "docs/nix.md's Nix section states another Rust version than rust-toolchain.toml pins"
        );
        Ok(())
    }

    #[test]
    fn dev_shell_provides_exactly_the_tools_the_readme_lists() -> anyhow::Result<()> {
        if !nix_instantiate_available(
            &project_shell()?,
            "dev_shell_provides_exactly_the_tools_the_readme_lists",
        ) {
            return Ok(());
        }
        let readme_names: Vec<String> = readme_tools()?.into_iter().map(|tool| tool.name).collect();

        let shell = evaluate_dev_shell(&readme_names)?;

        let missing_from_shell: Vec<&String> = readme_names
            .iter()
            .filter(|name| !shell.package_names.contains(name))
            .collect();
        assert!(
            missing_from_shell.is_empty(),
            "docs/nix.md says `nix develop` provides {missing_from_shell:?}, but flake.nix's devShell packages are {:?}",
            shell.package_names
        );
        let missing_from_readme: Vec<&String> = shell
            .package_names
            .iter()
            .filter(|name| !readme_names.contains(name))
            .collect();
        assert!(
            missing_from_readme.is_empty(),
            "flake.nix's devShell has {missing_from_readme:?}, which docs/nix.md's tool list does not name"
        );
        Ok(())
    }

    #[test]
    fn flake_inputs_are_pinned_to_commits() -> anyhow::Result<()> {
        let sh = project_shell()?;
        if !nix_instantiate_available(&sh, "flake_inputs_are_pinned_to_commits") {
            return Ok(());
        }
        let flake_path = crate::project_root().join("flake.nix");
        let expression = format!(
            r#"let inputs = (import {}).inputs; in
builtins.concatStringsSep " " (map (name: inputs.${{name}}.url) (builtins.attrNames inputs))"#,
            flake_path.display()
        );

        let printed = cmd!(sh, "nix-instantiate --eval --expr {expression}").read()?;

        let urls: Vec<&str> = printed.trim().trim_matches('"').split(' ').collect();
        assert!(
            urls.len() >= 2,
            "expected nixpkgs and rust-overlay inputs, got {urls:?}"
        );
        for url in urls {
            let last_segment = url.rsplit('/').next().unwrap_or_default();
            assert!(
                last_segment.len() == 40 && last_segment.chars().all(|c| c.is_ascii_hexdigit()),
                "flake input {url} is not pinned to a 40-hex commit"
            );
        }
        Ok(())
    }

    #[test]
    fn nix_images_use_the_contract_names_users_entrypoints_and_healthchecks() -> anyhow::Result<()>
    {
        if !nix_instantiate_available(
            &project_shell()?,
            "nix_images_use_the_contract_names_users_entrypoints_and_healthchecks",
        ) {
            return Ok(());
        }
        let readme_names: Vec<String> = readme_tools()?.into_iter().map(|tool| tool.name).collect();
        let result_expression = r#"builtins.concatStringsSep ";" (map (attribute:
  let
    image = outputs.packages.x86_64-linux.${attribute};
    config = image.config;
  in
  builtins.concatStringsSep "|" [
    attribute
    "${image.name}:${image.tag}"
    config.User
    (builtins.concatStringsSep " " config.Entrypoint)
    (if config ? Healthcheck then builtins.concatStringsSep " " config.Healthcheck.Test else "no healthcheck")
    (config.WorkingDir or "")
    (config.StopSignal or "no stop signal")
  ]) [ "webapp-image" "db-image" "proxy-image" ])"#;

        let printed = evaluate_flake_with_stand_in_nixpkgs(&readme_names, result_expression)?;

        let images: Vec<&str> = printed.split(';').collect();
        // As xtask/src/images builds them: names, the `:local` tag,
        // 65532:65532, entrypoints, healthcheck commands, working directories
        // and stop signals of the Debian-based images. The proxy differs only
        // by naming its configuration file (see flake.nix).
        assert_eq!(
            images,
            [
                "webapp-image|webstack/webapp:local|65532:65532|/usr/local/bin/webapp\
                 |CMD /usr/local/bin/webapp healthcheck||SIGTERM",
                "db-image|webstack/db:local|65532:65532|/usr/bin/redis-server\
                 |CMD /usr/bin/redis-cli ping|/data|SIGTERM",
                "proxy-image|webstack/proxy:local|65532:65532\
                 |/usr/sbin/nginx -c /etc/nginx/nginx.conf -e stderr\
                 |CMD /usr/local/bin/httpcheck http://127.0.0.1/nginx/health||SIGQUIT",
            ]
        );
        Ok(())
    }

    /// The Debian version in backticks on docs/nix.md Nix section's table row
    /// that starts with `| {row_name} |`.
    fn readme_debian_version(row_name: &str) -> anyhow::Result<String> {
        let readme = read_project_file(NIX_DOC)?;
        let section_start = readme
            .find("<!-- section:nix -->")
            .context("docs/nix.md has no nix section")?;
        let row_start = format!("| {row_name} |");
        let row = readme[section_start..]
            .lines()
            .find(|line| line.starts_with(&row_start))
            .with_context(|| format!("docs/nix.md's Nix section has no table row {row_start}"))?;
        let version = row
            .split('`')
            .nth(1)
            .with_context(|| format!("docs/nix.md row names no `version`: {row}"))?;
        Ok(version.to_owned())
    }

    /// Every version deploy/images.lock.json pins for a Debian package.
    fn locked_debian_versions(package: &str) -> anyhow::Result<Vec<String>> {
        let lock: serde_json::Value =
            serde_json::from_str(&read_project_file("deploy/images.lock.json")?)
                .context("parse deploy/images.lock.json")?;
        let images = lock["images"]
            .as_object()
            .context("deploy/images.lock.json has no \"images\" object")?;
        let mut versions: Vec<String> = images
            .values()
            .filter_map(|packages| packages.as_array())
            .flatten()
            .filter(|entry| entry["package"] == package)
            .filter_map(|entry| entry["version"].as_str().map(str::to_owned))
            .collect();
        versions.dedup();
        Ok(versions)
    }

    #[test]
    fn readme_states_the_nginx_and_redis_versions_the_debian_images_lock() -> anyhow::Result<()> {
        // Debian ships the Redis binaries in redis-tools; redis-server is a
        // wrapper package around them.
        for (row_name, debian_package) in [("nginx", "nginx"), ("Redis", "redis-tools")] {
            let stated = readme_debian_version(row_name)?;

            let locked = locked_debian_versions(debian_package)?;

            assert_eq!(
                locked,
                std::slice::from_ref(&stated),
                "docs/nix.md's Nix section says the Debian images run {debian_package} {stated}, \
                 deploy/images.lock.json pins {locked:?}: update docs/nix.md table"
            );
        }
        Ok(())
    }
}
