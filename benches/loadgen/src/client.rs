//! One client connection, in either protocol: it sends `message:send` commands and reads
//! acks and pushed messages. A writer task owns the socket's sink and writes whatever is
//! queued in one flush; the reader runs in the task that called [`Connection::run`].

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use futures_util::stream::{SplitStream, StreamExt};
use futures_util::{SinkExt, stream::SplitSink};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The wire protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `GET /api/v1/ws`, one JSON object per frame.
    Native,
    /// Socket.IO v4 over its WebSocket transport.
    Socketio,
}

/// What a client reads that the load generator cares about.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// A send was stored with `seq`; `key` is the frame's ref (native) or ack id
    /// (Socket.IO).
    Acked { key: u64, seq: i64 },
    /// A send was refused (a rate limit, a validation error).
    Refused { key: u64, error: String },
    /// A `message:received` push.
    Message {
        conversation: i64,
        seq: i64,
        body: Cow<'a, str>,
    },
    /// Anything else (other events, replies without a key, pings).
    Other,
}

/// A connected client: its queue to the writer task, and the read half.
pub struct Connection {
    pub protocol: Protocol,
    writer: mpsc::UnboundedSender<Frame>,
    reader: SplitStream<Socket>,
}

/// Where a connection sends frames; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    protocol: Protocol,
    writer: mpsc::UnboundedSender<Frame>,
}

impl Connection {
    /// Opens a socket to `base` (`ws://host:port`) for the holder of `token`, ready for
    /// commands (for Socket.IO, after the CONNECT handshake).
    pub async fn open(protocol: Protocol, base: &str, token: &str) -> anyhow::Result<Self> {
        let url = match protocol {
            Protocol::Native => format!("{base}/api/v1/ws"),
            Protocol::Socketio => format!("{base}/socket.io/?EIO=4&transport=websocket"),
        };
        let mut request = url.into_client_request()?;
        if protocol == Protocol::Native {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
            request.headers_mut().insert("authorization", bearer);
        }
        // No Nagle, as browsers and Node's sockets: a send must not wait for the ACK of
        // the one before it.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .context("websocket handshake")?;
        let (mut sink, mut reader) = socket.split();
        if protocol == Protocol::Socketio {
            handshake(&mut sink, &mut reader, token).await?;
        }
        let (writer, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_all(sink, queue));
        Ok(Self {
            protocol,
            writer,
            reader,
        })
    }

    /// A handle to send frames on this connection.
    pub fn outbox(&self) -> Outbox {
        Outbox {
            protocol: self.protocol,
            writer: self.writer.clone(),
        }
    }

