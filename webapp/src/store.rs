//! Redis access: the connection pool, the key layout, and one bounded way to run a command.
//!
//! Every Redis operation goes through [`Store::query`] (or [`Store::invoke`] for a Lua script),
//! which puts a hard deadline on getting a pooled connection plus running the command, and turns
//! every failure into [`AppError::Redis`] (a 503, or 507/500 when Redis answered with an error).
//! So a dead, paused or misconfigured Redis can slow a request down by at most the command
//! timeout, never hang it, and the pool reconnects by itself when Redis is back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool::managed;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncConnectionConfig, FromRedisValue, IntoConnectionInfo};
use deadpool_redis::{Runtime, TimeoutType};
use secrecy::{ExposeSecret, SecretString};

use crate::config::RedisSettings;
use crate::error::{AppError, RedisFailure, RedisFailureKind};
use crate::metrics::Metrics;

/// Redis key names, all under the configured prefix, computed once at start-up.
#[derive(Debug)]
pub struct Keys {
    /// The shared hit counter (a string holding an integer).
    pub hits: String,
    /// Hash replica name -> hits served by that replica, for the replicas seen lately.
    pub replica_hits: String,
    /// Sorted set of replica names, scored by when each was last seen (ms, Redis's clock).
    pub replica_seen: String,
    /// The hits of replicas that were forgotten (gone too long): with `replica_hits`, the total.
    pub retired_hits: String,
    /// Sorted set of the live cache entries' keys, scored by expiry time (ms): the quota's count.
    pub cache_index: String,
    /// Hash cache entry key -> the key of its owner's set ([`Keys::cache_client`]).
    pub cache_owners: String,
    /// Cache entries are `<prefix>cache:<key>`.
    cache_prefix: String,
    /// One client's entries are the sorted set `<prefix>cache-client:<address>`, scored like
    /// the index. Outside `<prefix>cache:`, so no cache key can name it (nor the owners hash).
    cache_client_prefix: String,
    /// `<prefix>counted:<idempotency key>` marks a `GET /` as counted, for a short while.
    counted_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            hits: format!("{prefix}hits"),
            replica_hits: format!("{prefix}replica-hits"),
            replica_seen: format!("{prefix}replica-seen"),
            retired_hits: format!("{prefix}retired-replica-hits"),
            cache_index: format!("{prefix}cache-index"),
            cache_owners: format!("{prefix}cache-owners"),
            cache_prefix: format!("{prefix}cache:"),
            cache_client_prefix: format!("{prefix}cache-client:"),
            counted_prefix: format!("{prefix}counted:"),
        }
    }

    pub fn counted(&self, idempotency_key: &str) -> String {
        format!("{}{idempotency_key}", self.counted_prefix)
    }

    pub fn cache(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.cache_prefix.len() + key.len());
        full.push_str(&self.cache_prefix);
        full.push_str(key);
        full
    }

    /// The sorted set of the entries `client` (an address, or `unknown`) holds.
    pub fn cache_client(&self, client: &str) -> String {
        format!("{}{client}", self.cache_client_prefix)
    }
}

/// The pool of multiplexed Redis connections.
pub type Pool = managed::Pool<RedisManager>;
type PoolError = managed::PoolError<redis::RedisError>;

/// deadpool-redis's manager, minus a PING round trip on every checkout.
///
/// `deadpool_redis::Manager` verifies each connection with `PING` whenever it leaves the pool,
/// which doubles the Redis round trips of a request. This manager only verifies connections that
/// sat idle longer than `verify_idle_after`; a busy connection that broke is noticed by the
/// command that fails on it, and [`Store::query`] then removes it from the pool.
pub struct RedisManager {
    inner: deadpool_redis::Manager,
    verify_idle_after: Duration,
}

impl managed::Manager for RedisManager {
    type Type = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        connection: &mut MultiplexedConnection,
        metrics: &managed::Metrics,
    ) -> managed::RecycleResult<redis::RedisError> {
        if metrics.last_used() < self.verify_idle_after {
            return Ok(());
        }
        self.inner.recycle(connection, metrics).await
    }
}

