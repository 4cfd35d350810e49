//! Presence in Redis: which nodes have sessions of which users, which nodes are alive,
//! and the status each online user shows.
//!
//! Keys (`{p}` is the configured prefix):
//! - `{p}:presence:{user}`: hash, one field per node with sessions of the user.
//! - `{p}:node:{node}:users`: set, the users a node has sessions of (for reaping it).
//! - `{p}:node:{node}`: a heartbeat with a TTL; gone means the node is dead.
//! - `{p}:nodes`: set of the nodes that registered.
//! - `{p}:status:{user}`: hash `s` (status) and `t` (text) while the user is online.
//!
//! Arrival and departure run as scripts, so two nodes that change one user at once both
//! see a consistent count: exactly one announces "online", exactly one "offline".

use std::sync::LazyLock;

use redis::Script;

use crate::ids::UserId;
use crate::protocol::PresenceStatus;

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn presence(&self, user: UserId) -> String {
        format!("{}:presence:{}", self.prefix, user.0)
    }

    pub(crate) fn status(&self, user: UserId) -> String {
        format!("{}:status:{}", self.prefix, user.0)
    }

    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    pub(crate) fn node_users(&self, node: &str) -> String {
        format!("{}:node:{node}:users", self.prefix)
    }

    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub(crate) fn user_channel(&self, user: UserId) -> String {
        format!("{}:u:{}", self.prefix, user.0)
    }

    pub(crate) fn conversation_channel(&self, id: crate::ids::ConversationId) -> String {
        format!("{}:c:{}", self.prefix, id.0)
    }

    pub(crate) fn roster_channel(&self) -> String {
        format!("{}:rosters", self.prefix)
    }
}

/// KEYS: presence hash, node's user set, status hash. ARGV: node, user.
/// Returns how many nodes have the user now, and the status fields.
pub(crate) static ARRIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('HSET', KEYS[1], ARGV[1], '1')
        redis.call('SADD', KEYS[2], ARGV[2])
        return {redis.call('HLEN', KEYS[1]), redis.call('HMGET', KEYS[3], 's', 't')}
        ",
    )
});

/// KEYS: presence hash, node's user set, status hash. ARGV: node, user.
/// Returns how many nodes still have the user; the status goes with the last.
pub(crate) static DEPART: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('SREM', KEYS[2], ARGV[2])
        local left = redis.call('HLEN', KEYS[1])
        if left == 0 then redis.call('DEL', KEYS[3]) end
        return left
        ",
    )
});

/// A stored status name; an unknown or missing one reads as online.
pub(crate) fn parse_status(status: Option<&str>) -> PresenceStatus {
    match status {
        Some("away") => PresenceStatus::Away,
        Some("busy") => PresenceStatus::Busy,
        Some("invisible") => PresenceStatus::Invisible,
        _ => PresenceStatus::Online,
    }
}

pub(crate) fn status_name(status: PresenceStatus) -> &'static str {
    match status {
        PresenceStatus::Online => "online",
        PresenceStatus::Away => "away",
        PresenceStatus::Busy => "busy",
        PresenceStatus::Invisible => "invisible",
    }
}
