//! The chart: deliveries per second and p99 latency of the fan-out runs against the size
//! of the conversation, one line per server and protocol, as an SVG file.
//!
//! plotters is built with its SVG backend and no font feature: it then estimates text
//! extents for layout, and the SVG carries text as `<text>` for the viewer to render, so
//! drawing needs no fonts on this machine.

use std::ops::Range;
use std::path::Path;

use anyhow::ensure;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::table::{Row, Series};

/// The lines drawn, in legend order: courier over the like-for-like protocol on both
/// stores, over its native protocol on SQLite, the reference, and the bare stack when it
/// was run (a line only for a server with runs).
const LINES: [(&str, &str, RGBColor); 5] = [
    ("courier-sqlite", "socketio", RGBColor(31, 119, 180)),
    ("courier-sqlite", "native", RGBColor(23, 190, 207)),
    ("courier-postgres", "socketio", RGBColor(44, 160, 44)),
    ("reference", "socketio", RGBColor(214, 39, 40)),
    ("bare", "native", RGBColor(127, 127, 127)),
];

const SIZE: (u32, u32) = (1100, 480);
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// One server's points: (members, value).
struct Line {
    label: String,
    color: RGBColor,
    throughput: Vec<(f64, f64)>,
    latency: Vec<(f64, f64)>,
}

/// Draws the chart of `rows`' fan-out runs to `path`.
pub fn draw(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<Line> = LINES
        .iter()
        .map(|(target, protocol, color)| {
            let series = Series::new(target, protocol);
            Line {
                label: series.label(),
                color: *color,
                throughput: points(rows, &series, Row::delivered_per_second),
                latency: points(rows, &series, Row::p99_ms),
            }
        })
        .filter(|line| !line.throughput.is_empty() || !line.latency.is_empty())
        .collect();
    ensure!(!lines.is_empty(), "no fan-out runs of the charted servers");
    let sizes = lines
        .iter()
        .flat_map(|line| line.throughput.iter().chain(&line.latency))
        .map(|point| point.0);
    // From the power of ten below the smallest size, so the log axis has a labelled tick.
    let members = decade_below(min(sizes.clone()))..max(sizes) * 1.5;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let titled = root.titled(
        "courier beside the socket.io + pg reference: fan-out, one sender",
        (FONT, 20),
    )?;
    let (legend, panels) = titled.split_vertically(34);
    draw_legend(&legend, &lines)?;
    let (left, right) = panels.split_horizontally(SIZE.0 / 2);
    draw_throughput(&left, &lines, members.clone())?;
    draw_latency(&right, &lines, members)?;
    root.present()?;
    Ok(())
}

/// The fan-out figures of `series`, by conversation size.
fn points(rows: &[Row], series: &Series, value: fn(&Row) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|row| row.case.is_fanout() && &row.series == series)
        .filter_map(|row| Some((row.case.connections as f64, value(row)?)))
        .filter(|(_, value)| *value > 0.0)
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

fn draw_legend(area: &Area, lines: &[Line]) -> anyhow::Result<()> {
    let width = i32::try_from(SIZE.0).unwrap_or(i32::MAX) / 4;
    for (index, line) in lines.iter().enumerate() {
        let x = 60 + width * i32::try_from(index).unwrap_or(0);
        area.draw(&PathElement::new(
            vec![(x, 17), (x + 30, 17)],
            line.color.stroke_width(3),
        ))?;
        area.draw(&Text::new(line.label.clone(), (x + 38, 9), (FONT, 15)))?;
    }
    Ok(())
}

fn draw_throughput(area: &Area, lines: &[Line], members: Range<f64>) -> anyhow::Result<()> {
    let top = max(lines
        .iter()
        .flat_map(|line| &line.throughput)
        .map(|point| point.1));
    let mut chart = ChartBuilder::on(area)
        .caption("deliveries per second", (FONT, 17))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(members.log_scale(), 0.0..top * 1.15)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("members in the conversation")
        .y_desc("deliveries/s")
        .x_label_formatter(&|members| format!("{members:.0}"))
        .y_label_formatter(&|rate| short(*rate))
        .draw()?;
    for line in lines {
        draw_line(&mut chart, &line.throughput, line.color)?;
    }
    Ok(())
}

