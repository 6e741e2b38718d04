//! Start-up settings: one typed struct, parsed once from flags and environment variables.
//!
//! Every setting has a default, an environment variable and a `--flag`, so a container needs no
//! arguments and a developer can override anything on the command line.
//! A bad value stops start-up with one line naming the variable and what is allowed
//! (see [`parse_or_exit`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

/// The web service behind the proxy: a hit counter and a cache in Redis.
#[derive(Debug, Clone, Parser)]
#[command(name = "webapp", version)]
pub struct Settings {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "WEBAPP_BIND", default_value = "0.0.0.0", global = true)]
    pub bind: IpAddr,

    /// TCP port to listen on (0 picks a free one); `healthcheck` probes this port.
    #[arg(long, env = "WEBAPP_PORT", default_value_t = 5000, global = true)]
    pub port: u16,

    /// Name of this replica in greetings and per-replica counts (default: the hostname).
    #[arg(long, env = "WEBAPP_REPLICA", global = true)]
    pub replica: Option<String>,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,

    /// Milliseconds a log line may wait before it is written: lines go to stdout in batches, at
    /// least this often (and whenever 64 KiB are waiting), and all at once at shutdown.
    #[arg(long, env = "LOG_FLUSH_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000), global = true)]
    pub log_flush_interval_ms: u64,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before the process exits anyway.
    #[arg(long, env = "WEBAPP_SHUTDOWN_GRACE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600), global = true)]
    pub shutdown_grace_secs: u64,

    /// Milliseconds the app keeps serving after SIGTERM/SIGINT, with /readyz answering 503
    /// "stopping", before it stops accepting and drains: long enough for the proxy to see it
    /// stopping and stop sending it requests (proxy-init looks every second).
    #[arg(long, env = "WEBAPP_LAME_DUCK_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=600_000), global = true)]
    pub lame_duck_ms: u64,

    /// Seconds after which any request is answered 503, whatever it waits for.
    #[arg(long, env = "WEBAPP_REQUEST_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub request_timeout_secs: u64,

    /// Most entries the cache holds at once; a PUT of a new key beyond it answers 507. With
    /// values of at most 64 KiB this bounds the cache's share of Redis's memory, so a full cache
    /// can never stop the hit counter.
    #[arg(long, env = "WEBAPP_CACHE_MAX_ENTRIES", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), global = true)]
    pub cache_max_entries: u64,

    /// Most cache entries one client address (the `X-Real-IP` nginx sets) holds at once; a PUT
    /// of a key that is not already its own beyond it answers 507, so one client cannot fill the
    /// shared cache. At most WEBAPP_CACHE_MAX_ENTRIES.
    #[arg(long, env = "WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), global = true)]
    pub cache_max_entries_per_client: u64,

    /// Seconds a replica may go without a sign of life (it refreshes its last-seen time every
    /// quarter of this) before it leaves `/api/replicas`; its hits move to the retired total.
    #[arg(long, env = "WEBAPP_REPLICA_FORGET_AFTER_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(2..=86_400), global = true)]
    pub replica_forget_after_secs: u64,

    #[command(flatten)]
    pub redis: RedisSettings,
}

