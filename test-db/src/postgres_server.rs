//! A private PostgreSQL server for tests that stop, restart or pause the database: a
//! fresh cluster in a temp directory on a free loopback port, removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A PostgreSQL cluster of its own, started with `pg_ctl`.
#[derive(Debug)]
pub struct TestPostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// initdb refuses to run as root: then every command runs as `postgres`.
    run_as_postgres: bool,
}

impl TestPostgresServer {
    /// Creates and starts one. `None` (the test skips) when PostgreSQL's server binaries
    /// are not installed, unless `COURIER_REQUIRE_POSTGRES` is set: then it fails.
    pub fn start() -> Option<Self> {
        let Some(bin) = server_binaries() else {
            assert!(
                std::env::var("COURIER_REQUIRE_POSTGRES").is_err(),
                "COURIER_REQUIRE_POSTGRES is set but initdb and pg_ctl are not installed"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::Builder::new()
            .prefix("courier-pg-")
            .tempdir()
            .expect("temp dir");
        let run_as_postgres = is_root();
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown the cluster directory");
        }
        let server = Self {
            bin,
            dir,
            port,
            run_as_postgres,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.resume_start();
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it (fast shutdown: sessions are disconnected, nothing committed is lost).
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again after [`stop`](Self::stop).
    pub fn resume_start(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Freezes every process of the cluster (SIGSTOP): connections stay open and
    /// nothing answers, as with a hung server or a network partition.
    pub fn pause(&self) {
        self.signal_all("-STOP");
    }

    /// Undoes [`pause`](Self::pause).
    pub fn unpause(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let postmaster = self.postmaster_pid();
        let status = Command::new("kill")
            .args([signal, &postmaster.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "signal the postmaster");
        // A backend may exit between the listing and the signal: that one needs none.
        for child in children_of(postmaster) {
            let _ = Command::new("kill")
                .args([signal, &child.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn postmaster_pid(&self) -> u32 {
        let pid_file = Path::new(&self.data()).join("postmaster.pid");
        let text = std::fs::read_to_string(pid_file).expect("postmaster.pid");
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("a pid in postmaster.pid")
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("{program} runs: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TestPostgresServer {
    fn drop(&mut self) {
        if self.dir.path().join("data/postmaster.pid").exists() {
            self.signal_all("-CONT");
            let data = self.data();
            let path = self.bin.join("pg_ctl");
            let mut command = if self.run_as_postgres {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(&path);
                command
            } else {
                Command::new(&path)
            };
            let _ = command
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The newest installed server's binaries (Debian keeps them out of the PATH).
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Every process whose parent is `parent` (PostgreSQL's backends and workers).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may hold spaces: fields resume after its ')'.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
