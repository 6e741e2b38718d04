//! The YAML both deploy files share: ordered mappings, healthcheck,
//! logging, secrets, ulimits and sysctls sections, and quoting for YAML 1.1
//! readers.

use serde::Serialize;

use std::time::Duration;

use crate::stack::{self, LogRetention, Stack, VolumeStorage, NONROOT_ID};

/// Docker's duration syntax, in whole seconds ("15s").
pub fn docker_duration(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// An ordered YAML mapping: keys come out in the order the stack lists them
/// (services in start order), not sorted, so the files read top-down.
#[derive(Debug)]
pub struct Mapping<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Mapping<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

// The Compose file, field by field, in the subset this stack uses. Field
// order is output order.

/// A service's `healthcheck:`, the same in both files: exec form, since no
/// image has a shell.
#[derive(Serialize)]
pub struct HealthcheckSection {
    test: Vec<String>,
    interval: String,
    timeout: String,
    retries: u32,
    start_period: String,
}

impl HealthcheckSection {
    pub fn of(healthcheck: &stack::Healthcheck) -> HealthcheckSection {
        HealthcheckSection {
            test: std::iter::once("CMD".to_string())
                .chain(healthcheck.command.iter().cloned())
                .collect(),
            interval: docker_duration(healthcheck.interval),
            timeout: docker_duration(healthcheck.timeout),
            retries: healthcheck.retries,
            start_period: docker_duration(healthcheck.start_period),
        }
    }
}

/// A service's `logging:`, the same in both files.
#[derive(Serialize)]
pub struct LoggingSection {
    driver: &'static str,
    options: Mapping<String>,
}

impl LoggingSection {
    /// Bounded logs: a chatty replica cannot fill the host's disk. The
    /// `local` driver stores each line as the container wrote it (json-file
    /// would escape it once more) and compresses the older files.
    pub fn of(logs: &LogRetention) -> LoggingSection {
        LoggingSection {
            driver: "local",
            options: Mapping(vec![
                ("max-size".to_string(), format!("{}m", logs.max_size_mib)),
                ("max-file".to_string(), logs.files.to_string()),
            ]),
        }
    }
}

/// A secret read from a file, in the form both Compose and
/// `docker stack deploy` take at top level.
#[derive(Serialize)]
pub struct FileSecret {
    file: String,
}

impl FileSecret {
    /// A file named relative to the workspace root, as the deploy files in deploy/ see it.
    pub fn from_root(file_from_root: &str) -> FileSecret {
        FileSecret::at(format!("../{file_from_root}"))
    }

    /// A file as the deploy file names it (relative to deploy/, or with a variable).
    pub fn at(file: String) -> FileSecret {
        FileSecret { file }
    }
}

/// A service's `ulimits:` (both files; Swarm applies them since Engine 20.10,
/// API 1.41), absent when it keeps the engine's defaults.
#[derive(Serialize)]
pub struct UlimitsSection {
    nofile: SoftHard,
}

#[derive(Serialize)]
struct SoftHard {
    soft: u32,
    hard: u32,
}

impl UlimitsSection {
    pub fn of(open_files_limit: Option<u32>) -> Option<UlimitsSection> {
        open_files_limit.map(|limit| UlimitsSection {
            nofile: SoftHard {
                soft: limit,
                hard: limit,
            },
        })
    }
}

/// A service's `sysctls:` section (both files), absent when it sets none.
pub fn sysctls_section(sysctls: &[(&'static str, &'static str)]) -> Option<Mapping<&'static str>> {
    (!sysctls.is_empty()).then(|| {
        Mapping(
            sysctls
                .iter()
                .map(|(name, value)| (name.to_string(), *value))
                .collect(),
        )
    })
}

/// A top-level named volume: the local driver's defaults, or its options
/// for a tmpfs (the same in both files; a Swarm node creates the volume
/// with them where a task first needs it).
#[derive(Debug, Serialize)]
pub struct NamedVolume {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_opts: Option<Mapping<String>>,
}

pub fn named_volumes(stack: &Stack) -> Mapping<NamedVolume> {
    named_volumes_of(&stack.volumes)
}

pub fn named_volumes_of(volumes: &[crate::stack::Volume]) -> Mapping<NamedVolume> {
    Mapping(
        volumes
            .iter()
            .map(|volume| {
                let driver_opts = match volume.storage {
                    VolumeStorage::Disk => None,
                    VolumeStorage::Memory { size_mib } => Some(Mapping(vec![
                        ("type".to_string(), "tmpfs".to_string()),
                        ("device".to_string(), "tmpfs".to_string()),
                        (
                            "o".to_string(),
                            format!("size={size_mib}m,uid={NONROOT_ID},gid={NONROOT_ID},mode=0700"),
                        ),
                    ])),
                };
                (volume.name.to_string(), NamedVolume { driver_opts })
            })
            .collect(),
    )
}

/// The top-level `secrets:` of either file. Relative paths are relative to
/// the file's directory, deploy/; `docker stack deploy` creates the Swarm
/// secrets (named `<stack>_<name>`) from the same files.
pub fn file_secrets(stack: &Stack) -> Mapping<FileSecret> {
    Mapping(
        stack
            .secrets
            .iter()
            .map(|secret| {
                (
                    secret.name.to_string(),
                    FileSecret::from_root(secret.file_from_root),
                )
            })
            .collect(),
    )
}

/// Words that YAML 1.1 (PyYAML, and so docker-compose 1.29) reads as
/// booleans, while the YAML 1.2 emitter leaves them unquoted as strings.
/// (`true`/`false` are booleans in both, and the emitter already quotes
/// them when they are strings.)
const YAML_1_1_BOOLEANS: &[&str] = &["y", "n", "yes", "no", "on", "off"];

/// Quotes plain scalars that a YAML 1.1 reader would take for booleans, such
/// as the `yes` in redis-server's `--appendonly yes`: docker-compose 1.29
/// would otherwise see `true` and reject the command.
pub fn quote_yaml_1_1_booleans(yaml: &str) -> String {
    let mut quoted = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let value_start = if let Some(item) = line.trim_start().strip_prefix("- ") {
            line.len() - item.len()
        } else if let Some(colon) = line.find(": ") {
            colon + 2
        } else {
            line.len()
        };
        let (head, value) = line.split_at(value_start);
        if YAML_1_1_BOOLEANS.contains(&value.to_ascii_lowercase().as_str()) {
            quoted.push_str(&format!("{head}'{value}'"));
        } else {
            quoted.push_str(line);
        }
        quoted.push('\n');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_yaml_1_1_reads_as_booleans_are_quoted_and_others_left_alone() {
        let yaml = "command:\n- --appendonly\n- yes\nread_only: true\nname: Off\nkeep: yesterday\n";
        assert_eq!(
            quote_yaml_1_1_booleans(yaml),
            "command:\n- --appendonly\n- 'yes'\nread_only: true\nname: 'Off'\nkeep: yesterday\n"
        );
    }
}
