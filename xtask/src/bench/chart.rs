//! The latency chart written to `target/bench/latency.svg`: one group of bars
//! per row (p50, p90, p99, max), on a logarithmic millisecond axis because
//! the rows' latencies span several decades (sub-millisecond Redis, a tail of
//! tens of milliseconds through the proxy).
//!
//! Hand-written SVG rather than a plotting crate: a bar chart is about a
//! hundred lines of text output, needs no fonts (the viewer renders `<text>`),
//! and keeps the xtask's dependency tree small.

use std::fmt::Write as _;

use super::report::Report;

/// The narrowest chart; wider by [`GROUP_WIDTH`] per row beyond what fits,
/// so the rows' labels do not overlap.
const MIN_WIDTH: f64 = 860.0;
const GROUP_WIDTH: f64 = 110.0;
const HEIGHT: f64 = 440.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 60.0;

/// One colour per percentile series, distinguishable in greyscale too.
const SERIES: [(&str, &str); 4] = [
    ("p50", "#9ecae1"),
    ("p90", "#4292c6"),
    ("p99", "#08519c"),
    ("max", "#08306b"),
];

/// Renders the chart as a standalone SVG document.
pub fn latency_svg(report: &Report) -> String {
    let values: Vec<[Option<f64>; 4]> = report
        .rows
        .iter()
        .map(|row| {
            let latency = &row.latency_ms;
            [
                Some(latency.p50),
                latency.p90,
                Some(latency.p99),
                Some(latency.max),
            ]
        })
        .collect();
    let (low_decade, high_decade) = decades(&values);
    let scale = Scale {
        low_decade,
        high_decade,
    };
    let mut svg = String::new();
    write_frame(&mut svg, report, &scale);
    write_bars(&mut svg, report, &values, &scale);
    svg.push_str("</svg>\n");
    svg
}

/// The logarithmic y axis: whole decades from `10^low_decade` to
/// `10^high_decade` milliseconds.
struct Scale {
    low_decade: i32,
    high_decade: i32,
}

impl Scale {
    /// The y coordinate of a value; values below the axis sit on it.
    fn y_of(&self, milliseconds: f64) -> f64 {
        let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
        let clamped = milliseconds.max(10f64.powi(self.low_decade));
        let fraction = (clamped.log10() - self.low_decade as f64)
            / (self.high_decade - self.low_decade) as f64;
        MARGIN_TOP + plot_height * (1.0 - fraction)
    }
}

/// The decades the axis spans, from every row's values.
fn decades(values: &[[Option<f64>; 4]]) -> (i32, i32) {
    let positive = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|value| *value > 0.0);
    let smallest = positive.clone().fold(f64::INFINITY, f64::min);
    let largest = positive.fold(0.0, f64::max);
    // Whole decades at both ends so the grid lines land on 0.1, 1, 10 ms.
    if largest > 0.0 {
        // Half the smallest value: a bar just above a grid line still shows.
        let low = (smallest * 0.5).log10().floor() as i32;
        let high = (largest.log10().ceil() as i32).max(low + 1);
        (low, high)
    } else {
        (-1, 1)
    }
}

/// The chart's width for `rows` groups of bars.
fn width(rows: usize) -> f64 {
    (MARGIN_LEFT + MARGIN_RIGHT + rows as f64 * GROUP_WIDTH).max(MIN_WIDTH)
}

/// The document's start, title, legend, grid lines and axis.
fn write_frame(svg: &mut String, report: &Report, scale: &Scale) {
    let width = width(report.rows.len());
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "Latency per row ({} connections, {} webapp replica(s)), log scale",
        report.settings.connections, report.settings.webapp_replicas
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(&title)
    );

    // Legend.
    for (index, (name, colour)) in SERIES.iter().enumerate() {
        let x = MARGIN_LEFT + index as f64 * 80.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{colour}"/><text x="{}" y="45">{name}</text>"#,
            x + 16.0
        );
    }

    // Grid lines and labels, one per decade.
    for decade in scale.low_decade..=scale.high_decade {
        let milliseconds = 10f64.powi(decade);
        let y = scale.y_of(milliseconds);
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            width - MARGIN_RIGHT,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            axis_label(milliseconds)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{}" stroke="black"/>"#,
        HEIGHT - MARGIN_BOTTOM
    );
}

