//! The floor under courier, for benchmarks only: the same HTTP and WebSocket stack
//! (actix-web, actix-web-actors, jemalloc, `TCP_NODELAY`, the default workers) with one
//! actor per socket and one per conversation, serving just the REST calls and native
//! frames the load generator makes. A conversation numbers each send, serialises its
//! `message:received` once and hands the shared text to every member's sockets.
//!
//! Nothing else: no persistence, no idempotency, no limits, no queues, no membership
//! checks, and a token that is the user's id in plain sight. What it measures is what the
//! stack itself costs per connection and per delivery, the premise of issue 7's idle and
//! fan-out targets; it must never serve anything but a load generator on loopback.
//!
//! ```sh
//! PORT=18290 target/release/bare   # PORT=0: any free port, printed as "listening on <port>"
//! target/release/loadgen idle --url http://127.0.0.1:18290 --connections 5000 --server-pid "$(pgrep -x bare)"
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actix::prelude::*;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actix_web_actors::ws;
use bytestring::ByteString;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

/// The same allocator as courier's, so that per-connection memory compares.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Prefix of every token this server hands out, followed by the user's id.
const TOKEN_PREFIX: &str = "bare-";

/// What every worker shares.
#[derive(Default)]
struct Shared {
    next_user: AtomicI64,
    next_conversation: AtomicI64,
    next_message: AtomicI64,
    /// The sockets of each connected user.
    sockets: Mutex<HashMap<i64, Vec<Addr<Socket>>>>,
    conversations: Mutex<HashMap<i64, Addr<Conversation>>>,
}

impl Shared {
    fn conversation(&self, id: i64) -> Option<Addr<Conversation>> {
        self.conversations.lock().get(&id).cloned()
    }
}

/// One conversation: its members and its last seq.
struct Conversation {
    id: i64,
    members: Vec<i64>,
    seq: i64,
    shared: Arc<Shared>,
}

impl Actor for Conversation {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct AddMember(i64);

impl Handler<AddMember> for Conversation {
    type Result = ();

    fn handle(&mut self, AddMember(user): AddMember, _ctx: &mut Self::Context) {
        if !self.members.contains(&user) {
            self.members.push(user);
        }
    }
}

/// A `message:send` from a socket.
#[derive(Message)]
#[rtype(result = "()")]
struct Post {
    sender: i64,
    reference: serde_json::Value,
    body: String,
    reply_to: Addr<Socket>,
}

impl Handler<Post> for Conversation {
    type Result = ();

    fn handle(&mut self, send: Post, _ctx: &mut Self::Context) {
        self.seq += 1;
        let id = self.shared.next_message.fetch_add(1, Ordering::Relaxed) + 1;
        let pushed = json!({
            "type": "message:received",
            "data": {
                "id": id,
                "conversationId": self.id,
                "seq": self.seq,
                "senderId": send.sender,
                "body": send.body,
                "replyTo": null,
            },
        });
        let pushed = ByteString::from(pushed.to_string());
        let ack = json!({
            "type": "ack",
            "ref": send.reference,
            "data": {"message": {"id": id, "seq": self.seq}},
        });
        send.reply_to
            .do_send(Text(ByteString::from(ack.to_string())));
        let sockets = self.shared.sockets.lock();
        for member in &self.members {
            for socket in sockets.get(member).into_iter().flatten() {
                socket.do_send(Text(pushed.clone()));
            }
        }
    }
}

/// Text for a socket to write.
#[derive(Message)]
#[rtype(result = "()")]
struct Text(ByteString);

/// One WebSocket connection.
struct Socket {
    user: i64,
    shared: Arc<Shared>,
}

impl Actor for Socket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.shared
            .sockets
            .lock()
            .entry(self.user)
            .or_default()
            .push(ctx.address());
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        let mut sockets = self.shared.sockets.lock();
        if let Some(mine) = sockets.get_mut(&self.user) {
            mine.retain(|socket| *socket != me);
            if mine.is_empty() {
                sockets.remove(&self.user);
            }
        }
    }
}

