//! # courier-engine
//!
//! The messaging core of Courier: ordered, acknowledged, exactly-once-stored chat delivery
//! over actix actors, with Diesel stores (SQLite, PostgreSQL) and a node-to-node bus.
//!
//! Crate map:
//! - [`engine`]: [`Engine`] and its builder; [`Session`], the handle a transport drives.
//! - [`protocol`]: client commands, server events and the objects they carry: the only
//!   wire-facing types.
//! - `actors`: one `ConversationActor` per active conversation (ordering, group commit,
//!   typing, receipts), one `UserActor` per online user (devices, presence), and the
//!   sharded registries that find them.
//! - [`bus`]: fan-out between nodes; [`bus::LocalBus`] in-process.
//! - [`store`]: storage traits and [`store::DieselStore`].
//! - [`ids`], [`error`], [`config`]: newtypes, errors, limits.

mod actors;
pub mod bus;
pub mod config;
pub mod engine;
pub mod error;
pub mod ids;
pub mod protocol;
pub mod store;

pub use actors::{
    CloseReason, Outbound, OutboundQueue, OutboundStream, PendingEvents, UserDirectory,
};
pub use config::Limits;
pub use engine::{
    CreateConversation, Engine, EngineBuilder, EngineObserver, HistoryPage, MessagePage, Session,
};
pub use error::{EngineError, StoreError};
pub use ids::{ConversationId, MessageId, Seq, SessionId, Timestamp, UserId};
