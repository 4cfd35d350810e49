//! One actor per active conversation: it orders sends, commits them in groups, fans
//! them out, and keeps typing state and the member list.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::bus::{Audience, MembershipChange};
use crate::engine::Core;
use crate::error::{EngineError, StoreError};
use crate::ids::{ConversationId, MessageId, Seq, Timestamp, UserId};
use crate::protocol::{
    EventFrame, Member, MemberRole, MembershipChanged, Message, ReceiptAdvanced, ServerEvent,
    TypingChanged,
};
use crate::store::{AppendOutcome, NewMessage, Store, Watermark};

/// How long an actor for a conversation that does not exist lingers: long enough to
/// answer a burst of requests for it, short enough that probing ids costs no memory.
const MISSING_LINGER: Duration = Duration::from_secs(2);

/// The member list as loaded from the store, kept current by membership commands.
struct Roster {
    roles: HashMap<UserId, MemberRole>,
    /// The same members, shared by every event's audience without copying.
    ids: Arc<[UserId]>,
    last_seq: Seq,
}

impl Roster {
    fn rebuild_ids(&mut self) {
        self.ids = self.roles.keys().copied().collect();
    }
}

enum State {
    Loading,
    Ready(Roster),
    /// The conversation does not exist.
    Missing,
    /// The store could not be read; requests fail as unavailable until the actor restarts.
    Failed,
}

struct PendingSend {
    send: NewMessage,
    reply: PostReply,
}

/// Where a send's result goes.
type PostReply = oneshot::Sender<Result<Posted, EngineError>>;

/// The result of a send.
#[derive(Debug, Clone)]
pub(crate) struct Posted {
    pub(crate) message: Message,
    /// `false` when this was a retry of a send stored before.
    pub(crate) created: bool,
}

/// The actor of one conversation.
pub(crate) struct ConversationActor {
    core: Arc<Core>,
    id: ConversationId,
    state: State,
    queued: Vec<PendingSend>,
    committing: bool,
    /// The highest seq pushed to members, to push a stored message whose first commit's
    /// answer was lost (its retry comes back as "existing").
    published_seq: Seq,
    /// A commit failed without a definite answer (a timeout, a dropped connection): it
    /// may have stored messages that members have not heard of. They are read back and
    /// published before anything newer.
    unsure: bool,
    typing: HashMap<UserId, SpawnHandle>,
    announced_receipts: AnnouncedReceipts,
    last_activity: Instant,
    /// The next attempt at a member list reload that failed; one at a time.
    reload_retry: Option<SpawnHandle>,
}

/// The highest receipt members have heard of, per member and watermark. Receipts are
/// stored concurrently and their answers may come back in any order; an event only goes
/// out when it moves past what was announced, so members never hear a watermark go back.
#[derive(Debug, Default)]
struct AnnouncedReceipts(HashMap<(UserId, Watermark), Seq>);

impl AnnouncedReceipts {
    /// Whether a receipt the store moved to `seq` is news to members. News about a member
    /// is remembered; about one who has left, not (nothing more will be announced). A read
    /// moves the delivered watermark too, so a slower "delivered" up to less is not news.
    fn announce(&mut self, user: UserId, watermark: Watermark, seq: Seq, member: bool) -> bool {
        let heard = self.0.get(&(user, watermark)).copied().unwrap_or(Seq(0));
        if seq <= heard {
            return false;
        }
        if member {
            self.0.insert((user, watermark), seq);
            if watermark == Watermark::Read {
                let delivered = self.0.entry((user, Watermark::Delivered)).or_insert(seq);
                *delivered = (*delivered).max(seq);
            }
        }
        true
    }

    /// A membership ended or began: its watermarks start again from 0.
    fn forget(&mut self, user: UserId) {
        self.0.retain(|(who, _), _| *who != user);
    }

    /// The roster was loaded again: what was announced for a member stays only while the
    /// stored watermark has reached it (it has not, when the member left and joined again
    /// elsewhere, with a new membership starting from 0).
    fn reconcile(&mut self, members: &[Member]) {
        // The usual case: a conversation's first load, nothing announced yet.
        if self.0.is_empty() {
            return;
        }
        let stored: HashMap<UserId, &Member> = members.iter().map(|m| (m.user_id, m)).collect();
        self.0.retain(|(user, watermark), heard| {
            stored.get(user).is_some_and(|member| {
                let seq = match watermark {
                    Watermark::Delivered => member.delivered_seq,
                    Watermark::Read => member.read_seq,
                };
                seq >= *heard
            })
        });
    }
}

