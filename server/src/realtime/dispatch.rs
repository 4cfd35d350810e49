//! The one event handler of all transports: decode a frame into a command, run it on the
//! engine, and encode the reply. Transports only move frames.

use std::sync::Arc;
use std::time::Instant;

use courier_engine::protocol::{ClientCommand, Reply};
use courier_engine::{EngineError, Session};
use governor::DefaultDirectRateLimiter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::RateLimits;
use crate::metrics::Metrics;

/// Error codes on the socket (the `error` field of an `error` frame).
pub mod codes {
    /// The frame is not a JSON object of the documented shape.
    pub const BAD_REQUEST: &str = "bad_request";
    /// `type` names no client event.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// `data` is missing fields or has wrong ones.
    pub const VALIDATION_FAILED: &str = "validation_failed";
    /// Binary and continuation frames are not part of the protocol.
    pub const UNSUPPORTED_FRAME: &str = "unsupported_frame";
}

/// A client frame: `{"type": "message:send", "ref": "c7", "data": {...}}`.
#[derive(Debug, Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
}

/// What a text frame decodes into.
#[derive(Debug)]
pub enum Inbound {
    /// A command to run; its reply carries `reference`.
    Command {
        /// The client's `ref`, echoed in the reply.
        reference: Option<Value>,
        /// The decoded command.
        command: ClientCommand,
    },
    /// A frame that cannot run; answered with an `error` frame.
    Invalid {
        /// The client's `ref`, if it could be read.
        reference: Option<Value>,
        /// One of [`codes`].
        code: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Inbound {
    // serde reads a struct from a JSON array as well (fields by position), so
    // `["sync", "r1", {...}]` would run: only an object is a frame. JSON text is an object
    // exactly when it starts with `{` after JSON whitespace.
    let is_object = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    let parsed = if is_object {
        serde_json::from_str::<RawFrame>(text).map_err(|error| error.to_string())
    } else {
        Err("the frame is not a JSON object".to_owned())
    };
    let raw = match parsed {
        Ok(raw) => raw,
        Err(error) => {
            // A frame that is JSON but misses `type` still gets its ref back.
            let reference = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|value| value.get("ref").cloned());
            return Inbound::Invalid {
                reference,
                code: codes::BAD_REQUEST,
                message: format!("expected {{\"type\", \"ref\", \"data\"}}: {error}"),
            };
        }
    };
    let RawFrame {
        kind,
        reference,
        data,
    } = raw;
    match decode_command(&kind, data.unwrap_or(Value::Null)) {
        Ok(command) => Inbound::Command { reference, command },
        Err(Refused { code, message }) => Inbound::Invalid {
            reference,
            code,
            message,
        },
    }
}

/// Why a command could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// One of [`codes`].
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

/// Decodes a command from its event name and data, whatever the framing.
pub fn decode_command(kind: &str, data: Value) -> Result<ClientCommand, Refused> {
    // As for frames, serde would read a command's fields from an array by position; the
    // documented `data` is an object.
    if !data.is_object() && ClientCommand::NAMES.contains(&kind) {
        return Err(Refused {
            code: codes::VALIDATION_FAILED,
            message: format!("invalid data for {kind}: expected a JSON object"),
        });
    }
    let tagged = serde_json::json!({ "type": kind, "data": data });
    serde_json::from_value::<ClientCommand>(tagged).map_err(|error| {
        if ClientCommand::NAMES.contains(&kind) {
            Refused {
                code: codes::VALIDATION_FAILED,
                message: format!("invalid data for {kind}: {error}"),
            }
        } else {
            Refused {
                code: codes::UNKNOWN_TYPE,
                message: format!("unknown event type {kind:?}"),
            }
        }
    })
}

#[derive(Serialize)]
struct AckFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: &'a Option<Value>,
    data: &'a Reply,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: &'a Option<Value>,
    error: &'a str,
    message: &'a str,
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// `{"type": "ack", "ref": ..., "data": ...}`; `None` for commands with no reply (typing).
pub fn ack_frame(reference: &Option<Value>, reply: &Reply) -> Option<String> {
    if matches!(reply, Reply::None) {
        return None;
    }
    serde_json::to_string(&AckFrame {
        kind: "ack",
        reference,
        data: reply,
    })
    .ok()
}

/// `{"type": "error", "ref": ..., "error": code, "message": ...}`.
pub fn error_frame(
    reference: &Option<Value>,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> String {
    serde_json::to_string(&ErrorFrame {
        kind: "error",
        reference,
        error: code,
        message,
        retry_after,
    })
    .unwrap_or_else(|_| {
        String::from(r#"{"type":"error","ref":null,"error":"internal","message":""}"#)
    })
}

/// What a client is told of a failed command: its code, a message (internal causes are
/// logged, never sent) and, for rate limits, the seconds until a retry can succeed.
pub fn describe(error: &EngineError) -> (&'static str, String, Option<u64>) {
    let retry_after = match error {
        EngineError::RateLimited { retry_after_ms } => Some(retry_after_ms.div_ceil(1000)),
        _ => None,
    };
    let message = match error {
        EngineError::Internal(cause) => {
            tracing::error!(%cause, "command failed");
            "an unexpected error occurred".to_owned()
        }
        EngineError::Unavailable(reason) => {
            tracing::warn!(%reason, "command unavailable");
            "temporarily unavailable, retry shortly".to_owned()
        }
        other => other.to_string(),
    };
    (error.code(), message, retry_after)
}

/// The error frame for a failed command.
pub fn engine_error_frame(reference: &Option<Value>, error: &EngineError) -> String {
    let (code, message, retry_after) = describe(error);
    error_frame(reference, code, &message, retry_after)
}

/// What every transport shares when it runs commands: limits and metrics.
pub struct Dispatcher {
    /// The server's rate limits.
    pub limits: Arc<RateLimits>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Every socket's ping and token-expiry deadlines.
    pub heartbeats: Arc<super::heartbeat::Heartbeats>,
}

impl Dispatcher {
    /// Runs a decoded command for a session. Sends count against the user's send limit,
    /// shared with REST, and are timed from here to their ack.
    pub async fn execute(
        &self,
        session: &Session,
        command: ClientCommand,
    ) -> Result<Reply, EngineError> {
        let is_send = matches!(command, ClientCommand::SendMessage(_));
        if is_send {
            self.limits.check_send(session.user(), &self.metrics)?;
        }
        let started = Instant::now();
        let reply = session.execute(command).await?;
        if let Reply::Message {
            stored_now: true, ..
        } = reply
        {
            self.metrics.messages_sent.inc();
            self.metrics
                .send_to_ack_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(reply)
    }

    /// Runs a decoded command and returns the native frame to send back, if any.
    pub async fn run(
        &self,
        session: &Session,
        reference: Option<Value>,
        command: ClientCommand,
    ) -> Option<String> {
        match self.execute(session, command).await {
            Ok(reply) => ack_frame(&reference, &reply),
            Err(error) => Some(engine_error_frame(&reference, &error)),
        }
    }

    /// Checks one incoming frame against its socket's limiter.
    pub fn allow_frame(&self, limiter: &DefaultDirectRateLimiter) -> Result<(), EngineError> {
        self.limits.check_frame(limiter, &self.metrics)
    }

    /// Checks one incoming frame against its socket's limiter; the error frame if refused.
    pub fn check_frame(
        &self,
        limiter: &DefaultDirectRateLimiter,
        reference: &Option<Value>,
    ) -> Option<String> {
        self.allow_frame(limiter)
            .err()
            .map(|error| engine_error_frame(reference, &error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> (Option<Value>, &'static str) {
        match decode(text) {
            Inbound::Invalid {
                reference, code, ..
            } => (reference, code),
            Inbound::Command { command, .. } => panic!("decoded {command:?}"),
        }
    }

    #[test]
    fn decodes_a_send_with_its_ref() {
        let frame = r#"{"type":"message:send","ref":"c7","data":{"conversationId":1,"clientMsgId":"k","body":"hi"}}"#;
        let Inbound::Command { reference, command } = decode(frame) else {
            panic!("not a command");
        };
        assert_eq!(reference, Some(Value::from("c7")));
        assert_eq!(command.name(), "message:send");
    }

    #[test]
    fn bad_frames_get_codes_and_keep_their_ref() {
        assert_eq!(invalid("not json").1, codes::BAD_REQUEST);
        assert_eq!(
            invalid(r#"{"ref":"r1"}"#),
            (Some(Value::from("r1")), codes::BAD_REQUEST)
        );
        assert_eq!(
            invalid(r#"{"type":"message:shout","ref":2,"data":{}}"#),
            (Some(Value::from(2)), codes::UNKNOWN_TYPE)
        );
        assert_eq!(
            invalid(r#"{"type":"message:send","ref":"r3","data":{"conversationId":"x"}}"#),
            (Some(Value::from("r3")), codes::VALIDATION_FAILED)
        );
        assert_eq!(
            invalid(r#"{"type":"sync","ref":"r4"}"#).1,
            codes::VALIDATION_FAILED
        );
    }

    #[test]
    fn only_json_objects_are_frames_and_command_data() {
        // serde reads a struct from an array by position: these ran as commands before.
        assert_eq!(
            invalid(r#"["sync","r1",{"conversationId":1,"afterSeq":0}]"#),
            (None, codes::BAD_REQUEST)
        );
        assert_eq!(
            invalid(r#" ["typing:start",null,[1]]"#),
            (None, codes::BAD_REQUEST)
        );
        assert_eq!(
            invalid(r#"{"type":"sync","ref":"r2","data":[1,0]}"#),
            (Some(Value::from("r2")), codes::VALIDATION_FAILED)
        );
        let refused = decode_command("room:join", serde_json::json!([1]));
        assert_eq!(
            refused.map_err(|refused| refused.code),
            Err(codes::VALIDATION_FAILED)
        );
        let unknown = decode_command("room:shout", serde_json::json!([1]));
        assert_eq!(
            unknown.map_err(|refused| refused.code),
            Err(codes::UNKNOWN_TYPE)
        );
        // Whitespace before the object is still an object.
        assert!(matches!(
            decode(" \n\t{\"type\":\"room:join\",\"data\":{\"conversationId\":1}}"),
            Inbound::Command { .. }
        ));
    }

    #[test]
    fn relayed_call_payloads_keep_their_numbers_exactly() {
        // serde_json parses this to the neighbouring float unless `float_roundtrip` is on.
        let number = "3.6233516252685460e-133";
        let exact: f64 = number.parse().unwrap();
        let frame = format!(
            r#"{{"type":"call:offer","data":{{"callId":"c","toUserId":2,"sdp":{{"x":{number}}}}}}}"#
        );
        let Inbound::Command { command, .. } = decode(&frame) else {
            panic!("not a command");
        };
        let relayed = serde_json::to_value(&command).unwrap();
        assert_eq!(relayed["data"]["sdp"]["x"].as_f64(), Some(exact));
        let text = serde_json::to_string(&relayed).unwrap();
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again["data"]["sdp"]["x"].as_f64(), Some(exact));
    }

    #[test]
    fn typing_has_no_ack_and_errors_have_the_documented_shape() {
        assert_eq!(ack_frame(&Some(Value::from("t")), &Reply::None), None);
        let frame: Value = serde_json::from_str(&error_frame(
            &Some(Value::from("c7")),
            "forbidden",
            "no",
            None,
        ))
        .unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "error", "ref": "c7", "error": "forbidden", "message": "no"})
        );
    }
}
