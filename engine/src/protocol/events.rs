//! Events the engine pushes to sessions, and their encoded, shareable form.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use super::views::{Conversation, Message, PresenceStatus};
use crate::ids::{ConversationId, Seq, Timestamp, UserId};

/// One pushed event: `{"type": "message:received", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ServerEvent {
    /// A new message; data is the message object.
    #[serde(rename = "message:received")]
    MessageReceived(Message),
    /// A message's body changed; data is the message object.
    #[serde(rename = "message:edited")]
    MessageEdited(Message),
    /// A message was deleted; data is the tombstone (body null, deletedAt set).
    #[serde(rename = "message:deleted")]
    MessageDeleted(Message),
    /// A member's delivered watermark advanced.
    #[serde(rename = "message:delivered")]
    MessageDelivered(ReceiptAdvanced),
    /// A member's read watermark advanced.
    #[serde(rename = "message:read")]
    MessageRead(ReceiptAdvanced),
    /// A member started typing.
    #[serde(rename = "typing:started")]
    TypingStarted(TypingChanged),
    /// A member stopped typing, or their typing flag lapsed.
    #[serde(rename = "typing:stopped")]
    TypingStopped(TypingChanged),
    /// A contact came online.
    #[serde(rename = "user:online")]
    UserOnline(PresenceChanged),
    /// A contact went offline (or invisible).
    #[serde(rename = "user:offline")]
    UserOffline(PresenceChanged),
    /// A contact changed status or status text.
    #[serde(rename = "user:status")]
    UserStatus(StatusChanged),
    /// The receiving user was made a member of a new conversation.
    #[serde(rename = "conversation:created")]
    ConversationCreated(Conversation),
    /// Someone joined a conversation.
    #[serde(rename = "member:joined")]
    MemberJoined(MembershipChanged),
    /// Someone left or was removed from a conversation.
    #[serde(rename = "member:left")]
    MemberLeft(MembershipChanged),
    /// Call signalling from a peer.
    #[serde(rename = "call:offer")]
    CallOffer(CallRelayed),
    /// Call signalling from a peer.
    #[serde(rename = "call:answer")]
    CallAnswer(CallRelayed),
    /// Call signalling from a peer.
    #[serde(rename = "call:ice")]
    CallIce(CallRelayed),
    /// Call signalling from a peer.
    #[serde(rename = "call:hangup")]
    CallHangup(CallRelayed),
}

/// `message:delivered` and `message:read` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptAdvanced {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Whose watermark moved.
    pub user_id: UserId,
    /// Its new value.
    pub seq: Seq,
}

/// `typing:started` and `typing:stopped` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingChanged {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who is typing.
    pub user_id: UserId,
}

/// `user:online` and `user:offline` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceChanged {
    /// The user.
    pub user_id: UserId,
    /// When they were last connected (now, for `user:offline`).
    pub last_seen: Option<Timestamp>,
}

/// `user:status` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChanged {
    /// The user.
    pub user_id: UserId,
    /// Their new status (never `invisible`: that shows as `user:offline`).
    pub status: PresenceStatus,
    /// Their status text.
    pub text: String,
}

/// `member:joined` and `member:left` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipChanged {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who joined or left.
    pub user_id: UserId,
}

/// `call:*` events as the peer receives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRelayed {
    /// The caller's call id.
    pub call_id: String,
    /// Who sent the signal.
    pub from_user_id: UserId,
    /// A session description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<serde_json::Value>,
    /// An ICE candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<serde_json::Value>,
}

