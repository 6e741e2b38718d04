//! `push` against the real pinned registry on loopback, twice: plain HTTP,
//! and TLS with the test's own CA and htpasswd auth. The registry, the relay
//! that drops a connection and Docker are real; nothing is mocked. Ignored
//! in a plain `cargo test` (they need the pinned registry, and one test the
//! engine); `cargo xtask ci` runs them.

mod registry;
mod relay;

use std::sync::OnceLock;
use std::time::Instant;

use serde::Deserialize;
use xshell::{cmd, Shell};

use super::{push_images, Credentials, PushTarget, PushedImage};
use crate::images::Platform;
use registry::TestRegistry;
use relay::Relay;
use xtask_oci::image::{OCI_CONFIG_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE};
use xtask_oci::{image_index, Blob, Index, MultiPlatformImage, PlatformImage};

const PREFIX: &str = "webstack";
/// What a registry may answer for a manifest, in an Accept header.
const MANIFEST_TYPES: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

fn shell() -> Shell {
    let sh = Shell::new().expect("a shell");
    sh.change_dir(crate::project_root());
    sh
}

/// The real amd64 images, built once per test process.
fn real_images() -> &'static [MultiPlatformImage] {
    static IMAGES: OnceLock<Vec<MultiPlatformImage>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        crate::images::multi_platform_images(&shell(), &[Platform::Amd64])
            .unwrap_or_else(|error| panic!("build the images: {error:?}"))
    })
}

fn target_for(registry: &TestRegistry) -> PushTarget {
    PushTarget {
        ca_file: registry.ca_file.clone(),
        credentials: match &registry.login {
            Some((username, password)) => Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            None => Credentials::DockerConfig,
        },
        ..PushTarget::parse(&format!("{}/{PREFIX}", registry.registry())).expect("a target")
    }
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn json_blob(media_type: &'static str, value: &serde_json::Value) -> Blob {
    Blob {
        media_type,
        bytes: serde_json::to_vec(value).expect("serialise"),
    }
}

/// A one-layer image for `platform` with `layer` as its layer.
fn synthetic_platform_image(platform: Platform, layer: Vec<u8>) -> PlatformImage {
    let layer = Blob {
        media_type: LAYER_MEDIA_TYPE,
        bytes: layer,
    };
    let config = json_blob(
        OCI_CONFIG_MEDIA_TYPE,
        &serde_json::json!({
            "architecture": platform.oci_architecture(),
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest()]},
        }),
    );
    let descriptor = |blob: &Blob| serde_json::json!({"mediaType": blob.media_type, "digest": blob.digest(), "size": blob.size()});
    let manifest = json_blob(
        OCI_MANIFEST_MEDIA_TYPE,
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": descriptor(&config),
            "layers": [descriptor(&layer)],
        }),
    );
    PlatformImage {
        platform: platform.oci(),
        manifest,
        config,
        layers: vec![layer],
        attestation: None,
    }
}

fn synthetic_image(name: &'static str, platforms: Vec<PlatformImage>) -> MultiPlatformImage {
    MultiPlatformImage {
        name,
        index: image_index(&platforms).expect("an index"),
        platforms,
    }
}

fn push(target: &PushTarget, images: &[MultiPlatformImage]) -> anyhow::Result<Vec<PushedImage>> {
    push_images(&shell(), target, images)
}

/// Every manifest and the index are there by digest, byte for byte, and the
/// content tag names the index.
fn assert_fetchable_by_digest(registry: &TestRegistry, image: &MultiPlatformImage) {
    let repository = format!("{PREFIX}/{}", image.name);
    let index_digest = image.index.digest();
    for (digest, bytes) in image
        .platforms
        .iter()
        .map(|platform| (platform.manifest.digest(), &platform.manifest.bytes))
        .chain([(index_digest.clone(), &image.index.bytes)])
    {
        let answer = registry.get(
            &format!("/v2/{repository}/manifests/{digest}"),
            MANIFEST_TYPES,
        );
        assert_eq!(answer.status, 200, "{repository}@{digest}");
        assert_eq!(&answer.body, bytes, "{repository}@{digest}");
        assert_eq!(
            answer.digest_header.as_deref(),
            Some(digest.to_string().as_str())
        );
    }
    let tag = super::session::content_tag(&index_digest);
    let by_tag = registry.get(&format!("/v2/{repository}/manifests/{tag}"), MANIFEST_TYPES);
    assert_eq!(by_tag.status, 200, "{repository}:{tag}");
    assert_eq!(
        by_tag.digest_header.as_deref(),
        Some(index_digest.to_string().as_str())
    );
    assert_eq!(registry.tags(&repository), vec![tag]);
}

