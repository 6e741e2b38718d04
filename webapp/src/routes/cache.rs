//! A small shared cache: `PUT`/`GET`/`DELETE /api/cache/{key}`.
//!
//! Input is validated before Redis is touched: keys are 1-128 characters of
//! `[A-Za-z0-9._:-]` other than `.` and `..`, after percent-decoding ([`CacheKey`]), `ttl` (the
//! only query parameter, on `PUT` only: [`Ttl`] in a [`StrictQuery`]) is 1..=86400 seconds
//! written canonically, bodies are at most 64 KiB.
//! Entries live under `<prefix>cache:` so requests cannot reach other Redis data, and always
//! carry a TTL: Redis's `volatile-lru` policy may evict them under memory pressure, never the
//! counters, which have none. The number of entries is capped (`WEBAPP_CACHE_MAX_ENTRIES`),
//! so the cache alone cannot fill Redis, and so is each client address's share
//! (`WEBAPP_CACHE_MAX_ENTRIES_PER_CLIENT`, the client being the `X-Real-IP` nginx sets:
//! [`ClientAddress`]), so one client cannot fill the cache for everyone else.
//!
//! The quotas' bookkeeping, all under the key prefix and changed only by the scripts below,
//! each in one step:
//! - `<prefix>cache-index`: sorted set of every entry's key, scored by its expiry time (ms);
//! - `<prefix>cache-owners`: hash of entry key -> the key of its owner's set;
//! - `<prefix>cache-client:<address>`: sorted set of one client's entries, scored like the
//!   index, expiring (`PEXPIREAT`) with its latest entry, so it goes away with them.
//!
//! The index and the owners hash have no TTL, so `volatile-lru` never evicts them: each holds
//! at most one member per entry, and an entry leaves both when it is deleted or, at the next
//! `PUT`, once it has expired, so neither grows beyond `WEBAPP_CACHE_MAX_ENTRIES` members.
//! An entry evicted early still counts until its expiry time: the quotas err on the safe side.

use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_redis::redis;

use crate::error::{AppError, RedisFailure, RedisFailureKind};
use crate::routes::extract::{CacheKey, ClientAddress, NoParameters, QueryParameters, StrictQuery};
use crate::state::AppState;

/// Largest accepted value; bigger bodies get 413 before reaching Redis.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const DEFAULT_TTL_SECONDS: u64 = 300;
/// One day: the cache is for short-lived data, not a database.
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// Response header carrying the remaining lifetime of a cached value, in seconds.
pub const TTL_HEADER: HeaderName = HeaderName::from_static("cache-ttl");

/// What [`PUT_WITHIN_QUOTA`] answers: stored.
const STORED: i64 = 1;
/// What [`PUT_WITHIN_QUOTA`] answers: refused, the cache is full.
const CACHE_FULL: i64 = 0;
/// What [`PUT_WITHIN_QUOTA`] answers: refused, the client's address holds its quota.
const CLIENT_QUOTA_FULL: i64 = -1;

/// Stores an entry unless that would exceed a quota. KEYS: the entry, the index, the owners
/// hash, the client's set; ARGV: the value, the TTL (s), the global and the per-client maximum.
///
/// First drops the expired entries from the index, each also from its owner's set and from
/// the owners hash (and the client's own expired ones from its set). Then an entry the client
/// already holds is overwritten whatever the quotas; any other key is refused when the
/// client's set is full (returns -1), or, when the key is new, when the index is full
/// (returns 0). Otherwise the value is set with its TTL, an entry another client held leaves
/// that client's set, and the entry's expiry time goes into the index and the client's set,
/// whose own expiry becomes its latest entry's (returns 1). Redis's clock, so replicas need
/// not agree on time. `PEXPIREAT` takes only an integer, so its time is written with `%d`,
/// never in whatever form a score or a Lua number would take. Run by its SHA1
/// ([`crate::store::Store::invoke`]), hashed once.
static PUT_WITHIN_QUOTA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for _, expired in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)) do
  local owner = redis.call('HGET', KEYS[3], expired)
  if owner then
    redis.call('ZREM', owner, expired)
    redis.call('HDEL', KEYS[3], expired)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms)
if not redis.call('ZSCORE', KEYS[4], KEYS[1]) then
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then
    return -1
  end
  if not redis.call('ZSCORE', KEYS[2], KEYS[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
    return 0
  end
  local previous = redis.call('HGET', KEYS[3], KEYS[1])
  if previous then
    redis.call('ZREM', previous, KEYS[1])
  end
end
local expires_ms = now_ms + tonumber(ARGV[2]) * 1000
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], expires_ms, KEYS[1])
redis.call('ZADD', KEYS[4], expires_ms, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], KEYS[4])
local latest = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[4], string.format('%d', tonumber(latest[2])))
return 1
",
    )
});

/// Deletes an entry and its bookkeeping in one step. KEYS: the entry, the index, the owners
/// hash. Returns how many entries were deleted (0: there was none, or it had expired).
static DELETE_ENTRY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local deleted = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
local owner = redis.call('HGET', KEYS[3], KEYS[1])
if owner then
  redis.call('ZREM', owner, KEYS[1])
  redis.call('HDEL', KEYS[3], KEYS[1])
end
return deleted
",
    )
});

/// `PUT`'s query: `ttl`, the entry's lifetime in seconds, [`DEFAULT_TTL_SECONDS`] without it.
#[derive(Debug, PartialEq, Eq)]
pub struct Ttl(pub u64);

impl QueryParameters for Ttl {
    const NAMES: &'static [&'static str] = &["ttl"];

    fn from_given(given: &[(&str, &str)]) -> Result<Ttl, AppError> {
        let ttl = given.iter().find(|(name, _)| *name == "ttl");
        parse_ttl(ttl.map(|(_, value)| *value)).map(Ttl)
    }
}

