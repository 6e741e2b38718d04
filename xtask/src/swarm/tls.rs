//! HTTPS at the front of a Swarm stack (`swarm deploy --tls`): `deploy/stack.tls.yaml`
//! deployed over the plain file with the certificate and key as two secrets, or
//! `deploy/stack.acme.yaml` with the `acme` service that gets the certificate, its CA root a
//! secret. Each secret is named by version (a Swarm secret cannot change, so a renewed
//! certificate is a new pair of secrets), and the versions no service of the stack uses any
//! more are removed once it has converged.

use std::path::PathBuf;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{Service, STACK_NAMESPACE_LABEL};
use crate::stack;
use crate::tls::{TlsArgs, TlsSource};

/// The longest name Swarm takes for a secret.
const MAX_SECRET_NAME: usize = 64;

/// Where the front's certificate comes from on Swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    /// A chain and key of the deployer's (`--tls self-signed|files`): `deploy/stack.tls.yaml`,
    /// the two as secrets.
    Secrets,
    /// The stack's own `acme` service (`--tls acme`): `deploy/stack.acme.yaml`, the CA's root
    /// as a secret and the service's settings from `acme.env`.
    Acme,
}

impl Certificate {
    /// The value of the proxy's TLS label that says so.
    fn label(self) -> (&'static str, &'static str) {
        match self {
            Certificate::Secrets => stack::TLS_LABEL,
            Certificate::Acme => stack::ACME_LABEL,
        }
    }

    /// The one a running proxy carries the label of, if any.
    fn of_proxy(proxy: &Service) -> Option<Certificate> {
        let label = proxy
            .spec
            .task_template
            .container_spec
            .label(stack::TLS_LABEL.0)?;
        [Certificate::Secrets, Certificate::Acme]
            .into_iter()
            .find(|certificate| certificate.label().1 == label)
    }

    /// The secrets, each with its file in the TLS directory.
    fn secret_files(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Certificate::Secrets => stack::front_tls().secret_files,
            Certificate::Acme => stack::front_acme().secret_files,
        }
    }

    /// The overlay deployed over the stack file.
    pub fn overlay_file(self) -> PathBuf {
        match self {
            Certificate::Secrets => crate::render::stack_tls_file_path(),
            Certificate::Acme => crate::render::stack_acme_file_path(),
        }
    }
}

/// A stack's HTTPS: the port, the files its secrets are made from, and their version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackTls {
    /// The host port HTTPS is published on.
    pub https_port: u16,
    /// The directory of the certificate and key files (`WEBSTACK_TLS_DIR` for the deploy).
    pub dir: PathBuf,
    /// A short sha256 of the secrets' files: the last part of the secrets' names.
    pub version: String,
    pub certificate: Certificate,
}

impl StackTls {
    /// What `--tls` asks of a Swarm deploy: `None` for plain HTTP; otherwise the certificate
    /// and key made or checked as `up` does, written to [`crate::tls::tls_dir`].
    pub fn prepare(args: &TlsArgs, https_port: u16) -> anyhow::Result<Option<StackTls>> {
        // No wildcard arm: a new source compiles only once it has an arm here, that either
        // deploys it or says `bail!("--tls NAME is not supported by swarm deploy yet")`.
        match args.tls {
            TlsSource::Off => Ok(None),
            TlsSource::SelfSigned | TlsSource::Files | TlsSource::Acme => {
                let certificate = match args.tls {
                    TlsSource::Acme => Certificate::Acme,
                    _ => Certificate::Secrets,
                };
                let dir = args
                    .prepare()?
                    .context("no certificate was written for --tls")?;
                StackTls::in_dir(dir, https_port, certificate).map(Some)
            }
        }
    }

