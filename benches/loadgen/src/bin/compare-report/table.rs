//! The comparison table: one row per server and protocol in each scenario, with the
//! ratios of its throughput and CPU cost to the reference server's in the same scenario.

use std::collections::HashMap;
use std::fmt::Write as _;

use courier_loadgen::report::RunReport;

/// The target benches/compare/run.sh gives the socket.io + pg reference server.
pub const REFERENCE: &str = "reference";

/// A scenario as it was run: its name and how many connections took part, which for
/// fan-out is the size of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Case {
    pub scenario: String,
    pub connections: u64,
}

impl Case {
    fn of(run: &RunReport) -> Self {
        Self {
            scenario: run.scenario.clone(),
            connections: run.connections,
        }
    }

    /// Fan-out first, by size, then the scenarios with many conversations, then idle.
    fn rank(&self) -> (u8, &str, u64) {
        let scenario = match self.scenario.as_str() {
            "fanout" => 0,
            "churn" => 1,
            "groups" => 2,
            "pairs" => 3,
            "idle" => 4,
            _ => 5,
        };
        (scenario, &self.scenario, self.connections)
    }

    pub fn is_fanout(&self) -> bool {
        self.scenario == "fanout"
    }

    /// "fanout, 101 members", "pairs, 1,000 connections".
    pub fn label(&self) -> String {
        let unit = if self.is_fanout() {
            "members"
        } else {
            "connections"
        };
        format!(
            "{}, {} {unit}",
            self.scenario,
            thousands(self.connections as f64)
        )
    }
}

/// A server and the protocol its clients spoke.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Series {
    pub target: String,
    pub protocol: String,
}

impl Series {
    fn of(run: &RunReport) -> Self {
        Self {
            target: run.target.clone().unwrap_or_default(),
            protocol: run.protocol.clone(),
        }
    }

    pub fn new(target: &str, protocol: &str) -> Self {
        Self {
            target: target.to_owned(),
            protocol: protocol.to_owned(),
        }
    }

    /// Courier on SQLite, then on PostgreSQL, then the reference; Socket.IO first, the
    /// like-for-like protocol.
    fn rank(&self) -> (u8, &str, u8, &str) {
        let target = match self.target.as_str() {
            "courier-sqlite" => 0,
            "courier-postgres" => 1,
            REFERENCE => 2,
            _ => 3,
        };
        let protocol = u8::from(self.protocol != "socketio");
        (target, &self.target, protocol, &self.protocol)
    }

    /// "courier-sqlite socketio".
    pub fn label(&self) -> String {
        format!("{} {}", self.target, self.protocol)
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: Case,
    pub series: Series,
    pub run: RunReport,
    /// Deliveries per second over the reference's (above 1: courier delivers more).
    pub delivered_ratio: Option<f64>,
    /// CPU per delivery over the reference's (below 1: courier spends less).
    pub cpu_ratio: Option<f64>,
}

impl Row {
    /// Deliveries per second, if the scenario delivers anything.
    pub fn delivered_per_second(&self) -> Option<f64> {
        (self.run.delivered > 0).then_some(self.run.delivered_per_second)
    }

