//! The local Docker engine: reachability, `docker load` and tags.

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{BuiltImage, ImageArtifact};

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
    let digest = artifact.config_digest.to_string();
    let content_tag = format!("{repository}:{}", artifact.content_tag());
    let stable_tag = format!("{repository}:{}", artifact.platform.stable_tag());
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
        digest: artifact.config_digest.clone(),
    })
}

/// Removes the project's own image tags that nothing needs any more: not
/// this build's content tags, not the stable tags, and not the image of any
/// container (running or stopped). Other repositories are never touched.
pub fn prune_old_images(sh: &Shell, current: &[BuiltImage]) -> anyhow::Result<()> {
    let format = "{{.Repository}}:{{.Tag}} {{.ID}}";
    let mut listed = String::new();
    for image in current {
        let repository = image
            .stable_tag
            .split_once(':')
            .map_or(image.stable_tag.as_str(), |(repository, _)| repository);
        listed.push_str(
            &cmd!(
                sh,
                "docker image ls --no-trunc --format {format} {repository}"
            )
            .quiet()
            .read()
            .with_context(|| format!("list the images of {repository}"))?,
        );
        listed.push('\n');
    }
    let image_format = "{{.Image}}";
    let used = cmd!(sh, "docker ps --all --no-trunc --format {image_format}")
        .quiet()
        .read()
        .context("list the images containers use")?;
    let used_ids = cmd!(sh, "docker ps --all --quiet")
        .quiet()
        .read()
        .context("list the containers")?;
    let mut in_use: Vec<String> = used.lines().map(str::to_string).collect();
    for id in used_ids.split_whitespace() {
        if let Ok(image) = cmd!(sh, "docker inspect --format {image_format} {id}")
            .quiet()
            .ignore_stderr()
            .read()
        {
            in_use.push(image.trim().to_string());
        }
    }
    let keep: Vec<String> = current
        .iter()
        .flat_map(|image| [image.stable_tag.clone(), image.content_tag.clone()])
        .collect();
    let stale = stale_tags(&listed, &keep, &in_use);
    if stale.is_empty() {
        eprintln!("images: nothing to prune");
        return Ok(());
    }
    for tag in &stale {
        eprintln!("images: removing {tag}");
    }
    cmd!(sh, "docker image rm {stale...}")
        .run()
        .context("remove the old image tags")?;
    Ok(())
}

/// From `docker image ls` lines (`repository:tag id`), the tags to remove:
/// not kept by name, and neither their tag nor their id used by a container.
pub fn stale_tags(listed: &str, keep: &[String], in_use: &[String]) -> Vec<String> {
    let mut stale = Vec::new();
    for line in listed.lines() {
        let Some((reference, id)) = line.split_once(' ') else {
            continue;
        };
        if reference.ends_with(":<none>") || keep.iter().any(|kept| kept == reference) {
            continue;
        }
        if in_use.iter().any(|used| used == reference || used == id) {
            continue;
        }
        if !stale.iter().any(|known: &String| known == reference) {
            stale.push(reference.to_string());
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::stale_tags;

    #[test]
    fn only_unused_tags_other_than_the_current_build_and_local_are_stale() {
        let listed = "webstack/webapp:local sha256:aaa\n\
                      webstack/webapp:aaaaaaaaaaaa sha256:aaa\n\
                      webstack/webapp:bbbbbbbbbbbb sha256:bbb\n\
                      webstack/webapp:cccccccccccc sha256:ccc\n\
                      webstack/webapp:dddddddddddd sha256:ddd\n\
                      webstack/webapp:<none> sha256:eee\n";
        let keep = [
            "webstack/webapp:local".to_string(),
            "webstack/webapp:aaaaaaaaaaaa".to_string(),
        ];
        // One container runs an old tag, another an image by id.
        let in_use = [
            "webstack/webapp:bbbbbbbbbbbb".to_string(),
            "sha256:ccc".to_string(),
        ];
        assert_eq!(
            stale_tags(listed, &keep, &in_use),
            vec!["webstack/webapp:dddddddddddd"]
        );
    }
}
