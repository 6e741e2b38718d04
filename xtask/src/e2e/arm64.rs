//! `cargo xtask e2e --arm64`: the arm64 images, run for real on this
//! machine under emulation (the pinned static qemu registered with
//! binfmt_misc, `images::Emulation`). A smoke test, not a benchmark: a
//! Compose stack of the arm64 images comes up healthy, `GET /` answers
//! through the proxy and counts. Skipped, in one line, where the machine
//! cannot register a binfmt_misc handler.
//!
//! It runs the images under their content tags and never touches the
//! host's `:local` ones; the stack, its volume and the handler are removed
//! whatever happened.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::compose::ComposeProject;
use crate::docker::{self, deployment::Deployment};
use crate::images::{self, Emulation, Platform, Unavailable};
use crate::stack::{StackImages, DB, WEBAPP};

const PLATFORM: Platform = Platform::Arm64;
const LOG: &str = "e2e --arm64";
/// Emulation makes every start and healthcheck several times slower.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// One request through the proxy to an emulated webapp and Redis.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// redis-server for aarch64 tests the kernel at start for a copy-on-write
/// bug of old arm64 kernels (fixed by Linux commit ff1712f953e2, "arm64:
/// pgtable: Ensure dirty bit is preserved across pte_wrprotect()"): it forks
/// after `MADV_FREE` and reads `Shared_Dirty` in `/proc/self/smaps`. Under qemu-user that reads qemu's account of the
/// memory, the test fails and Redis exits ("Your kernel has a bug that could
/// lead to data corruption during background save"). Real arm64 kernels
/// pass it, so the deploy files keep the check; only the emulated stack
/// turns it off.
const EMULATED_DB_ARGUMENTS: [&str; 2] = ["--ignore-warnings", "ARM64-COW-BUG"];

