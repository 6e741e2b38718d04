//! A small shared cache: `PUT`/`GET`/`DELETE /api/cache/{key}`.
//!
//! Input is validated before Redis is touched: keys are 1-128 characters of
//! `[A-Za-z0-9._:-]` ([`CacheKey`]), `ttl` (the only query parameter, on `PUT` only: [`Ttl`]
//! in a [`StrictQuery`]) is 1..=86400 seconds written canonically, bodies are at most 64 KiB.
//! Entries live under `<prefix>cache:` so requests cannot reach other Redis data, and always
//! carry a TTL: Redis's `volatile-lru` policy may evict them under memory pressure, never the
//! counters, which have none. The number of entries is capped (`WEBAPP_CACHE_MAX_ENTRIES`),
//! so the cache alone cannot fill Redis.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_redis::redis;

use crate::error::AppError;
use crate::routes::extract::{CacheKey, NoParameters, QueryParameters, StrictQuery};
use crate::state::AppState;
use crate::store;

/// Largest accepted value; bigger bodies get 413 before reaching Redis.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const DEFAULT_TTL_SECONDS: u64 = 300;
/// One day: the cache is for short-lived data, not a database.
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// Response header carrying the remaining lifetime of a cached value, in seconds.
pub const TTL_HEADER: HeaderName = HeaderName::from_static("cache-ttl");

/// Stores an entry unless that would exceed the quota: drops expired keys from the index,
/// refuses a new key when the index is full (returns 0), else sets the value with its TTL and
/// records its expiry time (returns 1). Redis's clock, so replicas need not agree on time.
const PUT_WITHIN_QUOTA: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if not redis.call('ZSCORE', KEYS[2], KEYS[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]) * 1000, KEYS[1])
return 1
";

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
    let mut pipeline = redis::pipe();
    let entry = state.keys.cache(key.as_str());
    store::eval(
        &mut pipeline,
        PUT_WITHIN_QUOTA,
        &[&entry, &state.keys.cache_index],
    )
    .arg(value.as_ref())
    .arg(ttl)
    .arg(state.cache_max_entries);
    let (stored,): (u8,) = state.store.query(&pipeline).await?;
    if stored == 0 {
        return Err(AppError::CacheFull {
            max_entries: state.cache_max_entries,
        });
    }
    Ok(StatusCode::NO_CONTENT)
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
    let full_key = state.keys.cache(key.as_str());
    let mut pipeline = redis::pipe();
    pipeline
        .del(&full_key)
        .zrem(&state.keys.cache_index, &full_key)
        .ignore();
    let (deleted,): (u64,) = state.store.query(&pipeline).await?;
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
