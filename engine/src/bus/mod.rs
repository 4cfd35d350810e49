//! Node-to-node fan-out. An event is published once with its audience; every node's bus
//! hands it to the sessions attached there.
//!
//! [`LocalBus`] is the single-node implementation. A cross-node bus (Redis) publishes the
//! same [`Audience`] and frame on channels and calls [`LocalDelivery::deliver`] on each
//! node that receives them.

mod local;

use std::sync::Arc;

pub use local::{LocalBus, LocalDelivery};

use crate::ids::{ConversationId, UserId};
use crate::protocol::EventFrame;

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
    },
    /// Every session of these users (presence, calls, a new conversation).
    Users(Arc<[UserId]>),
}

/// Carries events to the sessions of every node.
pub trait Bus: Send + Sync + 'static {
    /// Delivers `frame` to every session of `audience`, on this node and the others.
    fn publish(&self, audience: Audience, frame: EventFrame);

    /// A name for logs and readiness (`"local"`, `"redis"`).
    fn name(&self) -> &'static str;
}
