//! The Redis bus: several nodes, one user base.
//!
//! Channels, chosen so that a node receives only what its sessions need:
//! - `{p}:c:{conversation}`: the conversation's events. A node subscribes while it has
//!   a session of one of the members, so a message crosses Redis once per event and
//!   reaches only the nodes that deliver it.
//! - `{p}:u:{user}`: events for one user wherever their sessions are (presence, calls, a
//!   new conversation), and the notes that a user joined or left a conversation, which
//!   make the user's nodes subscribe to it or let it go. A node subscribes while it has
//!   a session of the user.
//! - `{p}:rosters`: "the member list of this conversation changed", for every node's
//!   conversation actor.
//!
//! Every node publishes through one connection, in the order it publishes, and
//! delivers to its own sessions directly; what comes back from Redis with its own origin
//! is skipped. Pushes of `message:received` go through `order`, which restores seq
//! order when two nodes commit to one conversation and fills gaps from the store.
//!
//! Presence lives in Redis (`presence`): each node heartbeats a key with a TTL and
//! records which users it has sessions of; when a node's key expires, the first node to
//! notice takes its users off and announces those who are offline everywhere.
//!
//! Redis lost: each node keeps serving its own sessions, publishes are dropped (and
//! counted), and connections retry with back-off. Once Redis is back the node
//! re-registers its users, resubscribes, reloads its member lists and fills, from the
//! store, every message its sessions missed in the meantime.

mod envelope;
mod order;
mod presence;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bb8_redis::RedisConnectionManager;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;

use self::envelope::{Body, Envelope};
use self::order::{Gap, Order, Push};
use self::presence::{ARRIVE, DEPART, Keys, parse_status, status_name};
use super::{Arrival, Audience, Bus, LocalDelivery, MembershipChange, ShownStatus};
use crate::ids::{ConversationId, Seq, Timestamp, UserId};
use crate::protocol::{EventFrame, PresenceStatus, ServerEvent};
use crate::store::Store;

/// Most publishes waiting for Redis; past it (Redis slow or gone) new ones are dropped.
const OUTBOX_CAPACITY: usize = 65_536;
/// Most publishes sent in one pipeline.
const PUBLISH_BATCH: usize = 512;
/// Most missed messages one catch-up reads from the store per conversation.
const CATCH_UP_LIMIT: usize = 500;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How to reach Redis and how fast to notice a dead node.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// A node that stops heartbeating is taken for dead, and its users offline, within
    /// this long.
    pub presence_ttl: Duration,
    /// How long a push that ran ahead of its seq waits for the ones before it before
    /// they are read from the store.
    pub gap_wait: Duration,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub prefix: String,
}

impl RedisBusConfig {
    /// Defaults for `url`: a 30 s presence TTL, a 1 s gap wait, prefix `courier`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            presence_ttl: Duration::from_secs(30),
            gap_wait: Duration::from_secs(1),
            prefix: "courier".into(),
        }
    }
}

impl RedisBusConfig {
    /// Whether the URL parses (reachability is only known once connected).
    pub fn check(&self) -> Result<(), String> {
        redis::Client::open(self.url.as_str())
            .map(drop)
            .map_err(|error| error.to_string())
    }
}

/// Counts since start, for metrics.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    gap_fills: AtomicU64,
    nodes_reaped: AtomicU64,
    resyncs: AtomicU64,
}

/// A snapshot of the bus's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisBusStats {
    /// Envelopes sent to Redis.
    pub published: u64,
    /// Envelopes dropped because Redis was unreachable or too slow.
    pub dropped: u64,
    /// Envelopes received from Redis (own ones included).
    pub received: u64,
    /// Gaps in a conversation's seqs filled from the store.
    pub gap_fills: u64,
    /// Dead nodes whose users this node took offline.
    pub nodes_reaped: u64,
    /// Resyncs done: this node reloaded its member lists and followed its users'
    /// memberships again, once subscribed (at start, and after losing Redis) and when
    /// some node lost a control note.
    pub resyncs: u64,
}

/// The cross-node bus over Redis pub/sub, with presence in Redis.
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisBusConfig,
    keys: Keys,
    /// This node's id: random per process, so a restarted node is a new one.
    node: String,
    origin: u128,
    client: redis::Client,
    pool: bb8::Pool<RedisConnectionManager>,
    store: Arc<dyn Store>,
    local: LocalDelivery,
    outbox: mpsc::Sender<(String, Bytes)>,
    /// The subscriber connection's command half, while connected.
    sink: Mutex<Option<PubSubSink>>,
    subscriptions: Subscriptions,
    /// Users with sessions here, and their conversations.
    here: Mutex<HashMap<UserId, Vec<ConversationId>>>,
    order: Order,
    subscribed: AtomicBool,
    commands_ok: AtomicBool,
    /// The node left the cluster (shutting down): departures announce nothing more.
    left: AtomicBool,
    /// A control note of this node's was dropped: a resync note is to be published.
    resync_owed: AtomicBool,
    /// Whether a resync pass runs here, and whether another was asked for meanwhile.
    resync: Mutex<ResyncState>,
    last_error: Mutex<String>,
    counters: Counters,
}