    /// The 99th percentile of delivery latency, in milliseconds.
    pub fn p99_ms(&self) -> Option<f64> {
        self.run.latency_us.p99.map(|us| us as f64 / 1000.0)
    }
}

/// The latest run of each server, protocol and scenario: a target run again replaces its
/// earlier figures.
pub fn latest(runs: Vec<RunReport>) -> Vec<RunReport> {
    let mut index: HashMap<(Case, Series), usize> = HashMap::new();
    let mut kept: Vec<RunReport> = Vec::new();
    for run in runs {
        match index.get(&(Case::of(&run), Series::of(&run))) {
            Some(&at) => kept[at] = run,
            None => {
                index.insert((Case::of(&run), Series::of(&run)), kept.len());
                kept.push(run);
            }
        }
    }
    kept
}

/// The table's rows in order, each with its ratios to the reference's Socket.IO run of
/// the same scenario (none for the reference itself, or where it has no figure).
pub fn rows(runs: &[RunReport]) -> Vec<Row> {
    let reference: HashMap<Case, &RunReport> = runs
        .iter()
        .filter(|run| run.target.as_deref() == Some(REFERENCE) && run.protocol == "socketio")
        .map(|run| (Case::of(run), run))
        .collect();
    let ratio = |ours: Option<f64>, theirs: Option<f64>| match (ours, theirs) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
        _ => None,
    };
    let delivered = |run: &RunReport| (run.delivered > 0).then_some(run.delivered_per_second);
    let mut rows: Vec<Row> = runs
        .iter()
        .map(|run| {
            let case = Case::of(run);
            let series = Series::of(run);
            let theirs = reference.get(&case).filter(|_| series.target != REFERENCE);
            Row {
                delivered_ratio: theirs.and_then(|theirs| ratio(delivered(run), delivered(theirs))),
                cpu_ratio: theirs.and_then(|theirs| {
                    ratio(
                        run.server_cpu_us_per_delivery,
                        theirs.server_cpu_us_per_delivery,
                    )
                }),
                case,
                series,
                run: run.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        a.case
            .rank()
            .cmp(&b.case.rank())
            .then_with(|| a.series.rank().cmp(&b.series.rank()))
    });
    rows
}

/// The table in Markdown, then a note for each run with refused sends or failed
/// connections, which the figures alone would hide.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | server | protocol | deliveries/s | p99 | server CPU µs/delivery \
         | server RSS KiB/connection | lost / dup / reordered | deliveries/s ÷ reference \
         | CPU/delivery ÷ reference |\n\
         |---|---|---|---:|---:|---:|---:|---|---:|---:|\n",
    );
    let mut previous: Option<&Case> = None;
    for row in rows {
        let scenario = if previous == Some(&row.case) {
            String::new()
        } else {
            row.case.label()
        };
        previous = Some(&row.case);
        let run = &row.run;
        let _ = writeln!(
            out,
            "| {scenario} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} |",
            row.series.target,
            row.series.protocol,
            row.delivered_per_second()
                .map_or(DASH.to_owned(), thousands),
            row.p99_ms().map_or(DASH.to_owned(), duration),
            run.server_cpu_us_per_delivery
                .map_or(DASH.to_owned(), |us| format!("{us:.1}")),
            run.server_rss_kib_per_connection
                .map_or(DASH.to_owned(), |kib| format!("{kib:.1}")),
            run.lost,
            run.duplicated,
            run.out_of_order,
            row.delivered_ratio.map_or(DASH.to_owned(), times),
            row.cpu_ratio.map_or(DASH.to_owned(), times),
        );
    }
    let notes: Vec<String> = rows.iter().filter_map(note).collect();
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

const DASH: &str = "—";

/// What went wrong in a run short of failing it: refused sends, lost connections.
fn note(row: &Row) -> Option<String> {
    let run = &row.run;
    if run.refused == 0 && run.connection_errors == 0 {
        return None;
    }
    let kinds: Vec<String> = run
        .refusals
        .iter()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect();
    Some(format!(
        "{}, {}: {} of {} sends refused, {} connection errors ({})",
        row.case.label(),
        row.series.label(),
        run.refused,
        run.sent,
        run.connection_errors,
        kinds.join("; ")
    ))
}

