//! The report's tests, and the fixed report the chart and the command's
//! tests read too.

use super::*;

fn row(kind: RowKind, requests_per_sec: f64, p99: f64, webapp_rss: Option<f64>) -> Row {
    let mut containers = vec![ContainerUsage {
        name: String::from("webstack-proxy-1"),
        service: String::from("proxy"),
        peak_rss_mib: 4.5,
        mean_cpu_percent: 80.0,
        samples: 10,
        cpu_ms: 800.0,
        cpu_us_per_request: 0.0,
    }];
    if let Some(rss) = webapp_rss {
        containers.push(ContainerUsage {
            name: String::from("webstack-webapp-1"),
            service: String::from("webapp"),
            peak_rss_mib: rss,
            mean_cpu_percent: 60.0,
            samples: 10,
            cpu_ms: 600.0,
            cpu_us_per_request: 0.0,
        });
    }
    Row {
        kind,
        target: format!("{kind:?}"),
        connections: 64,
        requests_finished: 10_000,
        successful: 10_000,
        non_2xx: 0,
        socket_errors: 0,
        error_details: Vec::new(),
        duration_secs: 10_000.0 / requests_per_sec,
        requests_per_sec,
        latency_ms: Latency {
            p50: 1.0,
            p90: Some(2.0),
            p95: 2.5,
            p99,
            p99_9: Some(p99),
            max: 12.5,
        },
        ratio_to_ceiling: 0.0,
        ratio_to_plain_get: None,
        containers,
        offered_rate_per_sec: None,
        fraction_of_max: None,
        host_processes: vec![ProcessUsage {
            name: String::from("dockerd"),
            processes: 1,
            cpu_ms: 100.0,
            cpu_us_per_request: 0.0,
        }],
    }
}

fn fixed_rate_row(fraction: f64, p99: f64) -> Row {
    let mut row = row(
        RowKind::HitCounterFixedRate,
        8_000.0 * fraction,
        p99,
        Some(10.0),
    );
    row.offered_rate_per_sec = Some(8_000.0 * fraction);
    row.fraction_of_max = Some(fraction);
    row
}

/// A complete report with made-up but plausible numbers.
pub(crate) fn fixed_report() -> Report {
    let mut redis = row(RowKind::RedisIncr, 40_000.0, 3.0, None);
    redis.latency_ms.p90 = None;
    redis.containers.clear();
    redis.host_processes.clear();
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        started_at_unix_secs: 1_764_000_000,
        settings: Settings {
            base_url: String::from("http://127.0.0.1:8070"),
            compose_project: String::from("webstack"),
            connections: 64,
            requests_per_row: Some(10_000),
            duration_secs_per_row: None,
            webapp_replicas: 1,
            https_base_url: Some(String::from("https://127.0.0.1:8443")),
            http_load_tool: String::from("oha 1.16.0"),
            redis_load_tool: String::from("redis-benchmark 7.0.15"),
            smoke: false,
        },
        rows: vec![
            row(RowKind::ProxyCeiling, 20_000.0, 4.0, None),
            row(RowKind::HitCounter, 8_000.0, 6.0, Some(12.0)),
            fixed_rate_row(0.25, 3.0),
            fixed_rate_row(0.5, 4.0),
            fixed_rate_row(0.75, 9.0),
            row(RowKind::HitsReadOnly, 10_000.0, 4.0, Some(11.0)),
            redis,
            row(RowKind::HttpsNewConnections, 2_000.0, 11.0, Some(12.0)),
            row(RowKind::HttpsKeepAlive, 6_000.0, 8.0, Some(12.0)),
            row(RowKind::Http2, 4_000.0, 10.0, Some(12.0)),
        ],
        counter_check: CounterCheck::new(5, 10_005, 10_000),
        https_counter_checks: RowKind::HTTPS
            .iter()
            .zip(1..)
            .map(|(&row, n)| RowCounterCheck {
                row,
                check: CounterCheck::new(n * 10_005, n * 10_005 + 10_000, 10_000),
            })
            .collect(),
        hits_per_replica: BTreeMap::from([(String::from("0a1b2c3d4e5f"), 10_000)]),
        targets: Vec::new(),
    };
    report.finish();
    report
}

