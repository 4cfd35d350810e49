//! The native WebSocket frame decoder on arbitrary text: `dispatch::decode` and the
//! command decoding it leads to, against what docs/protocol.md promises about frames.

#![no_main]

use courier_engine::protocol::ClientCommand;
use courier_fuzz::distinct_top_level_keys;
use courier_server::realtime::dispatch::{self, Inbound, codes};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|text: &str| check(text));

fn check(text: &str) {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let object = parsed.as_ref().and_then(Value::as_object);
    // `ref` is echoed whenever the frame is a JSON object: absent and null both read as null.
    let sent_ref = object
        .and_then(|object| object.get("ref"))
        .cloned()
        .unwrap_or(Value::Null);
    match dispatch::decode(text) {
        Inbound::Command { reference, command } => {
            let trimmed = text.trim_start_matches([' ', '\t', '\n', '\r']);
            assert!(
                trimmed.starts_with('{'),
                "only a JSON object is a command frame"
            );
            let Some(object) = object else {
                // Top-level fields other than type, ref and data are skipped unread, so a
                // number out of f64's range there (which a `Value` refuses) is let through.
                return check_round_trip(&command, None);
            };
            assert_eq!(reference.unwrap_or(Value::Null), sent_ref, "ref not echoed");
            assert_eq!(object.get("type"), Some(&json!(command.name())));
            let data = object.get("data").expect("a command has data");
            assert!(data.is_object(), "data of a command is an object: {data}");
            check_round_trip(&command, Some(data));
        }
        Inbound::Invalid {
            reference,
            code,
            message,
        } => {
            assert!(!message.is_empty());
            assert!(
                [
                    codes::BAD_REQUEST,
                    codes::UNKNOWN_TYPE,
                    codes::VALIDATION_FAILED
                ]
                .contains(&code),
                "undocumented code {code}"
            );
            let Some(object) = object else {
                return;
            };
            assert_eq!(reference.unwrap_or(Value::Null), sent_ref, "ref not echoed");
            let kind = object.get("type").and_then(Value::as_str);
            match code {
                codes::UNKNOWN_TYPE => {
                    let kind = kind.expect("unknown_type names a string type");
                    assert!(!ClientCommand::NAMES.contains(&kind), "{kind} is known");
                }
                codes::VALIDATION_FAILED => {
                    let kind = kind.expect("validation_failed names a string type");
                    assert!(ClientCommand::NAMES.contains(&kind), "{kind} is unknown");
                }
                _ => {
                    // bad_request is only for frames that are not an object with a string
                    // `type` (a key written twice is unreadable too).
                    let readable = kind.is_some() && distinct_top_level_keys(text).is_some();
                    assert!(!readable, "bad_request for a readable frame: {message}");
                }
            }
        }
    }
}

/// A decoded command encodes back to the same command, on both the native framing and the
/// Socket.IO one (which hands `decode_command` the event name and its first argument), and
/// every field it carries has the value the client sent.
fn check_round_trip(command: &ClientCommand, sent: Option<&Value>) {
    let encoded = serde_json::to_value(command).expect("a command serialises");
    let data = encoded["data"].clone();
    let again = dispatch::decode_command(command.name(), data.clone()).expect("re-decodes");
    assert_eq!(&again, command);
    let frame = json!({"type": command.name(), "ref": "r", "data": data}).to_string();
    match dispatch::decode(&frame) {
        Inbound::Command {
            reference,
            command: again,
        } => {
            assert_eq!(reference, Some(json!("r")));
            // Floats inside the opaque `sdp` and `candidate` too: serde_json parses them
            // exactly (`float_roundtrip`).
            let again = serde_json::to_value(&again).expect("a command serialises");
            assert_eq!(again, encoded);
        }
        Inbound::Invalid { message, .. } => panic!("re-encoded frame refused: {message}"),
    }
    let Some(sent) = sent else { return };
    let (Some(encoded), Some(sent)) = (data.as_object(), sent.as_object()) else {
        panic!("command data is not an object");
    };
    for (field, value) in encoded {
        match sent.get(field) {
            Some(Value::Null) | None => assert!(value.is_null(), "{field} appeared"),
            Some(sent) => assert_eq!(value, sent, "{field}"),
        }
    }
}
