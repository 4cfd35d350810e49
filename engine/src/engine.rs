//! The [`Engine`]: its builder, the operations REST-style callers use, and [`Session`],
//! the handle through which a transport drives one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actix::prelude::*;

use crate::actors::registry::Sharded;
use crate::actors::{
    Announcer, AttachSession, Authorize, ChangeMembership, CloseReason, ConversationActor,
    DetachSession, MarkReceipt, MessageChange, ModifyMessage, OutboundQueue, OutboundStream,
    PostMessage, RelayCall, ReloadRoster, SessionSink, SetStatus, SetTyping, UserActor,
    UserDirectory, WriteDelay,
};
use crate::bus::{Audience, Bus, LocalBus, LocalDelivery};
use crate::config::Limits;
use crate::error::EngineError;
use crate::ids::{ConversationId, MessageId, Seq, SessionId, UserId};
use crate::protocol::{
    CallRelayed, CallSignal, ClientCommand, Conversation, ConversationKind, ConversationSummary,
    Message, Presence, PresenceStatus, Reply, SendMessage, ServerEvent,
};
use crate::store::group_commit::GroupCommit;
use crate::store::{NewConversation, NewMessage, Store, Watermark};

/// Hooks through which an embedding app measures the engine (metrics, traces).
pub trait EngineObserver: Send + Sync + 'static {
    /// A group commit finished: how many conversations and sends it carried, how long the
    /// store took, and whether it committed.
    fn commit_finished(
        &self,
        conversations: usize,
        sends: usize,
        elapsed: std::time::Duration,
        committed: bool,
    );
}

/// What every actor shares: the store, the bus, the limits and the registries.
pub(crate) struct Core {
    pub(crate) store: Arc<dyn Store>,
    /// Where conversations commit their sends.
    pub(crate) commits: Arc<GroupCommit>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) limits: Limits,
    pub(crate) users: Arc<UserDirectory>,
    pub(crate) announcer: Announcer,
    /// Set when [`Limits::write_delay`] is not zero.
    write_delay: Option<Arc<WriteDelay>>,
    conversations: Sharded<ConversationId, Addr<ConversationActor>>,
    next_session: AtomicI64,
}

impl Core {
    /// The conversation's actor, started on this arbiter if it has none.
    fn conversation(self: &Arc<Self>, id: ConversationId) -> Addr<ConversationActor> {
        if let Some(addr) = self
            .conversations
            .with(&id, Addr::clone)
            .filter(Addr::connected)
        {
            return addr;
        }
        let mut shard = self.conversations.shard(&id).write();
        if let Some(addr) = shard.get(&id).filter(|addr| addr.connected()) {
            return addr.clone();
        }
        let addr = ConversationActor::new(Arc::clone(self), id).start();
        shard.insert(id, addr.clone());
        addr
    }

    /// Tells the conversation's actor here, if it has one, to reload its member list.
    pub(crate) fn reload_roster(&self, id: ConversationId) {
        if let Some(addr) = self.conversations.with(&id, Addr::clone) {
            addr.do_send(ReloadRoster);
        }
    }

    /// Every conversation actor here reloads its member list (changes made elsewhere
    /// while this node could not hear of them).
    pub(crate) fn reload_all_rosters(&self) {
        for addr in self.conversations.values_with(Addr::clone) {
            addr.do_send(ReloadRoster);
        }
    }

    pub(crate) fn forget_conversation(&self, id: ConversationId, addr: &Addr<ConversationActor>) {
        let mut shard = self.conversations.shard(&id).write();
        if shard.get(&id) == Some(addr) {
            shard.remove(&id);
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(delay) = &self.write_delay {
            delay.stop();
        }
    }
}

/// Makes the bus once the engine's local delivery exists.
type BusFactory = Box<dyn FnOnce(LocalDelivery) -> Arc<dyn Bus>>;

/// Builds an [`Engine`] from a store, a bus and limits.
///
/// ```no_run
/// # async fn build() -> Result<(), courier_engine::StoreError> {
/// use std::sync::Arc;
/// use courier_engine::{Engine, Limits, store::{DieselStore, StoreConfig}};
///
/// let store = DieselStore::connect(StoreConfig::new("data/courier.sqlite3")).await?;
/// let engine = Engine::builder(Arc::new(store))
///     .limits(Limits { outbound_queue_capacity: 512, ..Limits::default() })
///     .build();
/// # Ok(()) }
/// ```
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    observer: Option<Arc<dyn EngineObserver>>,
    limits: Limits,
    bus: Option<BusFactory>,
}