/// Builds the pool. It connects lazily, so this succeeds while Redis is down.
pub fn build_pool(
    settings: &RedisSettings,
    password: Option<SecretString>,
) -> anyhow::Result<Pool> {
    let mut connection_info = settings
        .redis_url
        .as_str()
        .into_connection_info()
        .context("parse REDIS_URL")?;
    if let Some(password) = password {
        let redis_settings = connection_info
            .redis_settings()
            .clone()
            .set_password(password.expose_secret());
        connection_info = connection_info.set_redis_settings(redis_settings);
    }
    let command_timeout = Duration::from_millis(settings.redis_command_timeout_ms);
    let connect_timeout = Duration::from_millis(settings.redis_connect_timeout_ms);
    // The redis crate's own timeouts bound each connection attempt and each reply, so a paused
    // Redis fails the command instead of parking it; [`Store::query`] adds one overall deadline.
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(command_timeout));
    let manager = RedisManager {
        inner: deadpool_redis::Manager::new_with_config(connection_info, connection_config)
            .context("configure the Redis client from REDIS_URL")?,
        verify_idle_after: Duration::from_millis(settings.redis_verify_idle_after_ms),
    };
    Pool::builder(manager)
        .max_size(settings.redis_pool_size as usize)
        .wait_timeout(Some(Duration::from_millis(
            settings.redis_pool_wait_timeout_ms,
        )))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(Duration::from_millis(
            settings.redis_recycle_timeout_ms,
        )))
        .runtime(Runtime::Tokio1)
        .build()
        .context("build the Redis connection pool")
}

/// Redacted description of where Redis is, safe to log (no password, even if the URL had one).
pub fn describe_address(url: &str) -> String {
    match url.into_connection_info() {
        Ok(info) => format!("{} db {}", info.addr(), info.redis_settings().db()),
        Err(_) => "an unparsable REDIS_URL".to_owned(),
    }
}

/// The handle every Redis operation goes through: the pool, the metrics its failures are
/// counted in, and the deadline of one operation. Cheap to clone (the pool and the metrics are
/// reference-counted).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    metrics: Arc<Metrics>,
    deadline: Duration,
}

impl Store {
    /// `deadline` bounds one operation, pool wait included (`REDIS_COMMAND_TIMEOUT_MS`).
    pub fn new(pool: Pool, metrics: Arc<Metrics>, deadline: Duration) -> Store {
        Store {
            pool,
            metrics,
            deadline,
        }
    }

    /// The pool's sizes now, for the gauges of `/metrics`.
    pub fn pool_status(&self) -> deadpool_redis::Status {
        self.pool.status()
    }

    /// Runs `pipeline` (one round trip) on a pooled connection, within the store's deadline.
    ///
    /// Single commands go through a one-command pipeline too: same cost, one code path. A Lua
    /// script goes through [`Store::invoke`] instead.
    pub async fn query<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, AppError> {
        self.query_within(self.deadline, pipeline).await
    }

    /// [`Store::query`] with a deadline of its own (the readiness probe has a shorter one).
    ///
    /// Failures are counted in the metrics by kind and become [`AppError::Redis`]: 503 when
    /// Redis is unreachable or busy, 507 when it is out of memory, 500 when it refuses the
    /// command.
    pub async fn query_within<T: FromRedisValue>(
        &self,
        deadline: Duration,
        pipeline: &redis::Pipeline,
    ) -> Result<T, AppError> {
        self.run_within(deadline, Operation::Pipeline(pipeline))
            .await
    }

