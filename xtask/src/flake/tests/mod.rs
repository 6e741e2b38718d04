//! The flake's tests: its outputs, evaluated with stand-in inputs by the
//! pinned nix-instantiate, against docs/nix.md, rust-toolchain.toml and the
//! stack model.

use super::*;

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::stack;

mod images;

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
        let path =
            std::env::temp_dir().join(format!("webstack-{purpose}-{}-{nanos}", std::process::id()));
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
    let end = readme[start..]
        .find(TOOL_LIST_END)
        .with_context(|| format!("docs/nix.md has no {TOOL_LIST_END} after {TOOL_LIST_START}"))?
        + start;
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

/// The nix-instantiate the ignored tests run: `WEBSTACK_NIX_INSTANTIATE`,
/// else the pinned one (fetched on first use). Never a skip.
fn test_nix() -> anyhow::Result<NixInstantiate> {
    NixInstantiate::from_environment_or_pinned()
}

/// `nix-instantiate --eval --strict --json xtask/nix/{file} -A {attribute}
/// --argstr …`, run from the workspace root, parsed as `T`.
fn evaluate_json<T: serde::de::DeserializeOwned>(
    file: &str,
    attribute: &str,
    string_arguments: &[(&str, String)],
) -> anyhow::Result<T> {
    let nix = test_nix()?;
    let sh = project_shell()?;
    let program = &nix.program;
    let expression = Path::new(NIX_EXPRESSIONS_DIR).join(file);
    let mut arguments: Vec<String> = Vec::new();
    for (name, value) in string_arguments {
        arguments.extend(["--argstr".to_owned(), (*name).to_owned(), value.clone()]);
    }
    let output = cmd!(
        sh,
        "{program} --eval --strict --json {expression} -A {attribute} {arguments...}"
    )
    .quiet()
    .ignore_status()
    .output()
    .with_context(|| format!("run {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "evaluating {} -A {attribute} with {} failed:\n{}",
            expression.display(),
            nix.origin,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{} -A {attribute} printed unexpected JSON: {}",
            expression.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `-A attribute` of xtask/nix/eval-flake.nix, whose stand-in nixpkgs
/// has exactly the tools docs/nix.md lists.
fn evaluate_flake<T: serde::de::DeserializeOwned>(attribute: &str) -> anyhow::Result<T> {
    let tool_names: Vec<String> = readme_tools()?.into_iter().map(|tool| tool.name).collect();
    let tool_names_json = serde_json::to_string(&tool_names).context("serialise tool names")?;
    evaluate_json(
        "eval-flake.nix",
        attribute,
        &[
            ("toolNamesJSON", tool_names_json),
            ("toolchainEntry", TOOLCHAIN_ENTRY.to_owned()),
        ],
    )
}

/// What evaluating the flake's dev shell against the stand-in nixpkgs
/// gives (eval-flake.nix's `devShell`).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EvaluatedDevShell {
    /// nixpkgs attribute names, in the order of the shell's `packages`.
    package_names: Vec<String>,
    /// Each toolchain in the shell.
    toolchains: Vec<EvaluatedToolchain>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluatedToolchain {
    /// The file handed to `rust-bin.fromRustupToolchainFile`.
    file: PathBuf,
    /// `toolchain.channel` from that file, as the flake's evaluation read it.
    channel: String,
}

#[test]
#[ignore = "needs nix-instantiate; cargo xtask ci runs it"]
fn every_tracked_nix_file_parses() -> anyhow::Result<()> {
    let sh = project_shell()?;
    let nix = test_nix()?;
    check(&sh, &nix)?;
    let checked = nix_files_to_check(&sh)?;
    for file in [
        "flake.nix",
        "xtask/nix/eval-flake.nix",
        "xtask/nix/stand-in-nixpkgs.nix",
    ] {
        assert!(
            checked.contains(&PathBuf::from(file)),
            "{file} is not among the parse-checked files {checked:?}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs nix-instantiate; cargo xtask ci runs it"]
fn parse_check_rejects_a_nix_file_with_a_syntax_error() -> anyhow::Result<()> {
    let sh = project_shell()?;
    let nix = test_nix()?;
    let scratch = ScratchDirectory::new("flake-parse")?;
    let broken = scratch.0.join("broken.nix");
    // Test data, not an expression anything evaluates: a stray `;`.
    std::fs::write(&broken, "{ inputs = { nixpkgs.url = \"x\"; ; }")?;

    let outcome = parse_nix_file(&sh, &nix, &broken);

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
fn a_given_nix_instantiate_that_does_not_run_fails_in_one_line_naming_it() {
    let missing = "/nonexistent/webstack/nix-instantiate";

    let error = match NixInstantiate::given_or_pinned(Some(missing.into())) {
        Ok(nix) => panic!("{missing} was accepted: {nix:?}"),
        Err(error) => format!("{error:#}"),
    };

    assert!(error.contains(missing), "{error}");
    assert!(error.contains(NIX_INSTANTIATE_VARIABLE), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
}

#[test]
#[ignore = "needs nix-instantiate; cargo xtask ci runs it"]
fn flake_builds_the_toolchain_from_the_repos_rust_toolchain_toml() -> anyhow::Result<()> {
    let tools = readme_tools()?;
    let pinned_channel = pinned_rust_channel()?;

    let shell: EvaluatedDevShell = evaluate_flake("devShell")?;

    let [toolchain] = &shell.toolchains[..] else {
        panic!(
            "the dev shell should hold one `{TOOLCHAIN_ENTRY}`, it holds {:?}",
            shell.toolchains
        );
    };
    assert_eq!(
        toolchain.file,
        crate::project_root().join("rust-toolchain.toml"),
        "flake.nix must build its toolchain with rust-bin.fromRustupToolchainFile ./rust-toolchain.toml"
    );
    assert_eq!(
        toolchain.channel, pinned_channel,
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
#[ignore = "needs nix-instantiate; cargo xtask ci runs it"]
fn dev_shell_provides_exactly_the_tools_the_readme_lists() -> anyhow::Result<()> {
    let readme_names: Vec<String> = readme_tools()?.into_iter().map(|tool| tool.name).collect();

    let shell: EvaluatedDevShell = evaluate_flake("devShell")?;

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
#[ignore = "needs nix-instantiate; cargo xtask ci runs it"]
fn flake_inputs_are_pinned_to_commits() -> anyhow::Result<()> {
    let urls: BTreeMap<String, String> = evaluate_json("flake-inputs.nix", "urls", &[])?;

    for expected in ["nixpkgs", "rust-overlay"] {
        assert!(
            urls.contains_key(expected),
            "flake.nix has no input {expected}: {urls:?}"
        );
    }
    for (name, url) in &urls {
        let last_segment = url.rsplit('/').next().unwrap_or_default();
        assert!(
            last_segment.len() == 40 && last_segment.chars().all(|c| c.is_ascii_hexdigit()),
            "flake input {name} ({url}) is not pinned to a 40-hex commit"
        );
    }
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

/// The flake's `workspaceSource`: the paths (`./…`) its fileset takes.
fn flake_workspace_source() -> anyhow::Result<Vec<String>> {
    let flake = read_project_file("flake.nix")?;
    let start = flake
        .find("workspaceSource = lib.fileset.toSource")
        .context("flake.nix has no workspaceSource")?;
    let list = flake[start..]
        .split_once("lib.fileset.unions [")
        .and_then(|(_, rest)| rest.split_once("];"))
        .map(|(list, _)| list)
        .context("flake.nix's workspaceSource has no `lib.fileset.unions [ … ];`")?;
    Ok(list
        .split_whitespace()
        .filter_map(|path| path.strip_prefix("./"))
        .map(str::to_owned)
        .collect())
}

/// The workspace's members, from the top Cargo.toml's `members = [...]` line.
fn workspace_members() -> anyhow::Result<Vec<String>> {
    let manifest = read_project_file("Cargo.toml")?;
    let line = manifest
        .lines()
        .find(|line| line.starts_with("members = ["))
        .context("Cargo.toml has no one-line `members = [...]`")?;
    Ok(line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_flakes_workspace_source_holds_every_workspace_member() -> anyhow::Result<()> {
    // cargo refuses to load a workspace with a member missing, so `nix build` would fail
    // while the evaluation checks pass.
    let source = flake_workspace_source()?;
    let members = workspace_members()?;
    assert!(members.len() >= 5, "{members:?}");
    let missing: Vec<&String> = members
        .iter()
        .filter(|member| {
            !source
                .iter()
                .any(|path| member.as_str() == path || member.starts_with(&format!("{path}/")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "flake.nix's workspaceSource lacks the workspace member(s) {missing:?} (it has {source:?})"
    );
    Ok(())
}