impl ServerEvent {
    /// Every event's wire name, in declaration order (for protocol documents and checks).
    pub const NAMES: &'static [&'static str] = &[
        "message:received",
        "message:edited",
        "message:deleted",
        "message:delivered",
        "message:read",
        "typing:started",
        "typing:stopped",
        "user:online",
        "user:offline",
        "user:status",
        "conversation:created",
        "member:joined",
        "member:left",
        "call:offer",
        "call:answer",
        "call:ice",
        "call:hangup",
    ];

    /// The wire name (`"message:received"`...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageReceived(_) => "message:received",
            Self::MessageEdited(_) => "message:edited",
            Self::MessageDeleted(_) => "message:deleted",
            Self::MessageDelivered(_) => "message:delivered",
            Self::MessageRead(_) => "message:read",
            Self::TypingStarted(_) => "typing:started",
            Self::TypingStopped(_) => "typing:stopped",
            Self::UserOnline(_) => "user:online",
            Self::UserOffline(_) => "user:offline",
            Self::UserStatus(_) => "user:status",
            Self::ConversationCreated(_) => "conversation:created",
            Self::MemberJoined(_) => "member:joined",
            Self::MemberLeft(_) => "member:left",
            Self::CallOffer(_) => "call:offer",
            Self::CallAnswer(_) => "call:answer",
            Self::CallIce(_) => "call:ice",
            Self::CallHangup(_) => "call:hangup",
        }
    }

    /// Typing and presence: state that the next event replaces, so it may be dropped under
    /// back-pressure. Everything else must reach the client or close its session.
    pub fn is_ephemeral(&self) -> bool {
        matches!(
            self,
            Self::TypingStarted(_)
                | Self::TypingStopped(_)
                | Self::UserOnline(_)
                | Self::UserOffline(_)
                | Self::UserStatus(_)
        )
    }

    /// The conversation the event belongs to, for per-session `room:leave` filtering.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        match self {
            Self::MessageReceived(message)
            | Self::MessageEdited(message)
            | Self::MessageDeleted(message) => Some(message.conversation_id),
            Self::MessageDelivered(receipt) | Self::MessageRead(receipt) => {
                Some(receipt.conversation_id)
            }
            Self::TypingStarted(typing) | Self::TypingStopped(typing) => {
                Some(typing.conversation_id)
            }
            Self::MemberJoined(change) | Self::MemberLeft(change) => Some(change.conversation_id),
            Self::ConversationCreated(conversation) => Some(conversation.id),
            Self::UserOnline(_)
            | Self::UserOffline(_)
            | Self::UserStatus(_)
            | Self::CallOffer(_)
            | Self::CallAnswer(_)
            | Self::CallIce(_)
            | Self::CallHangup(_) => None,
        }
    }

    /// Serialises the event once; the result is shared by every recipient.
    pub fn encode(&self) -> EventFrame {
        // Serialising a derived enum into a Vec cannot fail: every field is a plain
        // value or a string, and serde_json only fails on maps with non-string keys.
        let json = serde_json::to_string(self).unwrap_or_else(|error| {
            tracing::error!(%error, event = self.name(), "event failed to serialise");
            "{}".to_owned()
        });
        EventFrame::from_text(
            self.name(),
            self.conversation_id(),
            self.is_ephemeral(),
            ByteString::from(json),
        )
    }
}

/// An event serialised once and shared (by reference count) across all its recipients.
#[derive(Debug, Clone)]
pub struct EventFrame(Arc<EncodedEvent>);

#[derive(Debug)]
struct EncodedEvent {
    name: &'static str,
    conversation_id: Option<ConversationId>,
    ephemeral: bool,
    /// Text, so that a WebSocket transport writes it as a text frame without checking
    /// its UTF-8 again for every recipient.
    json: ByteString,
    data: ByteString,
    /// A second transport's framing of the same event, built by the first recipient on
    /// that transport and shared by the rest.
    alternate: std::sync::OnceLock<ByteString>,
}

