//! In-process delivery: the end of every bus, and the whole of the single-node one.

use std::sync::Arc;

use super::{Audience, Bus};
use crate::actors::UserDirectory;
use crate::protocol::EventFrame;

/// Hands frames to the sessions attached to this node.
#[derive(Clone)]
pub struct LocalDelivery {
    directory: Arc<UserDirectory>,
}

impl LocalDelivery {
    pub(crate) fn new(directory: Arc<UserDirectory>) -> Self {
        Self { directory }
    }

    /// Pushes `frame` to every local session of `audience`.
    pub fn deliver(&self, audience: &Audience, frame: &EventFrame) {
        match audience {
            Audience::Members {
                members, except, ..
            } => {
                for &user in members.iter() {
                    if Some(user) != *except {
                        self.directory.push_to_user(user, frame);
                    }
                }
            }
            Audience::Users(users) => {
                for &user in users.iter() {
                    self.directory.push_to_user(user, frame);
                }
            }
        }
    }
}

/// The bus of a single node: publishing is delivering locally.
pub struct LocalBus {
    local: LocalDelivery,
}

impl LocalBus {
    /// A bus that delivers to this node's sessions only.
    pub fn new(local: LocalDelivery) -> Self {
        Self { local }
    }
}

impl Bus for LocalBus {
    fn publish(&self, audience: Audience, frame: EventFrame) {
        self.local.deliver(&audience, &frame);
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