impl Handler<Text> for Socket {
    type Result = ();

    fn handle(&mut self, Text(text): Text, ctx: &mut Self::Context) {
        ctx.text(text);
    }
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "ref", default)]
    reference: serde_json::Value,
    data: Option<SendData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendData {
    conversation_id: i64,
    body: String,
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Socket {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match item {
            Ok(ws::Message::Text(text)) => {
                let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                    ctx.text(r#"{"type":"error","error":"bad_request"}"#);
                    return;
                };
                let conversation = frame
                    .data
                    .as_ref()
                    .and_then(|data| self.shared.conversation(data.conversation_id));
                match (frame.kind.as_str(), frame.data, conversation) {
                    ("message:send", Some(data), Some(conversation)) => {
                        conversation.do_send(Post {
                            sender: self.user,
                            reference: frame.reference,
                            body: data.body,
                            reply_to: ctx.address(),
                        });
                    }
                    _ => {
                        let refused =
                            json!({"type": "error", "ref": frame.reference, "error": "unknown"});
                        ctx.text(refused.to_string());
                    }
                }
            }
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

/// The caller's user id, from `Authorization: Bearer bare-<id>`.
fn caller(req: &HttpRequest) -> Option<i64> {
    let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    header
        .strip_prefix("Bearer ")?
        .strip_prefix(TOKEN_PREFIX)?
        .parse()
        .ok()
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({"error": "unauthorized"}))
}

async fn register(shared: web::Data<Shared>) -> HttpResponse {
    let id = shared.next_user.fetch_add(1, Ordering::Relaxed) + 1;
    HttpResponse::Created().json(json!({
        "user": {"id": id},
        "accessToken": format!("{TOKEN_PREFIX}{id}"),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewConversation {
    #[serde(default)]
    member_ids: Vec<i64>,
    peer_id: Option<i64>,
}

async fn create_conversation(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Json<NewConversation>,
) -> HttpResponse {
    let Some(owner) = caller(&req) else {
        return unauthorized();
    };
    let body = body.into_inner();
    let mut members = vec![owner];
    for user in body.member_ids.into_iter().chain(body.peer_id) {
        if !members.contains(&user) {
            members.push(user);
        }
    }
    let id = shared.next_conversation.fetch_add(1, Ordering::Relaxed) + 1;
    let conversation = Conversation {
        id,
        members,
        seq: 0,
        shared: shared.clone().into_inner(),
    }
    .start();
    shared.conversations.lock().insert(id, conversation);
    HttpResponse::Created().json(json!({"id": id}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewMember {
    user_id: i64,
}

async fn add_member(
    req: HttpRequest,
    shared: web::Data<Shared>,
    path: web::Path<i64>,
    body: web::Json<NewMember>,
) -> HttpResponse {
    if caller(&req).is_none() {
        return unauthorized();
    }
    match shared.conversation(path.into_inner()) {
        Some(conversation) => {
            conversation.do_send(AddMember(body.user_id));
            HttpResponse::Created().json(json!({}))
        }
        None => HttpResponse::NotFound().json(json!({"error": "not_found"})),
    }
}

async fn connect(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, actix_web::Error> {
    let Some(user) = caller(&req) else {
        return Ok(unauthorized());
    };
    let socket = Socket {
        user,
        shared: shared.into_inner(),
    };
    ws::start(socket, &req, payload)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().map_err(std::io::Error::other)?,
        Err(_) => 18290,
    };
    let shared = web::Data::new(Shared::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/api/v1/auth/register", web::post().to(register))
            .route("/api/v1/conversations", web::post().to(create_conversation))
            .route(
                "/api/v1/conversations/{id}/members",
                web::post().to(add_member),
            )
            .route("/api/v1/ws", web::get().to(connect))
    })
    .tcp_nodelay(true)
    .bind(("127.0.0.1", port))?;
    // The port bound, which PORT=0 leaves to the system.
    if let Some(bound) = server.addrs().first() {
        println!("listening on {}", bound.port());
    }
    server.run().await
}
