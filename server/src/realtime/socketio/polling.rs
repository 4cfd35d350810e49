//! Engine.IO HTTP long-polling: the official client's first transport. GET waits for
//! packets, POST sends them; packets are separated by `\x1e`. Sessions are found by
//! `sid` on this node (sticky routing is the load balancer's part).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use courier_engine::Outbound;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::connection::{self, Connection, SocketIoActor};
use super::websocket::{EndSocket, ToClient, UpgradingSocket};
use crate::realtime::heartbeat::Beat;

/// The record separator between packets of one polling payload.
pub(super) const SEPARATOR: char = '\u{1e}';

/// Replies (acks, errors, pongs) a polling client may leave unfetched before its
/// connection is closed as a slow consumer. Pushed events are bounded by the session's
/// outbound queue; replies are not, so a client that posts commands and never polls would
/// otherwise make the server hold every answer. Four full `sync` pages of 16 KiB messages
/// fit, which no client that polls comes near.
const MAX_UNFETCHED_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// Long-polling connections on this node, by sid.
#[derive(Default)]
pub struct PollingRegistry {
    sessions: Mutex<HashMap<String, Addr<PollingIo>>>,
}

impl PollingRegistry {
    pub(super) fn get(&self, sid: &str) -> Option<Addr<PollingIo>> {
        self.sessions.lock().get(sid).cloned()
    }

    fn insert(&self, sid: String, addr: Addr<PollingIo>) {
        self.sessions.lock().insert(sid, addr);
    }

    fn remove(&self, sid: &str) {
        self.sessions.lock().remove(sid);
    }
}

/// An outgoing packet, and whether it is a pushed event (counted on the outbound queue
/// when the client fetches it).
struct Outgoing {
    packet: ByteString,
    event: bool,
}

/// A Socket.IO connection carried by long-polling, and after an upgrade by a WebSocket.
pub struct PollingIo {
    connection: Connection,
    registry: Arc<PollingRegistry>,
    outbox: Vec<Outgoing>,
    /// Bytes of the replies in `outbox` (see [`MAX_UNFETCHED_REPLY_BYTES`]).
    unfetched_reply_bytes: usize,
    waiting: Option<oneshot::Sender<String>>,
    upgraded: Option<Addr<UpgradingSocket>>,
    /// When the client last fetched (or sent over the upgraded socket): a client that only
    /// posts is not listening, and is dropped like one that is gone.
    last_heard: Instant,
}

impl PollingIo {
    /// Starts a connection and registers it; answers the open packet for the handshake.
    pub(super) fn open(connection: Connection, registry: Arc<PollingRegistry>) -> String {
        let open = connection.open_packet(&["websocket"]);
        let sid = connection.sid.clone();
        let actor = Self {
            connection,
            registry: Arc::clone(&registry),
            outbox: Vec::new(),
            unfetched_reply_bytes: 0,
            waiting: None,
            upgraded: None,
            last_heard: Instant::now(),
        };
        registry.insert(sid, actor.start());
        open
    }

    /// Answers the pending poll with everything queued.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        let outgoing = std::mem::take(&mut self.outbox);
        self.unfetched_reply_bytes = 0;
        let events = outgoing.iter().filter(|out| out.event).count();
        let mut payload = String::new();
        for (index, out) in outgoing.into_iter().enumerate() {
            if index > 0 {
                payload.push(SEPARATOR);
            }
            payload.push_str(&out.packet);
        }
        if waiting.send(payload).is_ok() {
            self.connection.events_written(events);
        }
    }

    fn queue(&mut self, ctx: &mut Context<Self>, packet: ByteString, event: bool) {
        match &self.upgraded {
            Some(socket) => {
                socket.do_send(ToClient(packet));
                if event {
                    self.connection.events_written(1);
                }
            }
            None => {
                if !event {
                    self.unfetched_reply_bytes += packet.len();
                }
                self.outbox.push(Outgoing { packet, event });
                self.flush();
                if self.unfetched_reply_bytes > MAX_UNFETCHED_REPLY_BYTES {
                    tracing::debug!(sid = %self.connection.sid, "polling client does not fetch");
                    let reason = courier_engine::CloseReason::SlowConsumer;
                    self.outbox.clear();
                    self.end(ctx, reason.close_code(), reason.as_str());
                }
            }
        }
    }
}

