//! The server's one typed configuration: defaults, then an optional TOML file, then
//! `COURIER_*` environment variables, then command-line flags (see [`crate::cli`]).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where the server runs: production refuses weak secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local use: a JWT secret is generated and kept in the data directory.
    #[default]
    Development,
    /// A deployment: the JWT secret must be configured and strong.
    Production,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the server. Field docs are the reference; the README has the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to serve on.
    pub listen: String,
    /// `postgres://…` for PostgreSQL, otherwise a SQLite file path.
    pub database_url: String,
    /// `redis://…` selects the Redis bus and presence, for several nodes; empty keeps
    /// both in process (one node).
    pub redis_url: String,
    /// With Redis: a node that stops heartbeating is taken for dead, and its users
    /// offline for everyone, within this many milliseconds.
    pub presence_ttl_ms: u64,
    /// Directory for the SQLite file and the generated JWT secret.
    pub data_dir: PathBuf,
    /// `development` or `production`.
    pub environment: Environment,
    /// HS256 secret for access tokens (at least 32 bytes). Generated when absent in
    /// development. Redacted from `Debug` output and logs.
    pub jwt_secret: Option<SecretString>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_s: u64,
    /// Lifetime of a refresh token, in seconds.
    pub refresh_token_ttl_s: u64,
    /// bcrypt work factor.
    pub bcrypt_cost: u32,
    /// Largest JSON request body accepted, in bytes.
    pub max_json_body_bytes: usize,
    /// Largest WebSocket frame accepted, in bytes; larger ones close the socket with 1009.
    pub ws_max_frame_bytes: usize,
    /// Frames a session may have queued towards its client before back-pressure applies.
    pub outbound_queue_capacity: usize,
    /// Most sends one transaction of the group commit writes (the sends of several
    /// conversations share one).
    pub max_commit_batch: usize,
    /// Most group commits running at once on this node; SQLite always runs one.
    pub commit_concurrency: usize,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Origins allowed to call the API from a browser (CORS); empty allows none.
    pub cors_allowed_origins: Vec<String>,
    /// Requests to `/auth/*` allowed per client IP per minute.
    pub auth_requests_per_minute: u32,
    /// Messages a user may send per second, REST and WebSocket together.
    pub sends_per_second: u32,
    /// Frames one WebSocket session may send per second.
    pub ws_frames_per_second: u32,
    /// How long a user stays online after their last connection closes, in milliseconds
    /// (a reload or network hand-over within it shows no offline/online flap).
    pub presence_grace_ms: u64,
    /// How long pushed events for a large audience may wait, in milliseconds, so that one
    /// socket write carries several of them: less server CPU per delivery on busy large
    /// conversations, for up to this much more latency. 0 writes at once; acks are never
    /// delayed.
    pub write_delay_ms: u64,
    /// The fewest users an event must be for (a conversation's members, a user's
    /// contacts) to wait for `write_delay_ms`: smaller conversations are written at once.
    pub write_delay_min_audience: usize,
    /// STUN and TURN servers handed to the web client for calls (`RTCIceServer` entries).
    /// Empty by default: peers on one host or network need none.
    pub ice_servers: Vec<IceServer>,
}

/// One STUN or TURN server for WebRTC calls, as the browser's `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp` or `turns:…` URLs.
    pub urls: Vec<String>,
    /// A TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A TURN password. Static credentials reach every signed-in client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        // What the engine runs with unless told otherwise: one place for those defaults.
        let engine = courier_engine::Limits::default();
        Self {
            listen: "127.0.0.1:8080".into(),
            database_url: String::new(),
            redis_url: String::new(),
            presence_ttl_ms: 30_000,
            data_dir: PathBuf::from("data"),
            environment: Environment::Development,
            jwt_secret: None,
            access_token_ttl_s: 15 * 60,
            refresh_token_ttl_s: 7 * 24 * 3600,
            bcrypt_cost: 12,
            max_json_body_bytes: 64 * 1024,
            ws_max_frame_bytes: 64 * 1024,
            outbound_queue_capacity: engine.outbound_queue_capacity,
            max_commit_batch: engine.max_commit_batch,
            commit_concurrency: engine.commit_concurrency,
            log_format: LogFormat::Text,
            cors_allowed_origins: Vec::new(),
            auth_requests_per_minute: 20,
            sends_per_second: 20,
            ws_frames_per_second: 50,
            presence_grace_ms: engine.presence_grace.as_millis() as u64,
            write_delay_ms: engine.write_delay.as_millis() as u64,
            write_delay_min_audience: engine.write_delay_min_audience,
            ice_servers: Vec::new(),
        }
    }
}

