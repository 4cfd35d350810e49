//! The server end to end: REST and the native WebSocket, on SQLite and PostgreSQL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod auth;
mod auth_attacks;
mod authz;
mod calls;
mod conversations;
mod forged;
mod limits;
mod openapi;
mod security;
mod socketio;
mod users;
mod web_client;
mod websocket;