/// Each row's bars with their values, its label and its rate.
fn write_bars(svg: &mut String, report: &Report, values: &[[Option<f64>; 4]], scale: &Scale) {
    let plot_width = width(report.rows.len()) - MARGIN_LEFT - MARGIN_RIGHT;
    let group_width = plot_width / report.rows.len().max(1) as f64;
    let bar_width = group_width * 0.8 / SERIES.len() as f64;
    let baseline = HEIGHT - MARGIN_BOTTOM;
    for (row_index, (row, row_values)) in report.rows.iter().zip(values).enumerate() {
        let group_left = MARGIN_LEFT + row_index as f64 * group_width + group_width * 0.1;
        for (series_index, value) in row_values.iter().enumerate() {
            let x = group_left + series_index as f64 * bar_width;
            let (name, colour) = SERIES[series_index];
            match value {
                Some(milliseconds) => {
                    let top = scale.y_of(*milliseconds);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {name}: {milliseconds:.3} ms</title></rect>"#,
                        bar_width - 2.0,
                        (baseline - top).max(0.0),
                        escape(&row.label()),
                    );
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                        x + bar_width / 2.0 - 1.0,
                        top - 3.0,
                        value_label(*milliseconds)
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">n/a</text>"#,
                        x + bar_width / 2.0 - 1.0,
                        baseline - 3.0
                    );
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            group_left + group_width * 0.4,
            baseline + 18.0,
            escape(&row.label())
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.0} req/s</text>"##,
            group_left + group_width * 0.4,
            baseline + 34.0,
            row.requests_per_sec
        );
    }
}

fn axis_label(milliseconds: f64) -> String {
    if milliseconds >= 1.0 {
        format!("{milliseconds:.0}")
    } else {
        // 0.1, 0.01, ... without float noise.
        let decimals = (-milliseconds.log10()).round() as usize;
        format!("{milliseconds:.decimals$}")
    }
}

fn value_label(milliseconds: f64) -> String {
    if milliseconds < 10.0 {
        format!("{milliseconds:.2}")
    } else {
        format!("{milliseconds:.0}")
    }
}

/// Escapes text for SVG character data.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::fixed_report;

    #[test]
    fn svg_has_one_bar_per_reported_percentile_and_marks_missing_ones() {
        let report = fixed_report();

        let svg = latency_svg(&report);

        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Ten rows of four series, minus Redis's missing p90.
        assert_eq!(svg.matches("<rect x=").count() - SERIES.len(), 39);
        assert_eq!(svg.matches(">n/a</text>").count(), 1);
        for row in &report.rows {
            assert!(
                svg.contains(&escape(&row.label())),
                "no label for {:?}",
                row.kind
            );
        }
        assert!(svg.contains("<title>GET / (hit counter) p99: 6.000 ms</title>"));
    }

    #[test]
    fn svg_axis_spans_whole_decades_around_the_data() {
        let svg = latency_svg(&fixed_report());

        // Fixed data runs from 1 ms (p50) to 12.5 ms (max): the axis starts a
        // decade below the smallest bar so it stays visible, and ends at 100.
        assert!(svg.contains(">0.1 ms</text>"));
        assert!(svg.contains(">1 ms</text>"));
        assert!(svg.contains(">10 ms</text>"));
        assert!(svg.contains(">100 ms</text>"));
        assert!(!svg.contains(">0.01 ms</text>"));
        assert!(!svg.contains(">1000 ms</text>"));
    }

    #[test]
    fn svg_widens_with_the_rows_so_labels_keep_apart() {
        assert_eq!(width(7), MIN_WIDTH);
        assert_eq!(width(10), 1190.0);
        assert!(latency_svg(&fixed_report()).contains(r#"width="1190" height="440""#));
    }

    #[test]
    fn svg_text_escapes_markup_characters() {
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }

    #[test]
    fn svg_closes_every_text_element() {
        let svg = latency_svg(&fixed_report());

        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}