#[test]
fn finish_computes_each_rows_ratio_to_the_proxy_ceiling() {
    let report = fixed_report();

    let ratios: Vec<f64> = report.rows.iter().map(|row| row.ratio_to_ceiling).collect();

    assert_eq!(
        ratios,
        vec![1.0, 0.4, 0.1, 0.2, 0.3, 0.5, 2.0, 0.1, 0.3, 0.2]
    );
}

#[test]
fn finish_gives_only_the_https_rows_a_ratio_to_plain_get() {
    let report = fixed_report();

    let ratios: Vec<Option<f64>> = report
        .rows
        .iter()
        .map(|row| row.ratio_to_plain_get)
        .collect();

    let plain = [None; 7];
    assert_eq!(
        ratios,
        [plain.as_slice(), &[Some(0.25), Some(0.75), Some(0.5)]].concat()
    );
}

#[test]
fn targets_report_which_goals_the_hit_counter_row_missed() {
    let report = fixed_report();

    let met: Vec<(&str, bool)> = report
        .targets
        .iter()
        .map(|target| (target.name.as_str(), target.met))
        .collect();

    assert_eq!(
        met,
        vec![
            ("throughput", false),
            ("p99 at 50 % of max, open loop", true),
            ("webapp RSS per replica", true),
            ("errors", true)
        ]
    );
}

#[test]
fn counter_check_passes_only_on_an_exact_increase() {
    assert!(CounterCheck::new(10, 110, 100).passed);
    assert!(!CounterCheck::new(10, 111, 100).passed);
    assert!(!CounterCheck::new(10, 109, 100).passed);
    assert!(!CounterCheck::new(110, 10, 0).passed);
}

#[test]
fn json_round_trips_and_names_rows_with_stable_identifiers() -> anyhow::Result<()> {
    let report = fixed_report();

    let json = serde_json::to_string_pretty(&report)?;
    let parsed: Report = serde_json::from_str(&json)?;
    let value: serde_json::Value = serde_json::from_str(&json)?;

    assert_eq!(parsed, report);
    let kinds: Vec<&str> = value["rows"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|row| row["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        vec![
            "proxy_ceiling",
            "hit_counter",
            "hit_counter_fixed_rate",
            "hit_counter_fixed_rate",
            "hit_counter_fixed_rate",
            "hits_read_only",
            "redis_incr",
            "https_new_connections",
            "https_keep_alive",
            "http2"
        ]
    );
    assert!(value["rows"][6]["latency_ms"]["p90"].is_null());
    assert_eq!(value["schema_version"], 3);
    assert_eq!(value["rows"][9]["ratio_to_plain_get"], 0.5);
    assert_eq!(value["https_counter_checks"][2]["row"], "http2");
    assert_eq!(value["https_counter_checks"][2]["passed"], true);
    assert_eq!(value["rows"][3]["offered_rate_per_sec"], 4000.0);
    Ok(())
}

#[test]
fn a_complete_report_has_no_shape_problems() {
    assert_eq!(fixed_report().shape_problems(), Vec::<String>::new());
}

#[test]
fn shape_problems_name_a_missing_row_and_an_empty_row() {
    let mut report = fixed_report();
    report.rows.retain(|row| row.kind != RowKind::HitsReadOnly);
    report.rows.remove(2);
    report.rows[0].requests_finished = 0;
    report.rows[2].offered_rate_per_sec = None;

    let problems = report.shape_problems();

    assert_eq!(
        problems,
        vec![
            String::from("expected 3 HitCounterFixedRate row(s), found 2"),
            String::from("expected one HitsReadOnly row(s), found 0"),
            String::from("proxy ceiling: no requests finished"),
            String::from("GET / at 50 % of max: no offered rate"),
        ]
    );
}

