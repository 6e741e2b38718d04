//! The promise of this crate: every cargo command the project runs gives each
//! dependency the features `cargo test --workspace` gives it, so none is
//! compiled twice. Checked with `cargo tree`, offline (the crates are already
//! there: this test was compiled from them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// A package (`name vX.Y.Z`) and the feature sets it is built with (one per
/// side: the target, and the host for build scripts and proc macros).
type Features = BTreeMap<String, BTreeSet<String>>;

/// What the project's cargo commands select: `cargo xtask` (`run -p xtask`),
/// the Nix step's `cargo test -p xtask`, the hermetic and ignored tiers
/// (`--workspace --exclude stack-tests`) and the end-to-end suites
/// (`cargo test -p stack-tests --test …`).
const SELECTIONS: &[&[&str]] = &[
    &["--package", "xtask", "--edges", "normal,build"],
    &["--package", "xtask", "--edges", "normal,build,dev"],
    &[
        "--workspace",
        "--exclude",
        "stack-tests",
        "--edges",
        "normal,build,dev",
    ],
    &["--package", "stack-tests", "--edges", "normal,build,dev"],
];

fn features(selection: &[&str]) -> Features {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["--format", "{p} [{f}]"])
        .args(selection)
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    assert!(
        output.status.success(),
        "cargo tree {selection:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut features = Features::new();
    // One tree per selected package, with an empty line between.
    for line in stdout.lines().filter(|line| !line.is_empty()) {
        let line = line.replace(" (*)", "").replace(" (proc-macro)", "");
        let (package, set) = line
            .rsplit_once(" [")
            .unwrap_or_else(|| panic!("no feature list in cargo tree's line {line:?}"));
        // `name vX.Y.Z (path)` for the workspace's own packages.
        let package = package.split(" (").next().unwrap_or(package);
        features
            .entry(package.to_owned())
            .or_default()
            .insert(set.trim_end_matches(']').to_owned());
    }
    features
}

#[test]
fn the_shared_dependencies_have_one_feature_set_whatever_is_selected() {
    let everything = features(&["--workspace", "--edges", "normal,build,dev"]);
    assert!(
        everything
            .keys()
            .any(|package| package.starts_with("tokio v")),
        "cargo tree lists no tokio: {everything:?}"
    );
    let mut differences = Vec::new();
    for selection in SELECTIONS {
        for (package, sets) in features(selection) {
            let whole = everything.get(&package);
            if whole != Some(&sets) {
                differences.push(format!(
                    "`cargo tree {}`: {package} with [{}], but [{}] with --workspace",
                    selection.join(" "),
                    sets.iter().cloned().collect::<Vec<_>>().join("] ["),
                    whole
                        .map(|w| w.iter().cloned().collect::<Vec<_>>().join("] ["))
                        .unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "these would be compiled again with other features; add them to xtask/crates/workspace-hack/Cargo.toml:\n{}",
        differences.join("\n")
    );
}
