//! Node-to-node fan-out and presence. An event is published once with its audience;
//! every node's bus hands it to the sessions attached there.
//!
//! [`LocalBus`] is the single-node implementation. `RedisBus` (feature `redis`) carries
//! the same [`Audience`] and frame between nodes over Redis pub/sub and keeps presence in
//! Redis; on each node it calls [`LocalDelivery`] for what reaches that node.

mod local;
#[cfg(feature = "redis")]
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

pub use local::{LocalBus, LocalDelivery};
#[cfg(feature = "redis")]
pub use redis::{RedisBus, RedisBusConfig, RedisBusStats};

use crate::ids::{ConversationId, Seq, UserId};
use crate::protocol::{EventFrame, PresenceStatus};

/// Who an event is for.
#[derive(Debug, Clone)]
pub enum Audience {
    /// The members of a conversation, except perhaps one (the typer, say).
    Members {
        /// The conversation (sessions that left its room are skipped).
        conversation: ConversationId,
        /// Its members when the event happened.
        members: Arc<[UserId]>,
        /// A member not to send to.
        except: Option<UserId>,
        /// The message's seq, for a `message:received`: a bus whose nodes can receive
        /// pushes from several publishers restores seq order with it.
        seq: Option<Seq>,
    },
    /// Every session of these users (presence, calls, a new conversation).
    Users(Arc<[UserId]>),
}

/// The status a user shows while online: `(status, status text)`.
pub type ShownStatus = (PresenceStatus, String);

/// What a node learns when a user's first session arrives there.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// The user has sessions on another node already: contacts know they are online.
    pub elsewhere: bool,
    /// The status the user set on another node, to show here too.
    pub status: Option<ShownStatus>,
}

/// A change of one user's membership, as the bus tells the user's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// The user joined. `after` is the conversation's last seq read before the join:
    /// every message that may be theirs comes after it, so their nodes take the
    /// conversation's messages from the one after it (reading from the store those
    /// published before they listened).
    Joined {
        /// The last seq before the join.
        after: Seq,
    },
    /// The user left.
    Left,
}

/// Carries events to the sessions of every node, and knows who is online on which.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Delivers `frame` to every session of `audience`, on this node and the others.
    fn publish(&self, audience: Audience, frame: EventFrame);

    /// A name for logs and readiness (`"local"`, `"redis"`).
    fn name(&self) -> &'static str;

    /// `Err` with a reason while events do not reach the other nodes (this node still
    /// serves its own sessions).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// The first session of `user` arrived on this node. Resolves once events for the
    /// user and their conversations reach this node, with what other nodes know.
    async fn user_arrived(&self, user: UserId) -> Arrival;

    /// The last session of `user` left this node. `true` when the user has no session
    /// on any node now, so contacts are to hear that they went offline.
    async fn user_departed(&self, user: UserId) -> bool;

    /// Records the status `user` shows, for every node's presence answers.
    async fn set_status(&self, user: UserId, status: PresenceStatus, text: &str);

    /// For each of `users`, in order: the status shown if they are online (and not
    /// invisible) on any node.
    async fn presence_of(&self, users: &[UserId]) -> Vec<Option<ShownStatus>>;

    /// This node is shutting down: its users leave the cluster's presence now (those
    /// with no session elsewhere go offline for their contacts) instead of when other
    /// nodes notice the silence.
    async fn leave(&self) {}

    /// `user` joined or left `conversation`: other nodes' member lists and
    /// subscriptions follow. Published before the membership event itself.
    fn membership_changed(
        &self,
        conversation: ConversationId,
        user: UserId,
        change: MembershipChange,
    );

    /// `conversation` was just created: other nodes that answered for its id as missing
    /// load it again. Published before the creation's events.
    fn conversation_created(&self, conversation: ConversationId);
}
