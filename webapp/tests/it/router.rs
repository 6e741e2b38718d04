//! Router tests without a socket (`oneshot`), for every validation rule and error status.
//!
//! Redis here is a closed loopback port: a request that validation should stop never reaches
//! Redis, so it must answer 4xx; one that does reach it gets the 503 an unreachable Redis gives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::ServiceExt;
use webapp::AppState;

use crate::support::{app::test_settings, free_port, unique_prefix};

fn state_with_unreachable_redis() -> AppState {
    let url = format!("redis://127.0.0.1:{}", free_port());
    AppState::from_settings(&test_settings(&url, &unique_prefix(), &[])).expect("build state")
}

async fn send(state: &AppState, method: Method, uri: &str, body: Body) -> Response {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .expect("build request");
    webapp::app(state.clone())
        .oneshot(request)
        .await
        .expect("router is infallible")
}

async fn json_body(response: Response) -> Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("body {bytes:?} is not JSON: {error}"))
}

async fn assert_json_error(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json",
        "{status} must have a JSON body"
    );
    let body = json_body(response).await;
    assert!(body["error"].is_string(), "no error message in {body}");
    body
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let state = state_with_unreachable_redis();
    let response = send(&state, Method::GET, "/no/such/route", Body::empty()).await;
    assert_json_error(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn wrong_method_is_a_json_405_listing_allowed_methods() {
    let state = state_with_unreachable_redis();
    let response = send(&state, Method::POST, "/api/hits", Body::empty()).await;
    assert!(response.headers().contains_key(header::ALLOW));
    assert_json_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn bad_keys_are_refused_with_400_for_every_cache_method() {
    let state = state_with_unreachable_redis();
    let too_long = "k".repeat(129);
    for key in [
        "bad%20key",
        "a%2Fb",
        "a%2fb",
        "%C3%A4",
        "star*",
        "..",
        ".",
        "%2e%2e",
        ".%2e",
        "%2E%2E",
        "%2e",
        too_long.as_str(),
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let uri = format!("/api/cache/{key}");
            let response = send(&state, method.clone(), &uri, Body::from("v")).await;
            let body = assert_json_error(response, StatusCode::BAD_REQUEST).await;
            assert!(
                body["error"].as_str().unwrap_or_default().contains("key"),
                "{method} {uri}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn ttl_outside_1_to_86400_or_not_a_number_is_refused_with_400() {
    let state = state_with_unreachable_redis();
    for ttl in ["0", "86401", "-5", "abc", "1.5", ""] {
        let uri = format!("/api/cache/key?ttl={ttl}");
        let response = send(&state, Method::PUT, &uri, Body::from("v")).await;
        let body = assert_json_error(response, StatusCode::BAD_REQUEST).await;
        assert!(
            body["error"].as_str().unwrap_or_default().contains("ttl"),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn a_put_refused_for_its_key_or_query_has_had_its_body_read() {
    // An answer sent while the client is still sending resets the connection (see
    // `middleware::discard_unused_body`), so a refused PUT reads its body first.
    let state = state_with_unreachable_redis();
    for uri in ["/api/cache/a*", "/api/cache/k?x=1", "/api/cache/k?ttl=0"] {
        let read = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&read);
        let body = Full::new(Bytes::from_static(b"v")).map_frame(move |frame| {
            flag.store(true, Ordering::SeqCst);
            frame
        });
        let response = send(&state, Method::PUT, uri, Body::new(body)).await;
        assert_json_error(response, StatusCode::BAD_REQUEST).await;
        assert!(
            read.load(Ordering::SeqCst),
            "PUT {uri} was answered before its body was read"
        );
    }
}

#[tokio::test]
async fn body_over_64_kib_is_refused_with_413() {
    let state = state_with_unreachable_redis();
    let body = Body::from(vec![b'x'; 64 * 1024 + 1]);
    let response = send(&state, Method::PUT, "/api/cache/big", body).await;
    assert_json_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn valid_request_with_redis_unreachable_is_a_503_with_retry_after() {
    let state = state_with_unreachable_redis();
    // Exactly 64 KiB passes validation, so this one does try Redis.
    let body = Body::from(vec![b'x'; 64 * 1024]);
    let response = send(&state, Method::PUT, "/api/cache/big?ttl=86400", body).await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_json_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    for path in ["/", "/api/hits", "/api/replicas", "/readyz", "/api/cache/k"] {
        let response = send(&state, Method::GET, path, Body::empty()).await;
        assert_eq!(response.headers()[header::RETRY_AFTER], "1", "{path}");
        assert_json_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    }
}

#[tokio::test]
async fn healthz_is_200_even_without_redis() {
    let state = state_with_unreachable_redis();
    let response = send(&state, Method::GET, "/healthz", Body::empty()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_id_is_echoed_when_given_and_generated_when_absent() {
    let state = state_with_unreachable_redis();
    let request = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .expect("build request");
    let response = webapp::app(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.headers()["x-request-id"], "abc-123");

    let first = send(&state, Method::GET, "/healthz", Body::empty()).await;
    let second = send(&state, Method::GET, "/healthz", Body::empty()).await;
    let first_id = first.headers()["x-request-id"].clone();
    assert!(!first_id.is_empty());
    assert_ne!(first_id, second.headers()["x-request-id"]);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_redis_errors() {
    let state = state_with_unreachable_redis();
    for _ in 0..2 {
        send(&state, Method::GET, "/healthz", Body::empty()).await;
    }
    send(&state, Method::GET, "/api/cache/one", Body::empty()).await;
    send(&state, Method::GET, "/random/path", Body::empty()).await;

    let response = send(&state, Method::GET, "/metrics", Body::empty()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    for expected in [
        r#"webapp_http_requests_total{method="GET",route="/healthz",status="200"} 2"#,
        r#"webapp_http_requests_total{method="GET",route="/api/cache/{key}",status="503"} 1"#,
        r#"webapp_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"webapp_http_request_duration_seconds_count{route="/healthz"} 2"#,
        r#"webapp_redis_errors_total{kind="connection"} 1"#,
        "webapp_redis_pool_max_size 16",
        "webapp_redis_pool_size ",
        "webapp_redis_pool_available ",
        "webapp_redis_pool_waiting ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
