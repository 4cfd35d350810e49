//! The Socket.IO connection over a WebSocket: one Engine.IO packet per text frame.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use courier_engine::protocol::Reply;
use courier_engine::{CloseReason, Engine, EngineError, Outbound, Session};
use governor::DefaultDirectRateLimiter;
use serde_json::{Value, json};

use super::packet::{self, EnginePacket, PacketError, SocketPacket};
use crate::auth::Tokens;
use crate::error::{ApiError, ErrorCode};
use crate::realtime::dispatch::{self, Dispatcher, Refused, codes};
use crate::startup::SocketSettings;

/// Engine.IO `pingInterval`: the server pings this often.
const PING_INTERVAL: Duration = Duration::from_secs(25);
/// Engine.IO `pingTimeout`: a client that has not answered a ping within this is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) fn connect(
    req: HttpRequest,
    stream: web::Payload,
    settings: &SocketSettings,
    dispatcher: Arc<Dispatcher>,
    engine: Engine,
    tokens: Arc<Tokens>,
) -> Result<HttpResponse, actix_web::Error> {
    let socket = SocketIo {
        sid: crate::auth::tokens::random_token(),
        engine,
        tokens,
        session: None,
        token_expires_at: 0,
        last_heard: Instant::now(),
        frames: dispatcher.limits.frame_limiter(),
        dispatcher,
        max_payload: settings.max_frame_bytes,
    };
    ws::WsResponseBuilder::new(socket, &req, stream)
        .frame_size(settings.max_frame_bytes)
        .start()
        .map_err(|error| ApiError::new(ErrorCode::BadRequest, error.to_string()).into())
}

/// One Socket.IO client: an Engine.IO session carrying the main namespace.
struct SocketIo {
    sid: String,
    engine: Engine,
    tokens: Arc<Tokens>,
    /// Set once the client's CONNECT carried a valid token.
    session: Option<Rc<Session>>,
    token_expires_at: i64,
    last_heard: Instant,
    frames: DefaultDirectRateLimiter,
    dispatcher: Arc<Dispatcher>,
    max_payload: usize,
}

impl SocketIo {
    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, text: String) {
        ctx.text(text);
    }

    /// The reply to a failed event: in its ack if the client waits for one, otherwise as
    /// an `error` event, the same payload as the native `error` frame.
    fn refuse(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        ack: Option<u64>,
        code: &str,
        message: &str,
        retry_after: Option<u64>,
    ) {
        let mut body = json!({ "error": code, "message": message });
        if let Some(seconds) = retry_after {
            body["retryAfter"] = json!(seconds);
        }
        match ack {
            Some(id) => self.send(ctx, packet::ack(id, &body)),
            None => {
                let text = serde_json::to_vec(&body).unwrap_or_default();
                let frame = packet::event("error", &text);
                self.send(ctx, String::from_utf8(frame).unwrap_or_default());
            }
        }
    }

    fn on_message(&mut self, payload: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let packet = match SocketPacket::parse(payload) {
            Ok(packet) => packet,
            Err(PacketError::Namespace(namespace)) => {
                let message =
                    format!("namespace {namespace} is not served; use the main namespace");
                let text = EnginePacket::Message(format!(
                    "4{namespace},{}",
                    json!({ "message": message })
                ))
                .encode();
                self.send(ctx, text);
                return;
            }
            Err(PacketError::Malformed(reason)) => {
                self.refuse(ctx, None, codes::BAD_REQUEST, reason, None);
                return;
            }
        };
        match packet {
            SocketPacket::Connect(auth) => self.on_connect(auth, ctx),
            SocketPacket::Disconnect => ctx.stop(),
            SocketPacket::Ack { .. } => {}
            SocketPacket::Binary => {
                let message = "binary attachments are not supported: send JSON";
                self.refuse(ctx, None, codes::UNSUPPORTED_FRAME, message, None);
            }
            SocketPacket::Event { name, args, ack } => self.on_event(name, args, ack, ctx),
        }
    }

    fn on_connect(&mut self, auth: Option<Value>, ctx: &mut ws::WebsocketContext<Self>) {
        if self.session.is_some() {
            return;
        }
        let token = auth
            .as_ref()
            .and_then(|auth| auth.get("token"))
            .and_then(Value::as_str);
        let Some(token) = token else {
            self.send(
                ctx,
                packet::connect_error("missing auth token: connect with auth: { token }"),
            );
            return;
        };
        let (user, expires_at) = match self.tokens.verify_access(token) {
            Ok(verified) => verified,
            Err(_) => {
                self.send(
                    ctx,
                    packet::connect_error("invalid or expired access token"),
                );
                return;
            }
        };
        self.token_expires_at = expires_at;
        let engine = self.engine.clone();
        let recipient = ctx.address().recipient();
        // Nothing else is read until the session is attached: events published once the
        // client hears "connected" are never missed.
        ctx.wait(
            async move { engine.connect(user, recipient).await }
                .into_actor(self)
                .map(|attached, socket, ctx| match attached {
                    Ok(session) => {
                        socket.session = Some(Rc::new(session));
                        let connected = packet::connect_ok(&socket.sid);
                        socket.send(ctx, connected);
                        socket.expire_with_token(ctx);
                    }
                    Err(error) => {
                        let (_, message, _) = dispatch::describe(&error);
                        socket.send(ctx, packet::connect_error(&message));
                    }
                }),
        );
    }

    fn expire_with_token(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let now = courier_engine::Timestamp::now().as_millis() / 1000;
        let remaining = u64::try_from(self.token_expires_at - now).unwrap_or(0);
        ctx.run_later(Duration::from_secs(remaining), |socket, ctx| {
            socket.send(ctx, EnginePacket::Message("1".into()).encode());
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Other(crate::realtime::native::TOKEN_EXPIRED_CLOSE_CODE),
                description: Some("token_expired".into()),
            }));
            ctx.stop();
        });
    }

    fn on_event(
        &mut self,
        name: String,
        mut args: Vec<Value>,
        ack: Option<u64>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if let Err(error) = self.dispatcher.allow_frame(&self.frames) {
            let (code, message, retry_after) = dispatch::describe(&error);
            self.refuse(ctx, ack, code, &message, retry_after);
            return;
        }
        let Some(session) = self.session.clone() else {
            self.refuse(
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
                self.refuse(ctx, ack, code, &message, None);
                return;
            }
        };
        let dispatcher = Arc::clone(&self.dispatcher);
        let run = async move { dispatcher.execute(&session, command).await };
        ctx.spawn(run.into_actor(self).map(
            move |result: Result<Reply, EngineError>, socket, ctx| match result {
                Ok(reply) => {
                    if let Some(id) = ack {
                        let body = match reply {
                            Reply::None => json!({}),
                            reply => serde_json::to_value(&reply).unwrap_or_else(|_| json!({})),
                        };
                        socket.send(ctx, packet::ack(id, &body));
                    }
                }
                Err(error) => {
                    let (code, message, retry_after) = dispatch::describe(&error);
                    socket.refuse(ctx, ack, code, &message, retry_after);
                }
            },
        ));
    }
}