/// Push, check, push again: the second sends no blob, and the registry's
/// log shows no upload after the first push.
fn push_twice_and_check(registry: &TestRegistry, images: &[MultiPlatformImage]) {
    let target = target_for(registry);
    let started = Instant::now();
    let first = push(&target, images).unwrap_or_else(|error| panic!("{error:?}"));
    let cold = started.elapsed();
    for (image, pushed) in images.iter().zip(&first) {
        assert_fetchable_by_digest(registry, image);
        assert_eq!(
            pushed.reference_by_digest,
            format!(
                "{}/{PREFIX}/{}@{}",
                registry.registry(),
                image.name,
                image.index.digest()
            )
        );
        assert!(
            pushed.blobs_sent > 0 && pushed.blobs_skipped == 0,
            "{pushed:?}"
        );
    }
    let first_log = registry.log();
    assert!(
        first_log.contains("/blobs/uploads/"),
        "the registry's log shows no upload, so it cannot show a second one:\n{first_log}"
    );
    let started = Instant::now();
    let second = push(&target, images).unwrap_or_else(|error| panic!("{error:?}"));
    let warm = started.elapsed();
    eprintln!(
        "push to {}: cold {:.2} s, warm {:.2} s",
        registry.registry(),
        cold.as_secs_f64(),
        warm.as_secs_f64()
    );
    for (first, second) in first.iter().zip(&second) {
        assert_eq!(first.reference_by_digest, second.reference_by_digest);
        assert_eq!((second.blobs_sent, second.bytes_sent), (0, 0), "{second:?}");
        assert_eq!(second.blobs_skipped, first.blobs_sent);
    }
    let second_log = &registry.log()[first_log.len()..];
    assert!(
        !second_log.contains("/blobs/uploads/"),
        "the second push uploaded a blob:\n{second_log}"
    );
    for image in images {
        assert_fetchable_by_digest(registry, image);
    }
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn push_to_plain_http_loopback_registry_sends_each_blob_once() {
    let registry = TestRegistry::plain();
    push_twice_and_check(&registry, real_images());
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn push_to_tls_registry_with_login_sends_each_blob_once() {
    let registry = TestRegistry::tls_with_login();
    push_twice_and_check(&registry, real_images());
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedImage {
    id: String,
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn host_docker_pulls_pushed_images_by_digest() {
    let sh = shell();
    crate::docker::require_docker(&sh).expect("a Docker engine");
    let registry = TestRegistry::plain();
    let images = real_images();
    let pushed = push(&target_for(&registry), images).unwrap_or_else(|error| panic!("{error:?}"));
    for (image, pushed) in images.iter().zip(&pushed) {
        let reference = &pushed.reference_by_digest;
        let pulled = cmd!(sh, "docker pull --quiet {reference}").quiet().output();
        let inspected = cmd!(sh, "docker image inspect {reference}").quiet().read();
        let removed = cmd!(sh, "docker image rm {reference}")
            .quiet()
            .ignore_stdout()
            .run();
        pulled
            .unwrap_or_else(|error| panic!("docker pull {reference}: {error}\n{}", registry.log()));
        let inspected: Vec<InspectedImage> =
            serde_json::from_str(&inspected.expect("docker image inspect")).expect("inspect JSON");
        removed.unwrap_or_else(|error| panic!("docker image rm {reference}: {error}"));
        let amd64 = image
            .platforms
            .iter()
            .find(|platform| platform.platform == Platform::Amd64.oci())
            .expect("an amd64 image");
        assert_eq!(
            inspected[0].id,
            amd64.config.digest().to_string(),
            "{reference}"
        );
    }
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn two_platform_index_lists_both_manifests_with_their_platforms() {
    let registry = TestRegistry::plain();
    let image = synthetic_image(
        "webapp",
        Platform::ALL
            .iter()
            .map(|&platform| synthetic_platform_image(platform, noise(platform as u64 + 7, 4096)))
            .collect(),
    );
    let pushed = push(&target_for(&registry), std::slice::from_ref(&image))
        .unwrap_or_else(|error| panic!("{error:?}"));
    assert_eq!(pushed[0].blobs_sent, 4);
    assert_fetchable_by_digest(&registry, &image);

    let answer = registry.get(
        &format!("/v2/{PREFIX}/webapp/manifests/{}", image.index.digest()),
        MANIFEST_TYPES,
    );
    let index: Index = serde_json::from_slice(&answer.body).expect("an index");
    assert_eq!(index.media_type, OCI_INDEX_MEDIA_TYPE);
    let listed: Vec<Option<String>> = index
        .manifests
        .iter()
        .map(|entry| entry.platform.as_ref().map(ToString::to_string))
        .collect();
    assert_eq!(
        listed,
        [Some("linux/amd64".into()), Some("linux/arm64".into())]
    );
    for (entry, platform) in index.manifests.iter().zip(&image.platforms) {
        assert_eq!(entry.media_type, OCI_MANIFEST_MEDIA_TYPE);
        assert_eq!(entry.digest, platform.manifest.digest());
        let manifest = registry.get(
            &format!("/v2/{PREFIX}/webapp/manifests/{}", entry.digest),
            MANIFEST_TYPES,
        );
        assert_eq!(manifest.status, 200);
    }
}

/// A one-platform image of `name` whose layer is `layer_size` bytes.
fn small_image(name: &'static str, seed: u64, layer_size: usize) -> MultiPlatformImage {
    synthetic_image(
        name,
        vec![synthetic_platform_image(
            Platform::Amd64,
            noise(seed, layer_size),
        )],
    )
}

/// Pushes `image`, which must fail, and returns the error's whole chain
/// (as `main` prints it) after checking that the registry holds neither a
/// tag nor the index of the image.
fn failed_push(registry: &TestRegistry, target: &PushTarget, image: &MultiPlatformImage) -> String {
    let error = push(target, std::slice::from_ref(image)).expect_err("the push succeeded");
    let message = format!("{error:#}");
    eprintln!("the push failed as it should: {message}");
    let repository = format!("{PREFIX}/{}", image.name);
    assert!(
        registry.tags(&repository).is_empty(),
        "{repository} has a tag"
    );
    let index = registry.get(
        &format!("/v2/{repository}/manifests/{}", image.index.digest()),
        MANIFEST_TYPES,
    );
    assert_eq!(
        index.status, 404,
        "the index of a half-pushed image is there"
    );
    assert!(
        message.contains(&format!("push image {} to", image.name)),
        "{message}"
    );
    message
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn wrong_password_is_a_clear_error_and_tags_nothing() {
    let registry = TestRegistry::tls_with_login();
    let target = PushTarget {
        credentials: Credentials::Basic {
            username: "pusher".to_string(),
            password: "wrong-password".to_string(),
        },
        ..target_for(&registry)
    };
    let message = failed_push(&registry, &target, &small_image("db", 3, 1024));
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("credentials"), "{message}");
    assert!(message.contains(&registry.registry()), "{message}");
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn untrusted_certificate_is_a_clear_tls_error() {
    let registry = TestRegistry::tls_with_login();
    let target = PushTarget {
        ca_file: None,
        ..target_for(&registry)
    };
    let message = failed_push(&registry, &target, &small_image("proxy", 5, 1024));
    assert!(message.contains("TLS"), "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("--ca-file"), "{message}");
}

#[test]
#[ignore = "needs the pinned docker-registry (cargo xtask ci runs it)"]
fn connection_dropped_mid_blob_names_the_blob_and_tags_nothing() {
    let registry = TestRegistry::plain();
    // 16 MiB: several of the client's 4 MiB upload chunks; the relay cuts
    // in the second.
    let image = small_image("webapp", 11, 16 << 20);
    let large_blob = image.platforms[0].layers[0].digest();
    let relay = Relay::start(registry.address, 6 << 20);
    let target = PushTarget::parse(&format!("{}/{PREFIX}", relay.address)).expect("a target");
    let message = failed_push(&registry, &target, &image);
    assert!(relay.cut(), "the relay never cut the connection");
    assert!(
        message.contains(&format!("upload blob {large_blob}")),
        "{message}"
    );
}