/// How to reach Redis and how long to wait for it.
///
/// deadpool's defaults wait forever, so every timeout is set explicitly: a dead or paused Redis
/// must turn into a quick 503, never a hanging request.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisSettings {
    /// Redis URL (redis://host:port/db); put the password in REDIS_PASSWORD_FILE, not here.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379",
          value_parser = parse_redis_url, global = true)]
    pub redis_url: String,

    /// File holding the Redis password (trailing newline ignored); unset means no AUTH.
    #[arg(long, env = "REDIS_PASSWORD_FILE", global = true)]
    pub redis_password_file: Option<PathBuf>,

    /// Prefix of every Redis key this service reads or writes.
    #[arg(
        long,
        env = "REDIS_KEY_PREFIX",
        default_value = "webstack:",
        global = true
    )]
    pub redis_key_prefix: String,

    /// Maximum number of pooled Redis connections.
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024), global = true)]
    pub redis_pool_size: u32,

    /// Milliseconds a request waits for a free pooled connection before answering 503.
    #[arg(long, env = "REDIS_POOL_WAIT_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=60_000), global = true)]
    pub redis_pool_wait_timeout_ms: u64,

    /// Milliseconds allowed to open (connect and authenticate) a new Redis connection.
    #[arg(long, env = "REDIS_CONNECT_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=60_000), global = true)]
    pub redis_connect_timeout_ms: u64,

    /// Milliseconds allowed for the health check (PING) of an idle pooled connection before reuse.
    #[arg(long, env = "REDIS_RECYCLE_TIMEOUT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(1..=60_000), global = true)]
    pub redis_recycle_timeout_ms: u64,

    /// Milliseconds one Redis operation (getting a connection plus the command) may take in total.
    #[arg(long, env = "REDIS_COMMAND_TIMEOUT_MS", default_value_t = 750,
          value_parser = clap::value_parser!(u64).range(1..=60_000), global = true)]
    pub redis_command_timeout_ms: u64,

    /// Milliseconds a pooled connection may sit idle before it is verified with PING on reuse
    /// (busier connections are trusted, and dropped on their first broken-connection error).
    #[arg(long, env = "REDIS_VERIFY_IDLE_AFTER_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000), global = true)]
    pub redis_verify_idle_after_ms: u64,

    /// Milliseconds /readyz waits for Redis to answer PING.
    #[arg(long, env = "WEBAPP_READYZ_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=60_000), global = true)]
    pub readyz_timeout_ms: u64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve HTTP (what running with no subcommand does).
    Serve,
    /// GET http://127.0.0.1:$WEBAPP_PORT/readyz and exit 0 if it answers 2xx, else 1.
    Healthcheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

impl Settings {
    /// Checks what no setting's own range can: how settings relate. The error is one line
    /// naming the variable, like [`one_line_message`]'s.
    pub fn check(&self) -> Result<(), String> {
        if self.cache_max_entries_per_client > self.cache_max_entries {
            return Err(format!(
                "invalid value \"{}\" for WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT (--cache-max-entries-per-client): at most WEBAPP_CACHE_MAX_ENTRIES ({})",
                self.cache_max_entries_per_client, self.cache_max_entries
            ));
        }
        Ok(())
    }

    pub fn log_flush_interval(&self) -> Duration {
        Duration::from_millis(self.log_flush_interval_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn lame_duck(&self) -> Duration {
        Duration::from_millis(self.lame_duck_ms)
    }

    pub fn replica_forget_after(&self) -> Duration {
        Duration::from_secs(self.replica_forget_after_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The configured replica name, or the hostname, so each container reports a different one.
    pub fn replica_name(&self) -> String {
        match &self.replica {
            Some(name) => name.clone(),
            None => hostname(),
        }
    }
}

impl RedisSettings {
    /// Reads the password named by `REDIS_PASSWORD_FILE`, if any.
    pub fn read_password(&self) -> anyhow::Result<Option<SecretString>> {
        match &self.redis_password_file {
            None => Ok(None),
            Some(path) => read_password_file(path).map(Some),
        }
    }
}

/// Reads a password file, dropping one trailing newline (files written by `echo` have one).
pub fn read_password_file(path: &Path) -> anyhow::Result<SecretString> {
    let contents = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read the Redis password from REDIS_PASSWORD_FILE={}",
            path.display()
        )
    })?;
    let password = contents
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&contents);
    if password.is_empty() {
        bail!(
            "REDIS_PASSWORD_FILE={} is empty: write the password into it, or unset the variable to connect without AUTH",
            path.display()
        );
    }
    Ok(SecretString::from(password.to_owned()))
}

fn parse_redis_url(url: &str) -> Result<String, String> {
    use deadpool_redis::redis::IntoConnectionInfo;
    url.into_connection_info()
        .map(|_| url.to_owned())
        .map_err(|_| "expected a URL like redis://host:6379 or redis://host:6379/0".to_owned())
}

/// The kernel's hostname (Docker sets it to the container id), else `$HOSTNAME`, else "webapp".
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "webapp".to_owned())
}

/// Parses flags and environment; on a bad value prints one line naming the variable, exits 2.
pub fn parse_or_exit() -> Settings {
    match Settings::try_parse() {
        Ok(settings) => match settings.check() {
            Ok(()) => settings,
            Err(line) => {
                eprintln!("webapp: {line}");
                std::process::exit(2);
            }
        },
        Err(error) => match one_line_message(&error) {
            Some(line) => {
                eprintln!("webapp: {line}");
                std::process::exit(2);
            }
            None => error.exit(),
        },
    }
}