/// How soon after an unanswered commit the conversation reads back what it stored, when
/// no new send does it sooner.
const CATCH_UP_AFTER: Duration = Duration::from_millis(500);
/// How soon a member list that could not be reloaded is tried again.
const RELOAD_RETRY: Duration = Duration::from_secs(1);
/// Messages read back per query when catching up.
const CATCH_UP_PAGE: usize = 256;

/// Every message of `conversation` stored after `after`, in seq order.
async fn stored_after(
    store: &dyn Store,
    conversation: ConversationId,
    mut after: Seq,
) -> Result<Vec<Message>, StoreError> {
    let mut stored = Vec::new();
    loop {
        let page = store
            .settled_messages_after(conversation, after, CATCH_UP_PAGE)
            .await?;
        let full = page.len() == CATCH_UP_PAGE;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        stored.extend(page);
        if !full {
            return Ok(stored);
        }
    }
}

impl ConversationActor {
    pub(crate) fn new(core: Arc<Core>, id: ConversationId) -> Self {
        Self {
            core,
            id,
            state: State::Loading,
            queued: Vec::new(),
            committing: false,
            published_seq: Seq(0),
            announced_receipts: AnnouncedReceipts::default(),
            unsure: false,
            typing: HashMap::new(),
            last_activity: Instant::now(),
            reload_retry: None,
        }
    }

    /// The roster, if `user` is in it; outsiders learn nothing, not even existence.
    fn roster_for(&mut self, user: UserId) -> Result<&mut Roster, EngineError> {
        // Only a loaded conversation counts as active: requests for a missing one (ids
        // are sequential, easy to probe) must not keep it "missing" after it is created.
        if matches!(self.state, State::Ready(_)) {
            self.last_activity = Instant::now();
        }
        match &mut self.state {
            State::Ready(roster) if roster.roles.contains_key(&user) => Ok(roster),
            State::Ready(_) | State::Missing => Err(EngineError::ConversationNotFound(self.id)),
            State::Loading | State::Failed => Err(EngineError::Unavailable(
                "conversation state could not be loaded".into(),
            )),
        }
    }

    fn publish(&self, event: ServerEvent, except: Option<UserId>) {
        let seq = match &event {
            ServerEvent::MessageReceived(message) => Some(message.seq),
            _ => None,
        };
        self.publish_frame(event.encode(), seq, except);
    }

    /// Publishes an event already encoded to the members (but `except`).
    fn publish_frame(&self, frame: EventFrame, seq: Option<Seq>, except: Option<UserId>) {
        if let State::Ready(roster) = &self.state {
            let audience = Audience::Members {
                conversation: self.id,
                members: Arc::clone(&roster.ids),
                except,
                seq,
            };
            self.core.bus.publish(audience, frame);
        }
    }

