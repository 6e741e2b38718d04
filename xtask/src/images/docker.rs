//! The local Docker engine: reachability, `docker load` and tags.

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{BuiltImage, ImageArtifact, STABLE_TAG};

/// The image id a tag points at, if the tag exists.
pub fn image_id(sh: &Shell, reference: &str) -> Option<String> {
    let format = "{{.Id}}";
    cmd!(sh, "docker image inspect --format {format} {reference}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|id| id.trim().to_string())
}

/// Loads the archive unless the engine already has this exact image under its
/// content tag, then points the stable tag at it.
pub fn load_and_tag(sh: &Shell, artifact: &ImageArtifact) -> anyhow::Result<BuiltImage> {
    let repository = artifact.repository();
    let digest = format!("sha256:{}", artifact.config_digest_hex);
    let content_tag = format!("{repository}:{}", artifact.content_tag());
    let stable_tag = format!("{repository}:{STABLE_TAG}");
    if image_id(sh, &content_tag).as_deref() != Some(digest.as_str()) {
        let archive = &artifact.archive_path;
        eprintln!("images: docker load {}", archive.display());
        cmd!(sh, "docker load --quiet --input {archive}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("docker load {}", archive.display()))?;
        let loaded = image_id(sh, &content_tag);
        if loaded.as_deref() != Some(digest.as_str()) {
            bail!("after docker load, {content_tag} is {loaded:?}, expected {digest}")
        }
    }
    if image_id(sh, &stable_tag).as_deref() != Some(digest.as_str()) {
        cmd!(sh, "docker tag {content_tag} {stable_tag}")
            .quiet()
            .run()
            .with_context(|| format!("docker tag {content_tag} {stable_tag}"))?;
    }
    Ok(BuiltImage {
        name: artifact.name,
        stable_tag,
        content_tag,
        digest,
    })
}