/// Rewrites clap's multi-line "invalid value" error into one line naming the environment variable.
///
/// Returns `None` for errors that are not about a bad value (help, unknown flags, ...), which
/// clap's own output explains well.
pub fn one_line_message(error: &clap::Error) -> Option<String> {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.clone(),
        _ => return None,
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => String::new(),
    };
    let long_name = flag
        .trim_start_matches("--")
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let command = Settings::command();
    let variable = command
        .get_arguments()
        .find(|argument| argument.get_long() == Some(long_name.as_str()))
        .and_then(|argument| argument.get_env())
        .map(|name| name.to_string_lossy().into_owned());
    let allowed = match error.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) => format!("expected one of: {}", values.join(", ")),
        _ => std::error::Error::source(error)
            .map(|source| source.to_string())
            .unwrap_or_else(|| "see --help".to_owned()),
    };
    let name = match variable {
        Some(variable) => format!("{variable} (--{long_name})"),
        None => format!("--{long_name}"),
    };
    Some(format!("invalid value {value:?} for {name}: {allowed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_port_is_reported_on_one_line_naming_the_variable() {
        let error = Settings::try_parse_from(["webapp", "--port", "seventy"]).unwrap_err();
        let line = one_line_message(&error).unwrap();
        assert!(line.contains("WEBAPP_PORT"), "{line}");
        assert!(line.contains("seventy"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn bad_log_format_lists_the_allowed_values() {
        let error = Settings::try_parse_from(["webapp", "--log-format", "xml"]).unwrap_err();
        let line = one_line_message(&error).unwrap();
        assert!(line.contains("LOG_FORMAT"), "{line}");
        assert!(line.contains("json, text"), "{line}");
    }

    #[test]
    fn out_of_range_pool_size_says_what_is_allowed() {
        let error = Settings::try_parse_from(["webapp", "--redis-pool-size", "0"]).unwrap_err();
        let line = one_line_message(&error).unwrap();
        assert!(line.contains("REDIS_POOL_SIZE"), "{line}");
        assert!(line.contains("1..=1024"), "{line}");
    }

    #[test]
    fn the_per_client_cache_quota_is_64_by_default_and_at_most_the_global_one() {
        let defaults = Settings::try_parse_from(["webapp"]).unwrap();
        assert_eq!(defaults.cache_max_entries, 1024);
        assert_eq!(defaults.cache_max_entries_per_client, 64);
        assert_eq!(defaults.check(), Ok(()));
        let equal = Settings::try_parse_from([
            "webapp",
            "--cache-max-entries",
            "3",
            "--cache-max-entries-per-client",
            "3",
        ])
        .unwrap();
        assert_eq!(equal.check(), Ok(()));
        let above = Settings::try_parse_from(["webapp", "--cache-max-entries", "10"]).unwrap();
        let line = above.check().unwrap_err();
        assert_eq!(
            line,
            "invalid value \"64\" for WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT (--cache-max-entries-per-client): at most WEBAPP_CACHE_MAX_ENTRIES (10)"
        );
        let zero = Settings::try_parse_from(["webapp", "--cache-max-entries-per-client", "0"])
            .unwrap_err();
        let line = one_line_message(&zero).unwrap();
        assert!(
            line.contains("WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT"),
            "{line}"
        );
        assert!(line.contains("1..=1000000"), "{line}");
    }

    #[test]
    fn malformed_redis_url_is_refused() {
        let error = Settings::try_parse_from(["webapp", "--redis-url", "http://x"]).unwrap_err();
        let line = one_line_message(&error).unwrap();
        assert!(line.contains("REDIS_URL"), "{line}");
    }

    #[test]
    fn password_file_loses_its_trailing_newline_only() {
        use secrecy::ExposeSecret;
        let path = std::env::temp_dir().join(format!("webapp-pw-{}", std::process::id()));
        std::fs::write(&path, "s3cret \n").unwrap();
        let password = read_password_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(password.expose_secret(), "s3cret ");
    }
}
