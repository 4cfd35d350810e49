//! A chat client that keeps going through server crashes: it sends at a steady rate with
//! its own `clientMsgId`s, reconnects with a short back-off when the connection drops,
//! resends what was not acked (the same ids), and logs every push it receives.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::helpers::TestUser;

type Framed = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

/// One user's client in one conversation.
pub struct Chatter {
    pub name: String,
    user: TestUser,
    conversation: i64,
    port: u16,
    socket: Option<Framed>,
    sent: usize,
    /// Sent and not acked yet, by clientMsgId, with the body to resend.
    pub unacked: BTreeMap<String, String>,
    /// Acked sends: clientMsgId to seq.
    pub acked: HashMap<String, i64>,
    /// The seqs pushed on each connection, in arrival order.
    pub pushed: Vec<Vec<i64>>,
    refs: HashMap<String, String>,
    next_ref: u64,
    pub reconnects: usize,
}

impl Chatter {
    pub fn new(name: &str, user: TestUser, conversation: i64, port: u16) -> Self {
        Self {
            name: name.to_owned(),
            user,
            conversation,
            port,
            socket: None,
            sent: 0,
            unacked: BTreeMap::new(),
            acked: HashMap::new(),
            pushed: Vec::new(),
            refs: HashMap::new(),
            next_ref: 0,
            reconnects: 0,
        }
    }

    /// Sends one message every `every` until `until`, through whatever happens to the
    /// server.
    pub async fn run(&mut self, until: tokio::time::Instant, every: Duration) {
        let mut tick = tokio::time::interval(every);
        while tokio::time::Instant::now() < until {
            if self.socket.is_none() && !self.connect().await {
                actix_rt::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            tokio::select! {
                _ = tick.tick() => {
                    self.sent += 1;
                    let key = format!("{}-{}", self.name, self.sent);
                    let body = format!("{} says {}", self.name, self.sent);
                    self.unacked.insert(key.clone(), body.clone());
                    self.send(&key, &body).await;
                }
                frame = next_frame(&mut self.socket) => self.handle(frame),
            }
        }
    }

    /// Reconnects if needed and resends until every send is acked (or `within` passes).
    pub async fn settle(&mut self, within: Duration) {
        let until = tokio::time::Instant::now() + within;
        let mut resend = tokio::time::interval(Duration::from_millis(500));
        while !self.unacked.is_empty() && tokio::time::Instant::now() < until {
            if self.socket.is_none() && !self.connect().await {
                actix_rt::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            tokio::select! {
                _ = resend.tick() => self.resend_all().await,
                frame = next_frame(&mut self.socket) => self.handle(frame),
            }
        }
    }

    /// Everything in the conversation, in pages of `sync`, over a fresh request.
    pub async fn sync_all(&mut self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            while self.socket.is_none() {
                if !self.connect().await {
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let reference = self
                .command(
                    "sync",
                    json!({"conversationId": self.conversation, "afterSeq": after}),
                )
                .await;
            let reply = loop {
                match next_frame(&mut self.socket).await {
                    Some(frame) if frame["ref"] == reference.as_str() => break Some(frame),
                    Some(frame) => self.handle(Some(frame)),
                    None => {
                        self.handle(None);
                        break None;
                    }
                }
            };
            let Some(reply) = reply else { continue };
            assert_eq!(reply["type"], "ack", "sync failed: {reply}");
            let page = reply["data"]["messages"].as_array().unwrap().clone();
            if let Some(last) = page.last() {
                after = last["seq"].as_i64().unwrap();
            }
            all.extend(page);
            if reply["data"]["hasMore"] != true {
                return all;
            }
        }
    }

    async fn connect(&mut self) -> bool {
        let url = format!("ws://127.0.0.1:{}/api/v1/ws", self.port);
        let connecting = awc::Client::new()
            .ws(url)
            .bearer_auth(&self.user.access)
            .connect();
        let Ok(Ok((_, framed))) = tokio::time::timeout(Duration::from_secs(2), connecting).await
        else {
            return false;
        };
        self.socket = Some(framed);
        self.pushed.push(Vec::new());
        self.refs.clear();
        self.reconnects += 1;
        self.resend_all().await;
        true
    }

    async fn resend_all(&mut self) {
        let pending: Vec<(String, String)> = self
            .unacked
            .iter()
            .map(|(key, body)| (key.clone(), body.clone()))
            .collect();
        for (key, body) in pending {
            self.send(&key, &body).await;
        }
    }

    async fn send(&mut self, key: &str, body: &str) {
        let data = json!({"conversationId": self.conversation, "clientMsgId": key, "body": body});
        let reference = self.command("message:send", data).await;
        self.refs.insert(reference, key.to_owned());
    }

    async fn command(&mut self, kind: &str, data: Value) -> String {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        let frame = json!({"type": kind, "ref": reference, "data": data}).to_string();
        if let Some(socket) = self.socket.as_mut()
            && socket.send(ws::Message::Text(frame.into())).await.is_err()
        {
            self.socket = None;
        }
        reference
    }

    fn handle(&mut self, frame: Option<Value>) {
        let Some(frame) = frame else {
            self.socket = None;
            return;
        };
        match frame["type"].as_str() {
            Some("ack") => {
                let key = frame["ref"].as_str().and_then(|r| self.refs.remove(r));
                if let (Some(key), Some(seq)) = (key, frame["data"]["message"]["seq"].as_i64()) {
                    self.unacked.remove(&key);
                    if let Some(before) = self.acked.insert(key.clone(), seq) {
                        assert_eq!(before, seq, "{key} acked with two seqs");
                    }
                }
            }
            Some("message:received") => {
                let seq = frame["data"]["seq"].as_i64().unwrap();
                if let Some(connection) = self.pushed.last_mut() {
                    connection.push(seq);
                }
            }
            // An error (the store unavailable, say) leaves the send unacked: it is
            // resent after the next reconnect or by `settle`.
            _ => {}
        }
    }
}

/// The next JSON frame, or `None` once the connection is gone.
async fn next_frame(socket: &mut Option<Framed>) -> Option<Value> {
    let framed = socket.as_mut()?;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), framed.next()).await {
            Ok(Some(Ok(ws::Frame::Text(bytes)))) => return serde_json::from_slice(&bytes).ok(),
            Ok(Some(Ok(ws::Frame::Ping(payload)))) => {
                let _ = framed.send(ws::Message::Pong(payload)).await;
            }
            Ok(Some(Ok(ws::Frame::Close(_)) | Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}
