//! The native WebSocket transport: `GET /api/v1/ws`, one JSON object per text frame.

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use courier_engine::{Engine, Outbound, OutboundStream, Session, UserId};

use std::sync::Arc;

use governor::DefaultDirectRateLimiter;

use super::DecodedFrames;
use super::dispatch::{self, Dispatcher, Inbound, codes};
use super::heartbeat::{Beat, HeartbeatKey};
use crate::auth;
use crate::error::ApiError;
use crate::startup::SocketSettings;

/// How often the server pings: below the idle timeouts of common proxies (60 s).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(25);
/// Close code when the access token the socket was opened with expires.
pub const TOKEN_EXPIRED_CLOSE_CODE: u16 = 4001;
/// A client silent this long (no frame, no pong) is gone: two missed pings and a margin.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "realtime",
    params(("access_token" = Option<String>, Query, description = "For browsers, instead of the Authorization header")),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol of docs/protocol.md"),
        (status = 401, description = "Missing, bad or expired access token", body = crate::error::ErrorBody),
        (status = 403, description = "A browser page of an origin that is neither this server's nor in `cors_allowed_origins`", body = crate::error::ErrorBody)
    )
)]
/// # GET /api/v1/ws
///
/// Upgrades to a WebSocket for the caller (bearer token, or `access_token` in the query
/// for browsers; the query string is not logged).
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    engine: web::Data<Engine>,
    settings: web::Data<SocketSettings>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, actix_web::Error> {
    super::check_origin(&req, &settings.allowed_origins)?;
    let (caller, expires_at) = auth::authenticate(&req, true)?;
    let socket = |decoded| NativeSocket {
        user: caller.0,
        session: None,
        last_heard: Instant::now(),
        token_expires_at: expires_at,
        heartbeat: None,
        frames: dispatcher.limits.frame_limiter(),
        decoded,
        dispatcher: dispatcher.into_inner(),
    };
    let (socket, response) = super::start_socket(socket, &req, stream, settings.max_frame_bytes)?;
    // Attached before the 101 goes out: an event published once the client sees the
    // socket open is never missed.
    let (session, outbound) = engine.connect(caller.0).await.map_err(ApiError::from)?;
    socket.do_send(Attached { session, outbound });
    Ok(response)
}

/// Hands the socket its engine session and what the engine has for it.
#[derive(Message)]
#[rtype(result = "()")]
struct Attached {
    session: Session,
    outbound: OutboundStream,
}

impl Handler<Attached> for NativeSocket {
    type Result = ();

    fn handle(&mut self, msg: Attached, ctx: &mut Self::Context) {
        self.session = Some(Rc::new(msg.session));
        ctx.add_stream(msg.outbound);
    }
}

/// One native WebSocket connection, attached to the engine as one session.
struct NativeSocket {
    user: UserId,
    session: Option<Rc<Session>>,
    last_heard: Instant,
    /// When the access token it was opened with expires (seconds since the epoch).
    token_expires_at: i64,
    /// Its row in the node's heartbeat table, while it runs.
    heartbeat: Option<HeartbeatKey>,
    /// This socket's frame rate limit.
    frames: DefaultDirectRateLimiter,
    /// Frames decoded, reported to the socket's reader.
    decoded: DecodedFrames,
    dispatcher: Arc<Dispatcher>,
}

impl NativeSocket {
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        // Decoded before the limit is checked, so a refusal carries the frame's ref.
        let inbound = dispatch::decode(text);
        let reference = match &inbound {
            Inbound::Command { reference, .. } | Inbound::Invalid { reference, .. } => reference,
        };
        if let Some(refused) = self.dispatcher.check_frame(&self.frames, reference) {
            ctx.text(refused);
            return;
        }
        let (reference, command) = match inbound {
            Inbound::Command { reference, command } => (reference, command),
            Inbound::Invalid {
                reference,
                code,
                message,
            } => {
                ctx.text(dispatch::error_frame(&reference, code, &message, None));
                return;
            }
        };
        let Some(session) = self.session.clone() else {
            let message = "the session is not attached yet";
            ctx.text(dispatch::error_frame(
                &reference,
                "unavailable",
                message,
                None,
            ));
            return;
        };
        let dispatcher = Arc::clone(&self.dispatcher);
        // Run apart from the actor: a socket that closes must not cancel a command in
        // the middle of its store call (the answer is just not written then).
        let run = actix::spawn(async move { dispatcher.run(&session, reference, command).await });
        let answer = async move { run.await.ok().flatten() };
        ctx.spawn(answer.into_actor(self).map(|frame, _, ctx| {
            if let Some(frame) = frame {
                ctx.text(frame);
            }
        }));
    }
}

impl Actor for NativeSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let metrics = &self.dispatcher.metrics;
        metrics.connections.inc();
        metrics.sessions.with_label_values(&["native"]).inc();
        let heartbeats = &self.dispatcher.heartbeats;
        let key = heartbeats.join(ctx.address().recipient(), HEARTBEAT_INTERVAL);
        // A socket lives no longer than its access token: the client reconnects with a
        // refreshed one, so a revoked account loses its sockets within one token lifetime.
        heartbeats.expire_at(&key, self.token_expires_at);
        self.heartbeat = Some(key);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(key) = self.heartbeat.take() {
            self.dispatcher.heartbeats.leave(key);
        }
        let metrics = &self.dispatcher.metrics;
        metrics.connections.dec();
        metrics.sessions.with_label_values(&["native"]).dec();
    }
}

impl StreamHandler<Outbound> for NativeSocket {
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Events(pending) => {
                let written = pending.drain(|frame| ctx.text(frame.text().clone()));
                pending.queue().written(written);
                let delivered = written as u64;
                self.dispatcher.metrics.events_delivered.inc_by(delivered);
            }
            Outbound::Close(reason) => {
                super::close_with(ctx, reason.close_code(), reason.as_str());
            }
        }
    }
}

impl Handler<Beat> for NativeSocket {
    type Result = ();

    fn handle(&mut self, beat: Beat, ctx: &mut Self::Context) {
        match beat {
            Beat::TokenExpired => {
                super::close_with(ctx, TOKEN_EXPIRED_CLOSE_CODE, "token_expired");
            }
            Beat::Ping if self.last_heard.elapsed() > CLIENT_TIMEOUT => {
                tracing::debug!(user = %self.user, "client timed out");
                ctx.stop();
            }
            Beat::Ping => ctx.ping(b""),
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for NativeSocket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let refuse_binary = |ctx: &mut Self::Context| {
            ctx.text(dispatch::error_frame(
                &None,
                codes::UNSUPPORTED_FRAME,
                "only text frames with JSON are accepted",
                None,
            ));
        };
        if let Some(text) = super::read_frame(item, &self.decoded, ctx, refuse_binary) {
            self.on_text(&text, ctx);
        }
    }
}
