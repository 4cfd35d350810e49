//! `compare-report`: reads the results that benches/compare/run.sh appends (one tagged
//! `loadgen` JSON line per run), prints a Markdown table that sets each courier target
//! beside the reference server, scenario by scenario, and draws an SVG chart of fan-out
//! throughput and latency against conversation size.
//!
//! ```sh
//! compare-report target/compare/results.jsonl --chart docs/compare.svg
//! ```

mod chart;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use courier_loadgen::report::RunReport;

#[derive(Debug, Parser)]
#[command(version, about = "Tabulates and charts benches/compare results", long_about = None)]
struct Args {
    /// The results file: one `loadgen` JSON line per run, each with a `target`.
    #[arg(default_value = "target/compare/results.jsonl")]
    results: PathBuf,
    /// Where to write the SVG chart (none without it).
    #[arg(long)]
    chart: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let runs = parse(&text).with_context(|| format!("in {}", args.results.display()))?;
    let rows = table::rows(&table::latest(runs));
    print!("{}", table::markdown(&rows));
    if let Some(path) = args.chart {
        chart::draw(&rows, &path).with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(())
}

/// The runs of a results file, one JSON line each; lines without a target are refused,
/// since a run's server is what the comparison is about.
fn parse(text: &str) -> anyhow::Result<Vec<RunReport>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let run: RunReport =
                serde_json::from_str(line).with_context(|| format!("line {}", index + 1))?;
            anyhow::ensure!(run.target.is_some(), "line {} has no target", index + 1);
            Ok(run)
        })
        .collect()
}
