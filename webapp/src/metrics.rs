//! Prometheus metrics: request counts and latency by matched route, Redis errors, pool gauges,
//! dropped log lines.
//!
//! Every label takes its value from a fixed set, whatever a client sends: methods outside
//! [`METHODS`], routes outside [`ROUTES`] and statuses outside [`STATUSES`] are [`OTHER`], and
//! a path no route matches is [`UNMATCHED_ROUTE`]. A label value never comes from the request
//! line, a header, a query or a key, so no client can add series (each costs memory for the
//! life of the process): at most [`MAX_REQUEST_SERIES`] request counters exist.
//!
//! Each [`AppState`](crate::state::AppState) owns its own registry rather than a process-global
//! one, so tests can run several apps in one process and read exact numbers. The one exception is
//! the dropped log lines: the log writer belongs to the process, so every registry reports the
//! process's count ([`crate::telemetry::dropped_log_lines`]).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use axum::http::{Method, StatusCode};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::error::RedisFailureKind;

/// Latency buckets in seconds: fine-grained below 10 ms, where a healthy request lands.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The label of any value outside its fixed set.
pub const OTHER: &str = "OTHER";

/// Methods counted under their own name; any other method (nginx passes on any token of
/// capital letters) is [`OTHER`].
pub const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"];

/// The routes of [`crate::app`], as axum's `MatchedPath` spells them.
pub const ROUTES: [&str; 7] = [
    "/",
    "/api/hits",
    "/api/replicas",
    "/api/cache/{key}",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// Route label for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Statuses the app answers with, counted under their own code; any other is [`OTHER`].
pub const STATUSES: [&str; 9] = [
    "200", "204", "400", "404", "405", "413", "500", "503", "507",
];

/// The most request counter series there can be: every method, route and status label
/// (each set plus [`OTHER`]; routes also [`UNMATCHED_ROUTE`]).
pub const MAX_REQUEST_SERIES: usize =
    (METHODS.len() + 1) * (ROUTES.len() + 2) * (STATUSES.len() + 1);

/// The label of `method`: its name when it is one of [`METHODS`], else [`OTHER`].
pub fn method_label(method: &Method) -> &'static str {
    label_in(&METHODS, method.as_str())
}

/// The label of a matched route (`None`: no route matched).
pub fn route_label(matched: Option<&str>) -> &'static str {
    matched.map_or(UNMATCHED_ROUTE, |route| label_in(&ROUTES, route))
}

/// The label of `status`: its code when it is one of [`STATUSES`], else [`OTHER`].
pub fn status_label(status: StatusCode) -> &'static str {
    label_in(&STATUSES, status.as_str())
}

fn label_in(set: &[&'static str], value: &str) -> &'static str {
    set.iter()
        .find(|known| **known == value)
        .copied()
        .unwrap_or(OTHER)
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    redis_errors: IntCounterVec,
    pool_max_size: IntGauge,
    pool_size: IntGauge,
    pool_available: IntGauge,
    pool_waiting: IntGauge,
    log_lines_dropped: IntCounter,
    /// Serialises bringing `log_lines_dropped` up to date, so concurrent scrapes add once.
    log_lines_dropped_sync: Mutex<()>,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "webapp_http_requests_total",
                "HTTP requests by method, matched route and status.",
            ),
            &["method", "route", "status"],
        )
        .context("define webapp_http_requests_total")?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "webapp_http_request_duration_seconds",
                "Time from request received to response headers ready, by matched route.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["route"],
        )
        .context("define webapp_http_request_duration_seconds")?;
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "webapp_redis_errors_total",
                "Failed Redis operations by cause (timeout, connection, auth, pool_exhausted, other).",
            ),
            &["kind"],
        )
        .context("define webapp_redis_errors_total")?;
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).with_context(|| format!("define {name}"))
        };
        let pool_max_size = gauge(
            "webapp_redis_pool_max_size",
            "Configured maximum number of Redis connections.",
        )?;
        let pool_size = gauge(
            "webapp_redis_pool_size",
            "Redis connections currently open (in use or idle).",
        )?;
        let pool_available = gauge(
            "webapp_redis_pool_available",
            "Idle Redis connections ready for use.",
        )?;
        let pool_waiting = gauge(
            "webapp_redis_pool_waiting",
            "Requests waiting for a Redis connection.",
        )?;
        let log_lines_dropped = IntCounter::new(
            "webapp_log_lines_dropped_total",
            "Log lines dropped because the log writer fell behind (or stdout failed).",
        )
        .context("define webapp_log_lines_dropped_total")?;
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(redis_errors.clone()),
            Box::new(pool_max_size.clone()),
            Box::new(pool_size.clone()),
            Box::new(pool_available.clone()),
            Box::new(pool_waiting.clone()),
            Box::new(log_lines_dropped.clone()),
        ] {
            registry.register(collector).context("register a metric")?;
        }
        Ok(Metrics {
            registry,
            requests,
            latency,
            redis_errors,
            pool_max_size,
            pool_size,
            pool_available,
            pool_waiting,
            log_lines_dropped,
            log_lines_dropped_sync: Mutex::new(()),
        })
    }

    /// Counts a request and its latency; the labels are bounded here, whatever the caller
    /// passes ([`method_label`], [`route_label`], [`status_label`]).
    pub fn observe_request(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let route = route_label(route);
        self.requests
            .with_label_values(&[method_label(method), route, status_label(status)])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_redis_error(&self, kind: RedisFailureKind) {
        self.redis_errors.with_label_values(&[kind.label()]).inc();
    }

    /// Renders the text exposition format, sampling the pool gauges at scrape time.
    pub fn render(&self, pool: deadpool_redis::Status) -> anyhow::Result<String> {
        let as_gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.pool_max_size.set(as_gauge(pool.max_size));
        self.pool_size.set(as_gauge(pool.size));
        self.pool_available.set(as_gauge(pool.available));
        self.pool_waiting.set(as_gauge(pool.waiting));
        // A counter only goes up: add what the log writer dropped since the last scrape.
        if let Ok(_sync) = self.log_lines_dropped_sync.lock() {
            let dropped = crate::telemetry::dropped_log_lines();
            self.log_lines_dropped
                .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        }
        let mut buffer = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .context("encode metrics")?;
        String::from_utf8(buffer).context("metrics text is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_outside_their_sets_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        let odd = Method::from_bytes(b"FROBNICATE").expect("a method token");
        assert_eq!(method_label(&odd), OTHER);
        assert_eq!(method_label(&Method::CONNECT), OTHER);
        assert_eq!(route_label(Some("/api/cache/{key}")), "/api/cache/{key}");
        assert_eq!(route_label(Some("/not/a/route")), OTHER);
        assert_eq!(route_label(None), UNMATCHED_ROUTE);
        assert_eq!(status_label(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), OTHER);
    }

    #[test]
    fn the_series_bound_is_the_product_of_the_label_sets() {
        assert_eq!(MAX_REQUEST_SERIES, 8 * 9 * 10);
    }
}
