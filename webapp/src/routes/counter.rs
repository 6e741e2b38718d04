//! The hit counter: `GET /` counts and greets, `/api/hits` and `/api/replicas` report.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use deadpool_redis::redis;
use serde::Serialize;

use crate::error::AppError;
use crate::state::AppState;
use crate::store;

/// Increments the shared counter and this replica's count in one round trip, and greets with
/// the new total.
///
/// A plain pipeline rather than MULTI/EXEC: both commands leave in one write and Redis runs
/// them back to back, so the per-replica counts always add up to the total; MULTI/EXEC would
/// double the commands Redis executes for an isolation no reader needs.
pub async fn greet(State(state): State<AppState>) -> Result<String, AppError> {
    let mut pipeline = redis::pipe();
    pipeline
        .incr(&state.keys.hits, 1)
        .hincr(&state.keys.replica_hits, &*state.replica, 1)
        .ignore();
    let (hits,): (u64,) =
        store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
    Ok(format!(
        "Hello from {}! I have been seen {hits} times.",
        state.replica
    ))
}

#[derive(Serialize)]
pub struct Hits {
    hits: u64,
    replica: String,
}

/// The shared counter, without incrementing it.
pub async fn hits(State(state): State<AppState>) -> Result<Json<Hits>, AppError> {
    let mut pipeline = redis::pipe();
    pipeline.get(&state.keys.hits);
    let (hits,): (Option<u64>,) =
        store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
    Ok(Json(Hits {
        hits: hits.unwrap_or(0),
        replica: state.replica.to_string(),
    }))
}

/// Hits per replica, so a user can watch the proxy spread the load.
pub async fn replicas(
    State(state): State<AppState>,
) -> Result<Json<BTreeMap<String, u64>>, AppError> {
    let mut pipeline = redis::pipe();
    pipeline.hgetall(&state.keys.replica_hits);
    let (counts,): (BTreeMap<String, u64>,) =
        store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
    Ok(Json(counts))
}