impl SocketIoActor for PollingIo {
    fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    fn write(&mut self, ctx: &mut Self::Context, packet: String) {
        self.queue(ctx, packet.into(), false);
    }

    fn write_event(&mut self, ctx: &mut Self::Context, packet: ByteString) {
        self.queue(ctx, packet, true);
    }

    fn end(&mut self, ctx: &mut Self::Context, code: u16, reason: &str) {
        match &self.upgraded {
            Some(socket) => socket.do_send(EndSocket {
                code,
                reason: reason.to_owned(),
            }),
            None => {
                self.outbox.push(Outgoing {
                    packet: ByteString::from_static("1"),
                    event: false,
                });
                self.flush();
            }
        }
        ctx.stop();
    }
}

impl Actor for PollingIo {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let metrics = &self.connection.dispatcher.metrics;
        metrics.sessions.with_label_values(&["socketio"]).inc();
        connection::join_heartbeat(self, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.connection.leave_heartbeat();
        self.registry.remove(&self.connection.sid);
        if let Some(waiting) = self.waiting.take() {
            let _ = waiting.send("1".into());
        }
        let metrics = &self.connection.dispatcher.metrics;
        metrics.sessions.with_label_values(&["socketio"]).dec();
    }
}

impl Handler<Beat> for PollingIo {
    type Result = ();

    fn handle(&mut self, beat: Beat, ctx: &mut Self::Context) {
        let last_heard = self.last_heard;
        connection::on_beat(self, ctx, beat, last_heard);
    }
}

impl StreamHandler<Outbound> for PollingIo {
    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        connection::on_outbound(self, ctx, msg);
    }
}

/// A GET: answers with the queued packets, or waits for some.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<String>, &'static str>")]
pub(super) struct Poll;

impl Handler<Poll> for PollingIo {
    type Result = Result<oneshot::Receiver<String>, &'static str>;

    fn handle(&mut self, _: Poll, ctx: &mut Self::Context) -> Self::Result {
        self.last_heard = Instant::now();
        // The protocol allows one pending GET; a second one ends the session. A poll whose
        // client went away (its request dropped) does not count.
        if self
            .waiting
            .as_ref()
            .is_some_and(|waiting| !waiting.is_closed())
        {
            ctx.stop();
            return Err("overlapping polls");
        }
        let (sender, receiver) = oneshot::channel();
        self.waiting = Some(sender);
        self.flush();
        Ok(receiver)
    }
}

/// A POST: the packets the client sent.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Posted(pub(super) String);

impl Handler<Posted> for PollingIo {
    type Result = ();

    fn handle(&mut self, msg: Posted, ctx: &mut Self::Context) {
        for packet in msg.0.split(SEPARATOR) {
            // A packet may have ended the connection: what follows it is not run.
            if ctx.state() != ActorState::Running {
                break;
            }
            connection::on_engine_packet(self, ctx, packet);
        }
    }
}

/// The upgrading WebSocket answered the probe: end the pending poll so the client can
/// switch.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Probed;

impl Handler<Probed> for PollingIo {
    type Result = ();

    fn handle(&mut self, _: Probed, _ctx: &mut Self::Context) {
        self.outbox.push(Outgoing {
            packet: ByteString::from_static("6"),
            event: false,
        });
        self.flush();
    }
}

/// The client switched to the WebSocket: everything goes there from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Upgraded {
    pub(super) socket: Addr<UpgradingSocket>,
}

impl Handler<Upgraded> for PollingIo {
    type Result = ();

    fn handle(&mut self, msg: Upgraded, _ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        for out in std::mem::take(&mut self.outbox) {
            msg.socket.do_send(ToClient(out.packet));
            if out.event {
                self.connection.events_written(1);
            }
        }
        if let Some(waiting) = self.waiting.take() {
            let _ = waiting.send("6".into());
        }
        self.upgraded = Some(msg.socket);
    }
}

/// A packet the client sent over the upgraded WebSocket.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FromClient(pub(super) ByteString);

impl Handler<FromClient> for PollingIo {
    type Result = ();

    fn handle(&mut self, msg: FromClient, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        connection::on_engine_packet(self, ctx, &msg.0);
    }
}

/// The upgraded WebSocket closed: the connection ends with it.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct SocketGone;

impl Handler<SocketGone> for PollingIo {
    type Result = ();

    fn handle(&mut self, _: SocketGone, ctx: &mut Self::Context) {
        if self.upgraded.is_some() {
            ctx.stop();
        }
    }
}
