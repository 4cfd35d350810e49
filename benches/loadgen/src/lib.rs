//! What the load generator's binaries share: [`report::RunReport`], the JSON line
//! `loadgen` prints for each run and `compare-report` reads back to set courier beside the
//! reference server (benches/compare).

pub mod report;