impl EngineBuilder {
    /// Replaces the default [`Limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reports commits and other measurements to `observer`.
    pub fn observer(mut self, observer: Arc<dyn EngineObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Uses another bus than the in-process one. The factory receives this node's
    /// [`LocalDelivery`], which the bus calls for events that reach this node.
    pub fn bus(mut self, factory: impl FnOnce(LocalDelivery) -> Arc<dyn Bus> + 'static) -> Self {
        self.bus = Some(Box::new(factory));
        self
    }

    /// Builds the engine. Actors start lazily, on the actix arbiter of whoever first
    /// needs them, so this must be called where an actix system runs before use.
    pub fn build(self) -> Engine {
        let users = Arc::new(UserDirectory::new());
        let local = LocalDelivery::new(Arc::clone(&users));
        let bus = match self.bus {
            Some(factory) => factory(local.clone()),
            None => Arc::new(LocalBus::new(local.clone())),
        };
        let write_delay = if self.limits.write_delay.is_zero() {
            None
        } else {
            match WriteDelay::start(
                self.limits.write_delay,
                self.limits.write_delay_min_audience,
            ) {
                Ok(delay) => Some(delay),
                Err(error) => {
                    tracing::warn!(%error, "no write-delay thread: events are written at once");
                    None
                }
            }
        };
        let core = Arc::new(Core {
            write_delay,
            announcer: Announcer::new(Arc::clone(&self.store), Arc::clone(&bus)),
            commits: Arc::new(GroupCommit::new(
                Arc::clone(&self.store),
                self.observer,
                self.limits.commit_concurrency,
                self.limits.max_commit_batch,
            )),
            store: self.store,
            bus,
            limits: self.limits,
            users,
            conversations: Sharded::new(),
            next_session: AtomicI64::new(1),
        });
        local.bind(&core);
        Engine { core }
    }
}

/// A conversation to create, as a user asks for it.
#[derive(Debug, Clone)]
pub enum CreateConversation {
    /// The one direct conversation between the caller and `peer` (returned if it exists).
    Direct {
        /// The other person.
        peer: UserId,
    },
    /// A new group.
    Group {
        /// Its title.
        title: String,
        /// Members besides the caller.
        members: Vec<UserId>,
    },
}

/// A page of history.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryPage {
    /// Messages after this seq (oldest first); wins over `before`.
    pub after: Option<Seq>,
    /// The newest messages before this seq.
    pub before: Option<Seq>,
    /// At most this many (capped by [`Limits::max_page_size`]).
    pub limit: Option<u32>,
}

/// Messages in seq order, and whether more follow in the direction asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    /// In seq order.
    pub messages: Vec<Message>,
    /// More messages lie beyond this page.
    pub has_more: bool,
}

/// The messaging engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    core: Arc<Core>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bus", &self.core.bus.name())
            .field("limits", &self.core.limits)
            .finish_non_exhaustive()
    }
}

/// Asks a conversation's actor, starting it if needed. An actor that stopped between the
/// lookup and the send is replaced and asked again: every command is idempotent or was
/// not applied, so the retry is safe.
macro_rules! ask_conversation {
    ($core:expr, $id:expr, $msg:expr) => {{
        let msg = $msg;
        let mut attempt = 0;
        loop {
            let addr = $core.conversation($id);
            match addr.send(msg.clone()).await {
                Ok(answer) => break answer,
                Err(MailboxError::Closed) if attempt < 3 => {
                    $core.forget_conversation($id, &addr);
                    attempt += 1;
                }
                Err(error) => break Err(EngineError::from(error)),
            }
        }
    }};
}