    /// The files of `certificate`'s secrets in `dir` (as [`TlsArgs::prepare`] writes them),
    /// versioned.
    pub fn in_dir(
        dir: PathBuf,
        https_port: u16,
        certificate: Certificate,
    ) -> anyhow::Result<StackTls> {
        let how = match certificate {
            Certificate::Secrets => {
                "deploy with `cargo xtask swarm deploy --tls self-signed|files` to write it"
            }
            Certificate::Acme => {
                "deploy with `cargo xtask swarm deploy --tls acme --tls-name …` to write it"
            }
        };
        if certificate == Certificate::Acme {
            // `docker stack deploy` reads the settings itself, and would fail less clearly.
            let settings = dir.join(stack::ACME_ENV_FILE);
            if !settings.is_file() {
                bail!("{} is missing: {how}", settings.display());
            }
        }
        let version = crate::tls::files_version(&dir, &certificate.secret_files(), how)?;
        Ok(StackTls {
            https_port,
            dir,
            version,
            certificate,
        })
    }

    /// The HTTPS of a running stack, from its proxy service: `None` when the proxy does not
    /// carry the TLS label (plain HTTP); otherwise the HTTPS port it publishes and the
    /// certificate and key in [`crate::tls::tls_dir`] now, which a redeploy (`swarm update`)
    /// takes as they are (a renewed pair under a new version).
    pub fn of_running(proxy: &Service) -> anyhow::Result<Option<StackTls>> {
        StackTls::of_running_in(proxy, crate::tls::tls_dir())
    }

    /// [`StackTls::of_running`], with the files in `dir`.
    fn of_running_in(proxy: &Service, dir: PathBuf) -> anyhow::Result<Option<StackTls>> {
        let Some(certificate) = Certificate::of_proxy(proxy) else {
            return Ok(None);
        };
        let Some(https_port) = https_port(proxy) else {
            let (label, value) = certificate.label();
            bail!(
                "{} carries the label {label}={value} but publishes no port for {}: deploy it again with `cargo xtask swarm deploy --tls …`",
                proxy.spec.name,
                stack::front_tls().https_port.container_port
            );
        };
        StackTls::in_dir(dir, https_port, certificate).map(Some)
    }

    /// The names of the stack's TLS secrets for this version; fails when Swarm would refuse
    /// one for its length (a long stack name).
    pub fn secret_names(&self, stack: &str) -> anyhow::Result<Vec<String>> {
        let names: Vec<String> = self
            .certificate
            .secret_files()
            .iter()
            .map(|(secret, _)| stack::versioned_secret_name(stack, secret, &self.version))
            .collect();
        if let Some(long) = names.iter().find(|name| name.len() > MAX_SECRET_NAME) {
            bail!(
                "the secret {long} would be longer than the {MAX_SECRET_NAME} characters Swarm allows: give the stack a shorter name"
            );
        }
        Ok(names)
    }

    /// What `docker stack deploy` of `deploy/stack.tls.yaml` reads from its environment.
    pub fn variables(&self, stack: &str) -> anyhow::Result<Vec<(String, String)>> {
        // Checked here, before any deploy: Swarm's refusal would come after the stack file
        // had been half applied.
        self.secret_names(stack)?;
        Ok(vec![
            (
                stack::HTTPS_PORT_VARIABLE.to_owned(),
                self.https_port.to_string(),
            ),
            (
                stack::TLS_DIR_VARIABLE.to_owned(),
                self.dir.display().to_string(),
            ),
            (stack::STACK_NAME_VARIABLE.to_owned(), stack.to_owned()),
            (stack::TLS_VERSION_VARIABLE.to_owned(), self.version.clone()),
        ])
    }
}

/// Whether a proxy service was deployed with `deploy/stack.tls.yaml` or
/// `deploy/stack.acme.yaml` (its containers carry the TLS label), as Compose tells from the
/// proxy's container.
pub fn serves_https(proxy: &Service) -> bool {
    Certificate::of_proxy(proxy).is_some()
}

/// The host port a proxy service serves HTTPS on, when it does.
pub fn https_port(proxy: &Service) -> Option<u16> {
    if !serves_https(proxy) {
        return None;
    }
    proxy.published_host_port(stack::front_tls().https_port.container_port)
}

