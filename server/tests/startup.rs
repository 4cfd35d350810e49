//! A server that cannot start says why on one line and exits with status 1, before it
//! touches its data directory; one that runs keeps its error log for its own errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{Node, NodeSpec};

fn courier(data_dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
    command
        .arg("serve")
        .env("COURIER_LISTEN", "127.0.0.1:0")
        .env("COURIER_DATA_DIR", data_dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("DATABASE_URL")
        .env_remove("COURIER_DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("COURIER_REDIS_URL")
        .env_remove("COURIER_CONFIG")
        .env_remove("COURIER_BCRYPT_COST");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("courier runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_missing_config_file_is_named_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = dir.path().join("missing.toml");
    let output = courier(&data, &[("COURIER_CONFIG", missing.to_str().unwrap())]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with(&format!("error: reading {}: ", missing.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!data.exists());
}

#[test]
fn invalid_settings_are_all_named_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("courier.toml");
    std::fs::write(&config, "sends_per_second = 0\nmax_commit_batch = 0\n").unwrap();
    let output = courier(
        &data,
        &[
            ("COURIER_CONFIG", config.to_str().unwrap()),
            ("COURIER_BCRYPT_COST", "40"),
            ("COURIER_LISTEN", "bogus"),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    assert_eq!(
        stderr.trim_end(),
        "error: invalid configuration: \
         listen must be an address and port such as 127.0.0.1:8080 \
         (got \"bogus\": invalid socket address); \
         max_commit_batch must be at least 1 (got 0); \
         sends_per_second must be at least 1 (got 0); \
         bcrypt_cost must be between 4 and 31 (got 40)"
    );
    assert!(!data.exists());
}

/// Malformed HTTP is answered 400 and is no error of the server's: actix-http would log
/// each at error level, so any client could fill the error log.
#[actix_rt::test]
async fn malformed_requests_get_400_and_leave_no_error_in_the_log() {
    let mut node = Node::start(NodeSpec::new(""));
    for request in [
        &b"GARBAGE \x01\x02\r\n\r\n"[..],
        b"GET /api/v1/health HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    ] {
        let mut socket = TcpStream::connect(("127.0.0.1", node.api.port)).unwrap();
        socket.write_all(request).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
    }
    let health = node
        .api
        .http
        .get(node.api.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Stopped, the node has handed over every line it wrote (read while it runs, the log
    // may lag behind the answers).
    node.terminate();
    let logs = node.logs();
    assert!(logs.iter().any(|line| line.contains("/api/v1/health")));
    let errors: Vec<&String> = logs
        .iter()
        .filter(|line| {
            serde_json::from_str::<Value>(line).map_or(true, |entry| entry["level"] == "ERROR")
        })
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
