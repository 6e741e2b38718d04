//! The credentials a push logs in with, found the way the docker CLI finds
//! them: `--username` with the password on stdin, or Docker's config.json
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): a
//! credential helper named for the registry in `credHelpers`, else the
//! `credsStore` helper, else the `auths` entry `docker login` wrote.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use xshell::{cmd, Shell};

/// Who the push logs in as.
#[derive(Clone)]
pub enum Credentials {
    /// Whatever Docker's config.json says for the registry (nothing: anonymous).
    DockerConfig,
    /// A user and password given to this process (never on a command line).
    Basic { username: String, password: String },
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::DockerConfig => formatter.write_str("DockerConfig"),
            Credentials::Basic { username, .. } => write!(formatter, "Basic({username}, ***)"),
        }
    }
}

impl Credentials {
    /// What the registry client sends to `registry` (`host[:port]`).
    pub fn resolve(&self, sh: &Shell, registry: &str) -> anyhow::Result<RegistryAuth> {
        match self {
            Credentials::Basic { username, password } => {
                Ok(RegistryAuth::Basic(username.clone(), password.clone()))
            }
            Credentials::DockerConfig => from_docker_config(sh, registry),
        }
    }
}

/// The password `--password-stdin` reads: all of stdin, less the final
/// line break (as `docker login --password-stdin` reads it).
pub fn read_password_from_stdin() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("read the password from stdin")?;
    let password = password
        .strip_suffix('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .unwrap_or(&password);
    if password.is_empty() {
        anyhow::bail!("--password-stdin read an empty password: pipe the password in, e.g. `cat password-file | cargo xtask push --username U --password-stdin …`");
    }
    Ok(password.to_string())
}

/// The parts of Docker's config.json that hold credentials.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    /// base64 of `user:password`.
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// What `docker-credential-<helper> get` prints.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The config file docker reads: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".docker").join("config.json")),
    }
}

fn from_docker_config(sh: &Shell, registry: &str) -> anyhow::Result<RegistryAuth> {
    let Some(path) = docker_config_path() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RegistryAuth::Anonymous)
        }
        Err(error) => return Err(error).with_context(|| format!("read {}", path.display())),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    credentials_for(sh, &config, registry).with_context(|| {
        format!(
            "credentials for {registry} from {} (Docker's config)",
            path.display()
        )
    })
}

/// Docker's order: the registry's own helper, the default store, the
/// `auths` entry; nothing found is anonymous.
fn credentials_for(
    sh: &Shell,
    config: &DockerConfig,
    registry: &str,
) -> anyhow::Result<RegistryAuth> {
    let server = docker_server_name(registry);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| normalise_key(key) == normalise_key(&server))
        .map(|(_, helper)| helper)
        .or(config.creds_store.as_ref());
    if let Some(helper) = helper {
        return from_helper(sh, helper, &server);
    }
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| normalise_key(key) == normalise_key(&server))
        .map(|(_, entry)| entry);
    let Some(entry) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(encoded) = entry.auth.as_deref().filter(|auth| !auth.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("the `auth` entry is not base64")?;
        let decoded = String::from_utf8(decoded).context("the `auth` entry is not UTF-8")?;
        let (username, password) = decoded
            .split_once(':')
            .context("the `auth` entry is not base64 of user:password")?;
        return Ok(RegistryAuth::Basic(
            username.to_string(),
            password.to_string(),
        ));
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => {
            Ok(RegistryAuth::Basic(username.clone(), password.clone()))
        }
        _ => Ok(RegistryAuth::Anonymous),
    }
}

/// Docker Hub's credentials are stored under its v1 URL; every other
/// registry under its host[:port].
fn docker_server_name(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".to_string()
        }
        other => other.to_string(),
    }
}

/// A config key as docker compares it: without scheme and path.
fn normalise_key(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

/// `docker-credential-<helper> get`, the server name on stdin, as docker
/// runs it; "credentials not found" is anonymous.
fn from_helper(sh: &Shell, helper: &str, server: &str) -> anyhow::Result<RegistryAuth> {
    let program = format!("docker-credential-{helper}");
    let output = cmd!(sh, "{program} get")
        .stdin(server)
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run {program} (the credential helper Docker's config names)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        anyhow::bail!(
            "{program} get failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let answer: HelperAnswer = serde_json::from_str(&stdout)
        .with_context(|| format!("parse what {program} get printed"))?;
    if answer.username == "<token>" {
        anyhow::bail!("{program} holds an identity token for {server}, which push cannot use: log in with a password (`docker login`) or pass --username and --password-stdin");
    }
    Ok(RegistryAuth::Basic(answer.username, answer.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn auths_entry_gives_basic_credentials() {
        let sh = Shell::new().unwrap();
        // base64("user:pa:ss")
        let config =
            config(r#"{"auths":{"https://registry.example.com/v2/":{"auth":"dXNlcjpwYTpzcw=="}}}"#);
        match credentials_for(&sh, &config, "registry.example.com").unwrap() {
            RegistryAuth::Basic(user, password) => {
                assert_eq!((user.as_str(), password.as_str()), ("user", "pa:ss"))
            }
            _ => panic!("expected basic credentials"),
        }
        assert!(matches!(
            credentials_for(&sh, &config, "other.example.com:5000").unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn credential_helper_is_run_with_the_server_on_stdin() {
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"from-helper\",\"Secret\":\"%s-secret\"}' \"$server\" \"$server\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let _path = sh.push_env("PATH", path);
        let config = config(
            r#"{"credHelpers":{"127.0.0.1:5000":"test"},"auths":{"127.0.0.1:5000":{"auth":"eDp5"}}}"#,
        );
        match credentials_for(&sh, &config, "127.0.0.1:5000").unwrap() {
            RegistryAuth::Basic(user, password) => {
                assert_eq!(user, "from-helper");
                assert_eq!(password, "127.0.0.1:5000-secret");
            }
            _ => panic!("expected the helper's credentials"),
        }
    }
}
