//! The one error type handlers return, and how each case becomes an HTTP response.
//!
//! Clients get a short JSON body `{"error": "..."}` and the right status; the details (for example
//! which Redis error happened) travel in a response extension and are logged once by the request
//! middleware, so nothing internal leaks to clients and nothing is logged twice.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Seconds a client should wait before retrying after a 503: Redis usually comes back quickly.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug)]
pub enum AppError {
    /// The cache key is empty, too long or contains a character outside `[A-Za-z0-9._:-]`.
    InvalidKey,
    /// The `ttl` query parameter is not an integer in 1..=86400.
    InvalidTtl,
    /// The request body could not be read (other than being too large).
    InvalidBody(String),
    /// The body is larger than the 64 KiB the cache accepts.
    PayloadTooLarge,
    /// The cache key does not exist (or has expired).
    KeyNotFound,
    /// No route matches the path.
    RouteNotFound,
    /// A query parameter is unknown, repeated, or not written canonically; names it.
    InvalidQuery(String),
    /// The cache holds its quota of entries and the key is new.
    CacheFull { max_entries: u64 },
    /// A Redis operation failed; [`RedisFailure::kind`] tells whether Redis was unreachable
    /// (503), out of memory (507) or refused the command (500).
    Redis(RedisFailure),
}

/// Why a Redis operation failed; `kind` labels the `webapp_redis_errors_total` metric:
/// `connection`, `timeout`, `pool_exhausted`, `auth`, `busy` and `other` mean Redis could not
/// be used (503, retry shortly); `oom` that it is up but full (507); `reply` that it refused the
/// command (500).
#[derive(Debug, Clone)]
pub struct RedisFailure {
    pub kind: &'static str,
    pub detail: String,
}

impl RedisFailure {
    fn status(&self) -> StatusCode {
        match self.kind {
            "oom" => StatusCode::INSUFFICIENT_STORAGE,
            "reply" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn public_message(&self) -> &'static str {
        match self.kind {
            "oom" => "redis is out of memory: the write was refused",
            "reply" => "redis refused the command",
            _ => "redis unavailable, retry shortly",
        }
    }
}

/// Internal detail attached to error responses for the request log; never sent to the client.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidKey
            | AppError::InvalidTtl
            | AppError::InvalidBody(_)
            | AppError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            AppError::CacheFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::KeyNotFound | AppError::RouteNotFound => StatusCode::NOT_FOUND,
            AppError::Redis(failure) => failure.status(),
        }
    }

    fn public_message(&self) -> std::borrow::Cow<'static, str> {
        let fixed = match self {
            AppError::InvalidKey => "key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
            AppError::InvalidTtl => "ttl must be an integer number of seconds from 1 to 86400",
            AppError::InvalidBody(_) => "could not read the request body",
            AppError::PayloadTooLarge => "body too large: the limit is 65536 bytes",
            AppError::KeyNotFound => "key not found",
            AppError::RouteNotFound => "not found",
            AppError::Redis(failure) => failure.public_message(),
            AppError::InvalidQuery(message) => return message.clone().into(),
            AppError::CacheFull { max_entries } => {
                return format!(
                    "cache full: it holds at most {max_entries} entries; delete one or wait for entries to expire"
                )
                .into()
            }
        };
        fixed.into()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let mut response = (status, Json(ErrorBody::new(&message))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        let detail = match self {
            AppError::Redis(failure) => Some(failure.detail),
            AppError::InvalidBody(detail) => Some(detail),
            _ => None,
        };
        if let Some(detail) = detail {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

#[derive(serde::Serialize)]
pub struct ErrorBody<'message> {
    error: &'message str,
}

impl<'message> ErrorBody<'message> {
    pub fn new(error: &'message str) -> Self {
        ErrorBody { error }
    }
}