    /// Starts a group commit of everything queued, unless one is running: the sends that
    /// arrive meanwhile queue up and go together in the next transaction.
    fn commit_queued(&mut self, ctx: &mut Context<Self>) {
        if self.committing || (self.queued.is_empty() && !self.unsure) {
            return;
        }
        let take = self
            .queued
            .len()
            .min(self.core.limits.max_commit_batch.max(1));
        // The sends go to the store and the replies stay here: nothing is copied.
        let (sends, replies): (Vec<NewMessage>, Vec<PostReply>) = self
            .queued
            .drain(..take)
            .map(|pending| (pending.send, pending.reply))
            .unzip();
        let store = Arc::clone(&self.core.store);
        let commits = Arc::clone(&self.core.commits);
        let id = self.id;
        self.committing = true;
        let catch_up_after = self.unsure.then_some(self.published_seq);
        let commit = async move {
            // What an unanswered commit stored goes out before anything newer, so the
            // new batch waits for it: members must see seqs in order.
            let missed = match catch_up_after {
                // Not a future of this actor's: on SQLite the read-back holds the writer,
                // and a membership change or an edit waited on meanwhile may need it.
                Some(after) => {
                    let read_back = async move { stored_after(&*store, id, after).await };
                    match super::detached(read_back, super::store_call_lost).await {
                        Ok(missed) => Some(missed),
                        Err(error) => return (None, Err(error)),
                    }
                }
                None => None,
            };
            let outcomes = if sends.is_empty() {
                Ok(Vec::new())
            } else {
                commits.append(id, sends).await
            };
            (missed, outcomes)
        };
        ctx.spawn(
            commit
                .into_actor(self)
                .map(move |(missed, result), actor, ctx| {
                    actor.committing = false;
                    match missed {
                        Some(missed) => {
                            actor.unsure = false;
                            for message in missed {
                                actor.publish_stored(message);
                            }
                        }
                        // The store did not answer the read-back: sends queued meanwhile
                        // would wait for another before failing the same way: fail them now.
                        None if catch_up_after.is_some() => {
                            if let Err(error) = &result {
                                for pending in actor.queued.drain(..) {
                                    let _ = pending.reply.send(Err(commit_error(error, actor.id)));
                                }
                            }
                        }
                        None => {}
                    }
                    actor.settle(ctx, replies, result);
                    if actor.unsure {
                        ctx.run_later(CATCH_UP_AFTER, |actor, ctx| actor.commit_queued(ctx));
                    }
                    actor.commit_queued(ctx);
                }),
        );
    }

    /// Publishes a stored message members have not been sent yet.
    fn publish_stored(&mut self, message: Message) {
        if message.seq <= self.published_seq {
            return;
        }
        if let State::Ready(roster) = &mut self.state {
            roster.last_seq = roster.last_seq.max(message.seq);
        }
        self.published_seq = message.seq;
        self.publish(ServerEvent::MessageReceived(message), None);
    }

    /// Fans out what was stored, then acks each send: the ack follows the commit.
    fn settle(
        &mut self,
        ctx: &mut Context<Self>,
        replies: Vec<PostReply>,
        result: Result<Vec<AppendOutcome>, StoreError>,
    ) {
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::warn!(%error, conversation = %self.id, sends = replies.len(), "group commit failed");
                // Only a refusal is a definite "nothing stored"; after anything else the
                // commit may have landed.
                self.unsure |= !matches!(error, StoreError::NotFound);
                for reply in replies {
                    let _ = reply.send(Err(commit_error(&error, self.id)));
                }
                return;
            }
        };
        for (post_reply, outcome) in replies.into_iter().zip(outcomes) {
            let reply = match outcome {
                AppendOutcome::Created(message) => {
                    self.stop_typing(ctx, message.sender_id);
                    self.publish_stored(message.clone());
                    Ok(Posted {
                        message,
                        created: true,
                    })
                }
                AppendOutcome::Existing(message) => {
                    // Committed by an earlier attempt whose answer was lost (a connection
                    // dropped after COMMIT): members may not have heard of it yet.
                    self.publish_stored(message.clone());
                    Ok(Posted {
                        message,
                        created: false,
                    })
                }
                AppendOutcome::ReplyNotFound(id) => Err(EngineError::Invalid(format!(
                    "replyToId {id} names no message of this conversation"
                ))),
                AppendOutcome::ClientMsgIdReused => Err(EngineError::Conflict(
                    "clientMsgId was already used for another conversation".into(),
                )),
            };
            let _ = post_reply.send(reply);
        }
    }

    fn stop_typing(&mut self, ctx: &mut Context<Self>, user: UserId) -> bool {
        match self.typing.remove(&user) {
            Some(expiry) => {
                ctx.cancel_future(expiry);
                let event = ServerEvent::TypingStopped(TypingChanged {
                    conversation_id: self.id,
                    user_id: user,
                });
                self.publish(event, Some(user));
                true
            }
            None => false,
        }
    }

    /// Loads the member list and last seq. Nothing is handled until they are in:
    /// membership checks need them.
    fn load_roster(&mut self, ctx: &mut Context<Self>) {
        if let Some(retry) = self.reload_retry.take() {
            ctx.cancel_future(retry);
        }
        let store = Arc::clone(&self.core.store);
        let id = self.id;
        let load = async move { store.conversation(id).await };
        ctx.wait(load.into_actor(self).map(|loaded, actor, ctx| {
            actor.state = match loaded {
                Ok(Some(conversation)) => {
                    let roles: HashMap<UserId, MemberRole> = conversation
                        .members
                        .iter()
                        .map(|member| (member.user_id, member.role))
                        .collect();
                    let ids = roles.keys().copied().collect();
                    // What this actor's unanswered commit stored is in `last_seq` too, but
                    // members have not heard of it: it goes out when the answer comes.
                    if !actor.committing && !actor.unsure {
                        actor.published_seq = actor.published_seq.max(conversation.last_seq);
                    }
                    actor.announced_receipts.reconcile(&conversation.members);
                    State::Ready(Roster {
                        roles,
                        ids,
                        last_seq: conversation.last_seq,
                    })
                }
                Ok(None) => State::Missing,
                Err(error) if matches!(actor.state, State::Ready(_)) => {
                    // A reload: the list it has is the best there is until the store
                    // answers, and members still hear what is committed meanwhile.
                    tracing::warn!(%error, conversation = %actor.id, "could not reload the member list; trying again");
                    actor.reload_retry = Some(ctx.run_later(RELOAD_RETRY, |actor, ctx| {
                        actor.reload_retry = None;
                        actor.load_roster(ctx);
                    }));
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, conversation = %actor.id, "could not load conversation");
                    State::Failed
                }
            };
            actor.refuse_sends_of_non_members();
        }));
    }

    /// Fails the queued sends of senders who are no longer members (removed while their
    /// send waited for the commit before it): stored now, they would come after the
    /// member's departure.
    fn refuse_sends_of_non_members(&mut self) {
        let State::Ready(roster) = &self.state else {
            return;
        };
        let member = |pending: &PendingSend| roster.roles.contains_key(&pending.send.sender_id);
        if self.queued.iter().all(member) {
            return;
        }
        let (kept, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(member);
        self.queued = kept;
        for pending in refused {
            let _ = pending
                .reply
                .send(Err(EngineError::ConversationNotFound(self.id)));
        }
    }

    fn idle(&self) -> bool {
        !self.committing && !self.unsure && self.queued.is_empty() && self.typing.is_empty()
    }
}

