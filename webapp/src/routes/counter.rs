//! The hit counter: `GET /` counts and greets, `/api/hits` and `/api/replicas` report.
//!
//! Per-replica counts cover the replicas seen lately: each replica refreshes its last-seen time
//! in Redis every quarter of `WEBAPP_REPLICA_FORGET_AFTER_SECS` ([`keep_replica_seen`]), and one
//! that has not for that long is forgotten: a script moves its count into the retired total and
//! drops it from the hash in one step, so the per-replica counts plus the retired total always
//! equal the shared counter, which pruning never touches.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Json;
use deadpool_redis::redis;
use serde::Serialize;

use crate::error::AppError;
use crate::routes::extract::CacheKey;
use crate::state::AppState;

/// Header naming one client request across the proxy's retries: nginx sets it to its own
/// request id, the same for every replica it tries (nginx/nginx.conf).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Seconds a counted idempotency key is remembered: far longer than nginx spends retrying one
/// request on other replicas (`proxy_next_upstream_timeout`).
pub const COUNTED_KEY_SECONDS: u64 = 30;

/// Counts the hit once per idempotency key: the first replica that runs it increments both
/// counters; a retry of the same request elsewhere only reads the total. Run by its SHA1
/// ([`crate::store::Store::invoke`]), hashed once.
static COUNT_ONCE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  return redis.call('INCR', KEYS[1])
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
",
    )
});

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
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|key| CacheKey::is_valid(key));
    let hits: Option<u64> = if method == Method::HEAD {
        let mut pipeline = redis::pipe();
        pipeline.get(&state.keys.hits);
        state.store.query::<(Option<u64>,)>(&pipeline).await?.0
    } else if let Some(key) = idempotency_key {
        let mut count_once = COUNT_ONCE.prepare_invoke();
        count_once
            .key(&*state.keys.hits)
            .key(&*state.keys.replica_hits)
            .key(state.keys.counted(key))
            .arg(&*state.replica)
            .arg(COUNTED_KEY_SECONDS);
        state.store.invoke(&count_once).await?
    } else {
        let mut pipeline = redis::pipe();
        pipeline
            .incr(&state.keys.hits, 1)
            .hincr(&state.keys.replica_hits, &*state.replica, 1)
            .ignore();
        state.store.query::<(Option<u64>,)>(&pipeline).await?.0
    };
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
    /// Hits of replicas forgotten by `/api/replicas`: with theirs, the total.
    retired_replica_hits: u64,
}

/// The shared counter, without incrementing it.
pub async fn hits(State(state): State<AppState>) -> Result<Json<Hits>, AppError> {
    let mut pipeline = redis::pipe();
    pipeline.get(&state.keys.hits).get(&state.keys.retired_hits);
    let (hits, retired): (Option<u64>, Option<u64>) = state.store.query(&pipeline).await?;
    Ok(Json(Hits {
        hits: hits.unwrap_or(0),
        replica: state.replica.to_string(),
        retired_replica_hits: retired.unwrap_or(0),
    }))
}

/// Forgets the replicas unseen for `ARGV[1]` ms and answers the per-replica counts of the rest.
/// KEYS: the per-replica hash, the last-seen sorted set, the retired total. `ARGV[2]`, when not
/// empty, is a replica seen now (the caller). A counted replica with no last-seen time (counted
/// since it was forgotten, or before these were kept) is seen now: forgotten only after as long
/// again. A forgotten replica's count moves to the retired total in the same step, so the sum of
/// the counts and the retired total never changes. Redis's clock, so replicas need not agree.
static FORGET_GONE_REPLICAS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], now_ms, ARGV[2])
end
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  redis.call('ZADD', KEYS[2], 'NX', now_ms, name)
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms - tonumber(ARGV[1]))) do
  local hits = redis.call('HGET', KEYS[1], name)
  if hits then
    redis.call('INCRBY', KEYS[3], hits)
    redis.call('HDEL', KEYS[1], name)
  end
  redis.call('ZREM', KEYS[2], name)
end
return redis.call('HGETALL', KEYS[1])
",
    )
});

/// Runs [`FORGET_GONE_REPLICAS`], marking `seen` (this replica) as seen now when given.
async fn forget_gone_replicas(
    state: &AppState,
    seen: Option<&str>,
) -> Result<BTreeMap<String, u64>, AppError> {
    let mut forget = FORGET_GONE_REPLICAS.prepare_invoke();
    forget
        .key(&*state.keys.replica_hits)
        .key(&*state.keys.replica_seen)
        .key(&*state.keys.retired_hits)
        .arg(u64::try_from(state.replica_forget_after.as_millis()).unwrap_or(u64::MAX))
        .arg(seen.unwrap_or(""));
    state.store.invoke(&forget).await
}

/// Hits per replica seen lately, so a user can watch the proxy spread the load.
pub async fn replicas(
    State(state): State<AppState>,
) -> Result<Json<BTreeMap<String, u64>>, AppError> {
    Ok(Json(forget_gone_replicas(&state, None).await?))
}

/// How often a replica refreshes its last-seen time: four times within the forget time, so a
/// late or failed refresh or two does not make a live replica look gone.
pub fn seen_interval(forget_after: Duration) -> Duration {
    forget_after / 4
}

/// Refreshes this replica's last-seen time (and forgets gone replicas) every
/// [`seen_interval`], for as long as it runs; a failure (Redis down) waits for the next turn.
/// The first turn comes one interval after start: a replica that counted a hit by then is
/// listed as seen when a read of `/api/replicas` first finds it.
pub async fn keep_replica_seen(state: AppState) {
    let interval = seen_interval(state.replica_forget_after);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = forget_gone_replicas(&state, Some(&state.replica)).await {
            tracing::debug!(cause = ?error, "could not refresh this replica's last-seen time");
        }
    }
}
