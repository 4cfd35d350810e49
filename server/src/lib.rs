//! # courier-server
//!
//! The reference server over [`courier_engine`]: REST, the native WebSocket, auth.
//!
//! - [`startup`]: [`startup::Application`], shared by `main` and the tests.
//! - [`config`], [`cli`]: one typed configuration from defaults, TOML, env and flags.
//! - [`auth`]: bcrypt passwords, JWT access tokens, rotating refresh tokens.
//! - [`routes`]: one file per REST resource.
//! - [`realtime`]: the socket transports and their shared dispatcher.
//! - [`web_client`]: the browser client at `/`, embedded in the binary.
//! - [`error`]: the API's one error shape.
//! - [`limits`], [`metrics`]: rate limits (governor) and Prometheus metrics.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod realtime;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod web_client;