fn commit_error(error: &StoreError, id: ConversationId) -> EngineError {
    match error {
        StoreError::NotFound => EngineError::ConversationNotFound(id),
        StoreError::Unavailable(reason) => EngineError::Unavailable(reason.clone()),
        other => EngineError::Internal(other.to_string()),
    }
}

impl Actor for ConversationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.load_roster(ctx);
        let idle_after = self.core.limits.conversation_idle;
        let check_every = (idle_after / 4).clamp(Duration::from_millis(100), MISSING_LINGER);
        ctx.run_interval(check_every, move |actor, ctx| {
            let linger = match actor.state {
                State::Ready(_) => idle_after,
                _ => MISSING_LINGER,
            };
            if actor.idle() && actor.last_activity.elapsed() >= linger {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.core.forget_conversation(self.id, &ctx.address());
        for pending in self.queued.drain(..) {
            let _ = pending
                .reply
                .send(Err(EngineError::Unavailable("conversation stopped".into())));
        }
    }
}

/// Post a message (the sender is checked to be a member).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Posted, EngineError>")]
pub(crate) struct PostMessage {
    pub(crate) send: NewMessage,
}

impl Handler<PostMessage> for ConversationActor {
    type Result = ResponseFuture<Result<Posted, EngineError>>;

    fn handle(&mut self, msg: PostMessage, ctx: &mut Self::Context) -> Self::Result {
        if let Err(error) = self.roster_for(msg.send.sender_id) {
            return Box::pin(async move { Err(error) });
        }
        let (reply, answer) = oneshot::channel();
        self.queued.push(PendingSend {
            send: msg.send,
            reply,
        });
        self.commit_queued(ctx);
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("conversation stopped".into())))
        })
    }
}

/// Edit or delete.
#[derive(Debug, Clone)]
pub(crate) enum MessageChange {
    Edit(String),
    Delete,
}

