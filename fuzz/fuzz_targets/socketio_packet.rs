//! The Engine.IO and Socket.IO packet parsers on arbitrary text, as a WebSocket frame and
//! as a long-polling body (packets separated by `\x1e`), and the server's packet writers.

#![no_main]

use courier_server::realtime::socketio::packet::{self, EnginePacket, PacketError, SocketPacket};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The polling record separator (engine.io-protocol v4).
const SEPARATOR: char = '\u{1e}';

fuzz_target!(|text: &str| {
    check_engine(text);
    for part in text.split(SEPARATOR) {
        check_engine(part);
    }
});

fn check_engine(text: &str) {
    let parsed = EnginePacket::parse(text);
    let first = text.chars().next();
    assert_eq!(
        parsed.is_some(),
        first.is_some_and(|kind| ('0'..='6').contains(&kind)),
        "packet type of {text:?}"
    );
    let Some(parsed) = parsed else { return };
    let encoded = parsed.encode();
    assert_eq!(EnginePacket::parse(&encoded).as_ref(), Some(&parsed));
    match &parsed {
        // Packets with data keep it byte for byte.
        EnginePacket::Open(_)
        | EnginePacket::Ping(_)
        | EnginePacket::Pong(_)
        | EnginePacket::Message(_) => assert_eq!(encoded, text),
        EnginePacket::Close | EnginePacket::Upgrade | EnginePacket::Noop => {
            assert_eq!(encoded.chars().next(), first);
        }
    }
    if let EnginePacket::Message(payload) = parsed {
        check_socket(&payload);
    }
}

fn check_socket(text: &str) {
    match SocketPacket::parse(text) {
        Ok(parsed) => {
            let encoded = encode(&parsed);
            let again = SocketPacket::parse(&encoded)
                .unwrap_or_else(|error| panic!("{encoded:?} from {text:?}: {error:?}"));
            assert_eq!(again, parsed, "{text:?} -> {parsed:?} -> {again:?}");
            if let SocketPacket::Event { name, args, ack } = parsed {
                check_writers(&name, &args, ack);
            }
        }
        Err(PacketError::Namespace(namespace)) => {
            // Only another namespace than the main one is refused as such.
            assert!(
                namespace.starts_with('/') && namespace.len() > 1,
                "{namespace:?}"
            );
            let mut chars = text.chars();
            let kind = chars.next();
            assert!(
                kind.is_some_and(|kind| ('0'..='3').contains(&kind)),
                "namespace refused on a packet of unknown type: {text:?}"
            );
            assert!(
                chars.as_str().starts_with(&namespace),
                "{namespace:?} not in {text:?}"
            );
        }
        Err(PacketError::Malformed(reason)) => assert!(!reason.is_empty()),
    }
}

/// A Socket.IO packet as socket.io-parser writes it on the main namespace.
fn encode(packet: &SocketPacket) -> String {
    match packet {
        SocketPacket::Connect(None) => "0".into(),
        SocketPacket::Connect(Some(auth)) => format!("0{auth}"),
        SocketPacket::Disconnect => "1".into(),
        SocketPacket::Event { name, args, ack } => {
            let mut items = vec![Value::String(name.clone())];
            items.extend(args.iter().cloned());
            let ack = ack.map(|id| id.to_string()).unwrap_or_default();
            format!("2{ack}{}", Value::Array(items))
        }
        SocketPacket::Ack { id } => format!("3{id}[]"),
        SocketPacket::Binary => "51-[\"x\",{\"_placeholder\":true,\"num\":0}]".into(),
    }
}

/// What the server writes back to a client reads as the packet it means, whatever the
/// client's values in it.
fn check_writers(name: &str, args: &[Value], ack: Option<u64>) {
    let message_of = |written: &str| match EnginePacket::parse(written) {
        Some(EnginePacket::Message(payload)) => payload,
        other => panic!("{written:?} is {other:?}"),
    };
    let payload = Value::Array(args.to_vec());
    if let Some(id) = ack {
        let written = message_of(&packet::ack(id, &payload));
        assert_eq!(SocketPacket::parse(&written), Ok(SocketPacket::Ack { id }));
    }
    // The client's event name stands in for a sid and an error message.
    let connected = message_of(&packet::connect_ok(name));
    let body: Value = serde_json::from_str(&connected[1..]).expect("CONNECT is JSON");
    assert_eq!(body, json!({ "sid": name }));
    let refused = message_of(&packet::connect_error(name));
    let body: Value = serde_json::from_str(&refused[1..]).expect("CONNECT_ERROR is JSON");
    assert_eq!(body, json!({ "message": name }));
    // Pushed events: the server's own event names, the data already serialised.
    let data = serde_json::to_string(&payload).expect("serialises");
    let written = packet::event("message:received", &data);
    match SocketPacket::parse(&message_of(&written)) {
        Ok(SocketPacket::Event {
            name,
            args: pushed,
            ack: None,
        }) => {
            assert_eq!(name, "message:received");
            assert_eq!(pushed, vec![payload]);
        }
        other => panic!("{written:?} is {other:?}"),
    }
}