/// A channel this node listens on while it wants to, besides the roster channel, which
/// it always listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Channel {
    /// While the user has a session here.
    User(UserId),
    /// While a user here is in the conversation.
    Conversation(ConversationId),
}

/// Subscription changes go to Redis one batch at a time, each made to what is wanted when
/// the batch is made. Sent as they were decided, two changes to one channel racing (the
/// last user here in a conversation leaving as another arrives) could reach Redis in the
/// other order: the node would stay deaf to a conversation its users are in, or listen to
/// one nobody here is in.
#[derive(Default)]
struct Subscriptions {
    /// Channels asked to be brought in line, not yet taken by a batch.
    pending: Mutex<HashSet<Channel>>,
    /// Held while a batch is made and sent, and while a new subscriber connection
    /// subscribes to everything wanted.
    turn: tokio::sync::Mutex<()>,
}

/// A batch of channels being settled; put back in `pending` unless it is settled.
struct Unsettled<'a> {
    channels: HashSet<Channel>,
    pending: &'a Mutex<HashSet<Channel>>,
}

impl Unsettled<'_> {
    fn settled(mut self) {
        self.channels.clear();
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.channels.is_empty() {
            self.pending.lock().extend(self.channels.drain());
        }
    }
}

#[derive(Debug, Default)]
struct ResyncState {
    running: bool,
    again: bool,
}

impl RedisBus {
    /// Starts the bus: its publisher, subscriber, heartbeat and gap-filling tasks run on
    /// the current actix arbiter. Fails only on a malformed URL; an unreachable Redis
    /// is retried in the background while this node serves its own sessions.
    pub fn start(
        config: RedisBusConfig,
        store: Arc<dyn Store>,
        local: LocalDelivery,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager = RedisConnectionManager::new(config.url.as_str())?;
        let pool = bb8::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(1))
            .build_unchecked(manager);
        let origin: u128 = rand::random();
        let (outbox, outgoing) = mpsc::channel(OUTBOX_CAPACITY);
        let inner = Arc::new(Inner {
            keys: Keys::new(&config.prefix),
            node: format!("{origin:032x}"),
            origin,
            config,
            client,
            pool,
            store,
            local,
            outbox,
            sink: Mutex::new(None),
            subscriptions: Subscriptions::default(),
            here: Mutex::new(HashMap::new()),
            order: Order::new(),
            subscribed: AtomicBool::new(false),
            left: AtomicBool::new(false),
            resync_owed: AtomicBool::new(false),
            resync: Mutex::new(ResyncState::default()),
            commands_ok: AtomicBool::new(false),
            last_error: Mutex::new("not connected yet".into()),
            counters: Counters::default(),
        });
        tracing::info!(node = %inner.node, "starting the Redis bus");
        actix::spawn(publish_loop(Arc::downgrade(&inner), outgoing));
        actix::spawn(subscribe_loop(Arc::downgrade(&inner)));
        actix::spawn(heartbeat_loop(Arc::downgrade(&inner)));
        actix::spawn(gap_loop(Arc::downgrade(&inner)));
        Ok(Arc::new(Self { inner }))
    }

    /// This node's id in Redis.
    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    /// The counters since start.
    pub fn stats(&self) -> RedisBusStats {
        let counters = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(AtomicOrdering::Relaxed);
        RedisBusStats {
            published: read(&counters.published),
            dropped: read(&counters.dropped),
            received: read(&counters.received),
            gap_fills: read(&counters.gap_fills),
            nodes_reaped: read(&counters.nodes_reaped),
            resyncs: read(&counters.resyncs),
        }
    }
}

impl Inner {
    fn send(&self, channel: String, envelope: Body) {
        let payload = Envelope {
            origin: self.origin,
            body: envelope,
        }
        .encode();
        if let Err(refused) = self.outbox.try_send((channel, payload)) {
            let (_, payload) = refused.into_inner();
            self.dropped(1, Envelope::is_control(&payload));
        }
    }