impl Engine {
    /// Starts building an engine over `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            observer: None,
            limits: Limits::default(),
            bus: None,
        }
    }

    /// The store, for what the engine does not wrap (accounts, tokens).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.core.store
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.core.limits
    }

    /// The bus's name (`"local"`, `"redis"`).
    pub fn bus_name(&self) -> &'static str {
        self.core.bus.name()
    }

    /// `Err` with a reason while the bus cannot reach the other nodes.
    pub fn bus_health(&self) -> Result<(), String> {
        self.core.bus.health()
    }

    /// Sessions attached to this node.
    pub fn session_count(&self) -> usize {
        self.core.users.session_count()
    }

    /// Conversation actors alive on this node.
    pub fn active_conversations(&self) -> usize {
        self.core.conversations.len()
    }

    /// Attaches a session of `user`: events for the user come out of the returned
    /// [`OutboundStream`] until the returned [`Session`] is dropped. Events published once
    /// this returns are never missed, whenever the stream is first polled.
    pub async fn connect(&self, user: UserId) -> Result<(Session, OutboundStream), EngineError> {
        let id = SessionId(self.core.next_session.fetch_add(1, Ordering::Relaxed));
        let sink = Arc::new(SessionSink::new(
            id,
            user,
            self.core.limits.outbound_queue_capacity,
            self.core.write_delay.clone(),
        ));
        let mut attempt = 0;
        let actor = loop {
            let actor = self.core.users.actor(&self.core, user);
            let attach = AttachSession {
                sink: Arc::clone(&sink),
            };
            match actor.send(attach).await {
                Ok(()) => break actor,
                Err(MailboxError::Closed) if attempt < 3 => attempt += 1,
                Err(error) => return Err(error.into()),
            }
        };
        let outbound = OutboundStream::new(Arc::clone(&sink));
        let session = Session {
            engine: self.clone(),
            sink,
            actor,
        };
        Ok((session, outbound))
    }

    /// Publishes an event to an audience through the bus, serialised once. The engine
    /// publishes its own events; this is for an embedding app's announcements and for
    /// measuring the fan-out path.
    pub fn publish(&self, audience: Audience, event: &ServerEvent) {
        self.core.bus.publish(audience, event.encode());
    }

    /// Takes this node's users out of the cluster's presence now, as a node shutting
    /// down does: those with no session on another node go offline for their contacts.
    pub async fn leave_cluster(&self) {
        self.core.bus.leave().await;
    }

    /// Closes every session with [`CloseReason::Shutdown`] (their transports decide how).
    pub fn close_all_sessions(&self) {
        // Events held back by the write delay go out before the close.
        if let Some(delay) = &self.core.write_delay {
            delay.flush();
        }
        self.core.users.close_all(CloseReason::Shutdown);
    }

    /// Creates a conversation and tells its members with `conversation:created`.
    /// Returns `false` with the existing direct conversation between the two users.
    pub async fn create_conversation(
        &self,
        creator: UserId,
        request: CreateConversation,
    ) -> Result<(Conversation, bool), EngineError> {
        let new = match request {
            CreateConversation::Direct { peer } => {
                if peer == creator {
                    return Err(EngineError::Invalid(
                        "a direct conversation needs another user".into(),
                    ));
                }
                NewConversation {
                    kind: ConversationKind::Direct,
                    title: None,
                    created_by: creator,
                    members: vec![peer],
                }
            }
            CreateConversation::Group { title, members } => NewConversation {
                kind: ConversationKind::Group,
                title: Some(title),
                created_by: creator,
                members,
            },
        };
        let mut wanted: Vec<UserId> = new.members.clone();
        wanted.push(creator);
        wanted.sort_unstable();
        wanted.dedup();
        let found = self.core.store.users_by_ids(&wanted).await?;
        if let Some(&missing) = wanted
            .iter()
            .find(|id| !found.iter().any(|row| row.id == id.0))
        {
            return Err(EngineError::UserNotFound(missing));
        }
        let direct = new.kind == ConversationKind::Direct;
        let (conversation, created) = match self.core.store.create_conversation(new.clone()).await {
            // Two first messages between the same pair raced: the loser reads the winner's.
            Err(crate::StoreError::Conflict(_)) if direct => {
                self.core.store.create_conversation(new).await?
            }
            other => other?,
        };
        if created {
            // Ids are sequential: a request for this one just before it existed may have
            // left an actor, here or on another node, that knows it as missing. Here it
            // loads it again before anything sent after this answer; other nodes do when
            // the bus brings them the note, before the members there hear of it.
            self.core.reload_roster(conversation.id);
            self.core.bus.conversation_created(conversation.id);
            let members: Arc<[UserId]> = conversation.members.iter().map(|m| m.user_id).collect();
            let event = ServerEvent::ConversationCreated(conversation.clone());
            self.core
                .bus
                .publish(Audience::Users(members), event.encode());
        }
        Ok((conversation, created))
    }

    /// The caller's conversations, most recently active first.
    pub async fn conversations(
        &self,
        user: UserId,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        Ok(self.core.store.conversations_of(user).await?)
    }

    /// One conversation, if the caller is a member.
    pub async fn conversation(
        &self,
        user: UserId,
        id: ConversationId,
    ) -> Result<Conversation, EngineError> {
        self.authorize(user, id).await?;
        self.core
            .store
            .conversation(id)
            .await?
            .ok_or(EngineError::ConversationNotFound(id))
    }

    /// Checks membership; answers the conversation's last seq.
    pub async fn authorize(&self, user: UserId, id: ConversationId) -> Result<Seq, EngineError> {
        ask_conversation!(self.core, id, Authorize { user })
    }

    /// Adds `user` to a group (by any member); `false` if they were in it already.
    pub async fn add_member(
        &self,
        by: UserId,
        id: ConversationId,
        user: UserId,
    ) -> Result<bool, EngineError> {
        let changed = ask_conversation!(
            self.core,
            id,
            ChangeMembership {
                by,
                user,
                join: true
            }
        )?;
        if changed && let Some(conversation) = self.core.store.conversation(id).await? {
            let event = ServerEvent::ConversationCreated(conversation);
            self.core
                .bus
                .publish(Audience::Users(Arc::from([user])), event.encode());
        }
        Ok(changed)
    }

    /// Removes `user` from a group (an owner, or the user themselves).
    pub async fn remove_member(
        &self,
        by: UserId,
        id: ConversationId,
        user: UserId,
    ) -> Result<bool, EngineError> {
        ask_conversation!(
            self.core,
            id,
            ChangeMembership {
                by,
                user,
                join: false
            }
        )
    }

    /// Posts a message. Answers after the message is durably stored; a retry with the
    /// same `clientMsgId` answers the first result with `created == false`.
    pub async fn send_message(
        &self,
        user: UserId,
        send: SendMessage,
    ) -> Result<(Message, bool), EngineError> {
        self.check_body(&send.body)?;
        let key_len = send.client_msg_id.len();
        if key_len == 0 || key_len > self.core.limits.max_client_msg_id_bytes {
            return Err(EngineError::Invalid(format!(
                "clientMsgId must be 1 to {} bytes",
                self.core.limits.max_client_msg_id_bytes
            )));
        }
        reject_nul("clientMsgId", &send.client_msg_id)?;
        let post = PostMessage {
            send: NewMessage {
                sender_id: user,
                client_msg_id: send.client_msg_id,
                body: send.body,
                reply_to_id: send.reply_to_id,
            },
        };
        let posted = ask_conversation!(self.core, send.conversation_id, post)?;
        Ok((posted.message, posted.created))
    }

    /// Replaces the body of the caller's own message and tells members `message:edited`.
    pub async fn edit_message(
        &self,
        user: UserId,
        id: MessageId,
        body: String,
    ) -> Result<Message, EngineError> {
        self.check_body(&body)?;
        self.modify(user, id, MessageChange::Edit(body)).await
    }

    /// Deletes the caller's own message (it keeps its seq) and tells members `message:deleted`.
    pub async fn delete_message(
        &self,
        user: UserId,
        id: MessageId,
    ) -> Result<Message, EngineError> {
        self.modify(user, id, MessageChange::Delete).await
    }

    async fn modify(
        &self,
        user: UserId,
        id: MessageId,
        change: MessageChange,
    ) -> Result<Message, EngineError> {
        let message = self
            .core
            .store
            .message(id)
            .await?
            .ok_or(EngineError::MessageNotFound(id))?;
        let modify = ModifyMessage {
            user,
            message_id: id,
            change,
        };
        ask_conversation!(self.core, message.conversation_id, modify).map_err(|error| match error {
            // A non-member learns nothing about the message either.
            EngineError::ConversationNotFound(_) => EngineError::MessageNotFound(id),
            other => other,
        })
    }

    /// A page of history, for members.
    pub async fn history(
        &self,
        user: UserId,
        id: ConversationId,
        page: HistoryPage,
    ) -> Result<MessagePage, EngineError> {
        self.authorize(user, id).await?;
        let limit = self.page_size(page.limit);
        if let (None, Some(before)) = (page.after, page.before) {
            let mut messages = self
                .core
                .store
                .messages_before(id, before, limit + 1)
                .await?;
            let has_more = messages.len() > limit;
            if has_more {
                messages.remove(0);
            }
            return Ok(MessagePage { messages, has_more });
        }
        let after = page.after.unwrap_or(Seq(0)).max(Seq(0));
        let mut messages = self.core.store.messages_after(id, after, limit + 1).await?;
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        Ok(MessagePage { messages, has_more })
    }

    /// What came after `after_seq`, for a client catching up.
    pub async fn sync(
        &self,
        user: UserId,
        id: ConversationId,
        after_seq: Seq,
        limit: Option<u32>,
    ) -> Result<MessagePage, EngineError> {
        let page = HistoryPage {
            after: Some(after_seq),
            before: None,
            limit,
        };
        self.history(user, id, page).await
    }

    /// Moves the caller's delivered or read watermark to `seq` and tells members.
    pub async fn mark(
        &self,
        user: UserId,
        id: ConversationId,
        watermark: Watermark,
        seq: Seq,
    ) -> Result<(), EngineError> {
        ask_conversation!(
            self.core,
            id,
            MarkReceipt {
                user,
                watermark,
                seq
            }
        )
    }

    /// Starts or stops the caller's typing flag in a conversation.
    pub async fn set_typing(
        &self,
        user: UserId,
        id: ConversationId,
        typing: bool,
    ) -> Result<(), EngineError> {
        ask_conversation!(self.core, id, SetTyping { user, typing })
    }

    /// Presence of these users: online (here, not invisible) or last seen.
    pub async fn presence(&self, users: &[UserId]) -> Result<Vec<Presence>, EngineError> {
        let rows = self.core.store.users_by_ids(users).await?;
        let ids: Vec<UserId> = rows.iter().map(|row| row.user_id()).collect();
        let shown = self.core.bus.presence_of(&ids).await;
        Ok(rows
            .into_iter()
            .zip(shown)
            .map(|(row, shown)| {
                let user = row.user_id();
                match shown {
                    Some((status, text)) => Presence {
                        user_id: user,
                        online: true,
                        status: Some(status),
                        status_text: text,
                        last_seen: None,
                    },
                    None => Presence {
                        user_id: user,
                        online: false,
                        status: None,
                        status_text: row.status_text,
                        last_seen: row.last_seen_at.map(crate::ids::Timestamp),
                    },
                }
            })
            .collect())
    }

    fn check_body(&self, body: &str) -> Result<(), EngineError> {
        if body.trim().is_empty() {
            return Err(EngineError::Invalid("body must not be empty".into()));
        }
        if body.len() > self.core.limits.max_body_bytes {
            return Err(EngineError::Invalid(format!(
                "body is longer than {} bytes",
                self.core.limits.max_body_bytes
            )));
        }
        reject_nul("body", body)
    }

    fn page_size(&self, asked: Option<u32>) -> usize {
        let max = self.core.limits.max_page_size.max(1);
        asked.map_or(max, |n| (n as usize).clamp(1, max))
    }
}

