//! Test support for running `courier` as a child process: start it, kill it, restart it
//! on the same port and data, and read its logs.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod chatter;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::Api;

/// Settings every test node gets: limits far above what the tests send.
const SETTINGS: &str = r#"
auth_requests_per_minute = 10000
sends_per_second = 10000
ws_frames_per_second = 10000
"#;

/// What a node runs on.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `postgres://…`, or empty for SQLite in the node's data directory.
    pub database_url: String,
    /// `redis://…` for a cluster node.
    pub redis_url: Option<String>,
    /// Environment variables set after the defaults.
    pub overrides: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn new(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            redis_url: None,
            overrides: Vec::new(),
        }
    }

    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.overrides.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// One `courier serve` child process, restartable on the same port and data.
pub struct Node {
    pub api: Api,
    spec: NodeSpec,
    child: Option<Child>,
    data: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    /// The threads draining the child's stdout and stderr into `logs`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Node {
    pub fn start(spec: NodeSpec) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("courier.toml"), SETTINGS).unwrap();
        let mut node = Self {
            api: Api::new(port),
            spec,
            child: None,
            data,
            logs: Arc::default(),
            readers: Vec::new(),
        };
        node.spawn();
        node
    }

    /// Starts the process again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node before restarting it");
        self.spawn();
    }

    fn spawn(&mut self) {
        let data = self.data.path();
        let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
        command
            .arg("serve")
            .env("DATABASE_URL", &self.spec.database_url)
            .env("COURIER_CONFIG", data.join("courier.toml"))
            .env("COURIER_LISTEN", format!("127.0.0.1:{}", self.api.port))
            .env("COURIER_DATA_DIR", data)
            .env(
                "COURIER_JWT_SECRET",
                "process-secret-process-secret-process!",
            )
            .env("COURIER_BCRYPT_COST", "4")
            .env("COURIER_PRESENCE_GRACE_MS", "200")
            .env("COURIER_PRESENCE_TTL_MS", "3000")
            .env("COURIER_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("COURIER_DATABASE_URL")
            .env_remove("COURIER_REDIS_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(redis) = &self.spec.redis_url {
            command.env("REDIS_URL", redis);
        }
        command.envs(self.spec.overrides.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("courier starts");
        let (started, listening) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::clone(&self.logs);
        // Reads the log for the "listening" line, then keeps draining it so the child
        // never blocks on a full pipe.
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && entry["fields"]["message"] == "courier listening"
                {
                    let _ = started.send(());
                }
                logs.lock().unwrap().push(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let logs = Arc::clone(&self.logs);
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            logs.lock().unwrap().extend(text.lines().map(str::to_owned));
        });
        self.readers = vec![stdout_reader, stderr_reader];
        self.child = Some(child);
        listening
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("courier did not start:\n{}", self.logs().join("\n")));
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
    }

    /// SIGTERM, and waits for the process to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let _ = child.wait();
        }
        self.join_readers();
    }

    /// Once the process is gone: its last lines are in `logs`.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// The process's resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("the node runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// Every log line so far, stdout and stderr; all of them once the node is stopped.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub async fn ready(&self) -> Value {
        let response = self
            .api
            .http
            .get(self.api.url("/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Waits until `/ready` says `status`.
    pub async fn wait_until(&self, status: &str) {
        for _ in 0..200 {
            if self.ready().await["status"] == status {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node never became {status}: {}", self.ready().await);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
