//! One actor per online user: their sessions on this node and their presence.

use std::sync::Arc;

use actix::prelude::*;

use super::registry::Sharded;
use super::session::{CloseReason, SessionSink};
use crate::bus::{Audience, ShownStatus};
use crate::engine::Core;
use crate::error::EngineError;
use crate::ids::{SessionId, Timestamp, UserId};
use crate::protocol::{EventFrame, PresenceChanged, PresenceStatus, ServerEvent, StatusChanged};
use crate::store::ProfileChanges;

/// What the fan-out path needs of an online user, kept beside their actor.
pub(crate) struct UserEntry {
    actor: Addr<UserActor>,
    sessions: Vec<Arc<SessionSink>>,
    status: PresenceStatus,
    status_text: String,
}

/// The users with sessions on this node, sharded by user id.
pub struct UserDirectory {
    entries: Sharded<UserId, UserEntry>,
}

impl UserDirectory {
    pub(crate) fn new() -> Self {
        Self {
            entries: Sharded::new(),
        }
    }

    /// Pushes an event meant for `audience` users in all to every session of `user` on
    /// this node.
    pub(crate) fn push_to_user(&self, user: UserId, frame: &EventFrame, audience: usize) {
        self.entries.with(&user, |entry| {
            for session in &entry.sessions {
                session.push(frame, audience);
            }
        });
    }

    /// The user's actor, started if the user has none.
    pub(crate) fn actor(&self, core: &Arc<Core>, user: UserId) -> Addr<UserActor> {
        if let Some(addr) = self
            .entries
            .with(&user, |entry| entry.actor.clone())
            .filter(Addr::connected)
        {
            return addr;
        }
        let mut shard = self.entries.shard(&user).write();
        if let Some(entry) = shard.get(&user).filter(|entry| entry.actor.connected()) {
            return entry.actor.clone();
        }
        let actor = UserActor::new(Arc::clone(core), user).start();
        shard.insert(
            user,
            UserEntry {
                actor: actor.clone(),
                sessions: Vec::new(),
                status: PresenceStatus::Online,
                status_text: String::new(),
            },
        );
        actor
    }

    /// Whether the user has a session on this node.
    pub(crate) fn is_here(&self, user: UserId) -> bool {
        self.entries
            .with(&user, |entry| !entry.sessions.is_empty())
            .unwrap_or(false)
    }

    /// The status the user shows, if they are online here and not invisible.
    pub fn visible_status(&self, user: UserId) -> Option<(PresenceStatus, String)> {
        self.entries
            .with(&user, |entry| (entry.status, entry.status_text.clone()))
            .filter(|(status, _)| *status != PresenceStatus::Invisible)
    }

    /// Sessions attached on this node, all users together.
    pub fn session_count(&self) -> usize {
        self.entries
            .values_with(|entry| entry.sessions.len())
            .into_iter()
            .sum()
    }

    fn update(&self, user: UserId, actor: &Addr<UserActor>, change: impl FnOnce(&mut UserEntry)) {
        let mut shard = self.entries.shard(&user).write();
        if let Some(entry) = shard.get_mut(&user).filter(|entry| entry.actor == *actor) {
            change(entry);
        }
    }

    fn remove(&self, user: UserId, actor: &Addr<UserActor>) {
        let mut shard = self.entries.shard(&user).write();
        if shard.get(&user).is_some_and(|entry| entry.actor == *actor) {
            shard.remove(&user);
        }
    }

    pub(crate) fn close_all(&self, reason: CloseReason) {
        for sessions in self.entries.values_with(|entry| entry.sessions.clone()) {
            for session in sessions {
                session.close(reason);
            }
        }
    }
}

/// One online user: their sessions on this node and their presence.
pub(crate) struct UserActor {
    core: Arc<Core>,
    user: UserId,
    sessions: Vec<Arc<SessionSink>>,
    status: PresenceStatus,
    status_text: String,
    /// Contacts were told this user is online (and not yet that they went offline), by
    /// this node or another.
    announced: bool,
    /// The bus knows this node has sessions of the user.
    arrived: bool,
    /// Pending "went offline" after the last session left, cancelled by a reconnect.
    offline_timer: Option<SpawnHandle>,
}