/// The shortest JWT secret accepted in production, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The work factors bcrypt accepts (the crate refuses others at hashing time, and does
/// not export its bounds).
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// The shortest presence lifetime: a node heartbeats three times per lifetime, and more
/// often than every 100 ms would load Redis for nothing.
pub const MIN_PRESENCE_TTL_MS: u64 = 300;

/// The smallest outbound queue: room for a burst of a chat message, its receipt and a
/// typing event.
pub const MIN_OUTBOUND_QUEUE_CAPACITY: u64 = 4;

/// The longest write delay: beyond it events would lag behind what people expect of a
/// chat, and the delay would only hide a server that is too small.
pub const MAX_WRITE_DELAY_MS: u64 = 1_000;

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    }

    /// Refuses settings the server cannot run with, naming every one at once: a zero
    /// rate, batch or size would otherwise be raised silently or refuse every request,
    /// and a bcrypt cost out of range would fail every registration.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        // Resolved as the bind will resolve it, so a host name is fine here too.
        if let Err(error) = std::net::ToSocketAddrs::to_socket_addrs(self.listen.as_str()) {
            problems.push(format!(
                "listen must be an address and port such as 127.0.0.1:8080 (got {:?}: {error})",
                self.listen
            ));
        }
        let mut at_least = |key: &str, value: u64, minimum: u64| {
            if value < minimum {
                problems.push(format!("{key} must be at least {minimum} (got {value})"));
            }
        };
        at_least("presence_ttl_ms", self.presence_ttl_ms, MIN_PRESENCE_TTL_MS);
        at_least("access_token_ttl_s", self.access_token_ttl_s, 1);
        at_least("refresh_token_ttl_s", self.refresh_token_ttl_s, 1);
        at_least("max_json_body_bytes", self.max_json_body_bytes as u64, 1);
        at_least("ws_max_frame_bytes", self.ws_max_frame_bytes as u64, 1);
        at_least(
            "outbound_queue_capacity",
            self.outbound_queue_capacity as u64,
            MIN_OUTBOUND_QUEUE_CAPACITY,
        );
        at_least("max_commit_batch", self.max_commit_batch as u64, 1);
        at_least("commit_concurrency", self.commit_concurrency as u64, 1);
        at_least(
            "auth_requests_per_minute",
            self.auth_requests_per_minute.into(),
            1,
        );
        at_least("sends_per_second", self.sends_per_second.into(), 1);
        at_least("ws_frames_per_second", self.ws_frames_per_second.into(), 1);
        at_least(
            "write_delay_min_audience",
            self.write_delay_min_audience as u64,
            1,
        );
        if self.write_delay_ms > MAX_WRITE_DELAY_MS {
            problems.push(format!(
                "write_delay_ms must be at most {MAX_WRITE_DELAY_MS} (got {})",
                self.write_delay_ms
            ));
        }
        if !BCRYPT_COSTS.contains(&self.bcrypt_cost) {
            problems.push(format!(
                "bcrypt_cost must be between {} and {} (got {})",
                BCRYPT_COSTS.start(),
                BCRYPT_COSTS.end(),
                self.bcrypt_cost
            ));
        }
        for (index, server) in self.ice_servers.iter().enumerate() {
            if server.urls.is_empty() {
                problems.push(format!("ice_servers[{index}] has no urls"));
            }
            for url in &server.urls {
                if !["stun:", "turn:", "turns:"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    problems.push(format!(
                        "ice_servers[{index}]: {url:?} is not a stun:, turn: or turns: URL"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration: {}", problems.join("; "))
        }
    }

    /// The database URL, defaulting to `courier.sqlite3` in the data directory.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            self.data_dir
                .join("courier.sqlite3")
                .to_string_lossy()
                .into_owned()
        } else {
            self.database_url.clone()
        }
    }

    /// Access token lifetime.
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_s)
    }

    /// Refresh token lifetime.
    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_s)
    }

    /// The JWT secret to use: configured, or (development only) generated once and kept
    /// in the data directory so restarts keep sessions valid.
    pub fn resolve_jwt_secret(&self) -> anyhow::Result<SecretString> {
        if let Some(secret) = &self.jwt_secret {
            let secret = secret.expose_secret();
            let weak = secret.len() < MIN_JWT_SECRET_BYTES || secret.contains("change-me");
            if weak && self.environment == Environment::Production {
                anyhow::bail!(
                    "jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes and not a placeholder in production"
                );
            }
            return Ok(secret.into());
        }
        if self.environment == Environment::Production {
            anyhow::bail!("COURIER_JWT_SECRET must be set in production");
        }
        let path = self.data_dir.join("jwt_secret");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let existing = existing.trim().to_owned();
            if existing.len() >= MIN_JWT_SECRET_BYTES {
                return Ok(existing.into());
            }
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let secret = crate::auth::tokens::random_token();
        std::fs::write(&path, &secret)?;
        restrict_to_owner(&path)?;
        Ok(secret.into())
    }
}

