//! What a Socket.IO connection does whatever carries its packets: the CONNECT handshake
//! with the token, events through the shared dispatcher, acks, and pushed events. The
//! WebSocket actor and the long-polling actor both implement [`SocketIoActor`].

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytestring::ByteString;
use courier_engine::protocol::{EventFrame, Reply};
use courier_engine::{Engine, EngineError, Outbound, Session};
use governor::DefaultDirectRateLimiter;
use serde_json::{Value, json};

use super::packet::{self, EnginePacket, PacketError, SocketPacket};
use crate::auth::Tokens;
use crate::realtime::dispatch::{self, Dispatcher, Refused, codes};
use crate::realtime::heartbeat::{Beat, HeartbeatKey};
use crate::realtime::native::TOKEN_EXPIRED_CLOSE_CODE;

/// Engine.IO `pingInterval`: the server pings this often.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(25);
/// Engine.IO `pingTimeout`: a client that has not answered a ping within this is gone.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The state of one Socket.IO connection.
pub(super) struct Connection {
    pub(super) sid: String,
    engine: Engine,
    tokens: Arc<Tokens>,
    /// Set once the client's CONNECT carried a valid token.
    pub(super) session: Option<Rc<Session>>,
    token_expires_at: i64,
    frames: DefaultDirectRateLimiter,
    pub(super) dispatcher: Arc<Dispatcher>,
    max_payload: usize,
    /// Its row in the node's heartbeat table, while it runs.
    heartbeat: Option<HeartbeatKey>,
}

impl Connection {
    pub(super) fn new(
        engine: Engine,
        tokens: Arc<Tokens>,
        dispatcher: Arc<Dispatcher>,
        max_payload: usize,
    ) -> Self {
        Self {
            sid: crate::auth::tokens::random_token(),
            engine,
            tokens,
            session: None,
            token_expires_at: 0,
            frames: dispatcher.limits.frame_limiter(),
            dispatcher,
            max_payload,
            heartbeat: None,
        }
    }

    /// The connection stopped: no more pings.
    pub(super) fn leave_heartbeat(&mut self) {
        if let Some(key) = self.heartbeat.take() {
            self.dispatcher.heartbeats.leave(key);
        }
    }

    /// The Engine.IO open packet.
    pub(super) fn open_packet(&self, upgrades: &[&str]) -> String {
        let open = json!({
            "sid": self.sid,
            "upgrades": upgrades,
            "pingInterval": PING_INTERVAL.as_millis() as u64,
            "pingTimeout": PING_TIMEOUT.as_millis() as u64,
            "maxPayload": self.max_payload,
        });
        EnginePacket::Open(open.to_string()).encode()
    }
}

/// A transport carrying a [`Connection`].
pub(super) trait SocketIoActor: Actor + StreamHandler<Outbound> {
    /// The connection state.
    fn connection(&mut self) -> &mut Connection;
    /// Sends one Engine.IO packet to the client.
    fn write(&mut self, ctx: &mut Self::Context, packet: String);
    /// Sends one pushed event; the transport reports it to the session's outbound queue
    /// ([`courier_engine::OutboundQueue::written`]) once it is on its way to the client.
    fn write_event(&mut self, ctx: &mut Self::Context, packet: ByteString);
    /// Ends the connection with a WebSocket close code (or its polling equivalent).
    fn end(&mut self, ctx: &mut Self::Context, code: u16, reason: &str);
}

/// The reply to a failed event: in its ack if the client waits for one, otherwise as an
/// `error` event; the same payload as the native `error` frame.
fn refuse<A: SocketIoActor>(
    actor: &mut A,
    ctx: &mut A::Context,
    ack: Option<u64>,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) {
    let mut body = json!({ "error": code, "message": message });
    if let Some(seconds) = retry_after {
        body["retryAfter"] = json!(seconds);
    }
    let text = match ack {
        Some(id) => packet::ack(id, &body),
        None => packet::event("error", &body.to_string()),
    };
    actor.write(ctx, text);
}

