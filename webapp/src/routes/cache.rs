//! A small shared cache: `PUT`/`GET`/`DELETE /api/cache/{key}`.
//!
//! Input is validated before Redis is touched: keys are 1-128 characters of
//! `[A-Za-z0-9._:-]`, `ttl` (the only query parameter, on `PUT` only) is 1..=86400 seconds
//! written canonically, bodies are at most 64 KiB.
//! Entries live under `<prefix>cache:` so requests cannot reach other Redis data, and always
//! carry a TTL: Redis's `volatile-lru` policy may evict them under memory pressure, never the
//! counters, which have none. The number of entries is capped (`WEBAPP_CACHE_MAX_ENTRIES`),
//! so the cache alone cannot fill Redis.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_redis::redis;

use crate::error::AppError;
use crate::state::AppState;
use crate::store;

/// Largest accepted value; bigger bodies get 413 before reaching Redis.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
pub const MAX_KEY_CHARACTERS: usize = 128;
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

pub fn validate_key(key: &str) -> Result<(), AppError> {
    let allowed =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-');
    if (1..=MAX_KEY_CHARACTERS).contains(&key.len()) && key.bytes().all(allowed) {
        Ok(())
    } else {
        Err(AppError::InvalidKey)
    }
}

pub fn parse_ttl(ttl: Option<&str>) -> Result<u64, AppError> {
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

/// The query string's parameters, refusing unknown and repeated names: `allowed` lists the
/// names the route takes. Values are taken as written (no percent-decoding: every value this
/// API takes is plain digits).
pub fn parse_query<'query>(
    raw: Option<&'query str>,
    allowed: &[&str],
) -> Result<Vec<(&'query str, &'query str)>, AppError> {
    let mut parameters: Vec<(&str, &str)> = Vec::new();
    for part in raw.unwrap_or("").split('&').filter(|part| !part.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let shown: String = name.chars().take(64).collect();
        if !allowed.contains(&name) {
            let takes = match allowed {
                [] => "this route takes no query parameters".to_owned(),
                names => format!("this route takes only {}", names.join(", ")),
            };
            return Err(AppError::InvalidQuery(format!(
                "unknown query parameter {shown:?}: {takes}"
            )));
        }
        if parameters.iter().any(|(seen, _)| *seen == name) {
            return Err(AppError::InvalidQuery(format!(
                "query parameter {shown:?} is given more than once"
            )));
        }
        parameters.push((name, value));
    }
    Ok(parameters)
}

fn ttl_from_query(raw: Option<&str>) -> Result<u64, AppError> {
    let parameters = parse_query(raw, &["ttl"])?;
    parse_ttl(parameters.first().map(|(_, value)| *value))
}

fn key_from_path(path: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    let Path(key) = path.map_err(|_| AppError::InvalidKey)?;
    validate_key(&key)?;
    Ok(key)
}

pub async fn put(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, AppError> {
    let key = key_from_path(path)?;
    let ttl = ttl_from_query(query.as_deref())?;
    let value = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::InvalidBody(rejection.body_text())
        }
    })?;
    let mut pipeline = redis::pipe();
    let entry = state.keys.cache(&key);
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
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let key = key_from_path(path)?;
    parse_query(query.as_deref(), &[])?;
    let full_key = state.keys.cache(&key);
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
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, AppError> {
    let key = key_from_path(path)?;
    parse_query(query.as_deref(), &[])?;
    let full_key = state.keys.cache(&key);
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
    fn keys_of_allowed_characters_and_length_are_accepted() {
        assert!(validate_key("a").is_ok());
        assert!(validate_key("user:42.profile_v-1").is_ok());
        assert!(validate_key(&"k".repeat(128)).is_ok());
    }

    #[test]
    fn empty_long_or_odd_keys_are_refused() {
        for key in ["", "a b", "a/b", "ä", "a*", &"k".repeat(129)] {
            assert!(validate_key(key).is_err(), "{key:?} should be refused");
        }
    }

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

    fn query_error(raw: &str, allowed: &[&str]) -> String {
        match parse_query(Some(raw), allowed) {
            Err(AppError::InvalidQuery(message)) => message,
            other => panic!("{raw:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn query_parameters_must_be_known_and_given_once() {
        assert_eq!(ttl_from_query(Some("ttl=5")).ok(), Some(5));
        assert_eq!(ttl_from_query(None).ok(), Some(300));
        assert_eq!(ttl_from_query(Some("")).ok(), Some(300));
        assert!(query_error("TTL=5", &["ttl"]).contains("\"TTL\""));
        assert!(query_error("ttl[]=5", &["ttl"]).contains("\"ttl[]\""));
        assert!(query_error("ttl=5&ttl=6", &["ttl"]).contains("more than once"));
        assert!(query_error("x=1", &[]).contains("takes no query parameters"));
        assert!(matches!(
            ttl_from_query(Some("ttl")),
            Err(AppError::InvalidTtl)
        ));
    }
}
