//! Probes and metrics: `/healthz` (liveness), `/readyz` (Redis reachable, not stopping),
//! `/metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deadpool_redis::redis;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::state::AppState;

/// Liveness: the process serves HTTP. Deliberately ignores Redis, so an orchestrator never
/// restarts a healthy replica because Redis is down.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// The `status` of `/readyz` from the moment a shutdown begins: proxy-init drops a replica
/// that answers it from the proxy's servers (and only for this answer, never because Redis is
/// unreachable, which every replica would say at once).
pub const STOPPING: &str = "stopping";

/// Readiness: Redis answers PING within the readiness timeout, and no shutdown has begun.
/// The answer names the replica, so a client of the proxy (xtask's readiness wait) can tell
/// that every replica is reachable through it without counting a hit.
/// Once a shutdown has begun: 503 `{"status": "stopping", ...}` while the app serves on for its
/// lame-duck period.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, AppError> {
    if state.is_shutting_down() {
        let body = json!({
            "status": STOPPING,
            "replica": state.replica.as_ref(),
            "error": "shutting down",
        });
        return Ok((
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            Json(body),
        )
            .into_response());
    }
    let mut pipeline = redis::pipe();
    pipeline.ping();
    let (_pong,): (String,) = state
        .store
        .query_within(state.readyz_timeout, &pipeline)
        .await?;
    Ok(Json(json!({ "status": "ready", "replica": state.replica.as_ref() })).into_response())
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(state.store.pool_status()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(cause = %error, "rendering metrics failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
