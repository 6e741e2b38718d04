//! The hit counter: `GET /` counts and greets, `/api/hits` and `/api/replicas` report.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Json;
use deadpool_redis::redis;
use serde::Serialize;

use crate::error::AppError;
use crate::state::AppState;
use crate::store;

/// Header naming one client request across the proxy's retries: nginx sets it to its own
/// request id, the same for every replica it tries (nginx/nginx.conf).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Seconds a counted idempotency key is remembered: far longer than nginx spends retrying one
/// request on other replicas (`proxy_next_upstream_timeout`).
pub const COUNTED_KEY_SECONDS: u64 = 30;

/// Counts the hit once per idempotency key: the first replica that runs it increments both
/// counters; a retry of the same request elsewhere only reads the total.
const COUNT_ONCE: &str = r"
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return redis.call('INCR', KEYS[1])
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
";

/// Increments the shared counter and this replica's count in one round trip, and greets with
/// the new total. `HEAD /` counts nothing: it reads the total, as a safe method must.
///
/// Through the proxy a request carries an `Idempotency-Key`, and a script counts each key once,
/// so a request that nginx retries on another replica (because the first one failed after it
/// had already counted) is not counted twice. Without the header, a plain pipeline: both
/// commands leave in one write and Redis runs them back to back, so the per-replica counts
/// always add up to the total.
pub async fn greet(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<String, AppError> {
    let mut pipeline = redis::pipe();
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|key| crate::routes::cache::validate_key(key).is_ok());
    if method == Method::HEAD {
        pipeline.get(&state.keys.hits);
    } else if let Some(key) = idempotency_key {
        pipeline
            .cmd("EVAL")
            .arg(COUNT_ONCE)
            .arg(3)
            .arg(&state.keys.hits)
            .arg(&state.keys.replica_hits)
            .arg(state.keys.counted(key))
            .arg(&*state.replica)
            .arg(COUNTED_KEY_SECONDS);
    } else {
        pipeline
            .incr(&state.keys.hits, 1)
            .hincr(&state.keys.replica_hits, &*state.replica, 1)
            .ignore();
    }
    let (hits,): (Option<u64>,) =
        store::query(&state.redis, &state.metrics, state.redis_timeout, &pipeline).await?;
    Ok(format!(
        "Hello from {}! I have been seen {} times.",
        state.replica,
        hits.unwrap_or(0)
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
