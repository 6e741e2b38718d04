//! The images' programs as static-pie executables: `webapp` from the webapp
//! crate, `proxy-init` and `httpcheck` from the proxy crate (nginx/proxy/),
//! and on amd64 `acme` (nginx/acme/).
//!
//! `acme` is amd64 only: its crypto (ring, under instant-acme and rustls)
//! compiles C and assembly, and for arm64 that needs a C cross compiler,
//! which xtask does not fetch yet (the other programs are pure Rust, linked
//! by the toolchain's own `rust-lld`).
//!
//! For amd64 they link glibc statically (`-C target-feature=+crt-static`
//! on x86_64-unknown-linux-gnu, whose standard library the toolchain has);
//! for arm64, musl (aarch64-unknown-linux-musl, static by default) with the
//! pinned standard library of `rust_std` and the toolchain's `rust-lld`.
//! `--target` keeps those flags off build scripts and proc macros, which
//! must stay dynamic and run on the host. `--remap-path-prefix` rewrites the checkout, CARGO_HOME and the
//! target dir so the bytes do not depend on where they live; the release
//! profile strips symbols (Cargo.toml).
//!
//! The build runs under the pinned `cargo-auditable` (`auditable`), which
//! links into each program the list of the crates compiled into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{platform::Platform, rust_std};

pub struct WebappBinaries {
    pub webapp: PathBuf,
    pub httpcheck: PathBuf,
    pub proxy_init: PathBuf,
    /// The `acme` service's program; `None` where it is not built (arm64).
    pub acme: Option<PathBuf>,
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// Builds `webapp`, `httpcheck` and `proxy-init` in `cargo_target_dir` (incrementally), in
/// one cargo invocation, so the two packages share the dependencies they have in common.
pub fn build(
    sh: &Shell,
    root: &Path,
    cargo_target_dir: &Path,
    source_date_epoch: u64,
    platform: Platform,
) -> anyhow::Result<WebappBinaries> {
    let target = platform.rust_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let cargo_home = cargo_home()?;
    // Later rules win when several prefixes match, so the target dir (inside
    // the checkout) comes after the checkout. CARGO_ENCODED_RUSTFLAGS keeps
    // paths with spaces whole and overrides any RUSTFLAGS of the caller.
    let cross = rust_std::cross_target(sh, platform)?;
    let with_acme = cross.is_none();
    let mut flags = match cross {
        None => vec!["-Ctarget-feature=+crt-static".to_string()],
        Some(cross) => vec![
            format!("--sysroot={}", cross.sysroot.display()),
            format!("-Clinker={}", cross.linker.display()),
            format!("--remap-path-prefix={}=/sysroot", cross.sysroot.display()),
        ],
    };
    flags.extend([
        format!("--remap-path-prefix={}=/cargo-home", cargo_home.display()),
        format!("--remap-path-prefix={}=/webstack", root.display()),
        format!("--remap-path-prefix={}=/target", cargo_target_dir.display()),
    ]);
    let flags = flags.join("\x1f");
    let cargo_auditable = super::auditable::ensure_cargo_auditable(sh)?;
    eprintln!(
        "images: cargo auditable build --release -p webapp -p proxy (static, {target}) in {}",
        cargo_target_dir.display()
    );
    // What `cargo auditable build` does (cargo-auditable's own front end):
    // cargo with cargo-auditable as RUSTC_WORKSPACE_WRAPPER and the cargo
    // flags it passes on to `cargo metadata` in CARGO_AUDITABLE_ORIG_ARGS.
    // Done here rather than through that front end because it names the
    // wrapper by its absolute path, and cargo hashes the wrapper's name
    // into every workspace crate's `-C metadata`, so the programs' bytes
    // would depend on where the tool cache is. Named bare, found on PATH,
    // the wrapper is the same string on every machine.
    let wrapper_dir = cargo_auditable
        .parent()
        .context("the cargo-auditable binary has no directory")?;
    let path = std::env::join_paths(
        std::iter::once(wrapper_dir.to_path_buf()).chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        ),
    )
    .context("put cargo-auditable's directory on PATH")?;
    let cargo_build = |packages: &[&str]| -> anyhow::Result<()> {
        cmd!(
            sh,
            "{cargo} build --release {packages...} --target {target}"
        )
        .env("PATH", &path)
        .env("RUSTC_WORKSPACE_WRAPPER", "cargo-auditable")
        .env(
            "CARGO_AUDITABLE_ORIG_ARGS",
            r#"{"offline":false,"locked":false,"frozen":false,"config":[]}"#,
        )
        .env("CARGO_TARGET_DIR", cargo_target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", &flags)
        .env_remove("RUSTFLAGS")
        .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
        .run()
        .with_context(|| {
            format!(
                "`cargo auditable build --release {}` failed (see the compiler output above)",
                packages.join(" ")
            )
        })
    };
    cargo_build(&[
        "--package",
        "webapp",
        "--bin",
        "webapp",
        "--package",
        "proxy",
        "--bin",
        "proxy-init",
        "--bin",
        "httpcheck",
    ])?;
    // A cargo invocation of its own: built with the others, the features its dependencies
    // need (hyper's client, tokio's and rustls's) would be unified into theirs, and the
    // webapp would grow by a fifth.
    if with_acme {
        cargo_build(&["--package", "acme", "--bin", "acme"])?;
    }
    let release_dir = cargo_target_dir.join(target).join("release");
    let binaries = WebappBinaries {
        webapp: release_dir.join("webapp"),
        httpcheck: release_dir.join("httpcheck"),
        proxy_init: release_dir.join("proxy-init"),
        acme: with_acme.then(|| release_dir.join("acme")),
    };
    let programs = [
        (Some(&binaries.webapp), "webapp"),
        (Some(&binaries.httpcheck), "proxy"),
        (Some(&binaries.proxy_init), "proxy"),
        (binaries.acme.as_ref(), "acme"),
    ];
    for (binary, package) in programs {
        let Some(binary) = binary else { continue };
        // cargo-auditable only warns when it cannot embed (an unsupported
        // target, a rustc command it does not understand): here that fails.
        let crates = super::auditable::embedded_crates(binary)?;
        if !crates.iter().any(|c| c.is_root && c.name == package) {
            bail!(
                "{} embeds a crate list whose root is not the {package} package",
                binary.display()
            )
        }
        let facts = xtask_debian::elf::elf_facts(binary)?;
        if !facts.needed.is_empty() {
            bail!(
                "{} still needs shared libraries ({}); the image has none. Is a dependency forcing dynamic linking (e.g. openssl)?",
                binary.display(),
                facts.needed.join(", ")
            )
        }
    }
    Ok(binaries)
}