/// Handles one Engine.IO packet from the client (ping, close and messages).
pub(super) fn on_engine_packet<A>(actor: &mut A, ctx: &mut A::Context, text: &str)
where
    A: SocketIoActor,
    A::Context: AsyncContext<A>,
{
    match EnginePacket::parse(text) {
        Some(EnginePacket::Message(payload)) => on_message(actor, ctx, &payload),
        Some(EnginePacket::Ping(data)) => actor.write(ctx, EnginePacket::Pong(data).encode()),
        Some(EnginePacket::Close) => ctx.stop(),
        Some(_) => {}
        None => refuse(
            actor,
            ctx,
            None,
            codes::BAD_REQUEST,
            "not an Engine.IO packet",
            None,
        ),
    }
}

fn on_message<A>(actor: &mut A, ctx: &mut A::Context, payload: &str)
where
    A: SocketIoActor,
    A::Context: AsyncContext<A>,
{
    let packet = match SocketPacket::parse(payload) {
        Ok(packet) => packet,
        Err(PacketError::Namespace(namespace)) => {
            let message = format!("namespace {namespace} is not served; use the main namespace");
            let text =
                EnginePacket::Message(format!("4{namespace},{}", json!({ "message": message })))
                    .encode();
            actor.write(ctx, text);
            return;
        }
        Err(PacketError::Malformed(reason)) => {
            refuse(actor, ctx, None, codes::BAD_REQUEST, reason, None);
            return;
        }
    };
    match packet {
        SocketPacket::Connect(auth) => on_connect(actor, ctx, auth),
        SocketPacket::Disconnect => ctx.stop(),
        SocketPacket::Ack { .. } => {}
        SocketPacket::Binary => {
            let message = "binary attachments are not supported: send JSON";
            refuse(actor, ctx, None, codes::UNSUPPORTED_FRAME, message, None);
        }
        SocketPacket::Event { name, args, ack } => on_event(actor, ctx, name, args, ack),
    }
}

fn on_connect<A>(actor: &mut A, ctx: &mut A::Context, auth: Option<Value>)
where
    A: SocketIoActor,
    A::Context: AsyncContext<A>,
{
    if actor.connection().session.is_some() {
        return;
    }
    let token = auth
        .as_ref()
        .and_then(|auth| auth.get("token"))
        .and_then(Value::as_str);
    let Some(token) = token else {
        actor.write(
            ctx,
            packet::connect_error("missing auth token: connect with auth: { token }"),
        );
        return;
    };
    let verified = actor.connection().tokens.verify_access(token);
    let Ok((user, expires_at)) = verified else {
        actor.write(
            ctx,
            packet::connect_error("invalid or expired access token"),
        );
        return;
    };
    actor.connection().token_expires_at = expires_at;
    let engine = actor.connection().engine.clone();
    // Nothing else is read until the session is attached: events published once the
    // client hears "connected" are never missed.
    ctx.wait(
        async move { engine.connect(user).await }
            .into_actor(actor)
            .map(
                |attached, actor: &mut A, ctx: &mut A::Context| match attached {
                    Ok((session, outbound)) => {
                        ctx.add_stream(outbound);
                        let connection = actor.connection();
                        connection.session = Some(Rc::new(session));
                        let connected = packet::connect_ok(&connection.sid);
                        actor.write(ctx, connected);
                        expire_with_token(actor);
                    }
                    Err(error) => {
                        let (_, message, _) = dispatch::describe(&error);
                        actor.write(ctx, packet::connect_error(&message));
                    }
                },
            ),
    );
}

/// A connection lives no longer than its access token; the client reconnects with a new one.
fn expire_with_token<A: SocketIoActor>(actor: &mut A) {
    let connection = actor.connection();
    if let Some(key) = &connection.heartbeat {
        let expires_at = connection.token_expires_at;
        connection.dispatcher.heartbeats.expire_at(key, expires_at);
    }
}

/// Puts a starting connection in the node's heartbeat table: it is pinged every
/// [`PING_INTERVAL`] from now on.
pub(super) fn join_heartbeat<A>(actor: &mut A, ctx: &mut A::Context)
where
    A: SocketIoActor + Handler<Beat>,
    A::Context: AsyncContext<A> + ToEnvelope<A, Beat>,
{
    let connection = actor.connection();
    let key = connection
        .dispatcher
        .heartbeats
        .join(ctx.address().recipient(), PING_INTERVAL);
    connection.heartbeat = Some(key);
}

