//! The load generator against a real `courier` process, both protocols: every acked
//! message reaches every member once and in order, and the report says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// `courier serve` on a new SQLite file with the load generator's settings.
struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // The workspace builds the server's binary for its own tests before any test runs.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../../target"));
        let binary = target.join("debug/courier");
        assert!(
            binary.exists(),
            "{} is missing: run `cargo test --workspace` (or build courier-server first)",
            binary.display()
        );
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .env("COURIER_CONFIG", manifest.join("server.toml"))
            .env("COURIER_LISTEN", "127.0.0.1:0")
            .env("COURIER_DATA_DIR", data.path())
            .env("COURIER_LOG_FORMAT", "json")
            .env("RUST_LOG", "courier=info,warn")
            .env_remove("DATABASE_URL")
            .env_remove("COURIER_DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("COURIER_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("courier starts");
        let stdout = child.stdout.take().unwrap();
        let (port_tx, port_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "courier listening"
                {
                    let _ = port_tx.send(entry["fields"]["port"].as_u64().unwrap());
                }
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("courier logs its port");
        Self {
            child,
            port: u16::try_from(port).unwrap(),
            _data: data,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator; its JSON report.
fn loadgen(server: &Server, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--url", &format!("http://127.0.0.1:{}", server.port)])
        .args(["--server-pid", &server.child.id().to_string(), "--quiet"])
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("a JSON line; {stderr}"))
}

#[test]
fn fanout_and_pairs_deliver_every_acked_message_once_in_order_on_both_protocols() {
    let server = Server::start();
    for protocol in ["native", "socketio"] {
        // 2 senders and 4 receivers in one group: every acked message reaches all six.
        let args = [
            "fanout",
            "--protocol",
            protocol,
            "--senders",
            "2",
            "--receivers",
            "4",
            "--messages",
            "50",
            "--duration",
            "30",
        ];
        let report = loadgen(&server, &args);
        assert_eq!(report["acked"], 100, "{protocol}: {report}");
        assert_eq!(report["delivered"], 600, "{protocol}: {report}");
        for count in [
            "lost",
            "duplicated",
            "outOfOrder",
            "refused",
            "connectionErrors",
        ] {
            assert_eq!(report[count], 0, "{protocol} {count}: {report}");
        }
        assert!(report["latencyUs"]["p99"].as_u64().unwrap() > 0, "{report}");
        assert!(
            report["serverCpuUsPerDelivery"].as_f64().unwrap() >= 0.0,
            "{report}"
        );

        let args = [
            "pairs",
            "--protocol",
            protocol,
            "--pairs",
            "3",
            "--messages",
            "20",
        ];
        let report = loadgen(&server, &args);
        // Both sides of each pair send 20 and receive the pair's 40.
        assert_eq!(report["acked"], 120, "{protocol}: {report}");
        assert_eq!(report["delivered"], 240, "{protocol}: {report}");
        assert_eq!(report["lost"], 0, "{protocol}: {report}");
    }

    let report = loadgen(&server, &["idle", "--connections", "20", "--duration", "1"]);
    assert_eq!(report["connections"], 20, "{report}");
    assert!(report["serverRssKiBPerConnection"].is_number(), "{report}");
}

#[test]
fn a_server_outside_the_loopback_range_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["idle", "--url", "http://192.0.2.1:8080", "--quiet"])
        .output()
        .expect("loadgen runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
