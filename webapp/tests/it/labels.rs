//! Metric labels stay bounded whatever clients send: tens of thousands of distinct methods,
//! paths, cache keys, query parameters and headers add no series to `/metrics`.

use std::collections::BTreeSet;

use reqwest::Method;

use crate::support::{app::spawn_app_with, unique_prefix, RedisServer, TestApp};

/// Distinct requests of each kind the flood sends.
const PER_KIND: usize = 5_000;
/// Requests of each kind sent before the first measurement, so every series the flood can
/// touch exists already and only the counts may change.
const WARM_UP: usize = 50;
/// Clients sending at once.
const CLIENTS: usize = 8;

/// One hostile request: the `index`th of its kind.
fn hostile_request(app: &TestApp, kind: usize, index: usize) -> reqwest::RequestBuilder {
    let client = &app.client;
    match kind {
        // A method name never seen before, on a route and off one (405 and 404).
        0 => {
            let method = Method::from_bytes(format!("M{index:06}").as_bytes()).expect("method");
            let path = if index.is_multiple_of(2) {
                "/"
            } else {
                "/api/cache/k"
            };
            client.request(method, app.url(path))
        }
        // A path no route matches (404).
        1 => client.get(app.url(&format!("/no/route/{index}"))),
        // A cache key that does not exist (404 from Redis) and a query nobody takes (400).
        2 => client.get(app.url(&format!("/api/cache/key-{index}"))),
        3 => client.get(app.url(&format!("/api/hits?q{index}=1"))),
        // Headers of a new name and value.
        _ => client
            .get(app.url("/healthz"))
            .header(format!("x-probe-{index}"), format!("value-{index}")),
    }
}

const KINDS: usize = 5;

async fn send_kinds(app: &TestApp, indexes: std::ops::Range<usize>) {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let requests: Vec<reqwest::RequestBuilder> = indexes
            .clone()
            .filter(|index| index % CLIENTS == client)
            .flat_map(|index| (0..KINDS).map(move |kind| (kind, index)))
            .map(|(kind, index)| hostile_request(app, kind, index))
            .collect();
        clients.spawn(async move {
            for request in requests {
                let response = request.send().await.expect("the app answers");
                assert!(
                    [200, 400, 404, 405].contains(&response.status().as_u16()),
                    "unexpected {}",
                    response.status()
                );
            }
        });
    }
    while let Some(client) = clients.join_next().await {
        client.expect("a client task");
    }
}

/// The series of a metrics text: every sample's name and labels, without its value.
fn series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server (REDIS_SERVER_BIN or PATH); cargo xtask ci runs it"]
async fn tens_of_thousands_of_distinct_methods_paths_keys_and_headers_add_no_series() {
    // Arrange: the app with a real Redis, and one of every kind of request behind us.
    let redis = RedisServer::start();
    let app = spawn_app_with(&redis.url(), &unique_prefix(), &[]).await;
    send_kinds(&app, 0..WARM_UP).await;
    // A scrape counts itself: the first one makes the /metrics series.
    app.get("/metrics").await;
    let before = app.get("/metrics").await.text().await.expect("metrics");

    // Act: 25,000 requests, each method, path, key, query and header new.
    send_kinds(&app, WARM_UP..WARM_UP + PER_KIND).await;
    let after = app.get("/metrics").await.text().await.expect("metrics");

    // Assert: the same series (only the counts moved), and hardly more bytes.
    let (series_before, series_after) = (series(&before), series(&after));
    eprintln!(
        "/metrics after {} hostile requests: {} series, {} bytes (before the flood: {} series, {} bytes)",
        KINDS * PER_KIND,
        series_after.len(),
        after.len(),
        series_before.len(),
        before.len()
    );
    let added: Vec<&String> = series_after.difference(&series_before).take(10).collect();
    assert!(added.is_empty(), "the flood added series, e.g. {added:?}");
    // Counts and latency sums grow by a few digits each, nothing else.
    assert!(
        after.len() <= before.len() + 24 * series_after.len(),
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains(r#"webapp_http_requests_total{method="OTHER",route="/",status="405"}"#),
        "{after}"
    );
    assert!(
        series_after
            .iter()
            .filter(|series| series.starts_with("webapp_http_requests_total{"))
            .count()
            <= webapp::metrics::MAX_REQUEST_SERIES
    );
}
