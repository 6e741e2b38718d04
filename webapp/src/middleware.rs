//! Cross-cutting request handling: request ids, the access log, metrics, JSON bodies for errors.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::error::{ErrorBody, ErrorDetail};
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Makes request ids: 16 hex digits, unique within the process, unpredictable across processes.
///
/// A counter scrambled by a bijective mixer (splitmix64) with a random per-process seed: no
/// allocation-heavy UUID crate needed, and ids from different replicas do not line up.
#[derive(Clone)]
pub struct MakeSequentialRequestId {
    seed: u64,
    counter: Arc<AtomicU64>,
}

impl Default for MakeSequentialRequestId {
    fn default() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        MakeSequentialRequestId {
            seed: hasher.finish(),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for MakeSequentialRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let sequence = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = splitmix64(self.seed.wrapping_add(sequence));
        HeaderValue::from_str(&format!("{id:016x}"))
            .ok()
            .map(RequestId::new)
    }
}

fn splitmix64(input: u64) -> u64 {
    let mut z = input.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Logs one line per request (method, matched route, status, latency, request id) and records
/// the request metrics. Also gives JSON bodies to bodiless error responses produced by axum or
/// tower (405, the timeout layer's 503), so every error a client sees is `{"error": ...}`.
pub async fn observe_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let request_id = request.headers().get(REQUEST_ID_HEADER).cloned();

    let mut response = next.run(request).await;

    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && response.body().size_hint().exact() == Some(0)
    {
        response = with_json_error_body(response);
    }
    let elapsed = started.elapsed();
    let route = route.as_ref().map(MatchedPath::as_str);
    state
        .metrics
        .observe_request(&method, route, status, elapsed);
    // The log line's route is the metric's label: always one of a fixed set.
    let route_label = crate::metrics::route_label(route);

    let request_id = request_id
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    // Whole microseconds, so log lines read 1.215 rather than 1.2155040000000001.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    let detail = response
        .extensions()
        .get::<ErrorDetail>()
        .map(|detail| detail.0.as_str());
    if status.is_server_error() {
        tracing::warn!(
            method = %method, route = route_label, status = status.as_u16(), latency_ms,
            request_id, error = detail, "request failed"
        );
    } else {
        tracing::info!(
            method = %method, route = route_label, status = status.as_u16(), latency_ms,
            request_id, error = detail, "request"
        );
    }
    response
}

fn with_json_error_body(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    let status = parts.status;
    let message = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let body = Json(ErrorBody::new(&message)).into_response();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Response::from_parts(parts, Body::new(body.into_body()))
}

/// Reads the body of every request but `PUT` (the only method that takes one) to its end, at
/// most [`crate::routes::cache::MAX_VALUE_BYTES`], and hands the handler an empty one.
///
/// A client may send a body with any request. A handler that answers without reading it makes
/// the server close a socket that still holds unread bytes, which resets the connection while
/// the proxy may still be sending: nginx then sees a failed request and retries it on another
/// replica, after the first one had already answered (and counted) it.
pub async fn discard_unused_body(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::PUT || request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, crate::routes::cache::MAX_VALUE_BYTES).await {
        Ok(_) => next.run(Request::from_parts(parts, Body::empty())).await,
        Err(_) => crate::error::AppError::PayloadTooLarge.into_response(),
    }
}
