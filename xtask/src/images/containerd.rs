//! The image archives load into containerd's image store too, with the same
//! manifest digests: what Engines with the containerd image store (and
//! nerdctl, k3s, kind) do with `docker load`/`ctr images import`.
//!
//! Needs containerd's `ctr` and access to a containerd socket (root here),
//! so it is in the tier `cargo xtask ci` runs (`--ignored`). Everything it
//! imports goes into a namespace of its own, removed afterwards.

use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

/// Where containerd listens: `CONTAINERD_ADDRESS`, the system containerd,
/// or the one Docker Engine starts itself (Debian's docker.io).
const CANDIDATE_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
];

fn containerd_address(sh: &Shell) -> String {
    let candidates: Vec<String> = std::env::var("CONTAINERD_ADDRESS")
        .into_iter()
        .chain(CANDIDATE_SOCKETS.iter().map(|path| path.to_string()))
        .collect();
    for address in &candidates {
        if Path::new(address).exists()
            && cmd!(sh, "ctr --address {address} --timeout 5s version")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok()
        {
            return address.clone();
        }
    }
    panic!(
        "this test needs containerd's `ctr` and a containerd socket it may use; none of {candidates:?} answered (set CONTAINERD_ADDRESS)"
    );
}

/// `target/images/out/amd64/<name>.tar` and the manifest digest its build
/// recorded in `<name>.json`.
fn archive_and_manifest(out: &Path, name: &str) -> (PathBuf, String) {
    let record = out.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&record)
        .unwrap_or_else(|error| panic!("read {}: {error}", record.display()));
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("the build record is JSON");
    let manifest = parsed["manifest_digest"]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no manifest_digest", record.display()))
        .to_string();
    (out.join(format!("{name}.tar")), manifest)
}

#[test]
#[ignore = "needs Docker, containerd's ctr and root; cargo xtask ci runs it"]
fn every_image_archive_imports_into_containerd_with_the_manifest_digest_of_its_build() {
    let sh = Shell::new().expect("shell");
    super::ensure_images(&sh).expect("build the images");
    let address = containerd_address(&sh);
    let namespace = format!("webstack-test-{}", crate::docker::unique_suffix());
    let out = crate::project_root().join("target/images/out/amd64");

    let outcome = std::panic::catch_unwind(|| {
        for name in ["webapp", "db", "proxy"] {
            let (archive, manifest) = archive_and_manifest(&out, name);
            cmd!(
                sh,
                "ctr --address {address} --namespace {namespace} images import {archive}"
            )
            .quiet()
            .ignore_stdout()
            .run()
            .unwrap_or_else(|error| panic!("ctr images import {}: {error}", archive.display()));
            let listed = cmd!(
                sh,
                "ctr --address {address} --namespace {namespace} images ls"
            )
            .quiet()
            .read()
            .expect("ctr images ls");
            let repository = format!("docker.io/webstack/{name}:");
            let digests: Vec<&str> = listed
                .lines()
                .filter(|line| line.starts_with(&repository))
                .filter_map(|line| line.split_whitespace().nth(2))
                .collect();
            eprintln!("containerd: {name}: {digests:?}");
            assert!(
                !digests.is_empty(),
                "containerd lists no {repository}* image after the import:\n{listed}"
            );
            assert!(
                digests.iter().all(|digest| *digest == manifest),
                "containerd sees {name} as {digests:?}, the build made {manifest}"
            );
        }
    });

    // Remove what the test imported, then its namespace (which fails while
    // anything is left in it).
    let references = cmd!(
        sh,
        "ctr --address {address} --namespace {namespace} images ls --quiet"
    )
    .quiet()
    .read()
    .unwrap_or_default();
    let references: Vec<&str> = references.split_whitespace().collect();
    if !references.is_empty() {
        let _ = cmd!(
            sh,
            "ctr --address {address} --namespace {namespace} images rm --sync {references...}"
        )
        .quiet()
        .ignore_stdout()
        .run();
    }
    let removed = cmd!(sh, "ctr --address {address} namespaces rm {namespace}")
        .quiet()
        .ignore_stdout()
        .run();
    if let Err(payload) = outcome {
        std::panic::resume_unwind(payload);
    }
    removed.expect("remove the test's containerd namespace");
}
