//! The server's CPU time and memory, read from /proc (Linux).

use anyhow::Context;

/// Clock ticks per second of /proc's CPU times (`USER_HZ`): 100 on every architecture
/// Linux builds for today; reading it needs `sysconf`, which is `unsafe` to call.
const USER_HZ: f64 = 100.0;

/// The courier process being measured.
pub struct ServerProcess {
    pid: u32,
}

impl ServerProcess {
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        let process = Self { pid };
        process.cpu_seconds()?;
        Ok(process)
    }

    /// User and system CPU time of all its threads so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("no process {}", self.pid))?;
        // Fields after the command name, which may itself hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("a /proc stat line")?
            .1
            .split_whitespace()
            .collect();
        // utime and stime: fields 14 and 15 of the line, 12th and 13th after the name.
        let ticks = |index: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(index)
                .context("a /proc stat field")?
                .parse::<f64>()?)
        };
        Ok((ticks(11)? + ticks(12)?) / USER_HZ)
    }

    /// Its resident set size, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = ServerProcess::new(std::process::id()).unwrap();
        assert!(me.cpu_seconds().unwrap() >= 0.0);
        assert!(me.rss_kib().unwrap() > 0);
    }
}