impl EventFrame {
    /// A frame from an event's JSON (`{"type":"<name>","data":…}`) and what is known of
    /// it, as it arrives from another node: nothing is parsed again, only its UTF-8 is
    /// checked, once for all recipients.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_json(
        name: &'static str,
        conversation_id: Option<ConversationId>,
        ephemeral: bool,
        json: Bytes,
    ) -> Result<Self, std::str::Utf8Error> {
        let json = ByteString::try_from(json)?;
        Ok(Self::from_text(name, conversation_id, ephemeral, json))
    }

    fn from_text(
        name: &'static str,
        conversation_id: Option<ConversationId>,
        ephemeral: bool,
        json: ByteString,
    ) -> Self {
        // The data's bytes are a slice of the same buffer, so a transport with another
        // framing (Socket.IO) shares the serialisation too.
        let prefix = "{\"type\":\"".len() + name.len() + "\",\"data\":".len();
        let data = match json.get(prefix..json.len().saturating_sub(1)) {
            Some(data) if !data.is_empty() => json.slice_ref(data),
            _ => ByteString::from_static("null"),
        };
        EventFrame(Arc::new(EncodedEvent {
            name,
            conversation_id,
            ephemeral,
            json,
            data,
            alternate: std::sync::OnceLock::new(),
        }))
    }

    /// The event as another transport frames it (Socket.IO's `42["name",data]`), built once
    /// per event by `frame` and shared by every recipient on that transport. One alternate
    /// framing is kept: every caller must pass the same `frame`.
    pub fn alternate(&self, frame: impl FnOnce(&str, &str) -> String) -> &ByteString {
        self.0
            .alternate
            .get_or_init(|| ByteString::from(frame(self.0.name, &self.0.data)))
    }

    /// The wire name (`"message:received"`...).
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The native frame: `{"type": ..., "data": ...}` as UTF-8 JSON.
    pub fn json(&self) -> &Bytes {
        self.0.json.as_bytes()
    }

    /// The native frame as text, for a WebSocket text frame.
    pub fn text(&self) -> &ByteString {
        &self.0.json
    }

    /// The `data` part alone, for transports that frame the name separately.
    pub fn data(&self) -> &Bytes {
        self.0.data.as_bytes()
    }

    /// May be dropped under back-pressure (typing, presence).
    pub fn is_ephemeral(&self) -> bool {
        self.0.ephemeral
    }

    /// The conversation it belongs to, if any.
    pub fn conversation_id(&self) -> Option<ConversationId> {
        self.0.conversation_id
    }

    /// Decodes the frame back into a [`ServerEvent`] (for tests and in-process clients).
    pub fn decode(&self) -> serde_json::Result<ServerEvent> {
        serde_json::from_slice(self.0.json.as_bytes())
    }

    /// Two frames are the same allocation (to check that an event was serialised once).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;

    fn sample_events() -> Vec<ServerEvent> {
        let message = Message {
            id: MessageId(1),
            conversation_id: ConversationId(2),
            seq: Seq(3),
            sender_id: UserId(4),
            client_msg_id: "c-1".into(),
            body: Some("hi \"there\"".into()),
            reply_to: None,
            created_at: Timestamp(0),
            edited_at: None,
            deleted_at: None,
        };
        let receipt = ReceiptAdvanced {
            conversation_id: ConversationId(2),
            user_id: UserId(4),
            seq: Seq(3),
        };
        let typing = TypingChanged {
            conversation_id: ConversationId(2),
            user_id: UserId(4),
        };
        let presence = PresenceChanged {
            user_id: UserId(4),
            last_seen: Some(Timestamp(5)),
        };
        let call = CallRelayed {
            call_id: "k".into(),
            from_user_id: UserId(4),
            sdp: Some(serde_json::json!("v=0")),
            candidate: None,
        };
        let membership = MembershipChanged {
            conversation_id: ConversationId(2),
            user_id: UserId(4),
        };
        vec![
            ServerEvent::MessageReceived(message.clone()),
            ServerEvent::MessageEdited(message.clone()),
            ServerEvent::MessageDeleted(message),
            ServerEvent::MessageDelivered(receipt),
            ServerEvent::MessageRead(receipt),
            ServerEvent::TypingStarted(typing),
            ServerEvent::TypingStopped(typing),
            ServerEvent::UserOnline(presence),
            ServerEvent::UserOffline(presence),
            ServerEvent::UserStatus(StatusChanged {
                user_id: UserId(4),
                status: PresenceStatus::Busy,
                text: "lunch".into(),
            }),
            ServerEvent::MemberJoined(membership),
            ServerEvent::MemberLeft(membership),
            ServerEvent::CallOffer(call.clone()),
            ServerEvent::CallAnswer(call.clone()),
            ServerEvent::CallIce(call.clone()),
            ServerEvent::CallHangup(call),
        ]
    }

    #[test]
    fn encoded_frames_carry_the_wire_name_and_a_data_slice() {
        for event in sample_events() {
            let frame = event.encode();
            let value: serde_json::Value = serde_json::from_slice(frame.json()).unwrap();
            assert_eq!(value["type"], event.name());
            let data: serde_json::Value = serde_json::from_slice(frame.data()).unwrap();
            assert_eq!(value["data"], data, "{}", event.name());
            assert_eq!(frame.decode().unwrap(), event);
        }
    }

    #[test]
    fn an_alternate_framing_is_built_once_and_shared() {
        let frame = sample_events()[0].encode();
        let copy = frame.clone();
        let built = std::cell::Cell::new(0);
        let make = |name: &str, data: &str| {
            built.set(built.get() + 1);
            format!("{name}|{data}")
        };
        let first = frame.alternate(make).clone();
        let second = copy.alternate(make).clone();
        assert_eq!(built.get(), 1);
        assert_eq!(first, second);
        assert!(first.starts_with("message:received|{"));
    }

    #[test]
    fn only_typing_and_presence_are_ephemeral() {
        let ephemeral: Vec<_> = sample_events()
            .into_iter()
            .filter(ServerEvent::is_ephemeral)
            .map(|event| event.name())
            .collect();
        assert_eq!(
            ephemeral,
            [
                "typing:started",
                "typing:stopped",
                "user:online",
                "user:offline",
                "user:status"
            ]
        );
    }

    #[test]
    fn message_events_carry_the_message_object_itself() {
        let frame = sample_events()[0].encode();
        let value: serde_json::Value = serde_json::from_slice(frame.json()).unwrap();
        assert_eq!(value["data"]["clientMsgId"], "c-1");
        assert_eq!(value["data"]["conversationId"], 2);
        assert_eq!(value["data"]["createdAt"], "1970-01-01T00:00:00.000Z");
        assert!(value["data"]["replyTo"].is_null());
    }

    /// One event of every variant, in declaration order.
    fn every_event() -> Vec<ServerEvent> {
        use crate::protocol::{ConversationKind, Member, MemberRole};

        let mut all = sample_events();
        let created = ServerEvent::ConversationCreated(Conversation {
            id: ConversationId(2),
            kind: ConversationKind::Group,
            title: Some("team".into()),
            last_seq: Seq(0),
            created_by: UserId(4),
            created_at: Timestamp(0),
            members: vec![Member {
                user_id: UserId(4),
                role: MemberRole::Owner,
                delivered_seq: Seq(0),
                read_seq: Seq(0),
                joined_at: Timestamp(0),
            }],
        });
        let at = all
            .iter()
            .position(|event| matches!(event, ServerEvent::MemberJoined(_)))
            .unwrap_or(all.len());
        all.insert(at, created);
        // Exhaustive on purpose: a new variant does not compile here until it is added
        // to the events above (and then the tests below demand it in `NAMES`).
        for event in &all {
            match event {
                ServerEvent::MessageReceived(_)
                | ServerEvent::MessageEdited(_)
                | ServerEvent::MessageDeleted(_)
                | ServerEvent::MessageDelivered(_)
                | ServerEvent::MessageRead(_)
                | ServerEvent::TypingStarted(_)
                | ServerEvent::TypingStopped(_)
                | ServerEvent::UserOnline(_)
                | ServerEvent::UserOffline(_)
                | ServerEvent::UserStatus(_)
                | ServerEvent::ConversationCreated(_)
                | ServerEvent::MemberJoined(_)
                | ServerEvent::MemberLeft(_)
                | ServerEvent::CallOffer(_)
                | ServerEvent::CallAnswer(_)
                | ServerEvent::CallIce(_)
                | ServerEvent::CallHangup(_) => {}
            }
        }
        all
    }

    #[test]
    fn names_list_every_variant_once_in_declaration_order() {
        let names: Vec<&str> = every_event().iter().map(ServerEvent::name).collect();
        assert_eq!(names, ServerEvent::NAMES);
    }

    #[test]
    fn names_are_the_serde_tags() {
        for event in every_event() {
            let frame = event.encode();
            let value: serde_json::Value = serde_json::from_slice(frame.json()).unwrap();
            assert_eq!(value["type"], event.name());
            assert_eq!(frame.decode().unwrap(), event);
        }
    }
}
