//! The flake's Nix images against the stack model: each image's name,
//! user, entrypoint, healthcheck, stop signal, ports and working directory
//! must be what `cargo xtask images` builds from `stack.rs` for the Debian
//! images.

use std::collections::BTreeMap;

use super::*;

/// What a Nix image's `streamLayeredImage` arguments say, as
/// eval-flake.nix's `images` prints them.
#[derive(Debug, serde::Deserialize)]
struct NixImage {
    name: String,
    tag: String,
    config: NixImageConfig,
}

/// The parts of an image config the test compares; others are ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NixImageConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    healthcheck: Option<NixHealthcheck>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    working_dir: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NixHealthcheck {
    test: Vec<String>,
}

/// What an image of service `service` must say, from the model.
#[derive(Debug, PartialEq, Eq)]
struct ExpectedImage {
    /// The flake's package: `{service}-image`.
    attribute: String,
    /// `webstack/webapp:local`.
    reference: String,
    user: String,
    entrypoint: Vec<String>,
    /// Docker's exec form: `CMD` and the model's command.
    healthcheck: Vec<String>,
    stop_signal: String,
    exposed_ports: Vec<String>,
    working_dir: String,
}

/// Every Nix image as the model says it must be: one per image service of
/// xtask/src/stack.rs, with the user, healthcheck command and stop
/// signal `cargo xtask images` reads from it, the repository and the
/// stable tag, the ports the service listens on, and as working
/// directory the service's (the db's /data, else /).
fn expected_images() -> anyhow::Result<Vec<ExpectedImage>> {
    let model = stack::stack();
    let mut expected = Vec::new();
    for name in crate::stack::IMAGE_SERVICES {
        let service = model.service(name)?;
        let entrypoint = crate::stack::entrypoint(service.name)?;
        let working_dir = service.working_dir.to_owned();
        expected.push(ExpectedImage {
            attribute: format!("{}-image", service.name),
            reference: format!("{}:{}", service.image.repository, crate::images::STABLE_TAG),
            user: service.user.to_owned(),
            entrypoint,
            healthcheck: std::iter::once("CMD".to_owned())
                .chain(service.healthcheck.command.iter().cloned())
                .collect(),
            stop_signal: service.stop_signal.to_owned(),
            exposed_ports: model.listening_ports(service)?,
            working_dir,
        });
    }
    Ok(expected)
}

/// Every way the Nix images differ from the model, one line each.
fn image_differences(
    expected: &[ExpectedImage],
    nix_images: &BTreeMap<String, NixImage>,
) -> Vec<String> {
    let mut differences = Vec::new();
    for image in expected {
        let Some(nix) = nix_images.get(&image.attribute) else {
            differences.push(format!(
                "flake.nix has no package {} for service {}",
                image.attribute, image.reference
            ));
            continue;
        };
        let config = &nix.config;
        let mut compare = |field: &str, flake: String, model: String| {
            if flake != model {
                differences.push(format!(
                    "{}: {field} is {flake} in flake.nix, the model (xtask/src/stack.rs) says {model}",
                    image.attribute
                ));
            }
        };
        compare(
            "the name",
            format!("{:?}", format!("{}:{}", nix.name, nix.tag)),
            format!("{:?}", image.reference),
        );
        compare(
            "User",
            format!("{:?}", config.user),
            format!("{:?}", Some(&image.user)),
        );
        compare(
            "Entrypoint",
            format!("{:?}", config.entrypoint),
            format!("{:?}", image.entrypoint),
        );
        compare(
            "Healthcheck.Test",
            format!("{:?}", config.healthcheck.as_ref().map(|check| &check.test)),
            format!("{:?}", Some(&image.healthcheck)),
        );
        compare(
            "StopSignal",
            format!("{:?}", config.stop_signal),
            format!("{:?}", Some(&image.stop_signal)),
        );
        compare(
            "ExposedPorts",
            format!("{:?}", config.exposed_ports.keys().collect::<Vec<_>>()),
            format!("{:?}", image.exposed_ports),
        );
        compare(
            "WorkingDir",
            format!("{:?}", config.working_dir.as_deref().unwrap_or("/")),
            format!("{:?}", image.working_dir),
        );
    }
    for attribute in nix_images.keys() {
        if !expected.iter().any(|image| &image.attribute == attribute) {
            differences.push(format!(
                "flake.nix has {attribute}, but the model has no service {:?}",
                attribute.trim_end_matches("-image")
            ));
        }
    }
    differences
}