fn draw_latency(area: &Area, lines: &[Line], members: Range<f64>) -> anyhow::Result<()> {
    let values = lines
        .iter()
        .flat_map(|line| &line.latency)
        .map(|point| point.1);
    // Whole decades, so the log axis always has at least two labelled ticks.
    let low = decade_below(min(values.clone()));
    let high = (decade_below(max(values)) * 10.0).max(low * 10.0);
    let mut chart = ChartBuilder::on(area)
        .caption("p99 delivery latency", (FONT, 17))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(members.log_scale(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("members in the conversation")
        .y_desc("ms (log scale)")
        .x_label_formatter(&|members| format!("{members:.0}"))
        .y_label_formatter(&|ms| {
            if *ms < 1.0 {
                format!("{ms}")
            } else {
                format!("{ms:.0}")
            }
        })
        .draw()?;
    for line in lines {
        draw_line(&mut chart, &line.latency, line.color)?;
    }
    Ok(())
}

fn draw_line<X, Y>(
    chart: &mut ChartContext<SVGBackend, Cartesian2d<X, Y>>,
    points: &[(f64, f64)],
    color: RGBColor,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        color.stroke_width(2),
    ))?;
    chart.draw_series(
        points
            .iter()
            .map(|point| Circle::new(*point, 3, color.filled())),
    )?;
    Ok(())
}

fn min(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::INFINITY, f64::min)
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// The power of ten at or below `value`: 11 -> 10, 0.3 -> 0.1.
fn decade_below(value: f64) -> f64 {
    10_f64.powf(value.log10().floor())
}

/// 1500 as "2k", 1_250_000 as "1.2M": axis labels that fit.
fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::table;

    fn run(target: &str, protocol: &str, members: u64, rate: f64, p99_us: u64) -> String {
        format!(
            r#"{{"target":"{target}","scenario":"fanout","protocol":"{protocol}","connections":{members},"payloadBytes":100,"window":8,"seconds":10.0,"connectSeconds":0.1,"sent":1,"acked":1,"refused":0,"ackedPerSecond":1.0,"delivered":{delivered},"deliveredPerSecond":{rate},"latencyUs":{{"p50":1,"p90":1,"p99":{p99_us},"max":1}},"lost":0,"duplicated":0,"outOfOrder":0,"connectionErrors":0,"churnConnections":0,"serverCpuSeconds":1.0,"serverCpuUsPerDelivery":1.0,"serverRssKiB":1,"serverRssKiBPerConnection":1.0,"refusals":{{}}}}"#,
            delivered = rate as u64 * 10
        )
    }

    #[test]
    fn draws_both_panels_with_text_and_no_fonts() {
        let lines = [
            run("courier-sqlite", "socketio", 11, 20_000.0, 2_500),
            run("courier-sqlite", "socketio", 1001, 140_000.0, 230_000),
            run("reference", "socketio", 11, 9_000.0, 4_000),
            run("reference", "socketio", 1001, 40_000.0, 900_000),
        ];
        let runs: Vec<_> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let rows = table::rows(&runs);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        draw(&rows, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        // The SVG backend writes each text between its own lines.
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|text| text.split_once('>')?.1.split_once("</text>"))
            .map(|(text, _)| text.trim())
            .collect();
        for expected in [
            "courier-sqlite socketio",
            "reference socketio",
            "deliveries per second",
            "p99 delivery latency",
            "members in the conversation",
            "100",
        ] {
            assert!(texts.contains(&expected), "{expected}: {texts:?}");
        }
        // Each server: its legend line and one line in each panel.
        assert_eq!(svg.matches(r##"stroke="#1F77B4""##).count(), 3, "{svg}");
        assert_eq!(svg.matches(r##"stroke="#D62728""##).count(), 3, "{svg}");
    }

    #[test]
    fn no_fanout_runs_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(draw(&[], &dir.path().join("chart.svg")).is_err());
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(decade_below(11.0), 10.0);
        assert_eq!(decade_below(1001.0), 1000.0);
        assert!((decade_below(0.3) - 0.1).abs() < 1e-12);
        assert_eq!(short(1500.0), "2k");
        assert_eq!(short(1_250_000.0), "1.2M");
        assert_eq!(short(12.0), "12");
    }
}
