//! Tunables of the engine. Every duration carries its unit in its name.

use std::time::Duration;

/// Limits and timings of the delivery model. `Limits::default()` suits a chat server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Frames a session may have queued towards its client before back-pressure applies.
    /// Past three quarters of it typing and presence are dropped; past all of it the
    /// session is closed with [`CloseReason::SlowConsumer`](crate::CloseReason).
    pub outbound_queue_capacity: usize,
    /// Longest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest client-chosen message id accepted, in bytes.
    pub max_client_msg_id_bytes: usize,
    /// Most messages one `sync` or history page returns.
    pub max_page_size: usize,
    /// Most sends one group commit writes in a single transaction (the batches of
    /// several conversations share one).
    pub max_commit_batch: usize,
    /// Most group commits running at once on this node (never more than the store can
    /// run side by side: one on SQLite). More spreads the sends of busy conversations over
    /// more transactions; fewer makes each carry more.
    pub commit_concurrency: usize,
    /// A typing flag lapses this long after its last refresh: clients refresh every few
    /// seconds while the user types, so a vanished client stops "typing" by itself.
    pub typing_ttl: Duration,
    /// How long a user with no session left stays online: a reconnect within this window
    /// (a page reload, a network hand-over) sends no offline/online pair to contacts.
    pub presence_grace: Duration,
    /// A conversation actor with no traffic for this long stops and frees its memory.
    pub conversation_idle: Duration,
    /// How long pushed events for a large audience may wait before their session's
    /// transport is told, so that one socket write carries several commits' events:
    /// less CPU per delivered event on a busy fan-out, for up to this much more latency
    /// (20 ms by default; zero tells the transport at once). Acks and replies are never
    /// delayed.
    pub write_delay: Duration,
    /// The fewest users an event must be for (a conversation's members, a presence
    /// change's contacts) to wait for `write_delay` (100 by default); events for fewer go
    /// out at once.
    pub write_delay_min_audience: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            outbound_queue_capacity: 1024,
            max_body_bytes: 16 * 1024,
            max_client_msg_id_bytes: 64,
            max_page_size: 200,
            max_commit_batch: 256,
            commit_concurrency: 2,
            typing_ttl: Duration::from_secs(6),
            presence_grace: Duration::from_secs(5),
            conversation_idle: Duration::from_secs(300),
            write_delay: Duration::from_millis(20),
            write_delay_min_audience: 100,
        }
    }
}
