//! The report as Markdown: the rows' table, CPU per request, the targets.

use std::fmt::Write as _;

use super::report::*;

impl Report {
    /// The Markdown written to `results.md` and printed at the end of a run.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_rows(&mut out);
        self.write_fixed_rate_rows(&mut out);
        self.write_https_rows(&mut out);
        self.write_cpu_per_request(&mut out);
        self.write_containers(&mut out);
        self.write_counter_check(&mut out);
        self.write_targets(&mut out);
        out
    }

    /// The title, the settings and the load tools.
    fn write_header(&self, out: &mut String) {
        let settings = &self.settings;
        let amount = match (settings.requests_per_row, settings.duration_secs_per_row) {
            (_, Some(secs)) => format!("{secs} s per row"),
            (Some(requests), None) => format!("{requests} requests per row"),
            (None, None) => String::from("default amount per row"),
        };
        let _ = writeln!(out, "# Benchmark results\n");
        let _ = writeln!(
            out,
            "{} webapp replica(s), {} connections, {amount}, against {} (Compose project `{}`).",
            settings.webapp_replicas,
            settings.connections,
            settings.base_url,
            settings.compose_project
        );
        let _ = writeln!(
            out,
            "HTTP rows: {}; Redis row: {}.{}\n",
            settings.http_load_tool,
            settings.redis_load_tool,
            if settings.smoke {
                " Smoke run: too short to mean anything."
            } else {
                ""
            }
        );
    }

    /// One line per row: rate, ratio to the ceiling, percentiles, errors.
    fn write_rows(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| row | requests/s | vs ceiling | p50 ms | p90 ms | p99 ms | max ms | ok | non-2xx | socket errors |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} % | {} | {} |",
                row.label(),
                row.requests_per_sec,
                row.ratio_to_ceiling * 100.0,
                latency_cells(row),
                outcome_cells(row),
            );
        }
    }

    /// The open-loop `GET /` rows, if the report has any.
    fn write_fixed_rate_rows(&self, out: &mut String) {
        let fixed_rate: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| row.kind == RowKind::HitCounterFixedRate)
            .collect();
        if !fixed_rate.is_empty() {
            let _ = writeln!(out, "\n## `GET /` at fixed rates (open loop)\n");
            let _ = writeln!(
                out,
                "Rates are fractions of the closed-loop `GET /` row above; latency counts from when each request was due (no coordinated omission).\n"
            );
            let _ = writeln!(
                out,
                "| row | offered/s | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms | ok | non-2xx | socket errors |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for row in fixed_rate {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                    row.label(),
                    row.offered_rate_per_sec.unwrap_or(0.0),
                    row.requests_per_sec,
                    milliseconds(row.latency_ms.p50),
                    milliseconds(row.latency_ms.p99),
                    row.latency_ms
                        .p99_9
                        .map(milliseconds)
                        .unwrap_or_else(|| String::from("n/a")),
                    milliseconds(row.latency_ms.max),
                    outcome_cells(row),
                );
            }
        }
    }

    /// The HTTPS rows next to the plain `GET /` row: rate, latency and CPU
    /// per request, each rate and CPU as a ratio to the plain row's.
    fn write_https_rows(&self, out: &mut String) {
        let Some(plain) = self.row(RowKind::HitCounter) else {
            return;
        };
        let Some(https_base_url) = &self.settings.https_base_url else {
            let _ = writeln!(
                out,
                "\n## HTTPS and HTTP/2\n\nNot measured: the bench deploys the front on HTTPS only for a Compose project it reaches itself, not for a stack given by `--url`."
            );
            return;
        };
        let _ = writeln!(out, "\n## HTTPS and HTTP/2 against plain `GET /`\n");
        let _ = writeln!(
            out,
            "`GET /` at {https_base_url}: the same project with its front deployed again with `--tls self-signed` (a CA of this run's own), the same connections and requests as the plain row. CPU is the total of the table below (every container and Docker host process).\n"
        );
        let _ = writeln!(
            out,
            "| row | requests/s | vs plain | p50 ms | p90 ms | p99 ms | max ms | CPU µs/request | vs plain | ok | non-2xx | socket errors |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let plain_cpu = plain.cpu_us_per_request();
        let rows = std::iter::once(plain).chain(self.rows.iter().filter(|row| row.kind.is_https()));
        for row in rows {
            let cpu = row.cpu_us_per_request();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.2} | {} | {cpu:.1} | {} | {} |",
                row.label(),
                row.requests_per_sec,
                row.ratio_to_plain_get.unwrap_or(1.0),
                latency_cells(row),
                if plain_cpu > 0.0 {
                    format!("{:.2}", cpu / plain_cpu)
                } else {
                    String::from("n/a")
                },
                outcome_cells(row),
            );
        }
    }

    /// Peak memory and mean CPU of each container during each row.
    fn write_containers(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Containers during each row\n");
        let _ = writeln!(
            out,
            "| row | container | service | peak RSS MiB | mean CPU % |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|");
        for row in &self.rows {
            for container in &row.containers {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {:.0} |",
                    row.label(),
                    container.name,
                    container.service,
                    container.peak_rss_mib,
                    container.mean_cpu_percent
                );
            }
        }
    }

    /// Whether the counter rose by exactly the successful `GET /` requests, and how they spread over the replicas.
    fn write_counter_check(&self, out: &mut String) {
        let check = &self.counter_check;
        let _ = writeln!(out, "\n## Correctness under load\n");
        let _ = writeln!(
            out,
            "Counter before {}, after {}: rose by {}, successful `GET /` responses {}: {}.",
            check.before,
            check.after,
            check.after as i128 - check.before as i128,
            check.successful_hit_requests,
            if check.passed { "exact" } else { "MISMATCH" }
        );
        for RowCounterCheck { row, check } in &self.https_counter_checks {
            let _ = writeln!(
                out,
                "{}: counter before {}, after {}: rose by {}, successful responses {}: {}.",
                row.label(),
                check.before,
                check.after,
                check.after as i128 - check.before as i128,
                check.successful_hit_requests,
                if check.passed { "exact" } else { "MISMATCH" }
            );
        }
        if !self.hits_per_replica.is_empty() {
            let spread: Vec<String> = self
                .hits_per_replica
                .iter()
                .map(|(replica, hits)| format!("{replica} {hits}"))
                .collect();
            let _ = writeln!(out, "Spread over the replicas: {}.", spread.join(", "));
        }
    }

    /// The targets for `GET /`, reported, not asserted.
    fn write_targets(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Targets for `GET /` (reported, not asserted)\n");
        let _ = writeln!(out, "| target | wanted | measured | met |");
        let _ = writeln!(out, "|---|---|---|---|");
        for target in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                target.name,
                target.target,
                target.measured,
                if target.met { "yes" } else { "no" }
            );
        }
    }
}

