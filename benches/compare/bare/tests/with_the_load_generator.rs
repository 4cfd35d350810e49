//! The bare server answers the load generator as courier does, so that what it measures
//! is the stack's floor and not a failed run: every acked message reaches every member
//! once and in order.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Bare {
    child: Child,
    port: u16,
}

impl Bare {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bare"))
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bare starts");
        let stdout = child.stdout.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("listening on ") {
                    let _ = port_tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("bare prints its port");
        Self { child, port }
    }

    /// Runs the load generator against it; its JSON report.
    fn load(&self, args: &[&str]) -> Value {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // The workspace builds the load generator for its own tests before any test runs.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../../../target"));
        let loadgen = target.join("debug/loadgen");
        assert!(
            loadgen.exists(),
            "{} is missing: run `cargo test --workspace` (or build courier-loadgen first)",
            loadgen.display()
        );
        let output = Command::new(loadgen)
            .args(args)
            .args(["--url", &format!("http://127.0.0.1:{}", self.port)])
            .args(["--server-pid", &self.child.id().to_string(), "--quiet"])
            .output()
            .expect("loadgen runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "loadgen failed: {stderr}");
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("a JSON line; {stderr}"))
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fanout_pairs_and_idle_run_clean_against_the_bare_stack() {
    let bare = Bare::start();
    let report = bare.load(&[
        "fanout",
        "--senders",
        "2",
        "--receivers",
        "4",
        "--messages",
        "50",
        "--duration",
        "30",
    ]);
    assert_eq!(report["acked"], 100, "{report}");
    assert_eq!(report["delivered"], 600, "{report}");
    for count in [
        "lost",
        "duplicated",
        "outOfOrder",
        "refused",
        "connectionErrors",
    ] {
        assert_eq!(report[count], 0, "{count}: {report}");
    }

    let report = bare.load(&["pairs", "--pairs", "3", "--messages", "20"]);
    assert_eq!(report["acked"], 120, "{report}");
    assert_eq!(report["delivered"], 240, "{report}");
    assert_eq!(report["outOfOrder"], 0, "{report}");

    let report = bare.load(&["idle", "--connections", "20", "--duration", "1"]);
    assert_eq!(report["connections"], 20, "{report}");
    assert!(report["serverRssKiBPerConnection"].is_number(), "{report}");
}
