//! Engine.IO v4 and Socket.IO v5 packets, as text.
//!
//! Written here because no maintained codec crate fits actix (socketioxide is tied to
//! tower/hyper and brings its own server). The reference is the public engine.io-protocol
//! and socket.io-protocol specifications.

use serde_json::Value;

/// An Engine.IO packet (the transport layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket {
    /// `0` + handshake JSON (server to client).
    Open(String),
    /// `1`.
    Close,
    /// `2` (+ `probe` during an upgrade).
    Ping(String),
    /// `3` (+ `probe` during an upgrade).
    Pong(String),
    /// `4` + a Socket.IO packet.
    Message(String),
    /// `5`: the client switches to the probed transport.
    Upgrade,
    /// `6`: nothing (ends a pending poll during an upgrade).
    Noop,
}

impl EnginePacket {
    /// Reads one text packet.
    pub fn parse(text: &str) -> Option<Self> {
        let mut chars = text.chars();
        let kind = chars.next()?;
        let rest = chars.as_str().to_owned();
        Some(match kind {
            '0' => Self::Open(rest),
            '1' => Self::Close,
            '2' => Self::Ping(rest),
            '3' => Self::Pong(rest),
            '4' => Self::Message(rest),
            '5' => Self::Upgrade,
            '6' => Self::Noop,
            _ => return None,
        })
    }

    /// Writes one text packet.
    pub fn encode(&self) -> String {
        match self {
            Self::Open(json) => format!("0{json}"),
            Self::Close => "1".into(),
            Self::Ping(data) => format!("2{data}"),
            Self::Pong(data) => format!("3{data}"),
            Self::Message(data) => format!("4{data}"),
            Self::Upgrade => "5".into(),
            Self::Noop => "6".into(),
        }
    }
}

/// A Socket.IO packet on the main namespace (the only one served).
#[derive(Debug, Clone, PartialEq)]
pub enum SocketPacket {
    /// `0` + optional auth payload.
    Connect(Option<Value>),
    /// `1`.
    Disconnect,
    /// `2` + optional ack id + `["name", ...args]`.
    Event {
        /// The event name.
        name: String,
        /// Its arguments (Courier uses the first).
        args: Vec<Value>,
        /// Present when the client waits for an ack.
        ack: Option<u64>,
    },
    /// `3` + ack id + `[...args]` (client acking a server event; not used by Courier).
    Ack {
        /// The id acknowledged.
        id: u64,
    },
    /// `5` / `6`: binary packets, refused.
    Binary,
}

/// Why a Socket.IO packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// Another namespace than `/`.
    Namespace(String),
    /// Not a packet of the protocol.
    Malformed(&'static str),
}

impl SocketPacket {
    /// Reads the payload of an Engine.IO message packet.
    pub fn parse(text: &str) -> Result<Self, PacketError> {
        let mut rest = text;
        let kind = rest
            .chars()
            .next()
            .ok_or(PacketError::Malformed("empty packet"))?;
        rest = &rest[kind.len_utf8()..];
        match kind {
            '5' | '6' => return Ok(Self::Binary),
            // Known before the namespace is read: a packet of no known type is malformed,
            // whatever namespace follows.
            '0'..='3' => {}
            _ => return Err(PacketError::Malformed("unknown packet type")),
        }
        if let Some(after_slash) = rest.strip_prefix('/') {
            let (namespace, tail) = after_slash.split_once(',').unwrap_or((after_slash, ""));
            if !namespace.is_empty() {
                return Err(PacketError::Namespace(format!("/{namespace}")));
            }
            rest = tail;
        }
        // Only EVENT and ACK carry an ack id: in a CONNECT, digits start the payload (a
        // number, so no token, which the handshake answers with connect_error).
        let digits = match kind {
            '2' | '3' => rest.bytes().take_while(u8::is_ascii_digit).count(),
            _ => 0,
        };
        let ack = if digits > 0 {
            let id = rest[..digits]
                .parse::<u64>()
                .map_err(|_| PacketError::Malformed("ack id out of range"))?;
            rest = &rest[digits..];
            Some(id)
        } else {
            None
        };
        let payload = || -> Result<Value, PacketError> {
            serde_json::from_str(rest).map_err(|_| PacketError::Malformed("payload is not JSON"))
        };
        match kind {
            '0' => Ok(Self::Connect(if rest.is_empty() {
                None
            } else {
                Some(payload()?)
            })),
            '1' => Ok(Self::Disconnect),
            '2' => {
                let Value::Array(mut items) = payload()? else {
                    return Err(PacketError::Malformed("an event is a JSON array"));
                };
                if items.is_empty() {
                    return Err(PacketError::Malformed("an event needs a name"));
                }
                let Value::String(name) = items.remove(0) else {
                    return Err(PacketError::Malformed("an event name is a string"));
                };
                Ok(Self::Event {
                    name,
                    args: items,
                    ack,
                })
            }
            '3' => Ok(Self::Ack {
                id: ack.ok_or(PacketError::Malformed("an ack needs an id"))?,
            }),
            _ => Err(PacketError::Malformed("unknown packet type")),
        }
    }
}

