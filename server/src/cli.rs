//! `courier serve | migrate | openapi`, with flags that override `COURIER_*` variables,
//! which override the optional TOML file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Environment, LogFormat};

/// Courier: a real-time messaging server.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve REST and WebSocket (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document and exit.
    Openapi,
}

/// Flags, each also readable from its `COURIER_*` variable.
#[derive(Debug, Args)]
pub struct Settings {
    /// A TOML file with settings (flags and variables override it).
    #[arg(long, env = "COURIER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address and port to serve on.
    #[arg(long, env = "COURIER_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Database URL (`DATABASE_URL` is read too).
    #[arg(long, env = "COURIER_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Redis URL for several nodes (`REDIS_URL` is read too).
    #[arg(long, env = "COURIER_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// With Redis: milliseconds within which a dead node's users go offline.
    #[arg(long, env = "COURIER_PRESENCE_TTL_MS", global = true)]
    pub presence_ttl_ms: Option<u64>,
    /// Data directory.
    #[arg(long, env = "COURIER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// development or production.
    #[arg(long, env = "COURIER_ENV", global = true)]
    pub environment: Option<Environment>,
    /// JWT secret.
    #[arg(
        long,
        env = "COURIER_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// bcrypt cost.
    #[arg(long, env = "COURIER_BCRYPT_COST", global = true)]
    pub bcrypt_cost: Option<u32>,
    /// text or json.
    #[arg(long, env = "COURIER_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// Milliseconds a user stays online after their last connection closes.
    #[arg(long, env = "COURIER_PRESENCE_GRACE_MS", global = true)]
    pub presence_grace_ms: Option<u64>,
    /// Milliseconds pushed events may wait to share a socket write (0: none).
    #[arg(long, env = "COURIER_WRITE_DELAY_MS", global = true)]
    pub write_delay_ms: Option<u64>,
    /// The fewest users an event must be for (its conversation's members) to wait for the
    /// write delay.
    #[arg(long, env = "COURIER_WRITE_DELAY_MIN_AUDIENCE", global = true)]
    pub write_delay_min_audience: Option<usize>,
    /// Comma-separated origins allowed by CORS.
    #[arg(
        long,
        env = "COURIER_CORS_ALLOWED_ORIGINS",
        global = true,
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Comma-separated STUN/TURN URLs for calls, as one ICE server without credentials
    /// (TURN credentials go in the TOML file).
    #[arg(
        long,
        env = "COURIER_ICE_SERVER_URLS",
        global = true,
        value_delimiter = ','
    )]
    pub ice_server_urls: Option<Vec<String>>,
}

impl Settings {
    /// Builds the configuration: defaults, TOML, then variables and flags.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        match self
            .database_url
            .or_else(|| std::env::var("DATABASE_URL").ok())
        {
            Some(url) if !url.is_empty() => config.database_url = url,
            _ => {}
        }
        match self.redis_url.or_else(|| std::env::var("REDIS_URL").ok()) {
            Some(url) if !url.is_empty() => config.redis_url = url,
            _ => {}
        }
        if let Some(ttl) = self.presence_ttl_ms {
            config.presence_ttl_ms = ttl;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(environment) = self.environment {
            config.environment = environment;
        }
        if let Some(secret) = self.jwt_secret {
            config.jwt_secret = Some(secret.into());
        }
        if let Some(cost) = self.bcrypt_cost {
            config.bcrypt_cost = cost;
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Some(grace) = self.presence_grace_ms {
            config.presence_grace_ms = grace;
        }
        if let Some(delay) = self.write_delay_ms {
            config.write_delay_ms = delay;
        }
        if let Some(audience) = self.write_delay_min_audience {
            config.write_delay_min_audience = audience;
        }
        if let Some(origins) = self.cors_allowed_origins {
            config.cors_allowed_origins = origins;
        }
        if let Some(urls) = self.ice_server_urls {
            let urls: Vec<String> = urls.into_iter().filter(|url| !url.is_empty()).collect();
            config.ice_servers = if urls.is_empty() {
                Vec::new()
            } else {
                vec![crate::config::IceServer {
                    urls,
                    username: None,
                    credential: None,
                }]
            };
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn flags_override_the_toml_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("courier.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nbcrypt_cost = 10\n").unwrap();
        let cli = Cli::try_parse_from([
            "courier",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7000",
            "--write-delay-ms",
            "5",
            "--write-delay-min-audience",
            "100",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Serve)));
        let config = cli.settings.into_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000", "the flag wins");
        assert_eq!(config.bcrypt_cost, 10, "the file fills what flags leave");
        assert_eq!(config.write_delay_ms, 5);
        assert_eq!(config.write_delay_min_audience, 100);
    }

    #[test]
    fn ice_server_urls_become_one_server() {
        let cli = Cli::try_parse_from([
            "courier",
            "--ice-server-urls",
            "stun:stun.example.com:3478,turn:turn.example.com:3478",
        ])
        .unwrap();
        let config = cli.settings.into_config().unwrap();
        assert_eq!(config.ice_servers.len(), 1);
        assert_eq!(
            config.ice_servers[0].urls,
            ["stun:stun.example.com:3478", "turn:turn.example.com:3478"]
        );
        let cli = Cli::try_parse_from(["courier", "--ice-server-urls", ""]).unwrap();
        assert!(cli.settings.into_config().unwrap().ice_servers.is_empty());
    }
}
