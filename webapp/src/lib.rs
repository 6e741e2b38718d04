//! The webstack web service: a hit counter and a small cache in Redis, behind nginx.
//!
//! [`app`] builds the router (used directly by router tests), [`run`] serves it on a listener
//! until a shutdown signal, then drains in-flight requests within a grace period.
//! `main.rs` only parses settings, starts logging, binds and calls [`run`].

pub mod config;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod state;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

use crate::middleware::{
    discard_unused_body, observe_request, MakeSequentialRequestId, REQUEST_ID_HEADER,
};
use crate::routes::{cache, counter, health};
pub use crate::state::AppState;

/// The router with every route and middleware; needs no socket, so tests can `oneshot` it.
pub fn app(state: AppState) -> Router {
    let request_id_header = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    // Outermost first: give the request an id, echo it, log and measure, then bound the time.
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(
            request_id_header.clone(),
            MakeSequentialRequestId::default(),
        ))
        .layer(PropagateRequestIdLayer::new(request_id_header))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe_request,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.request_timeout,
        ));
    Router::new()
        .route("/", get(counter::greet))
        .route("/api/hits", get(counter::hits))
        .route("/api/replicas", get(counter::replicas))
        .route(
            "/api/cache/{key}",
            get(cache::get).put(cache::put).delete(cache::delete),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(cache::MAX_VALUE_BYTES))
        .layer(axum::middleware::from_fn(discard_unused_body))
        .layer(layers)
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` completes; then, as a lame duck, serves on
/// for `state.lame_duck` with /readyz answering 503 "stopping", so the proxy stops sending it
/// requests before it stops taking them; then stops accepting, closes idle keep-alive
/// connections and lets in-flight requests finish for at most `grace`; after that the remaining
/// connections are dropped, so stuck clients cannot hold the process up.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let shutdown_started = Arc::new(Notify::new());
    let signal = {
        let state = state.clone();
        let shutdown_started = Arc::clone(&shutdown_started);
        async move {
            shutdown.await;
            state.begin_shutdown();
            tracing::info!(
                lame_duck_secs = state.lame_duck.as_secs_f64(),
                "stopping: /readyz says so, serving on until the proxy has let go of this replica"
            );
            tokio::time::sleep(state.lame_duck).await;
            tracing::info!(
                grace_secs = grace.as_secs_f64(),
                "shutting down: no new connections, closing idle ones, draining in-flight requests"
            );
            shutdown_started.notify_one();
        }
    };
    // Small responses: send them at once instead of waiting for Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(cause = %error, "could not set TCP_NODELAY");
        }
    });
    // Keeps this replica in /api/replicas while it runs; stops with this function.
    let seen = tokio::spawn(counter::keep_replica_seen(state.clone()));
    let _stop_seen = AbortOnDrop(seen);
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signal);
    let deadline = async {
        shutdown_started.notified().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => {
            result.context("serve HTTP")?;
            tracing::info!("all connections closed, exiting");
        }
        () = deadline => {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "grace period over, dropping the connections still open"
            );
        }
    }
    Ok(())
}

/// Aborts a background task when dropped, so it ends with the function that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(cause = %error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(cause = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