/// Change a message of this conversation (only its sender may).
///
/// Handled atomically, like [`ChangeMembership`]: two changes of one message finish in
/// the order they came, so the last event members hear matches what is stored.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Message, EngineError>")]
pub(crate) struct ModifyMessage {
    pub(crate) user: UserId,
    pub(crate) message_id: MessageId,
    pub(crate) change: MessageChange,
}

impl Handler<ModifyMessage> for ConversationActor {
    type Result = AtomicResponse<Self, Result<Message, EngineError>>;

    fn handle(&mut self, msg: ModifyMessage, _ctx: &mut Self::Context) -> Self::Result {
        let roster = self.roster_for(msg.user).map(|_| ());
        let store = Arc::clone(&self.core.store);
        let id = self.id;
        let change = async move {
            roster?;
            let missing = || EngineError::MessageNotFound(msg.message_id);
            let current = store.message(msg.message_id).await?.ok_or_else(missing)?;
            if current.conversation_id != id {
                return Err(missing());
            }
            if current.sender_id != msg.user {
                return Err(EngineError::Forbidden(
                    "only the sender may change a message",
                ));
            }
            let at = Timestamp::now();
            let changed = match msg.change {
                MessageChange::Edit(body) => {
                    if current.deleted_at.is_some() {
                        return Err(EngineError::Conflict("the message was deleted".into()));
                    }
                    store.edit_message(msg.message_id, body, at).await
                }
                MessageChange::Delete => store.delete_message(msg.message_id, at).await,
            };
            changed.map_err(|error| match error {
                StoreError::NotFound => EngineError::Conflict("the message was deleted".into()),
                other => other.into(),
            })
        };
        AtomicResponse::new(Box::pin(change.into_actor(self).map(
            |changed, actor, _| {
                let message = changed?;
                let event = if message.deleted_at.is_some() {
                    ServerEvent::MessageDeleted(message.clone())
                } else {
                    ServerEvent::MessageEdited(message.clone())
                };
                actor.publish(event, None);
                Ok(message)
            },
        )))
    }
}

/// Move the caller's delivered or read watermark forward.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), EngineError>")]
pub(crate) struct MarkReceipt {
    pub(crate) user: UserId,
    pub(crate) watermark: Watermark,
    pub(crate) seq: Seq,
}

impl Handler<MarkReceipt> for ConversationActor {
    type Result = ResponseActFuture<Self, Result<(), EngineError>>;

    fn handle(&mut self, msg: MarkReceipt, _ctx: &mut Self::Context) -> Self::Result {
        let last_seq = self.roster_for(msg.user).map(|roster| roster.last_seq);
        let store = Arc::clone(&self.core.store);
        let id = self.id;
        let mark = async move {
            let mut last_seq = last_seq?;
            if msg.seq > last_seq {
                // Another node may have committed since this roster was loaded.
                let conversation = store.conversation(id).await?;
                last_seq = conversation.map_or(last_seq, |c| c.last_seq);
            }
            if msg.seq > last_seq || msg.seq.0 < 0 {
                return Err(EngineError::Invalid(format!(
                    "seq {} is beyond the conversation's last seq {last_seq}",
                    msg.seq
                )));
            }
            let moved = store
                .advance_watermark(id, msg.user, msg.watermark, msg.seq)
                .await?;
            Ok((moved, last_seq))
        };
        // Not a future of this actor's: a membership change or an edit waited on meanwhile
        // may need the writer connection this holds.
        Box::pin(
            super::detached(mark, super::store_call_lost)
                .into_actor(self)
                .map(move |marked, actor, _| {
                    let (moved, last_seq) = marked?;
                    if let State::Ready(roster) = &mut actor.state {
                        roster.last_seq = roster.last_seq.max(last_seq);
                    }
                    let member = match &actor.state {
                        State::Ready(roster) => roster.roles.contains_key(&msg.user),
                        _ => false,
                    };
                    if moved
                        && actor.announced_receipts.announce(
                            msg.user,
                            msg.watermark,
                            msg.seq,
                            member,
                        )
                    {
                        let receipt = ReceiptAdvanced {
                            conversation_id: actor.id,
                            user_id: msg.user,
                            seq: msg.seq,
                        };
                        let event = match msg.watermark {
                            Watermark::Delivered => ServerEvent::MessageDelivered(receipt),
                            Watermark::Read => ServerEvent::MessageRead(receipt),
                        };
                        actor.publish(event, None);
                    }
                    Ok(())
                }),
        )
    }
}