    /// Runs one Lua script by its SHA1 on a pooled connection, within the store's deadline, its
    /// failures handled as [`Store::query`]'s. The script is a [`redis::Script`], built once
    /// (it hashes the text), with its keys and arguments in `invocation`.
    ///
    /// redis's `ScriptInvocation::invoke_async` sends `EVALSHA <sha1> numkeys keys… args…`:
    /// 40 bytes instead of the whole script, which Redis then need not hash on every call.
    /// When Redis does not know the script (it restarted, `SCRIPT FLUSH`, a replica promoted
    /// that never loaded it) it answers NOSCRIPT, and `invoke_async` sends `SCRIPT LOAD <script>`
    /// and the same `EVALSHA` once more on the same connection, so the request still succeeds.
    /// That retry is safe for the scripts that write, such as the counter's: Redis looks the
    /// hash up and answers NOSCRIPT before it runs anything, so a script that ends in NOSCRIPT
    /// did not run, and the one that succeeds runs it once. Both tries share the one deadline; a
    /// load costs two more round trips, once per script after each flush or restart (a script
    /// that `SCRIPT LOAD` loaded stays until then: Redis evicts only scripts that `EVAL` loaded).
    /// Should the second `EVALSHA` meet NOSCRIPT too (another flush in between), that is an error
    /// reply like any other (500).
    ///
    /// Never in a pipeline: `Pipeline::invoke_script` loads nothing on NOSCRIPT (its reply is
    /// just an error), and re-sending a pipeline would run its other commands twice.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, AppError> {
        self.run_within(self.deadline, Operation::Script(invocation))
            .await
    }

    async fn run_within<T: FromRedisValue>(
        &self,
        deadline: Duration,
        operation: Operation<'_>,
    ) -> Result<T, AppError> {
        let attempt = async {
            let mut connection = self.pool.get().await.map_err(classify_pool_error)?;
            let outcome = match operation {
                Operation::Pipeline(pipeline) => pipeline.query_async::<T>(&mut *connection).await,
                // EVALSHA; on NOSCRIPT, which means the script did not run, SCRIPT LOAD and the
                // same EVALSHA again, so it runs once ([`Store::invoke`] says why that is safe).
                Operation::Script(invocation) => {
                    invocation.invoke_async::<T>(&mut *connection).await
                }
            };
            match outcome {
                Ok(value) => Ok(value),
                Err(error) => {
                    if error.is_unrecoverable_error() {
                        // Broken for good (Redis restarted, socket closed): keep it out of the
                        // pool.
                        drop(managed::Object::take(connection));
                    }
                    Err(classify_redis_error(&error))
                }
            }
        };
        let failure = match tokio::time::timeout(deadline, attempt).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(failure)) => failure,
            Err(_) => RedisFailure {
                kind: RedisFailureKind::Timeout,
                detail: format!("Redis did not answer within {} ms", deadline.as_millis()),
            },
        };
        self.metrics.count_redis_error(failure.kind);
        Err(AppError::Redis(failure))
    }
}

/// What one bounded operation of [`Store`] sends.
enum Operation<'a> {
    Pipeline(&'a redis::Pipeline),
    /// One script by its SHA1, loaded on NOSCRIPT ([`Store::invoke`]).
    Script(&'a redis::ScriptInvocation<'a>),
}

fn classify_pool_error(error: PoolError) -> RedisFailure {
    match error {
        PoolError::Timeout(TimeoutType::Wait) => RedisFailure {
            kind: RedisFailureKind::PoolExhausted,
            detail: "no Redis connection became free in time (pool exhausted)".to_owned(),
        },
        PoolError::Timeout(TimeoutType::Create) => RedisFailure {
            kind: RedisFailureKind::Timeout,
            detail: "connecting to Redis timed out".to_owned(),
        },
        PoolError::Timeout(TimeoutType::Recycle) => RedisFailure {
            kind: RedisFailureKind::Timeout,
            detail: "checking a pooled Redis connection timed out".to_owned(),
        },
        PoolError::Backend(error) => classify_redis_error(&error),
        other => RedisFailure {
            kind: RedisFailureKind::Other,
            detail: format!("Redis pool error: {other}"),
        },
    }
}

fn classify_redis_error(error: &redis::RedisError) -> RedisFailure {
    let kind = redis_error_kind(error);
    let detail = match kind {
        RedisFailureKind::Auth => format!(
            "Redis refused authentication: check the password in REDIS_PASSWORD_FILE ({error})"
        ),
        RedisFailureKind::OutOfMemory => {
            format!("Redis is out of memory (maxmemory reached): {error}")
        }
        RedisFailureKind::Busy => format!("Redis cannot serve right now: {error}"),
        RedisFailureKind::Reply => format!("Redis refused the command: {error}"),
        _ => format!("Redis error: {error}"),
    };
    RedisFailure { kind, detail }
}