fn parse_ttl(ttl: Option<&str>) -> Result<u64, AppError> {
    match ttl {
        None => Ok(DEFAULT_TTL_SECONDS),
        Some(text) => {
            // Canonical decimal only: no sign, no leading zeros, no spaces.
            let canonical = !text.is_empty()
                && !text.starts_with('0')
                && text.bytes().all(|byte| byte.is_ascii_digit());
            match text.parse::<u64>() {
                Ok(seconds) if canonical && (1..=MAX_TTL_SECONDS).contains(&seconds) => Ok(seconds),
                _ => Err(AppError::InvalidTtl),
            }
        }
    }
}

/// The key and the query are refused only after the body has been read, as on every route
/// (`middleware::discard_unused_body` says why): their rejections come in as values.
pub async fn put(
    State(state): State<AppState>,
    key: Result<CacheKey, AppError>,
    query: Result<StrictQuery<Ttl>, AppError>,
    client: ClientAddress,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, AppError> {
    let key = key?;
    let StrictQuery(Ttl(ttl)) = query?;
    let value = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::InvalidBody(rejection.body_text())
        }
    })?;
    let mut put = PUT_WITHIN_QUOTA.prepare_invoke();
    put.key(state.keys.cache(key.as_str()))
        .key(&*state.keys.cache_index)
        .key(&*state.keys.cache_owners)
        .key(state.keys.cache_client(&client.to_string()))
        .arg(value.as_ref())
        .arg(ttl)
        .arg(state.cache_max_entries)
        .arg(state.cache_max_entries_per_client);
    let outcome: i64 = state.store.invoke(&put).await?;
    match outcome {
        STORED => Ok(StatusCode::NO_CONTENT),
        CACHE_FULL => Err(AppError::CacheFull {
            max_entries: state.cache_max_entries,
        }),
        CLIENT_QUOTA_FULL => Err(AppError::ClientQuotaFull {
            max_entries_per_client: state.cache_max_entries_per_client,
        }),
        other => {
            state.metrics.count_redis_error(RedisFailureKind::Reply);
            Err(AppError::Redis(RedisFailure {
                kind: RedisFailureKind::Reply,
                detail: format!("the cache's PUT script answered {other}, not -1, 0 or 1"),
            }))
        }
    }
}

pub async fn get(
    State(state): State<AppState>,
    key: CacheKey,
    StrictQuery(NoParameters): StrictQuery<NoParameters>,
) -> Result<Response, AppError> {
    let full_key = state.keys.cache(key.as_str());
    let mut pipeline = redis::pipe();
    // One round trip; if the key expires between the two commands the TTL reads -2, shown as 0.
    pipeline.get(&full_key).ttl(&full_key);
    let (value, ttl): (Option<Vec<u8>>, i64) = state.store.query(&pipeline).await?;
    let value = value.ok_or(AppError::KeyNotFound)?;
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            // The bytes are whatever a client stored: a browser must not guess a type.
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        value,
    )
        .into_response();
    response
        .headers_mut()
        .insert(TTL_HEADER, HeaderValue::from(ttl.max(0)));
    Ok(response)
}

pub async fn delete(
    State(state): State<AppState>,
    key: CacheKey,
    StrictQuery(NoParameters): StrictQuery<NoParameters>,
) -> Result<StatusCode, AppError> {
    let mut delete = DELETE_ENTRY.prepare_invoke();
    delete
        .key(state.keys.cache(key.as_str()))
        .key(&*state.keys.cache_index)
        .key(&*state.keys.cache_owners);
    let deleted: u64 = state.store.invoke(&delete).await?;
    if deleted == 0 {
        return Err(AppError::KeyNotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_defaults_to_300_and_must_be_1_to_86400() {
        assert_eq!(parse_ttl(None).ok(), Some(300));
        assert_eq!(parse_ttl(Some("1")).ok(), Some(1));
        assert_eq!(parse_ttl(Some("86400")).ok(), Some(86_400));
        for bad in [
            "0", "86401", "-1", "1.5", "", "ten", "+5", "0005", " 5", "5 ",
        ] {
            assert!(parse_ttl(Some(bad)).is_err(), "{bad:?} should be refused");
        }
    }

    fn ttl_of(raw: &str) -> Result<u64, AppError> {
        StrictQuery::<Ttl>::parse(Some(raw)).map(|StrictQuery(Ttl(seconds))| seconds)
    }

    #[test]
    fn the_query_takes_ttl_once_and_a_bad_name_is_reported_before_a_bad_value() {
        assert_eq!(ttl_of("ttl=5").ok(), Some(5));
        assert_eq!(ttl_of("").ok(), Some(300));
        assert_eq!(
            StrictQuery::<Ttl>::parse(None).ok(),
            Some(StrictQuery(Ttl(300)))
        );
        assert!(matches!(ttl_of("ttl"), Err(AppError::InvalidTtl)));
        assert!(matches!(ttl_of("ttl=+5"), Err(AppError::InvalidTtl)));
        for raw in [
            "TTL=5",
            "ttl[]=5",
            "ttl=5&ttl=6",
            "ttl=abc&x=1",
            "x=1&ttl=abc",
        ] {
            assert!(
                matches!(ttl_of(raw), Err(AppError::InvalidQuery(_))),
                "{raw:?}"
            );
        }
        match ttl_of("x=1") {
            Err(AppError::InvalidQuery(message)) => assert_eq!(
                message,
                r#"unknown query parameter "x": this route takes only ttl"#
            ),
            other => panic!("x=1 should be refused, got {other:?}"),
        }
    }
}