#[test]
fn without_https_rows_a_report_is_complete_only_if_it_says_so() {
    let mut report = fixed_report();
    report.rows.retain(|row| !row.kind.is_https());
    report.https_counter_checks.clear();

    assert_eq!(
        report.shape_problems(),
        vec![
            String::from("expected one HttpsNewConnections row(s), found 0"),
            String::from("expected one HttpsKeepAlive row(s), found 0"),
            String::from("expected one Http2 row(s), found 0"),
        ]
    );
    report.settings.https_base_url = None;
    assert_eq!(report.shape_problems(), Vec::<String>::new());
    assert!(report
        .to_markdown()
        .contains("Not measured: the bench deploys the front on HTTPS only for a Compose project it reaches itself"));
}

#[test]
fn an_https_row_with_errors_or_without_its_counter_check_is_a_problem() {
    let mut report = fixed_report();
    report.rows[9].socket_errors = 2;
    report.rows[9].error_details = vec![(String::from("invalid peer certificate"), 2)];
    report.https_counter_checks.remove(0);

    assert_eq!(
        report.shape_problems(),
        vec![
            String::from("GET / HTTPS, new connections: no counter check"),
            String::from(
                "GET / HTTP/2: 0 non-2xx, 2 socket errors [(\"invalid peer certificate\", 2)]"
            ),
        ]
    );
}

#[test]
fn markdown_puts_the_https_rows_beside_plain_get_with_ratios() {
    let markdown = fixed_report().to_markdown();

    assert!(markdown.contains("`GET /` at https://127.0.0.1:8443:"));
    // CPU per request: proxy 80, webapp 60, dockerd 10.
    assert!(markdown.contains(
        "| GET / (hit counter) | 8000 | 1.00 | 1.00 | 2.00 | 6.00 | 12.5 | 150.0 | 1.00 | 10000 | 0 | 0 |"
    ));
    assert!(markdown.contains(
        "| GET / HTTPS, new connections | 2000 | 0.25 | 1.00 | 2.00 | 11.0 | 12.5 | 150.0 | 1.00 | 10000 | 0 | 0 |"
    ));
    assert!(markdown.contains("| GET / HTTP/2 | 4000 | 0.50 |"));
    assert!(markdown.contains(
        "GET / HTTP/2: counter before 30015, after 40015: rose by 10000, successful responses 10000: exact."
    ));
}

#[test]
fn markdown_has_one_table_line_per_row_with_rate_ratio_and_percentiles() {
    let markdown = fixed_report().to_markdown();

    assert!(markdown
        .contains("| proxy ceiling | 20000 | 100 % | 1.00 | 2.00 | 4.00 | 12.5 | 10000 | 0 | 0 |"));
    assert!(markdown.contains(
        "| GET / (hit counter) | 8000 | 40 % | 1.00 | 2.00 | 6.00 | 12.5 | 10000 | 0 | 0 |"
    ));
    assert!(markdown
        .contains("| Redis INCR | 40000 | 200 % | 1.00 | n/a | 3.00 | 12.5 | 10000 | 0 | 0 |"));
    assert!(markdown.contains("| GET / (hit counter) | webstack-webapp-1 | webapp | 12.0 | 60 |"));
    assert!(markdown.contains("rose by 10000, successful `GET /` responses 10000: exact."));
    assert!(markdown.contains("Spread over the replicas: 0a1b2c3d4e5f 10000."));
    assert!(markdown.contains(
        "| GET / at 50 % of max | 4000 | 4000 | 1.00 | 4.00 | 4.00 | 12.5 | 10000 | 0 | 0 |"
    ));
    assert!(markdown.contains("| p99 at 50 % of max, open loop | ≤ 5 ms | 4.00 ms | yes |"));
}

#[test]
fn markdown_gives_cpu_per_request_of_each_container_and_host_process() {
    let markdown = fixed_report().to_markdown();

    // 800 ms (proxy), 600 ms (webapp) and 100 ms (dockerd) over 10000 requests.
    assert!(markdown.contains("| row | webstack-proxy-1 | dockerd | webstack-webapp-1 | total |"));
    assert!(markdown.contains("| proxy ceiling | 80.0 | 10.0 | n/a | 90.0 |"));
    assert!(markdown.contains("| GET / (hit counter) | 80.0 | 10.0 | 60.0 | 150.0 |"));
    assert!(!markdown.contains("| Redis INCR | 0.0"));
}