fn redis_error_kind(error: &redis::RedisError) -> RedisFailureKind {
    // An error reply: Redis is up and answered, but refused the command. In a pipeline the
    // replies are wrapped; the first failing command's code stands for all.
    let code = error.code().map(str::to_owned).or_else(|| {
        error
            .clone()
            .into_server_errors()
            .and_then(|errors| errors.first().map(|(_, server)| server.code().to_owned()))
    });
    if error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code.as_deref(), Some("NOAUTH" | "WRONGPASS"))
    {
        return RedisFailureKind::Auth;
    }
    match code.as_deref() {
        Some("OOM") => RedisFailureKind::OutOfMemory,
        Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "READONLY") => RedisFailureKind::Busy,
        Some(_) => RedisFailureKind::Reply,
        None if error.is_timeout() => RedisFailureKind::Timeout,
        None if error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped() =>
        {
            RedisFailureKind::Connection
        }
        None => RedisFailureKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_lives_under_the_prefix() {
        let keys = Keys::new("test:");
        assert_eq!(keys.hits, "test:hits");
        assert_eq!(keys.replica_hits, "test:replica-hits");
        assert_eq!(keys.replica_seen, "test:replica-seen");
        assert_eq!(keys.retired_hits, "test:retired-replica-hits");
        assert_eq!(keys.cache("a.b"), "test:cache:a.b");
        assert_eq!(keys.cache_index, "test:cache-index");
        assert_eq!(keys.cache_owners, "test:cache-owners");
        assert_eq!(
            keys.cache_client("192.0.2.7"),
            "test:cache-client:192.0.2.7"
        );
        assert_eq!(keys.cache_client("unknown"), "test:cache-client:unknown");
        // No cache key reaches the quota's own keys: they are outside `<prefix>cache:`.
        for key in [
            &keys.cache_index,
            &keys.cache_owners,
            &keys.cache_client("::1"),
        ] {
            assert!(!key.starts_with("test:cache:"), "{key}");
        }
        assert_eq!(keys.counted("r-1"), "test:counted:r-1");
    }

    fn reply(code: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_owned(), Some("a reply".to_owned()))
    }

    fn io(kind: std::io::ErrorKind) -> redis::RedisError {
        std::io::Error::new(kind, "a socket").into()
    }

    #[test]
    fn redis_errors_are_told_apart_by_reply_code_then_by_cause() {
        use std::io::ErrorKind as Io;
        use RedisFailureKind::*;
        let cases = [
            (reply("NOAUTH"), Auth),
            (reply("WRONGPASS"), Auth),
            (
                (redis::ErrorKind::AuthenticationFailed, "refused").into(),
                Auth,
            ),
            (reply("OOM"), OutOfMemory),
            (reply("LOADING"), Busy),
            (reply("BUSY"), Busy),
            (reply("MASTERDOWN"), Busy),
            (reply("TRYAGAIN"), Busy),
            (reply("READONLY"), Busy),
            (reply("ERR"), Reply),
            (reply("WRONGTYPE"), Reply),
            (io(Io::TimedOut), Timeout),
            (io(Io::ConnectionRefused), Connection),
            (io(Io::ConnectionReset), Connection),
            (io(Io::BrokenPipe), Connection),
            (io(Io::UnexpectedEof), Connection),
            ((redis::ErrorKind::Client, "odd").into(), Other),
        ];
        for (error, kind) in cases {
            assert_eq!(classify_redis_error(&error).kind, kind, "{error:?}");
        }
    }

    #[test]
    fn pool_errors_are_told_apart_by_what_timed_out() {
        use RedisFailureKind::*;
        let cases = [
            (PoolError::Timeout(TimeoutType::Wait), PoolExhausted),
            (PoolError::Timeout(TimeoutType::Create), Timeout),
            (PoolError::Timeout(TimeoutType::Recycle), Timeout),
            (
                PoolError::Backend(io(std::io::ErrorKind::ConnectionRefused)),
                Connection,
            ),
            (PoolError::Backend(reply("NOAUTH")), Auth),
            (PoolError::Closed, Other),
        ];
        for (error, kind) in cases {
            let shown = format!("{error:?}");
            assert_eq!(classify_pool_error(error).kind, kind, "{shown}");
        }
    }

    #[test]
    fn the_detail_says_what_redis_did() {
        let full = classify_redis_error(&reply("OOM")).detail;
        assert!(full.starts_with("Redis is out of memory"), "{full}");
        let auth = classify_redis_error(&reply("WRONGPASS")).detail;
        assert!(auth.contains("REDIS_PASSWORD_FILE"), "{auth}");
        let refused = classify_redis_error(&io(std::io::ErrorKind::ConnectionRefused)).detail;
        assert!(refused.starts_with("Redis error: "), "{refused}");
    }

    #[test]
    fn logged_redis_address_never_contains_the_password() {
        let described = describe_address("redis://:hunter2@db:6380/3");
        assert_eq!(described, "db:6380 db 3");
    }
}
