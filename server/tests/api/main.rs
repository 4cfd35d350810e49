//! The server end to end: REST and the native WebSocket, on SQLite and PostgreSQL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod auth;
mod conversations;
mod limits;
mod openapi;
mod socketio;
mod users;
mod websocket;
