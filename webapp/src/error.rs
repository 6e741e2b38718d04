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
    /// The cache key is empty, too long, contains a character outside `[A-Za-z0-9._:-]`, or is
    /// `.` or `..` (after percent-decoding).
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
    /// The client's address holds its quota of entries and the key is not one of them.
    ClientQuotaFull { max_entries_per_client: u64 },
    /// A Redis operation failed; its [`RedisFailureKind`] tells whether Redis was unreachable
    /// (503), out of memory (507) or refused the command (500).
    Redis(RedisFailure),
}

/// Why a Redis operation failed, told apart once where the failure is seen (`store.rs`) and
/// read by everything after it: the status and message a client gets, and the
/// `webapp_redis_errors_total` label ([`RedisFailureKind::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailureKind {
    /// Connecting failed, or the connection broke (refused, reset, closed).
    Connection,
    /// No answer in time: connecting, checking a pooled connection, or the whole operation.
    Timeout,
    /// No pooled connection became free within the pool's wait timeout.
    PoolExhausted,
    /// Redis refused the password.
    Auth,
    /// Redis is up but cannot serve right now (loading, busy script, read-only, ...).
    Busy,
    /// Redis is up but full: `maxmemory` reached, the write was refused.
    OutOfMemory,
    /// Redis answered the command with any other error reply.
    Reply,
    /// Anything else the client or the pool reported.
    Other,
}

impl RedisFailureKind {
    /// Every kind: the label values the Redis error metric can take.
    pub const ALL: [RedisFailureKind; 8] = [
        RedisFailureKind::Connection,
        RedisFailureKind::Timeout,
        RedisFailureKind::PoolExhausted,
        RedisFailureKind::Auth,
        RedisFailureKind::Busy,
        RedisFailureKind::OutOfMemory,
        RedisFailureKind::Reply,
        RedisFailureKind::Other,
    ];

    /// The `kind` label of `webapp_redis_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            RedisFailureKind::Connection => "connection",
            RedisFailureKind::Timeout => "timeout",
            RedisFailureKind::PoolExhausted => "pool_exhausted",
            RedisFailureKind::Auth => "auth",
            RedisFailureKind::Busy => "busy",
            RedisFailureKind::OutOfMemory => "oom",
            RedisFailureKind::Reply => "reply",
            RedisFailureKind::Other => "other",
        }
    }

    /// 503 (retry shortly) unless Redis answered: 507 when full, 500 when it refused.
    pub fn status(self) -> StatusCode {
        match self {
            RedisFailureKind::OutOfMemory => StatusCode::INSUFFICIENT_STORAGE,
            RedisFailureKind::Reply => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn public_message(self) -> &'static str {
        match self {
            RedisFailureKind::OutOfMemory => "redis is out of memory: the write was refused",
            RedisFailureKind::Reply => "redis refused the command",
            _ => "redis unavailable, retry shortly",
        }
    }
}

/// A failed Redis operation: its kind, and the detail the request log gets (never the client).
#[derive(Debug, Clone)]
pub struct RedisFailure {
    pub kind: RedisFailureKind,
    pub detail: String,
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
            AppError::CacheFull { .. } | AppError::ClientQuotaFull { .. } => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::KeyNotFound | AppError::RouteNotFound => StatusCode::NOT_FOUND,
            AppError::Redis(failure) => failure.kind.status(),
        }
    }

    fn public_message(&self) -> std::borrow::Cow<'static, str> {
        let fixed = match self {
            AppError::InvalidKey => {
                "key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, other than . and .."
            }
            AppError::InvalidTtl => "ttl must be an integer number of seconds from 1 to 86400",
            AppError::InvalidBody(_) => "could not read the request body",
            AppError::PayloadTooLarge => "body too large: the limit is 65536 bytes",
            AppError::KeyNotFound => "key not found",
            AppError::RouteNotFound => "not found",
            AppError::Redis(failure) => failure.kind.public_message(),
            AppError::InvalidQuery(message) => return message.clone().into(),
            AppError::CacheFull { max_entries } => {
                return format!(
                    "cache full: it holds at most {max_entries} entries; delete one or wait for entries to expire"
                )
                .into()
            }
            AppError::ClientQuotaFull {
                max_entries_per_client,
            } => {
                return format!(
                    "cache quota of your address is full: at most {max_entries_per_client} entries per client address; delete one or wait for entries to expire"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_redis_failure_kind_has_its_label_status_and_message() {
        use RedisFailureKind::*;
        let unavailable = "redis unavailable, retry shortly";
        let expected = [
            (Connection, "connection", 503, unavailable),
            (Timeout, "timeout", 503, unavailable),
            (PoolExhausted, "pool_exhausted", 503, unavailable),
            (Auth, "auth", 503, unavailable),
            (Busy, "busy", 503, unavailable),
            (
                OutOfMemory,
                "oom",
                507,
                "redis is out of memory: the write was refused",
            ),
            (Reply, "reply", 500, "redis refused the command"),
            (Other, "other", 503, unavailable),
        ];
        assert_eq!(expected.map(|row| row.0), RedisFailureKind::ALL);
        for (kind, label, status, message) in expected {
            assert_eq!(kind.label(), label);
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
            assert_eq!(kind.public_message(), message, "{kind:?}");
        }
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("an in-memory body");
        String::from_utf8(bytes.to_vec()).expect("a UTF-8 body")
    }

    #[tokio::test]
    async fn a_redis_failure_keeps_its_detail_from_the_client() {
        let failure = RedisFailure {
            kind: RedisFailureKind::Timeout,
            detail: "Redis did not answer within 750 ms".to_owned(),
        };
        let response = AppError::Redis(failure).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let detail = response.extensions().get::<ErrorDetail>().cloned();
        assert_eq!(
            detail.map(|detail| detail.0).as_deref(),
            Some("Redis did not answer within 750 ms")
        );
        assert_eq!(
            body_text(response).await,
            r#"{"error":"redis unavailable, retry shortly"}"#
        );
    }

    #[tokio::test]
    async fn a_full_redis_is_507_without_retry_after() {
        let failure = RedisFailure {
            kind: RedisFailureKind::OutOfMemory,
            detail: String::new(),
        };
        let response = AppError::Redis(failure).into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(
            body_text(response).await,
            r#"{"error":"redis is out of memory: the write was refused"}"#
        );
    }

    #[tokio::test]
    async fn the_two_cache_quotas_are_507s_that_say_which_one_is_full() {
        let cases = [
            (
                AppError::CacheFull { max_entries: 1024 },
                r#"{"error":"cache full: it holds at most 1024 entries; delete one or wait for entries to expire"}"#,
            ),
            (
                AppError::ClientQuotaFull {
                    max_entries_per_client: 64,
                },
                r#"{"error":"cache quota of your address is full: at most 64 entries per client address; delete one or wait for entries to expire"}"#,
            ),
        ];
        for (error, body) in cases {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
            assert!(response.headers().get(header::RETRY_AFTER).is_none());
            assert_eq!(body_text(response).await, body);
        }
    }
}