/// PostgreSQL text cannot hold NUL; refusing it here keeps one client's bad input from
/// failing a whole group commit, and keeps both stores accepting the same strings.
pub(crate) fn reject_nul(field: &str, text: &str) -> Result<(), EngineError> {
    if text.contains('\0') {
        return Err(EngineError::Invalid(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// One attached session. Dropping it detaches the session.
pub struct Session {
    engine: Engine,
    sink: Arc<SessionSink>,
    actor: Addr<UserActor>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.sink.id)
            .field("user", &self.sink.user)
            .finish()
    }
}

impl Session {
    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.sink.id
    }

    /// The user it belongs to.
    pub fn user(&self) -> UserId {
        self.sink.user
    }

    /// Its outbound queue: call [`OutboundQueue::written`] for each frame written.
    pub fn queue(&self) -> &OutboundQueue {
        &self.sink.queue
    }

    /// The engine it is attached to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one client command: the single event handler every transport shares.
    pub async fn execute(&self, command: ClientCommand) -> Result<Reply, EngineError> {
        let engine = &self.engine;
        let user = self.user();
        match command {
            ClientCommand::SendMessage(send) => {
                let (message, created) = engine.send_message(user, send).await?;
                Ok(Reply::Message {
                    message,
                    stored_now: created,
                })
            }
            ClientCommand::EditMessage(edit) => {
                let message = engine
                    .edit_message(user, edit.message_id, edit.body)
                    .await?;
                Ok(Reply::Message {
                    message,
                    stored_now: false,
                })
            }
            ClientCommand::DeleteMessage(delete) => {
                let message = engine.delete_message(user, delete.message_id).await?;
                Ok(Reply::Message {
                    message,
                    stored_now: false,
                })
            }
            ClientCommand::MarkDelivered(receipt) => {
                engine
                    .mark(
                        user,
                        receipt.conversation_id,
                        Watermark::Delivered,
                        receipt.seq,
                    )
                    .await?;
                Ok(Reply::Done {})
            }
            ClientCommand::MarkRead(receipt) => {
                engine
                    .mark(user, receipt.conversation_id, Watermark::Read, receipt.seq)
                    .await?;
                Ok(Reply::Done {})
            }
            ClientCommand::StartTyping(room) => {
                engine.set_typing(user, room.conversation_id, true).await?;
                Ok(Reply::None)
            }
            ClientCommand::StopTyping(room) => {
                engine.set_typing(user, room.conversation_id, false).await?;
                Ok(Reply::None)
            }
            ClientCommand::Sync(sync) => {
                let page = engine
                    .sync(user, sync.conversation_id, sync.after_seq, sync.limit)
                    .await?;
                Ok(Reply::Sync {
                    messages: page.messages,
                    has_more: page.has_more,
                })
            }
            ClientCommand::JoinRoom(room) => {
                engine.authorize(user, room.conversation_id).await?;
                self.sink.set_room_left(room.conversation_id, false);
                Ok(Reply::Done {})
            }
            ClientCommand::LeaveRoom(room) => {
                engine.authorize(user, room.conversation_id).await?;
                self.sink.set_room_left(room.conversation_id, true);
                Ok(Reply::Done {})
            }
            ClientCommand::UpdateStatus(update) => {
                if let Some(text) = &update.text {
                    if text.chars().count() > 140 {
                        return Err(EngineError::Invalid(
                            "status text is longer than 140 characters".into(),
                        ));
                    }
                    reject_nul("text", text)?;
                }
                self.actor
                    .send(SetStatus {
                        status: update.status,
                        text: update.text,
                    })
                    .await??;
                Ok(Reply::Done {})
            }
            ClientCommand::CallOffer(signal) => self.relay(signal, ServerEvent::CallOffer).await,
            ClientCommand::CallAnswer(signal) => self.relay(signal, ServerEvent::CallAnswer).await,
            ClientCommand::CallIce(signal) => self.relay(signal, ServerEvent::CallIce).await,
            ClientCommand::CallHangup(signal) => self.relay(signal, ServerEvent::CallHangup).await,
        }
    }

    async fn relay(
        &self,
        signal: CallSignal,
        event: fn(CallRelayed) -> ServerEvent,
    ) -> Result<Reply, EngineError> {
        if signal.call_id.is_empty() || signal.call_id.len() > 128 {
            return Err(EngineError::Invalid("callId must be 1 to 128 bytes".into()));
        }
        let relayed = event(CallRelayed {
            call_id: signal.call_id,
            from_user_id: self.user(),
            sdp: signal.sdp,
            candidate: signal.candidate,
        });
        self.actor
            .send(RelayCall {
                to: signal.to_user_id,
                event: relayed,
            })
            .await??;
        Ok(Reply::Done {})
    }

    /// The presence status this user shows, while online here.
    pub fn status(&self) -> Option<PresenceStatus> {
        self.engine
            .core
            .users
            .visible_status(self.user())
            .map(|(status, _)| status)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.actor.do_send(DetachSession { id: self.sink.id });
        self.sink.end_stream();
    }
}