/// A connection's ping or token expiry is due. `last_heard`: when the client was last
/// heard from (a client that has not answered a ping in [`PING_TIMEOUT`] is gone).
pub(super) fn on_beat<A>(actor: &mut A, ctx: &mut A::Context, beat: Beat, last_heard: Instant)
where
    A: SocketIoActor,
    A::Context: AsyncContext<A>,
{
    match beat {
        Beat::TokenExpired => {
            actor.write(ctx, EnginePacket::Message("1".into()).encode());
            actor.end(ctx, TOKEN_EXPIRED_CLOSE_CODE, "token_expired");
        }
        Beat::Ping if last_heard.elapsed() > PING_INTERVAL + PING_TIMEOUT => ctx.stop(),
        Beat::Ping => actor.write(ctx, "2".into()),
    }
}

fn on_event<A>(
    actor: &mut A,
    ctx: &mut A::Context,
    name: String,
    mut args: Vec<Value>,
    ack: Option<u64>,
) where
    A: SocketIoActor,
    A::Context: AsyncContext<A>,
{
    let connection = actor.connection();
    if let Err(error) = connection.dispatcher.allow_frame(&connection.frames) {
        let (code, message, retry_after) = dispatch::describe(&error);
        refuse(actor, ctx, ack, code, &message, retry_after);
        return;
    }
    let Some(session) = connection.session.clone() else {
        refuse(
            actor,
            ctx,
            ack,
            "unauthorized",
            "connect with auth: { token } first",
            None,
        );
        return;
    };
    let data = if args.is_empty() {
        Value::Null
    } else {
        args.swap_remove(0)
    };
    let command = match dispatch::decode_command(&name, data) {
        Ok(command) => command,
        Err(Refused { code, message }) => {
            refuse(actor, ctx, ack, code, &message, None);
            return;
        }
    };
    let dispatcher = Arc::clone(&connection.dispatcher);
    // Run apart from the actor: a connection that closes must not cancel a command in
    // the middle of its store call (the answer is just not written then).
    let run = actix::spawn(async move { dispatcher.execute(&session, command).await });
    let answer = async move {
        run.await
            .unwrap_or_else(|error| Err(EngineError::Internal(error.to_string())))
    };
    ctx.spawn(answer.into_actor(actor).map(
        move |result: Result<Reply, EngineError>, actor: &mut A, ctx: &mut A::Context| match result
        {
            Ok(reply) => {
                if let Some(id) = ack {
                    let body = match reply {
                        Reply::None => json!({}),
                        reply => serde_json::to_value(&reply).unwrap_or_else(|_| json!({})),
                    };
                    actor.write(ctx, packet::ack(id, &body));
                }
            }
            Err(error) => {
                let (code, message, retry_after) = dispatch::describe(&error);
                refuse(actor, ctx, ack, code, &message, retry_after);
            }
        },
    ));
}

/// Handles what the engine pushes: an event becomes `42["name", data]`.
pub(super) fn on_outbound<A: SocketIoActor>(actor: &mut A, ctx: &mut A::Context, msg: Outbound) {
    match msg {
        Outbound::Events(pending) => {
            let written = pending.drain(|frame| actor.write_event(ctx, event_packet(&frame)));
            let delivered = written as u64;
            actor
                .connection()
                .dispatcher
                .metrics
                .events_delivered
                .inc_by(delivered);
        }
        Outbound::Close(reason) => actor.end(ctx, reason.close_code(), reason.as_str()),
    }
}

impl Connection {
    /// Reports `count` pushed events as written to the session's outbound queue.
    pub(super) fn events_written(&self, count: usize) {
        if let Some(session) = &self.session {
            session.queue().written(count);
        }
    }
}

/// The event's Socket.IO packet, framed once per event and shared by its recipients.
fn event_packet(frame: &EventFrame) -> ByteString {
    frame.alternate(packet::event).clone()
}
