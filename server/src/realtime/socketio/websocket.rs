//! Socket.IO over a WebSocket: one Engine.IO packet per text frame. Either the whole
//! connection (`transports: ['websocket']`) or the upgrade of a long-polling one.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use bytestring::ByteString;
use courier_engine::{Engine, Outbound};

use super::connection::{self, Connection, SocketIoActor};
use super::polling::{FromClient, PollingIo, Probed, SocketGone, Upgraded};
use crate::auth::Tokens;
use crate::realtime::dispatch::Dispatcher;
use crate::realtime::heartbeat::Beat;
use crate::realtime::{DecodedFrames, close_with as close, read_frame, start_socket};
use crate::startup::SocketSettings;

/// A new connection whose only transport is this WebSocket.
pub(super) fn connect(
    req: &HttpRequest,
    stream: web::Payload,
    settings: &SocketSettings,
    dispatcher: Arc<Dispatcher>,
    engine: Engine,
    tokens: Arc<Tokens>,
) -> Result<HttpResponse, actix_web::Error> {
    let socket = |decoded| WebSocketIo {
        connection: Connection::new(engine, tokens, dispatcher, settings.max_frame_bytes),
        decoded,
        last_heard: Instant::now(),
    };
    let (_, response) = start_socket(socket, req, stream, settings.max_frame_bytes)?;
    Ok(response)
}

/// The WebSocket that upgrades an existing long-polling connection.
pub(super) fn upgrade(
    req: &HttpRequest,
    stream: web::Payload,
    settings: &SocketSettings,
    polling: Addr<PollingIo>,
) -> Result<HttpResponse, actix_web::Error> {
    let socket = |decoded| UpgradingSocket { polling, decoded };
    let (_, response) = start_socket(socket, req, stream, settings.max_frame_bytes)?;
    Ok(response)
}

/// A Socket.IO connection carried by a WebSocket from the start.
struct WebSocketIo {
    connection: Connection,
    decoded: DecodedFrames,
    last_heard: Instant,
}

impl SocketIoActor for WebSocketIo {
    fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    fn write(&mut self, ctx: &mut Self::Context, packet: String) {
        ctx.text(packet);
    }

    fn write_event(&mut self, ctx: &mut Self::Context, packet: ByteString) {
        ctx.text(packet);
        self.connection.events_written(1);
    }

    fn end(&mut self, ctx: &mut Self::Context, code: u16, reason: &str) {
        close(ctx, code, reason);
    }
}

impl Actor for WebSocketIo {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let metrics = &self.connection.dispatcher.metrics;
        metrics.connections.inc();
        metrics.sessions.with_label_values(&["socketio"]).inc();
        let open = self.connection.open_packet(&[]);
        ctx.text(open);
        connection::join_heartbeat(self, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.connection.leave_heartbeat();
        let metrics = &self.connection.dispatcher.metrics;
        metrics.connections.dec();
        metrics.sessions.with_label_values(&["socketio"]).dec();
    }
}

impl Handler<Beat> for WebSocketIo {
    type Result = ();

    fn handle(&mut self, beat: Beat, ctx: &mut Self::Context) {
        let last_heard = self.last_heard;
        connection::on_beat(self, ctx, beat, last_heard);
    }
}

impl StreamHandler<Outbound> for WebSocketIo {
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        connection::on_outbound(self, ctx, msg);
    }
}

fn refuse_binary<A>(ctx: &mut ws::WebsocketContext<A>)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    let body = serde_json::json!({
        "error": crate::realtime::dispatch::codes::UNSUPPORTED_FRAME,
        "message": "binary attachments are not supported: send JSON",
    });
    ctx.text(super::packet::event("error", &body.to_string()));
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WebSocketIo {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        if let Some(text) = read_frame(item, &self.decoded, ctx, refuse_binary) {
            connection::on_engine_packet(self, ctx, &text);
        }
    }
}

/// The WebSocket half of an upgraded long-polling connection: it probes, then carries
/// the packets of the [`PollingIo`] that owns the connection.
pub(super) struct UpgradingSocket {
    polling: Addr<PollingIo>,
    decoded: DecodedFrames,
}

impl Actor for UpgradingSocket {
    type Context = ws::WebsocketContext<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.polling.do_send(SocketGone);
    }
}

/// A packet for the client, from the polling connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ToClient(pub(super) ByteString);

impl Handler<ToClient> for UpgradingSocket {
    type Result = ();

    fn handle(&mut self, msg: ToClient, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}

/// Close the socket.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct EndSocket {
    pub(super) code: u16,
    pub(super) reason: String,
}

impl Handler<EndSocket> for UpgradingSocket {
    type Result = ();

    fn handle(&mut self, msg: EndSocket, ctx: &mut Self::Context) {
        close(ctx, msg.code, &msg.reason);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for UpgradingSocket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let Some(text) = read_frame(item, &self.decoded, ctx, refuse_binary) else {
            return;
        };
        match &*text {
            "2probe" => {
                ctx.text("3probe");
                self.polling.do_send(Probed);
            }
            "5" => self.polling.do_send(Upgraded {
                socket: ctx.address(),
            }),
            _ => self.polling.do_send(FromClient(text)),
        }
    }
}