/// The Compose file of the stack, with [`EMULATED_DB_ARGUMENTS`] added to
/// db's command, written to `target/`: at the same depth as `deploy/`, so
/// the file's relative secret paths (`../.secrets/…`) name the same files.
fn write_emulated_compose_file(project_name: &str) -> anyhow::Result<PathBuf> {
    let mut stack = crate::stack::stack();
    let db = (stack.services.iter_mut())
        .find(|service| service.name == DB)
        .context("the stack description has no db service")?;
    db.command.extend(EMULATED_DB_ARGUMENTS.map(str::to_string));
    let text = crate::render::render_compose(&stack)?;
    let dir = crate::project_root().join("target");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{project_name}.compose.yaml"));
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// What the smoke test measured once the images were loaded.
struct Figures {
    healthy_after: Duration,
    first_answer: Duration,
    second_answer: Duration,
}

pub fn run_arm64_smoke(sh: &Shell) -> anyhow::Result<()> {
    let started = Instant::now();
    let registration = match Emulation::register(PLATFORM) {
        Ok(registration) => registration,
        Err(Unavailable::Impossible(reason)) => {
            eprintln!("{LOG}: skipped: {reason}");
            return Ok(());
        }
        Err(Unavailable::Failed(error)) => {
            return Err(error.context(format!("set up {PLATFORM} emulation")))
        }
    };
    eprintln!("{LOG}: {PLATFORM} runs under {}", registration.describe());
    docker::require_docker(sh)?;

    eprintln!("{LOG}: building and loading the {PLATFORM} images");
    let built = images::ensure_images_for(sh, PLATFORM)
        .with_context(|| format!("build and load the {PLATFORM} images"))?;
    let images_loaded = started.elapsed();
    for image in &built {
        eprintln!("{LOG}: {} = {}", image.stable_tag, image.content_tag);
    }
    let images = StackImages::from_built(&built)?;

    let project_name = format!("webstack-arm64-{}", docker::unique_suffix());
    let port = docker::free_host_port()?;
    let mut project = ComposeProject::new(sh, &project_name, port)?;
    if Platform::host() != Some(PLATFORM) {
        project.file = write_emulated_compose_file(&project_name)?;
    }
    eprintln!(
        "{LOG}: project {project_name} on host port {port} ({})",
        project.file.display()
    );
    let outcome = start_and_check(sh, &mut project, &images);
    if outcome.is_err() {
        eprintln!("{LOG}: failed; the stack's recent logs follow");
        let _ = project
            .command(sh, &["logs", "--no-color", "--tail=60"])
            .run();
    }
    eprintln!("{LOG}: removing project {project_name}");
    let mut cleanup = project.remove(sh, true);
    drop(registration);
    if project.file != crate::render::compose_file_path() {
        let _ = std::fs::remove_file(&project.file);
    }
    if cleanup.is_ok() {
        cleanup = check_local_tags_untouched(sh, &built);
    }
    let figures = match (outcome, cleanup) {
        (Ok(figures), Ok(())) => figures,
        (outcome, cleanup) => {
            let outcome = outcome.map(|_| ());
            super::verdict(
                LOG,
                "the arm64 smoke test",
                "removing the project",
                outcome,
                cleanup,
            )?;
            bail!("the arm64 smoke test failed")
        }
    };
    eprintln!(
        "{LOG}: passed in {:.0}s: images loaded after {:.1}s, stack healthy {:.1}s after deploy, \
         first GET / {:.0} ms, second {:.0} ms",
        started.elapsed().as_secs_f64(),
        images_loaded.as_secs_f64(),
        figures.healthy_after.as_secs_f64(),
        figures.first_answer.as_secs_f64() * 1000.0,
        figures.second_answer.as_secs_f64() * 1000.0,
    );
    Ok(())
}

/// Starts the stack with one webapp replica, checks that every container
/// runs an arm64 image (and the webapp under the emulator), then `GET /`
/// twice: a greeting, and the count up by one.
fn start_and_check(
    sh: &Shell,
    project: &mut ComposeProject,
    images: &StackImages,
) -> anyhow::Result<Figures> {
    let deploying = Instant::now();
    project.deploy(sh, Some(images), 1)?;
    project.wait_ready(sh, READY_TIMEOUT)?;
    let healthy_after = deploying.elapsed();
    eprintln!(
        "{LOG}: healthy and serving after {:.1}s",
        healthy_after.as_secs_f64()
    );

    for service in crate::stack::stack()
        .services
        .iter()
        .map(|service| service.name)
    {
        for container in project.containers(sh, service)? {
            let architecture = image_architecture(sh, &container.config.image)?;
            if architecture != PLATFORM.oci_architecture() {
                bail!(
                    "{} runs {}, whose architecture is {architecture}, not {}",
                    container.short_name(),
                    container.config.image,
                    PLATFORM.oci_architecture()
                );
            }
            eprintln!(
                "{LOG}: {} runs {} ({architecture})",
                container.short_name(),
                container.config.image
            );
        }
    }
    for container in project.containers(sh, WEBAPP)? {
        check_emulated(container.state.pid, container.short_name())?;
    }

    let url = super::suite_url("127.0.0.1", project.port, &[])?;
    let agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .new_agent();
    let (first, first_answer) = greeting(&agent, &url)?;
    let (second, second_answer) = greeting(&agent, &url)?;
    eprintln!("{LOG}: GET / answered {first:?}, then {second:?}");
    let count = |answer: &str| seen_count(answer).with_context(|| format!("GET / said {answer:?}"));
    if count(&second)? != count(&first)? + 1 {
        bail!("the count did not go up by one: {first:?}, then {second:?}");
    }
    Ok(Figures {
        healthy_after,
        first_answer,
        second_answer,
    })
}

/// `GET /` through the proxy: its body and how long it took.
fn greeting(agent: &ureq::Agent, url: &str) -> anyhow::Result<(String, Duration)> {
    let sent = Instant::now();
    let body = agent
        .get(format!("{url}/"))
        .call()
        .with_context(|| format!("GET {url}/"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("read the answer to GET {url}/"))?;
    Ok((body.trim().to_string(), sent.elapsed()))
}

/// N in `Hello from <replica>! I have been seen N times.`
fn seen_count(answer: &str) -> Option<u64> {
    let rest = answer.strip_prefix("Hello from ")?;
    let (_, seen) = rest.split_once("! I have been seen ")?;
    seen.strip_suffix(" times.")?.parse().ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageFacts {
    architecture: String,
}

fn image_architecture(sh: &Shell, reference: &str) -> anyhow::Result<String> {
    let facts: Vec<ImageFacts> = docker::inspect(sh, "image", &[reference.to_string()])?;
    let facts = facts
        .into_iter()
        .next()
        .with_context(|| format!("the engine has no image {reference}"))?;
    Ok(facts.architecture)
}

/// An arm64 process on this x86_64 machine runs inside the emulator: its
/// `/proc/PID/exe` is qemu. Only said, not checked, where /proc hides it.
fn check_emulated(pid: u32, container: &str) -> anyhow::Result<()> {
    if Platform::host() == Some(PLATFORM) {
        return Ok(());
    }
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) if exe.to_string_lossy().contains("qemu-") => {
            eprintln!(
                "{LOG}: {container} (pid {pid}) runs under {}",
                exe.display()
            );
            Ok(())
        }
        Ok(exe) => bail!(
            "{container} (pid {pid}) runs {}, not an emulator",
            exe.display()
        ),
        Err(error) => {
            eprintln!("{LOG}: cannot see what {container} (pid {pid}) runs: {error}");
            Ok(())
        }
    }
}

/// Fails if one of the host's `webstack/<name>:local` tags points at an
/// image this test loaded: those tags stay the host's own platform's.
/// (Other checkouts may move them meanwhile; that is not compared.)
fn check_local_tags_untouched(sh: &Shell, built: &[images::BuiltImage]) -> anyhow::Result<()> {
    for image in built {
        let reference = format!("webstack/{}:{}", image.name, images::STABLE_TAG);
        let format = "{{.Id}}";
        let id = cmd!(sh, "docker image inspect --format {format} {reference}")
            .quiet()
            .ignore_stderr()
            .read();
        if id.is_ok_and(|id| id.trim() == image.digest) {
            bail!(
                "{reference} points at the {PLATFORM} image {}",
                image.content_tag
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_from_the_greeting() {
        assert_eq!(
            seen_count("Hello from 3f2a9c1b7d0e! I have been seen 12 times."),
            Some(12)
        );
        assert_eq!(
            seen_count("Hello from x! I have been seen many times."),
            None
        );
        assert_eq!(seen_count("502 Bad Gateway"), None);
    }
}