/// `40{"sid": ...}`: the namespace connection is accepted.
pub fn connect_ok(sid: &str) -> String {
    EnginePacket::Message(format!("0{}", serde_json::json!({ "sid": sid }))).encode()
}

/// `44{"message": ...}`: the namespace connection is refused.
pub fn connect_error(message: &str) -> String {
    EnginePacket::Message(format!("4{}", serde_json::json!({ "message": message }))).encode()
}

/// `43<id>[payload]`: the answer to an event the client waits on.
pub fn ack(id: u64, payload: &Value) -> String {
    EnginePacket::Message(format!("3{id}[{payload}]")).encode()
}

/// `42["name", data]` from an event name and its already-serialised data.
/// `42["name", data]` from an event name and its already-serialised data.
pub fn event(name: &str, data: &str) -> String {
    let mut out = String::with_capacity(name.len() + data.len() + 8);
    out.push_str("42[\"");
    out.push_str(name);
    out.push_str("\",");
    out.push_str(data);
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn engine_packets_round_trip() {
        for text in [
            "0{\"sid\":\"a\"}",
            "1",
            "2",
            "2probe",
            "3probe",
            "4hello",
            "5",
            "6",
        ] {
            assert_eq!(EnginePacket::parse(text).unwrap().encode(), text);
        }
        assert_eq!(EnginePacket::parse("9"), None);
        assert_eq!(EnginePacket::parse(""), None);
    }

    #[test]
    fn socket_packets_parse() {
        assert_eq!(
            SocketPacket::parse("0{\"token\":\"t\"}").unwrap(),
            SocketPacket::Connect(Some(json!({"token": "t"})))
        );
        assert_eq!(
            SocketPacket::parse("0").unwrap(),
            SocketPacket::Connect(None)
        );
        assert_eq!(
            SocketPacket::parse("212[\"message:send\",{\"a\":1}]").unwrap(),
            SocketPacket::Event {
                name: "message:send".into(),
                args: vec![json!({"a": 1})],
                ack: Some(12)
            }
        );
        assert_eq!(
            SocketPacket::parse("2[\"typing:start\",{}]").unwrap(),
            SocketPacket::Event {
                name: "typing:start".into(),
                args: vec![json!({})],
                ack: None
            }
        );
        assert_eq!(
            SocketPacket::parse("2/,[\"x\"]").unwrap(),
            SocketPacket::Event {
                name: "x".into(),
                args: vec![],
                ack: None
            }
        );
        assert!(
            matches!(SocketPacket::parse("0/admin,"), Err(PacketError::Namespace(ns)) if ns == "/admin")
        );
        assert_eq!(
            SocketPacket::parse("51-[\"up\",{\"_placeholder\":true,\"num\":0}]").unwrap(),
            SocketPacket::Binary
        );
        assert!(SocketPacket::parse("2{\"not\":\"array\"}").is_err());
        assert!(SocketPacket::parse("2[]").is_err());
        assert!(SocketPacket::parse("2[1]").is_err());
        assert!(SocketPacket::parse("299999999999999999999999[\"x\"]").is_err());
        assert!(SocketPacket::parse("").is_err());
        assert!(SocketPacket::parse("é").is_err());
    }

    #[test]
    fn connect_payloads_have_no_ack_id() {
        // Digits after CONNECT are its payload: "05" and "0 5" are the same packet.
        assert_eq!(
            SocketPacket::parse("05").unwrap(),
            SocketPacket::Connect(Some(json!(5)))
        );
        assert_eq!(
            SocketPacket::parse("0 5").unwrap(),
            SocketPacket::Connect(Some(json!(5)))
        );
        assert_eq!(
            SocketPacket::parse("07{\"token\":\"t\"}"),
            Err(PacketError::Malformed("payload is not JSON"))
        );
    }

    #[test]
    fn unknown_packet_types_are_malformed_whatever_their_namespace() {
        for text in [",/40", "4/admin,{}", "9/chat,[\"x\"]"] {
            assert_eq!(
                SocketPacket::parse(text),
                Err(PacketError::Malformed("unknown packet type")),
                "{text}"
            );
        }
    }

    #[test]
    fn server_packets_encode() {
        assert_eq!(connect_ok("s1"), "40{\"sid\":\"s1\"}");
        assert_eq!(connect_error("bad token"), "44{\"message\":\"bad token\"}");
        assert_eq!(ack(7, &json!({"ok": true})), "437[{\"ok\":true}]");
        assert_eq!(
            event("message:received", "{\"id\":1}"),
            "42[\"message:received\",{\"id\":1}]"
        );
    }
}
