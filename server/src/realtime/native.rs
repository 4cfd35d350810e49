//! The native WebSocket transport: `GET /api/v1/ws`, one JSON object per text frame.

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use bytestring::ByteString;
use courier_engine::{CloseReason, Engine, Outbound, Session, UserId};

use super::dispatch::{self, Inbound, codes};
use crate::auth;
use crate::error::ApiError;
use crate::startup::SocketSettings;

/// How often the server pings: below the idle timeouts of common proxies (60 s).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(25);
/// A client silent this long (no frame, no pong) is gone: two missed pings and a margin.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// # GET /api/v1/ws
///
/// Upgrades to a WebSocket for the caller (bearer token, or `access_token` in the query
/// for browsers; the query string is not logged).
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    engine: web::Data<Engine>,
    settings: web::Data<SocketSettings>,
) -> Result<HttpResponse, actix_web::Error> {
    let caller = auth::authenticate(&req, true)?;
    let socket = NativeSocket {
        engine: engine.get_ref().clone(),
        user: caller.0,
        session: None,
        last_heard: Instant::now(),
    };
    ws::WsResponseBuilder::new(socket, &req, stream)
        .frame_size(settings.max_frame_bytes)
        .start()
        .map_err(|error| {
            ApiError::new(crate::error::ErrorCode::BadRequest, error.to_string()).into()
        })
}

/// One native WebSocket connection, attached to the engine as one session.
struct NativeSocket {
    engine: Engine,
    user: UserId,
    session: Option<Rc<Session>>,
    last_heard: Instant,
}

impl NativeSocket {
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let (reference, command) = match dispatch::decode(text) {
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
            return;
        };
        let run = async move { dispatch::run(&session, reference, command).await };
        ctx.spawn(run.into_actor(self).map(|frame, _, ctx| {
            if let Some(frame) = frame {
                ctx.text(frame);
            }
        }));
    }
}

fn close_frame(reason: CloseReason) -> ws::CloseReason {
    let code = match reason {
        CloseReason::SlowConsumer => ws::CloseCode::Other(reason.close_code()),
        CloseReason::Shutdown => ws::CloseCode::Away,
    };
    ws::CloseReason {
        code,
        description: Some(reason.as_str().to_owned()),
    }
}

impl Actor for NativeSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let engine = self.engine.clone();
        let user = self.user;
        let recipient = ctx.address().recipient();
        // No frame is handled before the session is attached.
        ctx.wait(
            async move { engine.connect(user, recipient).await }
                .into_actor(self)
                .map(|attached, socket, ctx| match attached {
                    Ok(session) => socket.session = Some(Rc::new(session)),
                    Err(error) => {
                        tracing::warn!(%error, "could not attach a session");
                        ctx.close(Some(ws::CloseReason {
                            code: ws::CloseCode::Again,
                            description: Some("unavailable".into()),
                        }));
                        ctx.stop();
                    }
                }),
        );
        ctx.run_interval(HEARTBEAT_INTERVAL, |socket, ctx| {
            if socket.last_heard.elapsed() > CLIENT_TIMEOUT {
                tracing::debug!(user = %socket.user, "client timed out");
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }
}

impl Handler<Outbound> for NativeSocket {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Event(frame) => {
                // The engine wrote valid UTF-8 JSON; the check is linear and cheap.
                match ByteString::try_from(frame.json().clone()) {
                    Ok(text) => ctx.text(text),
                    Err(_) => tracing::error!(event = frame.name(), "event is not UTF-8"),
                }
                if let Some(session) = &self.session {
                    session.queue().written();
                }
            }
            Outbound::Close(reason) => {
                ctx.close(Some(close_frame(reason)));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for NativeSocket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                ctx.text(dispatch::error_frame(
                    &None,
                    codes::UNSUPPORTED_FRAME,
                    "only text frames with JSON are accepted",
                    None,
                ));
            }
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
            Err(error) => {
                tracing::debug!(%error, "websocket protocol error");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: None,
                }));
                ctx.stop();
            }
        }
    }
}