impl Actor for SocketIo {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let metrics = &self.dispatcher.metrics;
        metrics.connections.inc();
        metrics.sessions.with_label_values(&["socketio"]).inc();
        let open = json!({
            "sid": self.sid,
            "upgrades": [],
            "pingInterval": PING_INTERVAL.as_millis() as u64,
            "pingTimeout": PING_TIMEOUT.as_millis() as u64,
            "maxPayload": self.max_payload,
        });
        self.send(ctx, EnginePacket::Open(open.to_string()).encode());
        ctx.run_interval(PING_INTERVAL, |socket, ctx| {
            if socket.last_heard.elapsed() > PING_INTERVAL + PING_TIMEOUT {
                ctx.stop();
                return;
            }
            socket.send(ctx, EnginePacket::Ping(String::new()).encode());
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let metrics = &self.dispatcher.metrics;
        metrics.connections.dec();
        metrics.sessions.with_label_values(&["socketio"]).dec();
    }
}

impl Handler<Outbound> for SocketIo {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Event(frame) => {
                let text = String::from_utf8(packet::event(frame.name(), frame.data()));
                match text {
                    Ok(text) => self.send(ctx, text),
                    Err(_) => tracing::error!(event = frame.name(), "event is not UTF-8"),
                }
                if let Some(session) = &self.session {
                    session.queue().written();
                }
                self.dispatcher.metrics.events_delivered.inc();
            }
            Outbound::Close(reason) => {
                let code = match reason {
                    CloseReason::SlowConsumer => ws::CloseCode::Other(reason.close_code()),
                    CloseReason::Shutdown => ws::CloseCode::Away,
                };
                ctx.close(Some(ws::CloseReason {
                    code,
                    description: Some(reason.as_str().to_owned()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SocketIo {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => match EnginePacket::parse(&text) {
                Some(EnginePacket::Message(payload)) => self.on_message(&payload, ctx),
                Some(EnginePacket::Ping(data)) => self.send(ctx, EnginePacket::Pong(data).encode()),
                Some(EnginePacket::Close) => ctx.stop(),
                Some(_) => {}
                None => self.refuse(
                    ctx,
                    None,
                    codes::BAD_REQUEST,
                    "not an Engine.IO packet",
                    None,
                ),
            },
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                let message = "binary attachments are not supported: send JSON";
                self.refuse(ctx, None, codes::UNSUPPORTED_FRAME, message, None);
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some("frame too large".into()),
                }));
                ctx.stop();
            }
            Err(_) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: None,
                }));
                ctx.stop();
            }
        }
    }
}