    /// Counts envelopes that will not reach Redis; a lost control note is owed a resync.
    fn dropped(&self, count: usize, any_control: bool) {
        self.counters
            .dropped
            .fetch_add(count as u64, AtomicOrdering::Relaxed);
        if any_control {
            self.resync_owed.store(true, AtomicOrdering::Release);
        }
    }

    /// Publishes the resync a lost control note owes, once publishing works again.
    fn publish_owed_resync(&self) {
        if self.resync_owed.swap(false, AtomicOrdering::AcqRel) {
            tracing::info!("publishing a resync for the control notes dropped before");
            self.send(self.keys.roster_channel(), Body::Resync);
        }
    }

    /// Hands a conversation event to the sessions here, in seq order for messages.
    fn deliver_members(
        &self,
        conversation: ConversationId,
        seq: Option<Seq>,
        except: Option<UserId>,
        members: Arc<[UserId]>,
        frame: EventFrame,
    ) {
        match seq {
            Some(seq) => {
                let push = Push {
                    members,
                    except,
                    frame,
                };
                self.order.offer(conversation, seq, push, |push| {
                    self.local
                        .deliver_to(&push.members, push.except, &push.frame);
                });
            }
            None => self.local.deliver_to(&members, except, &frame),
        }
    }

    async fn receive(self: &Arc<Self>, payload: Bytes) {
        self.counters.received.fetch_add(1, AtomicOrdering::Relaxed);
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(%error, "dropping a bus message");
                return;
            }
        };
        let own = envelope.origin == self.origin;
        match envelope.body {
            // This node delivered its own events when it published them.
            Body::Members { .. } | Body::Users { .. } | Body::Roster { .. } if own => {}
            Body::Members {
                conversation,
                seq,
                except,
                members,
                frame,
            } => self.deliver_members(conversation, seq, except, members, frame),
            Body::Users {
                users,
                audience,
                frame,
            } => self
                .local
                .deliver_within(&users, None, &frame, audience as usize),
            Body::Roster { conversation } => self.local.roster_changed(conversation),
            // Membership notes count from every origin: this node's own users follow
            // them like any other node's.
            Body::Joined {
                conversation,
                user,
                after,
            } => self.joined(conversation, user, after).await,
            Body::Left { conversation, user } => self.left(conversation, user).await,
            // From every origin too: a node whose own notes were lost missed them as well.
            Body::Resync => self.resync(),
        }
    }

    /// Some node lost control notes: reload every member list here, and follow every
    /// conversation the users here are in now (a lost `Joined`). Conversations whose
    /// `Left` was lost stay followed until their users leave: the envelopes' member
    /// lists keep their events from anyone no longer a member.
    ///
    /// Also what a node does once subscribed again: notes published while it was not
    /// listening (a `Joined`, a resync) never reach it.
    ///
    /// One pass at a time: those asked for while one runs make one more after it, so a
    /// burst of notes costs two passes, not one each.
    fn resync(self: &Arc<Self>) {
        {
            let mut state = self.resync.lock();
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
        }
        let inner = Arc::clone(self);
        actix::spawn(async move {
            loop {
                inner.resync_pass().await;
                let mut state = inner.resync.lock();
                if !state.again {
                    state.running = false;
                    break;
                }
                state.again = false;
            }
        });
    }

    async fn resync_pass(self: &Arc<Self>) {
        let users: Vec<UserId> = self.here.lock().keys().copied().collect();
        let mut by_user: HashMap<UserId, Vec<(ConversationId, Seq)>> = HashMap::new();
        // A read that fails costs only its own users this pass.
        for chunk in users.chunks(crate::store::USERS_PER_MEMBERSHIP_READ) {
            match self.store.memberships_of(chunk).await {
                Ok(memberships) => {
                    for (user, conversation, seq) in memberships {
                        by_user.entry(user).or_default().push((conversation, seq));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, users = chunk.len(), "could not read the users' conversations")
                }
            }
        }
        let newly = by_user
            .iter()
            .flat_map(|(&user, memberships)| self.follow(user, memberships))
            .collect();
        self.follow_from_now(newly).await;
        // Only now: a reloaded member list pushes to new members at once, and pushes to a
        // conversation tracked from a seq already handed out would come twice.
        self.local.rosters_may_be_stale();
        self.counters.resyncs.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// Adds `memberships` that `user`'s list here lacks, tracking each, and returns
    /// those newly tracked. Never removes, so nothing heard meanwhile is undone; a `Left`
    /// heard during the read may be, which leaves the conversation followed (and its
    /// events kept from the user by the envelopes' member lists) until the user leaves.
    fn follow(&self, user: UserId, memberships: &[(ConversationId, Seq)]) -> Vec<ConversationId> {
        let mut here = self.here.lock();
        let Some(conversations) = here.get_mut(&user) else {
            return Vec::new();
        };
        let known: HashSet<ConversationId> = conversations.iter().copied().collect();
        let mut newly = Vec::new();
        for &(conversation, last_seq) in memberships {
            if known.contains(&conversation) {
                continue;
            }
            conversations.push(conversation);
            if self.order.track(conversation, Some(last_seq)) {
                newly.push(conversation);
            }
        }
        newly
    }

    /// Gives `user` back the conversations they followed here before an arrival whose read
    /// of their memberships failed: those are still tracked, and better followed on than
    /// dropped until the next resync. Returns those let go (the user left meanwhile).
    fn follow_again(
        &self,
        user: UserId,
        conversations: Vec<ConversationId>,
    ) -> Vec<ConversationId> {
        let mut here = self.here.lock();
        let mut gone = Vec::new();
        for conversation in conversations {
            match here.get_mut(&user) {
                Some(list) if !list.contains(&conversation) => list.push(conversation),
                // A join heard meanwhile tracked it again, or the user is gone: count it
                // once, or not at all.
                _ => {
                    if self.order.untrack(conversation) {
                        gone.push(conversation);
                    }
                }
            }
        }
        gone
    }

    async fn joined(self: &Arc<Self>, conversation: ConversationId, user: UserId, after: Seq) {
        if self.note_joined(conversation, user, after) {
            self.follow_from_now(vec![conversation]).await;
        }
    }

    /// Adds `conversation` to `user`'s list here, if they are here and it is not there
    /// yet; `true` when that made it tracked (subscribe to it and catch up).
    fn note_joined(&self, conversation: ConversationId, user: UserId, after: Seq) -> bool {
        let mut here = self.here.lock();
        let Some(conversations) = here.get_mut(&user) else {
            return false;
        };
        if conversations.contains(&conversation) {
            return false;
        }
        conversations.push(conversation);
        self.order.track(conversation, Some(after))
    }

    /// Subscribes to conversations just tracked, then reads from the store what was
    /// published on them before the subscription took (a message committed after the
    /// membership was read, or after the join).
    async fn follow_from_now(self: &Arc<Self>, conversations: Vec<ConversationId>) {
        self.settle(conversations.iter().map(|&id| Channel::Conversation(id)))
            .await;
        for conversation in conversations {
            if let Some(gap) = self.order.catch_up_one(conversation) {
                self.fill(gap);
            }
        }
    }

    async fn left(&self, conversation: ConversationId, user: UserId) {
        let gone = {
            let mut here = self.here.lock();
            let Some(conversations) = here.get_mut(&user) else {
                return;
            };
            let before = conversations.len();
            conversations.retain(|&id| id != conversation);
            conversations.len() < before && self.order.untrack(conversation)
        };
        if gone {
            self.settle([Channel::Conversation(conversation)]).await;
        }
    }

    /// Brings the subscriptions of `channels` in line with what this node wants now, and
    /// returns once Redis has them, or at once while the subscriber connection is down (it
    /// subscribes to everything wanted when it is back).
    async fn settle(&self, channels: impl IntoIterator<Item = Channel>) {
        let subscriptions = &self.subscriptions;
        subscriptions.pending.lock().extend(channels);
        let _turn = subscriptions.turn.lock().await;
        // Empty when an earlier batch took these; it read what was wanted after they were
        // asked for, and Redis has answered it.
        let batch = std::mem::take(&mut *subscriptions.pending.lock());
        let sink = self.sink.lock().clone();
        let Some(mut sink) = sink.filter(|_| !batch.is_empty()) else {
            return;
        };
        // Should this call be dropped half way (its actor stopping), the batch goes back
        // for the next turn: other callers' channels are in it.
        let batch = Unsettled {
            channels: batch,
            pending: &subscriptions.pending,
        };
        let (wanted, unwanted): (Vec<Channel>, Vec<Channel>) = batch
            .channels
            .iter()
            .partition(|&&channel| self.wants(channel));
        if !wanted.is_empty()
            && let Err(error) = sink.subscribe(self.channel_names(&wanted)).await
        {
            // The subscriber loop resubscribes everything when it reconnects.
            tracing::warn!(%error, "Redis subscribe failed");
        }
        if !unwanted.is_empty()
            && let Err(error) = sink.unsubscribe(self.channel_names(&unwanted)).await
        {
            tracing::debug!(%error, "Redis unsubscribe failed");
        }
        batch.settled();
    }

    fn wants(&self, channel: Channel) -> bool {
        match channel {
            Channel::User(user) => self.here.lock().contains_key(&user),
            Channel::Conversation(id) => self.order.is_tracked(id),
        }
    }

    fn channel_names(&self, channels: &[Channel]) -> Vec<String> {
        channels
            .iter()
            .map(|&channel| match channel {
                Channel::User(user) => self.keys.user_channel(user),
                Channel::Conversation(id) => self.keys.conversation_channel(id),
            })
            .collect()
    }

    /// Every channel this node needs now.
    fn wanted_channels(&self) -> Vec<String> {
        let mut channels = vec![self.keys.roster_channel()];
        channels.extend(
            self.here
                .lock()
                .keys()
                .map(|&user| self.keys.user_channel(user)),
        );
        channels.extend(
            self.order
                .tracked()
                .into_iter()
                .map(|(id, _)| self.keys.conversation_channel(id)),
        );
        channels
    }

    async fn connection(
        &self,
    ) -> Result<bb8::PooledConnection<'_, RedisConnectionManager>, redis::RedisError> {
        self.pool.get().await.map_err(|error| match error {
            bb8::RunError::User(error) => error,
            bb8::RunError::TimedOut => {
                redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting to Redis"))
            }
        })
    }

    /// Notes a failed Redis command for readiness and the log (once per outage).
    fn command_failed(&self, what: &str, error: &redis::RedisError) {
        if self.commands_ok.swap(false, AtomicOrdering::AcqRel) {
            tracing::warn!(%error, "Redis {what} failed; the bus is degraded");
        }
        *self.last_error.lock() = format!("{what}: {error}");
    }

    fn command_succeeded(&self) {
        if !self.commands_ok.swap(true, AtomicOrdering::AcqRel) {
            tracing::info!("Redis commands succeed again");
        }
    }

    /// Reads a gap's messages and members from the store and hands them out in order.
    fn fill(self: &Arc<Self>, gap: Gap) {
        self.counters
            .gap_fills
            .fetch_add(1, AtomicOrdering::Relaxed);
        let inner = Arc::clone(self);
        actix::spawn(async move {
            let limit = match gap.until {
                Some(until) => usize::try_from(until.0 - gap.after.0 - 1).unwrap_or(0),
                None => CATCH_UP_LIMIT,
            };
            let store = &inner.store;
            let read = async {
                let messages = store
                    .messages_after(gap.conversation, gap.after, limit)
                    .await?;
                let members = store.members(gap.conversation).await?;
                Ok::<_, crate::StoreError>((messages, members))
            };
            let (pushes, read) = match read.await {
                Ok((messages, members)) => {
                    let members: Arc<[UserId]> =
                        members.iter().map(|member| member.user_id).collect();
                    let pushes = messages
                        .into_iter()
                        .map(|message| {
                            let seq = message.seq;
                            let push = Push {
                                members: Arc::clone(&members),
                                except: None,
                                frame: ServerEvent::MessageReceived(message).encode(),
                            };
                            (seq, push)
                        })
                        .collect();
                    (pushes, true)
                }
                Err(error) => {
                    tracing::warn!(%error, conversation = %gap.conversation, "could not fill a gap from the store");
                    (Vec::new(), false)
                }
            };
            inner.order.fill(gap, pushes, read, |push| {
                inner
                    .local
                    .deliver_to(&push.members, push.except, &push.frame);
            });
        });
    }

    /// Refreshes this node's heartbeat. `true` when Redis had no live heartbeat of it
    /// (first beat, Redis restarted, or other nodes took it for dead): its users are
    /// registered again.
    async fn heartbeat(&self) -> Result<bool, redis::RedisError> {
        let ttl = self.config.presence_ttl * 2 / 3;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.connection().await?;
        let (previous, _): (Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.node(&self.node))
            .arg("1")
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .sadd(self.keys.nodes(), &self.node)
            .query_async(&mut *conn)
            .await?;
        if previous.is_some() {
            return Ok(false);
        }
        let users: Vec<UserId> = self.here.lock().keys().copied().collect();
        if !users.is_empty() {
            let mut pipe = redis::pipe();
            for &user in &users {
                pipe.hset(self.keys.presence(user), &self.node, "1")
                    .ignore()
                    .sadd(self.keys.node_users(&self.node), user.0)
                    .ignore();
            }
            pipe.query_async::<()>(&mut *conn).await?;
        }
        Ok(true)
    }

    /// Takes dead nodes' users offline: the first live node to claim a dead one does it.
    async fn reap(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.connection().await?;
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut *conn)
            .await?;
        let others: Vec<&String> = nodes.iter().filter(|node| **node != self.node).collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.exists(self.keys.node(node));
        }
        let alive: Vec<bool> = pipe.query_async(&mut *conn).await?;
        for (node, alive) in others.into_iter().zip(alive) {
            if alive {
                continue;
            }
            let claimed: i64 = redis::cmd("SREM")
                .arg(self.keys.nodes())
                .arg(node)
                .query_async(&mut *conn)
                .await?;
            if claimed != 1 {
                continue;
            }
            let users: Vec<i64> = redis::cmd("SMEMBERS")
                .arg(self.keys.node_users(node))
                .query_async(&mut *conn)
                .await?;
            tracing::warn!(%node, users = users.len(), "a node stopped heartbeating; taking its users offline");
            self.counters
                .nodes_reaped
                .fetch_add(1, AtomicOrdering::Relaxed);
            let at = Timestamp::now();
            for user in users.into_iter().map(UserId) {
                let left: i64 = DEPART
                    .key(self.keys.presence(user))
                    .key(self.keys.node_users(node))
                    .key(self.keys.status(user))
                    .arg(node)
                    .arg(user.0)
                    .invoke_async(&mut *conn)
                    .await?;
                if left == 0 {
                    self.local.went_offline_elsewhere(user, at).await;
                }
            }
            redis::cmd("DEL")
                .arg(self.keys.node_users(node))
                .query_async::<()>(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Runs a presence script (`ARRIVE` or `DEPART`) for `user` on this node.
    async fn presence_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        user: UserId,
    ) -> Result<T, redis::RedisError> {
        let mut conn = self.connection().await?;
        script
            .key(self.keys.presence(user))
            .key(self.keys.node_users(&self.node))
            .key(self.keys.status(user))
            .arg(&self.node)
            .arg(user.0)
            .invoke_async(&mut *conn)
            .await
    }

    async fn try_presence_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<Option<ShownStatus>>, redis::RedisError> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for &user in users {
            pipe.hlen(self.keys.presence(user))
                .cmd("HMGET")
                .arg(self.keys.status(user))
                .arg("s")
                .arg("t");
        }
        let values: Vec<redis::Value> = pipe.query_async(&mut *conn).await?;
        let mut shown = Vec::with_capacity(users.len());
        for pair in values.chunks(2) {
            let [nodes, fields] = pair else { break };
            let nodes: i64 = redis::from_redis_value_ref(nodes)?;
            let fields: Vec<Option<String>> = redis::from_redis_value_ref(fields)?;
            let status = parse_status(fields.first().cloned().flatten().as_deref());
            let text = fields.get(1).cloned().flatten().unwrap_or_default();
            shown
                .push((nodes > 0 && status != PresenceStatus::Invisible).then_some((status, text)));
        }
        Ok(shown)
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn publish(&self, audience: Audience, frame: EventFrame) {
        let inner = &self.inner;
        match audience {
            Audience::Members {
                conversation,
                members,
                except,
                seq,
            } => {
                let channel = inner.keys.conversation_channel(conversation);
                inner.send(
                    channel,
                    Body::Members {
                        conversation,
                        seq,
                        except,
                        members: Arc::clone(&members),
                        frame: frame.clone(),
                    },
                );
                inner.deliver_members(conversation, seq, except, members, frame);
            }
            Audience::Users(users) => {
                inner.local.deliver_to(&users, None, &frame);
                // One envelope per user channel: a node subscribed to several of these
                // users must not deliver the event to each of them several times.
                let audience = u32::try_from(users.len()).unwrap_or(u32::MAX);
                for &user in users.iter() {
                    let body = Body::Users {
                        users: Arc::from([user]),
                        audience,
                        frame: frame.clone(),
                    };
                    inner.send(inner.keys.user_channel(user), body);
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn health(&self) -> Result<(), String> {
        let inner = &self.inner;
        if inner.subscribed.load(AtomicOrdering::Acquire)
            && inner.commands_ok.load(AtomicOrdering::Acquire)
        {
            Ok(())
        } else {
            Err(format!(
                "Redis unreachable, serving this node's sessions only ({})",
                inner.last_error.lock()
            ))
        }
    }

    async fn user_arrived(&self, user: UserId) -> Arrival {
        let inner = &self.inner;
        // Listen on the user's channel before reading their memberships. A `Joined` note
        // published after the subscribe is heard, and `joined` records it because the
        // user is `here` already; a membership committed before the note was published
        // is in the read. The other way round, a note published between the read and
        // the subscribe would be lost, and this node would not follow that conversation
        // until the user came back.
        let stale = inner.here.lock().insert(user, Vec::new());
        inner.settle([Channel::User(user)]).await;
        let changed = match inner.store.memberships_of(&[user]).await {
            Ok(memberships) => {
                let memberships: Vec<(ConversationId, Seq)> = memberships
                    .into_iter()
                    .map(|(_, conversation, seq)| (conversation, seq))
                    .collect();
                let mut changed = inner.follow(user, &memberships);
                // Untracked only now, so a conversation the user is still in stays
                // tracked; one they are no longer in, and nobody else here is, is let go.
                for conversation in stale.into_iter().flatten() {
                    if inner.order.untrack(conversation) {
                        changed.push(conversation);
                    }
                }
                changed
            }
            Err(error) => {
                tracing::warn!(%error, %user, "could not read the user's conversations");
                inner.follow_again(user, stale.unwrap_or_default())
            }
        };
        // No catch-up from the store here, unlike a join: the user's sessions `sync`
        // once attached, which reads what was published before the subscription took,
        // and a burst of arrivals would otherwise cost a read per conversation each.
        inner
            .settle(changed.into_iter().map(Channel::Conversation))
            .await;
        match inner
            .presence_script::<(i64, Vec<Option<String>>)>(&ARRIVE, user)
            .await
        {
            Ok((nodes, fields)) => {
                inner.command_succeeded();
                let status = fields.first().cloned().flatten().map(|status| {
                    let text = fields.get(1).cloned().flatten().unwrap_or_default();
                    (parse_status(Some(&status)), text)
                });
                Arrival {
                    elsewhere: nodes > 1,
                    status,
                }
            }
            Err(error) => {
                inner.command_failed("presence", &error);
                Arrival::default()
            }
        }
    }

    async fn user_departed(&self, user: UserId) -> bool {
        let inner = &self.inner;
        if inner.left.load(AtomicOrdering::Acquire) {
            return false;
        }
        let conversations = inner.here.lock().remove(&user).unwrap_or_default();
        let mut channels = vec![Channel::User(user)];
        for conversation in conversations {
            if inner.order.untrack(conversation) {
                channels.push(Channel::Conversation(conversation));
            }
        }
        inner.settle(channels).await;
        match inner.presence_script::<i64>(&DEPART, user).await {
            Ok(left) => {
                inner.command_succeeded();
                left == 0
            }
            Err(error) => {
                inner.command_failed("presence", &error);
                true
            }
        }
    }

    async fn set_status(&self, user: UserId, status: PresenceStatus, text: &str) {
        let inner = &self.inner;
        let write = async {
            let mut conn = inner.connection().await?;
            redis::cmd("HSET")
                .arg(inner.keys.status(user))
                .arg("s")
                .arg(status_name(status))
                .arg("t")
                .arg(text)
                .query_async::<()>(&mut *conn)
                .await
        };
        match write.await {
            Ok(()) => inner.command_succeeded(),
            Err(error) => inner.command_failed("status", &error),
        }
    }

    async fn presence_of(&self, users: &[UserId]) -> Vec<Option<ShownStatus>> {
        let inner = &self.inner;
        match inner.try_presence_of(users).await {
            Ok(shown) if shown.len() == users.len() => {
                inner.command_succeeded();
                shown
            }
            Ok(_) => users.iter().map(|_| None).collect(),
            Err(error) => {
                inner.command_failed("presence", &error);
                // What this node knows: its own users.
                let local = super::LocalBus::new(inner.local.clone());
                local.presence_of(users).await
            }
        }
    }

    async fn leave(&self) {
        let inner = &self.inner;
        if inner.left.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let users: Vec<UserId> = inner.here.lock().keys().copied().collect();
        let at = Timestamp::now();
        for user in users {
            match inner.presence_script::<i64>(&DEPART, user).await {
                Ok(0) => inner.local.went_offline_elsewhere(user, at).await,
                Ok(_) => {}
                Err(error) => {
                    // The other nodes will notice the silence instead.
                    inner.command_failed("presence", &error);
                    return;
                }
            }
        }
        let forget = async {
            let mut conn = inner.connection().await?;
            redis::pipe()
                .del(inner.keys.node(&inner.node))
                .srem(inner.keys.nodes(), &inner.node)
                .del(inner.keys.node_users(&inner.node))
                .query_async::<()>(&mut *conn)
                .await
        };
        if let Err(error) = forget.await {
            inner.command_failed("leave", &error);
        }
        tracing::info!(node = %inner.node, "left the cluster");
    }

    fn membership_changed(
        &self,
        conversation: ConversationId,
        user: UserId,
        change: MembershipChange,
    ) {
        let inner = &self.inner;
        let note = match change {
            MembershipChange::Joined { after } => {
                // A user with sessions here follows at once, before this node's conversation
                // actor pushes the next message to them: tracked only when the note came
                // back from Redis, the catch-up would push those messages again.
                if inner.note_joined(conversation, user, after) {
                    let inner = Arc::clone(inner);
                    actix::spawn(async move { inner.follow_from_now(vec![conversation]).await });
                }
                Body::Joined {
                    conversation,
                    user,
                    after,
                }
            }
            MembershipChange::Left => Body::Left { conversation, user },
        };
        inner.send(inner.keys.user_channel(user), note);
        inner.send(inner.keys.roster_channel(), Body::Roster { conversation });
    }

    fn conversation_created(&self, conversation: ConversationId) {
        let inner = &self.inner;
        inner.send(inner.keys.roster_channel(), Body::Roster { conversation });
    }
}

/// Sends queued envelopes in pipelines, in the order they were published.
async fn publish_loop(inner: Weak<Inner>, mut outgoing: mpsc::Receiver<(String, Bytes)>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while outgoing.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let mut pipe = redis::pipe();
        for (channel, payload) in &batch {
            pipe.publish(channel, payload.as_ref()).ignore();
        }
        let sent = async {
            let mut conn = inner.connection().await?;
            pipe.query_async::<()>(&mut *conn).await
        };
        match sent.await {
            Ok(()) => {
                inner.command_succeeded();
                inner
                    .counters
                    .published
                    .fetch_add(batch.len() as u64, AtomicOrdering::Relaxed);
            }
            Err(error) => {
                inner.command_failed("publish", &error);
                let any_control = batch
                    .iter()
                    .any(|(_, payload)| Envelope::is_control(payload));
                inner.dropped(batch.len(), any_control);
            }
        }
        batch.clear();
    }
}

/// Holds the subscriber connection: (re)subscribes everything this node needs, catches
/// up on what was missed, and hands each message to [`Inner::receive`].
async fn subscribe_loop(weak: Weak<Inner>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let connected = inner.client.get_async_pubsub().await;
        let mut stream = match connected {
            Ok(pubsub) => {
                let (mut sink, stream) = pubsub.split();
                let subscribed = {
                    // No batch runs meanwhile: what this reads as wanted is what is sent.
                    let _turn = inner.subscriptions.turn.lock().await;
                    *inner.sink.lock() = Some(sink.clone());
                    sink.subscribe(&inner.wanted_channels()).await
                };
                match subscribed {
                    Ok(()) => {
                        inner.subscribed.store(true, AtomicOrdering::Release);
                        tracing::info!(node = %inner.node, "subscribed to Redis");
                        backoff = BACKOFF_MIN;
                        // Whatever changed while this node was not listening.
                        for gap in inner.order.catch_up() {
                            inner.fill(gap);
                        }
                        inner.resync();
                        Some(stream)
                    }
                    Err(error) => {
                        *inner.last_error.lock() = format!("subscribe: {error}");
                        None
                    }
                }
            }
            Err(error) => {
                *inner.last_error.lock() = format!("subscriber: {error}");
                None
            }
        };
        drop(inner);
        if let Some(stream) = stream.as_mut() {
            while let Some(message) = stream.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                inner.receive(payload).await;
            }
            let Some(inner) = weak.upgrade() else { return };
            inner.subscribed.store(false, AtomicOrdering::Release);
            *inner.sink.lock() = None;
            *inner.last_error.lock() = "subscriber connection lost".into();
            tracing::warn!("lost the Redis subscriber connection; reconnecting");
        }
        actix::clock::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Heartbeats this node and reaps dead ones, six times per presence TTL.
async fn heartbeat_loop(weak: Weak<Inner>) {
    let mut first = true;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let beat = inner.heartbeat().await;
        match beat {
            Ok(registered_again) => {
                inner.command_succeeded();
                inner.publish_owed_resync();
                if registered_again && !first {
                    tracing::warn!(node = %inner.node, "Redis had lost this node's presence; registered its users again");
                }
                first = false;
                if let Err(error) = inner.reap().await {
                    inner.command_failed("reap", &error);
                }
            }
            Err(error) => inner.command_failed("heartbeat", &error),
        }
        let period = (inner.config.presence_ttl / 6).max(Duration::from_millis(50));
        drop(inner);
        actix::clock::sleep(period).await;
    }
}

/// Fills gaps that pushes have waited on too long.
async fn gap_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        for gap in inner.order.overdue(inner.config.gap_wait) {
            inner.fill(gap);
        }
        let period = (inner.config.gap_wait / 4).max(Duration::from_millis(20));
        drop(inner);
        actix::clock::sleep(period).await;
    }
}