/// Start or stop the caller's typing flag.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), EngineError>")]
pub(crate) struct SetTyping {
    pub(crate) user: UserId,
    pub(crate) typing: bool,
}

impl Handler<SetTyping> for ConversationActor {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, msg: SetTyping, ctx: &mut Self::Context) -> Self::Result {
        self.roster_for(msg.user)?;
        if !msg.typing {
            self.stop_typing(ctx, msg.user);
            return Ok(());
        }
        // A refresh only moves the expiry: members hear "started" once per burst.
        let ttl = self.core.limits.typing_ttl;
        let user = msg.user;
        let expiry = ctx.run_later(ttl, move |actor, _| {
            // Lapsed: the handle is spent, so only the entry goes.
            if actor.typing.remove(&user).is_some() {
                actor.publish(
                    ServerEvent::TypingStopped(TypingChanged {
                        conversation_id: actor.id,
                        user_id: user,
                    }),
                    Some(user),
                );
            }
        });
        match self.typing.insert(user, expiry) {
            Some(previous) => {
                ctx.cancel_future(previous);
            }
            None => {
                let event = ServerEvent::TypingStarted(TypingChanged {
                    conversation_id: self.id,
                    user_id: user,
                });
                self.publish(event, Some(user));
            }
        }
        Ok(())
    }
}

/// Check that `user` is a member; answers the conversation's last seq.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Seq, EngineError>")]
pub(crate) struct Authorize {
    pub(crate) user: UserId,
}

impl Handler<Authorize> for ConversationActor {
    type Result = Result<Seq, EngineError>;

    fn handle(&mut self, msg: Authorize, _ctx: &mut Self::Context) -> Self::Result {
        self.roster_for(msg.user).map(|roster| roster.last_seq)
    }
}

/// Add or remove a member. Owners may add and remove anyone; members may add others to
/// a group and remove themselves.
///
/// Handled atomically: nothing else is handled until the store has answered and the
/// roster is updated, so the next request is checked against the members as they are
/// then (a member being removed cannot add anyone in the meantime) and changes land in
/// the order they came. Sends queue in the mailbox meanwhile: such changes are rare.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, EngineError>")]
pub(crate) struct ChangeMembership {
    pub(crate) by: UserId,
    pub(crate) user: UserId,
    pub(crate) join: bool,
}

impl Handler<ChangeMembership> for ConversationActor {
    type Result = AtomicResponse<Self, Result<bool, EngineError>>;

    fn handle(&mut self, msg: ChangeMembership, _ctx: &mut Self::Context) -> Self::Result {
        let allowed = self.roster_for(msg.by).and_then(|roster| {
            let owner = roster.roles.get(&msg.by) == Some(&MemberRole::Owner);
            let permitted = if msg.join {
                true
            } else {
                owner || msg.by == msg.user
            };
            if !permitted {
                return Err(EngineError::Forbidden(
                    "only an owner may remove other members",
                ));
            }
            Ok(())
        });
        let store = Arc::clone(&self.core.store);
        let id = self.id;
        let change = async move {
            allowed?;
            let conversation = store
                .conversation(id)
                .await?
                .ok_or(EngineError::ConversationNotFound(id))?;
            if conversation.kind == crate::protocol::ConversationKind::Direct {
                return Err(EngineError::Forbidden(
                    "direct conversations have fixed members",
                ));
            }
            let changed = if msg.join {
                if store.user_by_id(msg.user).await?.is_none() {
                    return Err(EngineError::UserNotFound(msg.user));
                }
                store.add_member(id, msg.user, MemberRole::Member).await?
            } else {
                store.remove_member(id, msg.user).await?
            };
            // Read before the change: no message that may reach the member is at or
            // below it.
            let change = if msg.join {
                MembershipChange::Joined {
                    after: conversation.last_seq,
                }
            } else {
                MembershipChange::Left
            };
            Ok((changed, change))
        };
        AtomicResponse::new(Box::pin(change.into_actor(self).map(
            move |changed, actor, ctx| {
                let (changed, change) = changed?;
                if !changed {
                    return Ok(false);
                }
                let event_data = MembershipChanged {
                    conversation_id: actor.id,
                    user_id: msg.user,
                };
                actor
                    .core
                    .bus
                    .membership_changed(actor.id, msg.user, change);
                if msg.join {
                    // A new membership starts from watermarks of 0.
                    actor.announced_receipts.forget(msg.user);
                    if let State::Ready(roster) = &mut actor.state {
                        roster.roles.insert(msg.user, MemberRole::Member);
                        roster.rebuild_ids();
                    }
                    actor.publish(ServerEvent::MemberJoined(event_data), None);
                } else {
                    // The one who left hears it too, then nothing more: on their own
                    // channel, which their nodes still follow when they stop following
                    // the conversation's (on the conversation's, the note just sent could
                    // make them stop before the event arrives).
                    actor.stop_typing(ctx, msg.user);
                    let left = ServerEvent::MemberLeft(event_data).encode();
                    actor.publish_frame(left.clone(), None, Some(msg.user));
                    actor
                        .core
                        .bus
                        .publish(Audience::Users(Arc::from([msg.user])), left);
                    actor.announced_receipts.forget(msg.user);
                    if let State::Ready(roster) = &mut actor.state {
                        roster.roles.remove(&msg.user);
                        roster.rebuild_ids();
                    }
                    actor.refuse_sends_of_non_members();
                }
                Ok(true)
            },
        )))
    }
}