impl UserActor {
    fn new(core: Arc<Core>, user: UserId) -> Self {
        Self {
            core,
            user,
            sessions: Vec::new(),
            status: PresenceStatus::Online,
            status_text: String::new(),
            announced: false,
            arrived: false,
            offline_timer: None,
        }
    }

    fn mirror(&self, ctx: &Context<Self>) {
        let sessions = self.sessions.clone();
        let status = self.status;
        let status_text = self.status_text.clone();
        self.core
            .users
            .update(self.user, &ctx.address(), move |entry| {
                entry.sessions = sessions;
                entry.status = status;
                entry.status_text = status_text;
            });
    }

    /// Tells everyone who shares a conversation with this user (and the user's own
    /// sessions) about `events`, in order, after recording `status` for every node; then
    /// stops the actor if `then_stop`. One `ctx.wait` per announcement: actix runs queued
    /// waits last-in first-out, so everything that must happen in order goes into one.
    fn announce(
        &mut self,
        ctx: &mut Context<Self>,
        events: Vec<ServerEvent>,
        status: Option<ShownStatus>,
        then_stop: bool,
    ) {
        if events.is_empty() && status.is_none() && !then_stop {
            return;
        }
        let core = Arc::clone(&self.core);
        let user = self.user;
        let tell = async move {
            if let Some((status, text)) = status {
                core.bus.set_status(user, status, &text).await;
            }
            if !events.is_empty() {
                core.announcer.announce(user, events).await;
            }
        };
        ctx.wait(tell.into_actor(self).map(move |(), _, ctx| {
            if then_stop {
                ctx.stop();
            }
        }));
    }

    /// The last session left and the grace period passed: unless the user is still
    /// online on another node, contacts hear they went offline. Then the actor stops.
    fn depart(&mut self, ctx: &mut Context<Self>) {
        let bus = Arc::clone(&self.core.bus);
        let user = self.user;
        let departed = async move { bus.user_departed(user).await };
        ctx.wait(
            departed
                .into_actor(self)
                .map(|gone_everywhere, actor, ctx| {
                    let events = if gone_everywhere {
                        actor.went_offline(Timestamp::now()).into_iter().collect()
                    } else {
                        Vec::new()
                    };
                    actor.announce(ctx, events, None, true);
                }),
        );
    }

    fn went_online(&mut self) -> Option<ServerEvent> {
        if self.announced || self.status == PresenceStatus::Invisible {
            return None;
        }
        self.announced = true;
        Some(ServerEvent::UserOnline(PresenceChanged {
            user_id: self.user,
            last_seen: None,
        }))
    }

    fn went_offline(&mut self, at: Timestamp) -> Option<ServerEvent> {
        if !self.announced {
            return None;
        }
        self.announced = false;
        Some(ServerEvent::UserOffline(PresenceChanged {
            user_id: self.user,
            last_seen: Some(at),
        }))
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let store = Arc::clone(&self.core.store);
        let user = self.user;
        let load = async move { store.user_by_id(user).await };
        ctx.wait(load.into_actor(self).map(|row, actor, ctx| {
            if let Ok(Some(row)) = row {
                actor.status_text = row.status_text;
                actor.mirror(ctx);
            }
        }));
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.core.users.remove(self.user, &ctx.address());
    }
}

/// Attach a session (a device) to its user.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AttachSession {
    pub(crate) sink: Arc<SessionSink>,
}

impl Handler<AttachSession> for UserActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: AttachSession, ctx: &mut Self::Context) -> Self::Result {
        if let Some(timer) = self.offline_timer.take() {
            ctx.cancel_future(timer);
        }
        msg.sink.set_owner(ctx.address().recipient());
        self.sessions.push(msg.sink);
        self.mirror(ctx);
        if self.arrived {
            let online = self.went_online();
            self.announce(ctx, online.into_iter().collect(), None, false);
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        // The first session here: the attach completes once the bus routes the user's
        // events to this node, so nothing published after it is missed.
        self.arrived = true;
        let bus = Arc::clone(&self.core.bus);
        let user = self.user;
        let arrival = async move { bus.user_arrived(user).await };
        AtomicResponse::new(Box::pin(arrival.into_actor(self).map(
            |arrival, actor, ctx| {
                if let Some((status, text)) = arrival.status {
                    actor.status = status;
                    actor.status_text = text;
                    actor.mirror(ctx);
                }
                if arrival.elsewhere && actor.status != PresenceStatus::Invisible {
                    actor.announced = true;
                }
                let online = actor.went_online();
                actor.announce(ctx, online.into_iter().collect(), None, false);
            },
        )))
    }
}