/// Whether `name` is a version of one of the stack's TLS secrets (those of `--tls acme`
/// included).
fn is_tls_secret_version(stack: &str, name: &str) -> bool {
    [Certificate::Secrets, Certificate::Acme]
        .iter()
        .flat_map(|certificate| certificate.secret_files())
        .any(|(secret, _)| {
            name.strip_prefix(&stack::versioned_secret_name(stack, secret, ""))
                .is_some_and(|version| !version.is_empty())
        })
}

/// The versions of the stack's TLS secrets that no service of `services` (the stack's) uses,
/// among the secret names `existing`.
fn unused_versions(stack: &str, existing: Vec<String>, services: &[Service]) -> Vec<String> {
    let used: Vec<&str> = services
        .iter()
        .flat_map(|service| service.spec.task_template.container_spec.secret_names())
        .collect();
    existing
        .into_iter()
        .filter(|name| is_tls_secret_version(stack, name) && !used.contains(&name.as_str()))
        .collect()
}

/// Removes the versions of the stack's TLS secrets that none of its services uses any more:
/// the older certificates after a renewal, all of them after a deploy without `--tls`. Call
/// it once the stack has converged, so that no task still starts with them. Returns the
/// names removed.
pub fn remove_unused_secrets(sh: &Shell, stack: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("label={STACK_NAMESPACE_LABEL}={stack}");
    let existing = crate::docker::list_ids(
        sh,
        &["secret", "ls", "--filter", &filter, "--format", "{{.Name}}"],
        &format!("the secrets of stack {stack}"),
    )?;
    let unused = unused_versions(stack, existing, &super::stack_services(sh, stack)?);
    for name in &unused {
        cmd!(sh, "docker secret rm {name}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| {
                format!("remove the secret {name}, which stack {stack} no longer uses")
            })?;
    }
    if !unused.is_empty() {
        eprintln!(
            "swarm: removed the TLS secret version(s) stack {stack} no longer uses: {}",
            unused.join(", ")
        );
    }
    Ok(unused)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy's ports on HTTPS: 443 on 9443, 80 on 8070.
    const HTTPS_AND_PLAIN_PORTS: &str =
        r#"{"TargetPort":443,"PublishedPort":9443},{"TargetPort":80,"PublishedPort":8070}"#;

    fn proxy(labels: &str, secrets: &[&str], ports: &str) -> Service {
        let secrets: Vec<String> = secrets
            .iter()
            .map(|name| format!(r#"{{"SecretName":"{name}","SecretID":"id-{name}"}}"#))
            .collect();
        serde_json::from_str(&format!(
            r#"{{"Spec":{{"Name":"demo_proxy","TaskTemplate":{{"ContainerSpec":{{"Image":"p",
                "Labels":{{{labels}}},"Secrets":[{}]}}}},
                "EndpointSpec":{{"Ports":[{ports}]}}}}}}"#,
            secrets.join(",")
        ))
        .expect("a service")
    }

    #[test]
    fn the_version_is_a_short_sha256_of_both_files_and_names_both_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("certificate.pem"), "chain").unwrap();
        std::fs::write(dir.path().join("key.pem"), "key").unwrap();
        let first = StackTls::in_dir(dir.path().to_owned(), 8443, Certificate::Secrets).unwrap();
        assert_eq!(first.version.len(), crate::tls::VERSION_DIGITS);
        assert!(first.version.chars().all(|digit| digit.is_ascii_hexdigit()));
        assert_eq!(
            first.secret_names("demo").unwrap(),
            vec![
                format!("demo_tls_certificate_{}", first.version),
                format!("demo_tls_key_{}", first.version)
            ]
        );
        let version = |certificate: &str, key: &str| {
            std::fs::write(dir.path().join("certificate.pem"), certificate).unwrap();
            std::fs::write(dir.path().join("key.pem"), key).unwrap();
            StackTls::in_dir(dir.path().to_owned(), 8443, Certificate::Secrets)
                .unwrap()
                .version
        };
        // The same files, the same version; a renewed key, another; moving bytes from one
        // file to the other, another too.
        assert_eq!(version("chain", "key"), first.version);
        assert_ne!(version("chain", "renewed key"), first.version);
        assert_ne!(version("chai", "nkey"), first.version);
        let variables = first.variables("demo").unwrap();
        assert!(variables.contains(&("WEBSTACK_PROJECT".to_owned(), "demo".to_owned())));
        assert!(variables.contains(&("WEBSTACK_TLS_VERSION".to_owned(), first.version.clone())));
        assert!(variables.contains(&("WEBSTACK_HTTPS_PORT".to_owned(), "8443".to_owned())));
        let long = "a".repeat(40);
        let error = first.variables(&long).unwrap_err().to_string();
        assert!(error.contains("shorter name"), "{error}");
    }

    #[test]
    fn missing_files_say_how_to_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let error = format!(
            "{:#}",
            StackTls::in_dir(dir.path().to_owned(), 8443, Certificate::Secrets).unwrap_err()
        );
        assert!(error.contains("certificate.pem"), "{error}");
        assert!(error.contains("swarm deploy --tls"), "{error}");
    }

    #[test]
    fn under_acme_the_ca_root_is_the_one_versioned_secret_and_the_settings_must_be_there() {
        let dir = tempfile::tempdir().unwrap();
        let acme =
            |dir: &std::path::Path| StackTls::in_dir(dir.to_owned(), 8443, Certificate::Acme);
        let error = format!("{:#}", acme(dir.path()).unwrap_err());
        assert!(error.contains("acme.env is missing"), "{error}");
        assert!(
            error.contains("swarm deploy --tls acme --tls-name"),
            "{error}"
        );
        std::fs::write(dir.path().join("acme.env"), "ACME_DOMAINS=example.com\n").unwrap();
        let error = format!("{:#}", acme(dir.path()).unwrap_err());
        assert!(error.contains("acme-ca.pem"), "{error}");
        std::fs::write(dir.path().join("acme-ca.pem"), "\n").unwrap();
        let public = acme(dir.path()).unwrap();
        assert_eq!(public.certificate, Certificate::Acme);
        assert_eq!(
            public.secret_names("demo").unwrap(),
            vec![format!("demo_acme_ca_{}", public.version)]
        );
        assert_eq!(
            public.certificate.overlay_file(),
            crate::render::stack_acme_file_path()
        );
        // Another root, another version; the settings are no secret's and version nothing.
        std::fs::write(dir.path().join("acme-ca.pem"), "a test CA's root").unwrap();
        assert_ne!(acme(dir.path()).unwrap().version, public.version);
        std::fs::write(dir.path().join("acme-ca.pem"), "\n").unwrap();
        std::fs::write(dir.path().join("acme.env"), "ACME_DOMAINS=example.org\n").unwrap();
        assert_eq!(acme(dir.path()).unwrap().version, public.version);
        let error = public.variables(&"a".repeat(50)).unwrap_err().to_string();
        assert!(error.contains("shorter name"), "{error}");
    }

    #[test]
    fn swarm_deploy_takes_acme_with_names_and_refuses_it_without() {
        let dir = tempfile::tempdir().unwrap();
        let args = |names: &[&str]| TlsArgs {
            tls: TlsSource::Acme,
            names: names.iter().map(|name| name.to_string()).collect(),
            ..TlsArgs::plain()
        };
        let error = format!(
            "{:#}",
            args(&[])
                .prepare_in(dir.path(), || unreachable!())
                .unwrap_err()
        );
        assert!(error.contains("--tls-name example.com"), "{error}");
        let error = format!(
            "{:#}",
            args(&["localhost"])
                .prepare_in(dir.path(), || unreachable!())
                .unwrap_err()
        );
        assert!(error.contains("--tls self-signed"), "{error}");
        let written = args(&["example.com"])
            .prepare_in(dir.path(), || unreachable!())
            .unwrap()
            .unwrap();
        let tls = StackTls::in_dir(written, 443, Certificate::Acme).unwrap();
        // A Swarm secret cannot be empty: without a CA of its own the root file is blank.
        let root = std::fs::read(dir.path().join("acme-ca.pem")).unwrap();
        assert!(!root.is_empty() && root.iter().all(u8::is_ascii_whitespace));
        assert_eq!(tls.secret_names("demo").unwrap().len(), 1);
    }

    #[test]
    fn a_running_proxy_serves_https_when_it_carries_the_label_and_keeps_its_port() {
        let plain = proxy(
            r#""com.docker.stack.namespace":"demo""#,
            &[],
            r#"{"TargetPort":80,"PublishedPort":8070}"#,
        );
        assert!(!serves_https(&plain));
        assert_eq!(StackTls::of_running(&plain).unwrap(), None);
        let https = proxy(r#""webstack.tls":"on""#, &[], HTTPS_AND_PLAIN_PORTS);
        assert!(serves_https(&https));
        assert_eq!(https_port(&https), Some(9443));
        assert_eq!(https_port(&plain), None);
        let without_port = proxy(
            r#""webstack.tls":"on""#,
            &[],
            r#"{"TargetPort":80,"PublishedPort":8070}"#,
        );
        let error = StackTls::of_running(&without_port).unwrap_err().to_string();
        assert!(error.contains("no port for 443"), "{error}");
        let acme = proxy(r#""webstack.tls":"acme""#, &[], HTTPS_AND_PLAIN_PORTS);
        assert!(serves_https(&acme));
        assert_eq!(https_port(&acme), Some(9443));
        assert_eq!(Certificate::of_proxy(&acme), Some(Certificate::Acme));
        assert_eq!(Certificate::of_proxy(&https), Some(Certificate::Secrets));
        let unknown = proxy(
            r#""webstack.tls":"off""#,
            &[],
            r#"{"TargetPort":443,"PublishedPort":9443}"#,
        );
        assert!(!serves_https(&unknown));
    }

    #[test]
    fn a_running_acme_stack_is_deployed_again_on_acme_from_the_tls_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme.env"), "ACME_DOMAINS=example.com\n").unwrap();
        std::fs::write(dir.path().join("acme-ca.pem"), "\n").unwrap();
        let acme = proxy(
            r#""webstack.tls":"acme""#,
            &["demo_acme_ca_aaa"],
            HTTPS_AND_PLAIN_PORTS,
        );
        let running = StackTls::of_running_in(&acme, dir.path().to_owned())
            .unwrap()
            .unwrap();
        assert_eq!(running.certificate, Certificate::Acme);
        assert_eq!(running.https_port, 9443);
        assert_eq!(running.dir, dir.path());
    }

    #[test]
    fn only_versions_of_the_tls_secrets_that_no_service_uses_are_unused() {
        let services = [proxy(
            r#""webstack.tls":"on""#,
            &["demo_tls_certificate_bbb", "demo_tls_key_bbb"],
            "",
        )];
        let existing: Vec<String> = [
            "demo_redis_password",
            "demo_redis_config",
            "demo_tls_certificate_aaa",
            "demo_tls_key_aaa",
            "demo_tls_certificate_bbb",
            "demo_tls_key_bbb",
            "demo_tls_certificate_",
            "demo-2_tls_key_aaa",
            "demo_acme_ca_ccc",
            "demo_acme_ca_",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            unused_versions("demo", existing.clone(), &services),
            vec![
                "demo_tls_certificate_aaa",
                "demo_tls_key_aaa",
                "demo_acme_ca_ccc"
            ]
        );
        // A plain deploy uses none of them.
        let plain = [proxy("", &["demo_redis_password"], "")];
        assert_eq!(
            unused_versions("demo", existing.clone(), &plain).len(),
            5,
            "every version of the three secrets"
        );
        // On acme, the acme service uses the CA's root and the proxy no secret at all.
        let acme = [
            proxy(r#""webstack.tls":"acme""#, &[], ""),
            proxy("", &["demo_acme_ca_ccc"], ""),
        ];
        assert_eq!(
            unused_versions("demo", existing, &acme),
            vec![
                "demo_tls_certificate_aaa",
                "demo_tls_key_aaa",
                "demo_tls_certificate_bbb",
                "demo_tls_key_bbb"
            ]
        );
    }
}