/// The member list changed on another node: load it again.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct ReloadRoster;

impl Handler<ReloadRoster> for ConversationActor {
    type Result = ();

    fn handle(&mut self, _msg: ReloadRoster, ctx: &mut Self::Context) {
        self.load_roster(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: UserId = UserId(2);

    fn member(delivered: i64, read: i64) -> Member {
        Member {
            user_id: BOB,
            role: MemberRole::Member,
            delivered_seq: Seq(delivered),
            read_seq: Seq(read),
            joined_at: Timestamp(0),
        }
    }

    #[test]
    fn receipts_answered_out_of_order_are_announced_moving_forward() {
        let mut announced = AnnouncedReceipts::default();
        // Stored as 5 then 7, answered as 7 then 5.
        assert!(announced.announce(BOB, Watermark::Read, Seq(7), true));
        assert!(!announced.announce(BOB, Watermark::Read, Seq(5), true));
        assert!(announced.announce(BOB, Watermark::Read, Seq(8), true));
        // A read moved delivered too.
        assert!(!announced.announce(BOB, Watermark::Delivered, Seq(6), true));
        assert!(announced.announce(BOB, Watermark::Delivered, Seq(9), true));
        assert!(announced.announce(UserId(3), Watermark::Read, Seq(1), true));
    }

    #[test]
    fn a_new_membership_announces_from_zero() {
        let mut announced = AnnouncedReceipts::default();
        assert!(announced.announce(BOB, Watermark::Read, Seq(7), true));
        // Left on this node (or joined again): forgotten.
        announced.forget(BOB);
        assert!(announced.announce(BOB, Watermark::Read, Seq(2), true));

        // Left and joined again on another node: the reloaded roster's stored watermark
        // is below what was heard.
        assert!(announced.announce(BOB, Watermark::Read, Seq(7), true));
        announced.reconcile(&[member(1, 1)]);
        assert!(announced.announce(BOB, Watermark::Read, Seq(3), true));
        // The same membership reloaded keeps what was heard.
        announced.reconcile(&[member(3, 3)]);
        assert!(!announced.announce(BOB, Watermark::Read, Seq(2), true));
        // Gone from the roster: forgotten.
        announced.reconcile(&[]);
        assert!(announced.announce(BOB, Watermark::Read, Seq(1), true));
    }

    #[test]
    fn a_receipt_answered_after_its_member_left_is_not_kept() {
        let mut announced = AnnouncedReceipts::default();
        announced.forget(BOB);
        assert!(announced.announce(BOB, Watermark::Read, Seq(9), false));
        assert!(
            announced.announce(BOB, Watermark::Read, Seq(1), true),
            "nothing kept from the membership that ended"
        );
    }
}