/// 123456.7 as "123,457".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Milliseconds with the precision that matters at their scale.
fn duration(ms: f64) -> String {
    if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A run with the figures the table reads; the rest are zero.
    fn run(
        target: &str,
        protocol: &str,
        scenario: &str,
        connections: u64,
        delivered_per_second: f64,
        cpu_us: Option<f64>,
    ) -> RunReport {
        let delivered = (delivered_per_second * 10.0) as u64;
        serde_json::from_value(serde_json::json!({
            "target": target, "scenario": scenario, "protocol": protocol,
            "connections": connections, "payloadBytes": 100, "window": 8, "seconds": 10.0,
            "connectSeconds": 0.5, "sent": 100, "acked": 100, "refused": 0,
            "ackedPerSecond": 10.0, "delivered": delivered,
            "deliveredPerSecond": delivered_per_second,
            "latencyUs": if delivered > 0 {
                serde_json::json!({"p50": 1000, "p90": 2000, "p99": 12_345, "max": 20_000})
            } else {
                serde_json::json!({"p50": null, "p90": null, "p99": null, "max": null})
            },
            "lost": 0, "duplicated": 0, "outOfOrder": 0, "connectionErrors": 0,
            "churnConnections": 0, "serverCpuSeconds": 1.0,
            "serverCpuUsPerDelivery": cpu_us, "serverRssKiB": 50_000,
            "serverRssKiBPerConnection": 16.25, "refusals": {},
        }))
        .unwrap()
    }

    fn fixture() -> Vec<RunReport> {
        vec![
            run("reference", "socketio", "idle", 5000, 0.0, None),
            // Superseded by the run of the same target, protocol and scenario below.
            run("courier-sqlite", "socketio", "fanout", 11, 1.0, Some(99.0)),
            run("reference", "socketio", "fanout", 11, 8000.0, Some(12.5)),
            run(
                "courier-sqlite",
                "native",
                "fanout",
                11,
                10_000.0,
                Some(10.0),
            ),
            run(
                "courier-sqlite",
                "socketio",
                "fanout",
                11,
                20_000.0,
                Some(5.0),
            ),
            run(
                "courier-sqlite",
                "socketio",
                "fanout",
                101,
                150_000.0,
                Some(2.0),
            ),
            run("courier-postgres", "socketio", "idle", 5000, 0.0, None),
        ]
    }

    fn find<'a>(rows: &'a [Row], target: &str, protocol: &str, connections: u64) -> &'a Row {
        rows.iter()
            .find(|row| {
                row.series == Series::new(target, protocol) && row.case.connections == connections
            })
            .unwrap()
    }

    #[test]
    fn a_later_run_replaces_an_earlier_one() {
        let runs = latest(fixture());
        assert_eq!(runs.len(), 6);
        let sqlite: Vec<_> = runs
            .iter()
            .filter(|run| {
                run.target.as_deref() == Some("courier-sqlite")
                    && run.protocol == "socketio"
                    && run.connections == 11
            })
            .collect();
        assert_eq!(sqlite.len(), 1);
        assert_eq!(sqlite[0].delivered_per_second, 20_000.0);
    }

    #[test]
    fn ratios_are_to_the_reference_in_the_same_scenario() {
        let rows = rows(&latest(fixture()));
        let socketio = find(&rows, "courier-sqlite", "socketio", 11);
        assert_eq!(socketio.delivered_ratio, Some(2.5));
        assert_eq!(socketio.cpu_ratio, Some(0.4));
        let native = find(&rows, "courier-sqlite", "native", 11);
        assert_eq!(native.delivered_ratio, Some(1.25));
        assert_eq!(native.cpu_ratio, Some(0.8));
        // No reference run at 101 members, and no ratio of the reference to itself.
        let unmatched = find(&rows, "courier-sqlite", "socketio", 101);
        assert_eq!(
            (unmatched.delivered_ratio, unmatched.cpu_ratio),
            (None, None)
        );
        let reference = find(&rows, "reference", "socketio", 11);
        assert_eq!(reference.delivered_ratio, None);
        // Idle delivers nothing: no throughput and so no ratio.
        let idle = find(&rows, "courier-postgres", "socketio", 5000);
        assert_eq!(idle.delivered_per_second(), None);
        assert_eq!(idle.delivered_ratio, None);
    }

    #[test]
    fn rows_go_by_scenario_then_server() {
        let rows = rows(&latest(fixture()));
        let order: Vec<(u64, String)> = rows
            .iter()
            .map(|row| (row.case.connections, row.series.label()))
            .collect();
        assert_eq!(
            order,
            [
                (11, "courier-sqlite socketio".to_owned()),
                (11, "courier-sqlite native".to_owned()),
                (11, "reference socketio".to_owned()),
                (101, "courier-sqlite socketio".to_owned()),
                (5000, "courier-postgres socketio".to_owned()),
                (5000, "reference socketio".to_owned()),
            ]
        );
    }

    #[test]
    fn the_markdown_shows_figures_and_ratios() {
        let table = markdown(&rows(&latest(fixture())));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 6);
        assert_eq!(
            lines[2],
            "| fanout, 11 members | courier-sqlite | socketio | 20,000 | 12.3 ms | 5.0 | 16.2 \
             | 0 / 0 / 0 | 2.50× | 0.40× |"
        );
        assert!(
            lines[3].starts_with("|  | courier-sqlite | native | 10,000 |"),
            "{table}"
        );
        assert!(lines[4].ends_with("| 8,000 | 12.3 ms | 12.5 | 16.2 | 0 / 0 / 0 | — | — |"));
        assert!(lines[6].starts_with(
            "| idle, 5,000 connections | courier-postgres | socketio | — | — | — | 16.2 |"
        ));
    }

    #[test]
    fn refusals_get_a_note() {
        let mut refused = run("reference", "socketio", "pairs", 1000, 500.0, Some(40.0));
        refused.refused = 3;
        refused.refusals.insert("internal".to_owned(), 3);
        let table = markdown(&rows(&[refused]));
        assert!(
            table.ends_with(
                "- pairs, 1,000 connections, reference socketio: 3 of 100 sends refused, \
                 0 connection errors (internal: 3)\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(duration(3.21), "3.2 ms");
        assert_eq!(duration(362.4), "362 ms");
        assert_eq!(duration(12_345.0), "12.3 s");
        assert_eq!(times(2.5), "2.50×");
    }
}
