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
        ],
        counter_check: CounterCheck::new(5, 10_005, 10_000),
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

    assert_eq!(ratios, vec![1.0, 0.4, 0.1, 0.2, 0.3, 0.5, 2.0]);
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
            "redis_incr"
        ]
    );
    assert!(value["rows"][6]["latency_ms"]["p90"].is_null());
    assert_eq!(value["schema_version"], 2);
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