    /// Reads frames and hands each to `on`, until the socket closes or `stop` is set
    /// (checked at every frame, and the socket is closed by the caller's drop).
    pub async fn run(
        mut self,
        stop: Arc<AtomicBool>,
        mut on: impl FnMut(Incoming<'_>),
    ) -> anyhow::Result<()> {
        while let Some(frame) = self.reader.next().await {
            let text = match frame? {
                Frame::Text(text) => text,
                Frame::Close(_) => break,
                _ => continue,
            };
            if self.protocol == Protocol::Socketio && text.as_str() == "2" {
                // Engine.IO ping: answer, or the server drops the connection.
                let _ = self.writer.send(Frame::text("3"));
                continue;
            }
            on(parse(self.protocol, text.as_str()));
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(())
    }
}

impl Outbox {
    /// Sends `message:send` with `key` as its ref (or ack id).
    pub fn send_message(
        &self,
        key: u64,
        conversation: i64,
        client_msg_id: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        let data = serde_json::json!({
            "conversationId": conversation,
            "clientMsgId": client_msg_id,
            "body": body,
        });
        let text = match self.protocol {
            Protocol::Native => format!(r#"{{"type":"message:send","ref":"{key}","data":{data}}}"#),
            Protocol::Socketio => format!(r#"42{key}["message:send",{data}]"#),
        };
        self.writer
            .send(Frame::text(text))
            .map_err(|_| anyhow::anyhow!("the connection is closed"))
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.writer.send(Frame::Close(None));
    }
}

/// The Socket.IO opening: the Engine.IO open packet, then CONNECT with the token.
async fn handshake(
    sink: &mut SplitSink<Socket, Frame>,
    reader: &mut SplitStream<Socket>,
    token: &str,
) -> anyhow::Result<()> {
    let open = next_text(reader).await?;
    if !open.starts_with('0') {
        bail!("expected an Engine.IO open packet, got {open:?}");
    }
    let connect = format!("40{}", serde_json::json!({ "token": token }));
    sink.send(Frame::text(connect)).await?;
    let answer = next_text(reader).await?;
    if !answer.starts_with("40") {
        bail!("Socket.IO CONNECT refused: {answer}");
    }
    Ok(())
}

async fn next_text(reader: &mut SplitStream<Socket>) -> anyhow::Result<String> {
    loop {
        match reader.next().await.context("the socket closed")?? {
            Frame::Text(text) => return Ok(text.as_str().to_owned()),
            Frame::Close(reason) => bail!("the socket closed: {reason:?}"),
            _ => {}
        }
    }
}

/// Writes queued frames, as many as are ready in one flush.
async fn write_all(mut sink: SplitSink<Socket, Frame>, mut queue: mpsc::UnboundedReceiver<Frame>) {
    while let Some(frame) = queue.recv().await {
        let closing = matches!(frame, Frame::Close(_));
        if sink.feed(frame).await.is_err() {
            return;
        }
        while !closing && let Ok(frame) = queue.try_recv() {
            let close = matches!(frame, Frame::Close(_));
            if sink.feed(frame).await.is_err() {
                return;
            }
            if close {
                break;
            }
        }
        if sink.flush().await.is_err() || closing {
            return;
        }
    }
}

/// The fields of a message object, or of a reply's data, that matter here.
#[derive(Deserialize)]
struct MessageData<'a> {
    #[serde(rename = "conversationId")]
    conversation_id: Option<i64>,
    seq: Option<i64>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
    /// In an ack's data: the stored message (in a refusal: its text).
    message: Option<MessageField>,
    /// In a Socket.IO ack that failed.
    error: Option<String>,
}

#[derive(Deserialize)]
struct Stored {
    seq: i64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MessageField {
    Stored(Stored),
    Text(serde::de::IgnoredAny),
}

impl MessageField {
    fn seq(&self) -> Option<i64> {
        match self {
            Self::Stored(stored) => Some(stored.seq),
            Self::Text(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct NativeFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "ref", borrow)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<MessageData<'a>>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct SocketEvent<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] MessageData<'a>,
);

fn parse(protocol: Protocol, text: &str) -> Incoming<'_> {
    match protocol {
        Protocol::Native => parse_native(text),
        Protocol::Socketio => parse_socketio(text),
    }
    .unwrap_or(Incoming::Other)
}

fn pushed<'a>(kind: &str, data: MessageData<'a>) -> Option<Incoming<'a>> {
    if kind != "message:received" {
        return None;
    }
    Some(Incoming::Message {
        conversation: data.conversation_id?,
        seq: data.seq?,
        body: data.body?,
    })
}

fn parse_native(text: &str) -> Option<Incoming<'_>> {
    let frame: NativeFrame = serde_json::from_str(text).ok()?;
    let key = || frame.reference.as_deref()?.parse::<u64>().ok();
    match &*frame.kind {
        "ack" => Some(Incoming::Acked {
            key: key()?,
            seq: frame.data?.message?.seq()?,
        }),
        "error" => Some(Incoming::Refused {
            key: key()?,
            error: frame.error.clone().unwrap_or_default(),
        }),
        kind => pushed(kind, frame.data?),
    }
}

fn parse_socketio(text: &str) -> Option<Incoming<'_>> {
    if let Some(event) = text.strip_prefix("42") {
        let SocketEvent(name, data) = serde_json::from_str(event).ok()?;
        return pushed(&name, data);
    }
    let ack = text.strip_prefix("43")?;
    let digits = ack.find('[')?;
    let key = ack[..digits].parse::<u64>().ok()?;
    // A one-element array (a newtype struct would read the element itself).
    let (reply,): (MessageData,) = serde_json::from_str(&ack[digits..]).ok()?;
    match (
        reply.message.as_ref().and_then(MessageField::seq),
        reply.error,
    ) {
        (Some(seq), _) => Some(Incoming::Acked { key, seq }),
        (None, Some(error)) => Some(Incoming::Refused { key, error }),
        (None, None) => Some(Incoming::Other),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn native_frames_are_read() {
        let ack = r#"{"type":"ack","ref":"17","data":{"message":{"id":1,"seq":3}}}"#;
        assert_eq!(
            parse(Protocol::Native, ack),
            Incoming::Acked { key: 17, seq: 3 }
        );
        let refused = r#"{"type":"error","ref":"18","error":"rate_limited","message":"slow down"}"#;
        assert_eq!(
            parse(Protocol::Native, refused),
            Incoming::Refused {
                key: 18,
                error: "rate_limited".into()
            }
        );
        let push = r#"{"type":"message:received","data":{"id":9,"conversationId":4,"seq":3,"senderId":1,"body":"t=5 xx","replyTo":null}}"#;
        assert_eq!(
            parse(Protocol::Native, push),
            Incoming::Message {
                conversation: 4,
                seq: 3,
                body: "t=5 xx".into()
            }
        );
        let typing = r#"{"type":"typing:started","data":{"conversationId":4,"userId":2}}"#;
        assert_eq!(parse(Protocol::Native, typing), Incoming::Other);
    }

    #[test]
    fn socketio_packets_are_read() {
        let ack = r#"4317[{"message":{"id":1,"seq":3}}]"#;
        assert_eq!(
            parse(Protocol::Socketio, ack),
            Incoming::Acked { key: 17, seq: 3 }
        );
        let refused = r#"4318[{"error":"rate_limited","message":"slow down"}]"#;
        assert_eq!(
            parse(Protocol::Socketio, refused),
            Incoming::Refused {
                key: 18,
                error: "rate_limited".into()
            }
        );
        let push =
            r#"42["message:received",{"id":9,"conversationId":4,"seq":3,"body":"t=5 \"q\""}]"#;
        assert_eq!(
            parse(Protocol::Socketio, push),
            Incoming::Message {
                conversation: 4,
                seq: 3,
                body: "t=5 \"q\"".into()
            }
        );
    }
}
