//! A small shared cache: `PUT`/`GET`/`DELETE /api/cache/{key}`.
//!
//! Input is validated before Redis is touched: keys are 1-128 characters of
//! `[A-Za-z0-9._:-]`, `ttl` is 1..=86400 seconds, bodies are at most 64 KiB.
//! Entries live under `<prefix>cache:` so requests cannot reach other Redis data.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_redis::redis;
use serde::Deserialize;

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

#[derive(Deserialize)]
pub struct PutParameters {
    ttl: Option<String>,
}

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
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if (1..=MAX_TTL_SECONDS).contains(&seconds) => Ok(seconds),
            _ => Err(AppError::InvalidTtl),
        },
    }
}

fn key_from_path(path: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    let Path(key) = path.map_err(|_| AppError::InvalidKey)?;
    validate_key(&key)?;
    Ok(key)
}

pub async fn put(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    parameters: Result<Query<PutParameters>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, AppError> {
    let key = key_from_path(path)?;
    let Query(parameters) = parameters.map_err(|_| AppError::InvalidTtl)?;
    let ttl = parse_ttl(parameters.ttl.as_deref())?;
    let value = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::InvalidBody(rejection.body_text())
        }
    })?;
    let mut pipeline = redis::pipe();
    pipeline
        .set_ex(state.keys.cache(&key), value.as_ref(), ttl)
        .ignore();
    let () = store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AppError> {
    let key = key_from_path(path)?;
    let full_key = state.keys.cache(&key);
    let mut pipeline = redis::pipe();
    // One round trip; if the key expires between the two commands the TTL reads -2, shown as 0.
    pipeline.get(&full_key).ttl(&full_key);
    let (value, ttl): (Option<Vec<u8>>, i64) =
        store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
    let value = value.ok_or(AppError::KeyNotFound)?;
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
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
) -> Result<StatusCode, AppError> {
    let key = key_from_path(path)?;
    let mut pipeline = redis::pipe();
    pipeline.del(state.keys.cache(&key));
    let (deleted,): (u64,) =
        store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
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
        for bad in ["0", "86401", "-1", "1.5", "", "ten"] {
            assert!(parse_ttl(Some(bad)).is_err(), "{bad:?} should be refused");
        }
    }
}