impl Report {
    /// The table of CPU microseconds per request: one column per container
    /// and per host process group, one line per HTTP row.
    fn write_cpu_per_request(&self, out: &mut String) {
        let mut columns: Vec<String> = Vec::new();
        for row in &self.rows {
            let names = row
                .containers
                .iter()
                .map(|container| container.name.clone())
                .chain(
                    row.host_processes
                        .iter()
                        .map(|process| process.name.clone()),
                );
            for name in names {
                if !columns.contains(&name) {
                    columns.push(name);
                }
            }
        }
        if columns.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n## CPU per request (µs)\n");
        let _ = writeln!(
            out,
            "CPU time each container (cgroup) and each group of Docker host processes (`/proc/<pid>/stat`, 10 ms resolution) used while the row ran, divided by the requests it finished. dockerd serves every container on the machine, not only this stack's.\n"
        );
        let _ = writeln!(out, "| row | {} | total |", columns.join(" | "));
        let _ = writeln!(out, "|---|{}---:|", "---:|".repeat(columns.len()));
        for row in self
            .rows
            .iter()
            .filter(|row| row.kind != RowKind::RedisIncr)
        {
            let mut cells = Vec::with_capacity(columns.len());
            let mut total = 0.0;
            for column in &columns {
                let value = row
                    .containers
                    .iter()
                    .find(|container| &container.name == column)
                    .map(|container| container.cpu_us_per_request)
                    .or_else(|| {
                        row.host_processes
                            .iter()
                            .find(|process| &process.name == column)
                            .map(|process| process.cpu_us_per_request)
                    });
                match value {
                    Some(value) => {
                        total += value;
                        cells.push(format!("{value:.1}"));
                    }
                    None => cells.push(String::from("n/a")),
                }
            }
            let _ = writeln!(
                out,
                "| {} | {} | {total:.1} |",
                row.label(),
                cells.join(" | ")
            );
        }
    }
}

/// p50, p90, p99 and max of a row, as table cells.
fn latency_cells(row: &Row) -> String {
    let latency = &row.latency_ms;
    [
        milliseconds(latency.p50),
        latency
            .p90
            .map(milliseconds)
            .unwrap_or_else(|| String::from("n/a")),
        milliseconds(latency.p99),
        milliseconds(latency.max),
    ]
    .join(" | ")
}

/// The 2xx answers, the others and the socket errors of a row, as table cells.
fn outcome_cells(row: &Row) -> String {
    format!(
        "{} | {} | {}",
        row.successful, row.non_2xx, row.socket_errors
    )
}