#[cfg(unix)]
fn restrict_to_owner(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_missing_short_or_placeholder_secrets() {
        let production = |secret: Option<&str>| Config {
            environment: Environment::Production,
            jwt_secret: secret.map(|s| s.to_owned().into()),
            ..Config::default()
        };
        assert!(production(None).resolve_jwt_secret().is_err());
        assert!(production(Some("short")).resolve_jwt_secret().is_err());
        let placeholder = "change-me-change-me-change-me-change-me";
        assert!(production(Some(placeholder)).resolve_jwt_secret().is_err());
        let strong = "k3Yq9v2WfJ0sX8pLr5tZ1nB7cD4hG6mQ";
        assert!(production(Some(strong)).resolve_jwt_secret().is_ok());
    }

    #[test]
    fn development_generates_a_secret_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let first = config.resolve_jwt_secret().unwrap();
        let second = config.resolve_jwt_secret().unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().len() >= MIN_JWT_SECRET_BYTES);
        assert!(!format!("{config:?}").contains(first.expose_secret()));
    }

    #[test]
    fn settings_the_server_cannot_run_with_are_refused_by_name() {
        assert!(Config::default().validate().is_ok());
        let broken = Config {
            sends_per_second: 0,
            max_commit_batch: 0,
            commit_concurrency: 0,
            outbound_queue_capacity: 3,
            bcrypt_cost: 3,
            presence_ttl_ms: 299,
            write_delay_ms: 1_001,
            write_delay_min_audience: 0,
            ice_servers: vec![IceServer {
                urls: vec!["http://turn.example.com".into()],
                username: None,
                credential: None,
            }],
            ..Config::default()
        };
        let message = broken.validate().unwrap_err().to_string();
        for expected in [
            "sends_per_second must be at least 1 (got 0)",
            "max_commit_batch must be at least 1 (got 0)",
            "commit_concurrency must be at least 1 (got 0)",
            "outbound_queue_capacity must be at least 4 (got 3)",
            "bcrypt_cost must be between 4 and 31 (got 3)",
            "presence_ttl_ms must be at least 300 (got 299)",
            "write_delay_ms must be at most 1000 (got 1001)",
            "write_delay_min_audience must be at least 1 (got 0)",
            "ice_servers[0]: \"http://turn.example.com\" is not a stun:, turn: or turns: URL",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing from {message:?}"
            );
        }
        let loadgen = Config::from_toml_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../benches/loadgen/server.toml"
        )))
        .unwrap();
        assert!(loadgen.validate().is_ok());
    }

    #[test]
    fn toml_files_are_read_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("courier.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nsends_per_second = 5\n").unwrap();
        let config = Config::from_toml_file(&path).unwrap();
        assert_eq!(
            (config.listen.as_str(), config.sends_per_second),
            ("0.0.0.0:9000", 5)
        );
        std::fs::write(
            &path,
            "[[ice_servers]]\nurls = [\"turn:turn.example.com:3478\"]\nusername = \"u\"\ncredential = \"p\"\n",
        )
        .unwrap();
        let config = Config::from_toml_file(&path).unwrap();
        assert_eq!(config.ice_servers[0].urls, ["turn:turn.example.com:3478"]);
        assert_eq!(config.ice_servers[0].credential.as_deref(), Some("p"));
        std::fs::write(&path, "lisen = \"typo\"\n").unwrap();
        assert!(Config::from_toml_file(&path).is_err());
    }
}