#[test]
fn the_expected_images_come_from_the_model() -> anyhow::Result<()> {
    let expected = expected_images()?;

    let db = expected
        .iter()
        .find(|image| image.attribute == "db-image")
        .context("no db-image expected")?;
    let model = stack::stack();
    let model_db = model.service(stack::DB)?;
    assert_eq!(db.user, model_db.user);
    assert_eq!(db.stop_signal, model_db.stop_signal);
    assert_eq!(db.healthcheck[1..], model_db.healthcheck.command[..]);
    assert_eq!(db.reference, "webstack/db:local");
    assert_eq!(db.exposed_ports, ["6379/tcp"]);
    assert_eq!(db.working_dir, "/data");
    let ports: Vec<(&str, &[String])> = expected
        .iter()
        .map(|image| (image.attribute.as_str(), &image.exposed_ports[..]))
        .collect();
    assert_eq!(
        ports,
        [
            ("db-image", &["6379/tcp".to_owned()][..]),
            ("webapp-image", &["5000/tcp".to_owned()][..]),
            ("proxy-image", &["80/tcp".to_owned()][..]),
        ]
    );
    Ok(())
}

#[test]
fn a_nix_image_that_drifts_from_the_model_is_named_with_the_field() -> anyhow::Result<()> {
    let expected = expected_images()?;
    // As eval-flake.nix prints them, built from the model itself, then
    // one drift: a user the model does not have, and an extra image.
    let mut nix_images: BTreeMap<String, NixImage> = expected
        .iter()
        .map(|image| {
            let (name, tag) = image.reference.rsplit_once(':').unwrap_or_default();
            let ports: serde_json::Map<String, serde_json::Value> = image
                .exposed_ports
                .iter()
                .map(|port| (port.clone(), serde_json::json!({})))
                .collect();
            let json = serde_json::json!({
                "name": name,
                "tag": tag,
                "config": {
                    "User": image.user,
                    "Entrypoint": image.entrypoint,
                    "Healthcheck": { "Test": image.healthcheck, "Interval": 1 },
                    "StopSignal": image.stop_signal,
                    "ExposedPorts": ports,
                    "WorkingDir": image.working_dir,
                    "Env": ["PATH=/usr/bin"],
                },
            });
            Ok((image.attribute.clone(), serde_json::from_value(json)?))
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(
        image_differences(&expected, &nix_images),
        Vec::<String>::new()
    );

    nix_images
        .get_mut("proxy-image")
        .context("no proxy-image")?
        .config
        .user = Some("0:0".to_owned());
    let extra = serde_json::from_value(serde_json::json!({
        "name": "webstack/cache", "tag": "local", "config": {}
    }))?;
    nix_images.insert("cache-image".to_owned(), extra);

    let differences = image_differences(&expected, &nix_images);

    assert_eq!(
        differences,
        [
            "proxy-image: User is Some(\"0:0\") in flake.nix, the model (xtask/src/stack.rs) says Some(\"65532:65532\")",
            "flake.nix has cache-image, but the model has no service \"cache\"",
        ]
    );
    Ok(())
}

#[test]
#[ignore = "needs nix-instantiate; cargo xtask ci runs it"]
fn nix_images_match_the_model_the_debian_images_are_built_from() -> anyhow::Result<()> {
    let expected = expected_images()?;

    let nix_images: BTreeMap<String, NixImage> = evaluate_flake("images")?;

    let differences = image_differences(&expected, &nix_images);
    assert!(
        differences.is_empty(),
        "flake.nix's images drifted from the stack model:\n  {}",
        differences.join("\n  ")
    );
    Ok(())
}
