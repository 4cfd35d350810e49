//! The actors of the engine and the registries that find them.
//!
//! - [`ConversationActor`]: one per active conversation. Serialises its sends, commits
//!   them in groups, fans them out, keeps typing state and the member list.
//! - [`UserActor`]: one per online user. Holds the user's sessions (devices) and presence.
//! - [`UserDirectory`]: the sharded map from users to their actor and sessions, read by
//!   the fan-out path without a mailbox hop.

mod announcer;
mod conversation;
pub(crate) mod registry;
pub(crate) mod session;
mod user;
mod write_delay;

pub(crate) use announcer::Announcer;
pub(crate) use conversation::{
    Authorize, ChangeMembership, ConversationActor, MarkReceipt, MessageChange, ModifyMessage,
    PostMessage, ReloadRoster, SetTyping,
};
pub(crate) use session::SessionSink;
pub use session::{CloseReason, Outbound, OutboundQueue, OutboundStream, PendingEvents};
pub use user::UserDirectory;
pub(crate) use user::{
    AttachSession, DetachSession, RelayCall, SetStatus, UserActor, tell_offline,
};
pub(crate) use write_delay::WriteDelay;

use std::future::Future;

use crate::error::StoreError;

/// Runs `work` (calls to the store) as a task of its own, for an actor to await; `lost`
/// answers if the task ends without an answer (it panicked, or its arbiter stopped).
/// actix does not poll an actor's futures while the actor waits on one (`ctx.wait`, an
/// `AtomicResponse`): a store connection held by such a future would stay held for as
/// long, and the future waited on may need it (SQLite has a single writer connection),
/// which stalled both until a checkout timed out.
pub(crate) fn detached<T: 'static>(
    work: impl Future<Output = T> + 'static,
    lost: impl FnOnce() -> T + 'static,
) -> impl Future<Output = T> {
    let task = actix::spawn(work);
    async move { task.await.unwrap_or_else(|_| lost()) }
}

/// What a detached store call that ended without an answer answers.
pub(crate) fn store_call_lost<T, E: From<StoreError>>() -> Result<T, E> {
    Err(StoreError::Unavailable("a store call ended without an answer".into()).into())
}