/// Detach a session; the last one out starts the offline grace period.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DetachSession {
    pub(crate) id: SessionId,
}

impl Handler<DetachSession> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: DetachSession, ctx: &mut Self::Context) {
        self.sessions.retain(|session| session.id != msg.id);

        self.mirror(ctx);
        if !self.sessions.is_empty() || self.offline_timer.is_some() {
            return;
        }
        let grace = self.core.limits.presence_grace;
        self.offline_timer = Some(ctx.run_later(grace, |actor, ctx| {
            actor.offline_timer = None;

            if actor.sessions.is_empty() {
                actor.depart(ctx);
            }
        }));
    }
}

/// Change the user's presence status and, optionally, status text.
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub(crate) struct SetStatus {
    pub(crate) status: PresenceStatus,
    pub(crate) text: Option<String>,
}

impl Handler<SetStatus> for UserActor {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, msg: SetStatus, ctx: &mut Self::Context) -> Self::Result {
        if let Some(text) = msg.text.clone() {
            let store = Arc::clone(&self.core.store);
            let user = self.user;
            self.status_text = text.clone();
            actix::spawn(async move {
                let changes = ProfileChanges {
                    status_text: Some(text),
                    ..ProfileChanges::default()
                };
                if let Err(error) = store.update_profile(user, changes).await {
                    tracing::warn!(%error, %user, "could not store status text");
                }
            });
        }
        let was_visible = self.status != PresenceStatus::Invisible;
        self.status = msg.status;
        self.mirror(ctx);
        let mut events = Vec::new();
        let visible = msg.status != PresenceStatus::Invisible;
        match (was_visible, visible) {
            (true, false) => events.extend(self.went_offline(Timestamp::now())),
            (false, true) => events.extend(self.went_online()),
            _ => {}
        }
        if visible {
            events.push(ServerEvent::UserStatus(StatusChanged {
                user_id: self.user,
                status: msg.status,
                text: self.status_text.clone(),
            }));
        }
        let shown = (self.status, self.status_text.clone());
        self.announce(ctx, events, Some(shown), false);
        Ok(())
    }
}

/// Relay call signalling from this user to a peer who shares a conversation with them.
#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub(crate) struct RelayCall {
    pub(crate) to: UserId,
    pub(crate) event: ServerEvent,
}

impl Handler<RelayCall> for UserActor {
    type Result = ResponseActFuture<Self, Result<(), EngineError>>;

    fn handle(&mut self, msg: RelayCall, _ctx: &mut Self::Context) -> Self::Result {
        let store = Arc::clone(&self.core.store);
        let user = self.user;
        let lookup = async move { store.contacts_of(user).await };
        // Not a future of this actor's: an announcement waited on meanwhile reads the
        // store too, and the readers are few.
        Box::pin(
            super::detached(lookup, super::store_call_lost)
                .into_actor(self)
                .map(move |contacts, actor, _| {
                    // Only people who share a conversation may ring each other.
                    if !contacts?.contains(&msg.to) {
                        return Err(EngineError::UserNotFound(msg.to));
                    }
                    let audience = Audience::Users(Arc::from([msg.to]));
                    actor.core.bus.publish(audience, msg.event.encode());
                    Ok(())
                }),
        )
    }
}

/// `user` went offline without their node saying so (it died): their contacts hear it
/// from the node that noticed.
pub(crate) async fn tell_offline(core: &Core, user: UserId, at: Timestamp) {
    let offline = ServerEvent::UserOffline(PresenceChanged {
        user_id: user,
        last_seen: Some(at),
    });
    core.announcer.announce(user, vec![offline]).await;
}
