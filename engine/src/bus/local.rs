//! In-process delivery: the end of every bus, and the whole of the single-node one.

use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;

use super::{Arrival, Audience, Bus, MembershipChange, ShownStatus};
use crate::actors::UserDirectory;
use crate::engine::Core;
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::protocol::{EventFrame, PresenceStatus};

/// This node's end of the bus: hands frames to the sessions attached here, and passes
/// what other nodes report (a member list changed, a node died) to the engine.
#[derive(Clone)]
pub struct LocalDelivery {
    directory: Arc<UserDirectory>,
    /// Set once the engine is built; the bus is made before the engine that owns it.
    core: Arc<OnceLock<Weak<Core>>>,
}

impl LocalDelivery {
    pub(crate) fn new(directory: Arc<UserDirectory>) -> Self {
        Self {
            directory,
            core: Arc::new(OnceLock::new()),
        }
    }

    pub(crate) fn bind(&self, core: &Arc<Core>) {
        let _ = self.core.set(Arc::downgrade(core));
    }

    /// Pushes `frame` to every local session of `audience`.
    pub fn deliver(&self, audience: &Audience, frame: &EventFrame) {
        match audience {
            Audience::Members {
                members, except, ..
            } => self.deliver_to(members, *except, frame),
            Audience::Users(users) => self.deliver_to(users, None, frame),
        }
    }

    /// Pushes `frame` to every local session of `users` but `except`'s.
    pub fn deliver_to(&self, users: &[UserId], except: Option<UserId>, frame: &EventFrame) {
        self.deliver_within(users, except, frame, users.len());
    }

    /// Like [`deliver_to`](Self::deliver_to), for `users` that are part of an audience of
    /// `audience` users in all: a bus that splits an audience on its way gives the whole
    /// count, so the write delay decides alike on every node.
    pub fn deliver_within(
        &self,
        users: &[UserId],
        except: Option<UserId>,
        frame: &EventFrame,
        audience: usize,
    ) {
        for &user in users {
            if Some(user) != except {
                self.directory.push_to_user(user, frame, audience);
            }
        }
    }

    /// Whether `user` has sessions on this node.
    pub fn is_here(&self, user: UserId) -> bool {
        self.directory.is_here(user)
    }

    /// The member list of `conversation` changed on another node: a conversation actor
    /// here reloads it.
    pub fn roster_changed(&self, conversation: ConversationId) {
        if let Some(core) = self.core.get().and_then(Weak::upgrade) {
            core.reload_roster(conversation);
        }
    }

    /// This node may have missed member list changes (it lost touch with the other
    /// nodes): every conversation actor here reloads its list.
    pub fn rosters_may_be_stale(&self) {
        if let Some(core) = self.core.get().and_then(Weak::upgrade) {
            core.reload_all_rosters();
        }
    }

    /// `user` went offline everywhere without their node saying so in the usual way
    /// (it died, or is shutting down): tell their contacts.
    pub async fn went_offline_elsewhere(&self, user: UserId, at: Timestamp) {
        if let Some(core) = self.core.get().and_then(Weak::upgrade) {
            crate::actors::tell_offline(&core, user, at).await;
        }
    }
}

/// The bus of a single node: publishing is delivering locally, and presence is what the
/// user actors here know.
pub struct LocalBus {
    local: LocalDelivery,
}

impl LocalBus {
    /// A bus that delivers to this node's sessions only.
    pub fn new(local: LocalDelivery) -> Self {
        Self { local }
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn publish(&self, audience: Audience, frame: EventFrame) {
        self.local.deliver(&audience, &frame);
    }

    fn name(&self) -> &'static str {
        "local"
    }

    async fn user_arrived(&self, _user: UserId) -> Arrival {
        Arrival::default()
    }

    async fn user_departed(&self, _user: UserId) -> bool {
        true
    }

    async fn set_status(&self, _user: UserId, _status: PresenceStatus, _text: &str) {}

    async fn presence_of(&self, users: &[UserId]) -> Vec<Option<ShownStatus>> {
        users
            .iter()
            .map(|&user| self.local.directory.visible_status(user))
            .collect()
    }

    fn membership_changed(
        &self,
        _conversation: ConversationId,
        _user: UserId,
        _change: MembershipChange,
    ) {
    }

    fn conversation_created(&self, _conversation: ConversationId) {}
}
