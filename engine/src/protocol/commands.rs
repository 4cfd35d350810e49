//! Commands a client sends over a socket, and the replies to them.

use serde::{Deserialize, Serialize};

use super::views::{Message, PresenceStatus};
use crate::ids::{ConversationId, MessageId, Seq, UserId};

/// One client command, as decoded from a frame: `{"type": "message:send", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum ClientCommand {
    /// Post a message.
    #[serde(rename = "message:send")]
    SendMessage(SendMessage),
    /// Change the body of one's own message.
    #[serde(rename = "message:edit")]
    EditMessage(EditMessage),
    /// Delete one's own message (it keeps its seq).
    #[serde(rename = "message:delete")]
    DeleteMessage(DeleteMessage),
    /// Advance the caller's delivered watermark.
    #[serde(rename = "message:delivered")]
    MarkDelivered(ReceiptUpdate),
    /// Advance the caller's read watermark.
    #[serde(rename = "message:read")]
    MarkRead(ReceiptUpdate),
    /// The user started (or is still) typing.
    #[serde(rename = "typing:start")]
    StartTyping(ConversationRef),
    /// The user stopped typing.
    #[serde(rename = "typing:stop")]
    StopTyping(ConversationRef),
    /// Ask for the messages after a seq.
    #[serde(rename = "sync")]
    Sync(SyncRequest),
    /// Resume this session's events for a conversation (members are subscribed already).
    #[serde(rename = "room:join")]
    JoinRoom(ConversationRef),
    /// Stop this session's events for a conversation until it joins again or reconnects.
    #[serde(rename = "room:leave")]
    LeaveRoom(ConversationRef),
    /// Change the caller's presence status.
    #[serde(rename = "status:update")]
    UpdateStatus(StatusUpdate),
    /// Call signalling, relayed to the peer's sessions.
    #[serde(rename = "call:offer")]
    CallOffer(CallSignal),
    /// Call signalling, relayed to the peer's sessions.
    #[serde(rename = "call:answer")]
    CallAnswer(CallSignal),
    /// Call signalling, relayed to the peer's sessions.
    #[serde(rename = "call:ice")]
    CallIce(CallSignal),
    /// Call signalling, relayed to the peer's sessions.
    #[serde(rename = "call:hangup")]
    CallHangup(CallSignal),
}

impl ClientCommand {
    /// Every command's wire name, in declaration order (for protocol documents and checks).
    pub const NAMES: &'static [&'static str] = &[
        "message:send",
        "message:edit",
        "message:delete",
        "message:delivered",
        "message:read",
        "typing:start",
        "typing:stop",
        "sync",
        "room:join",
        "room:leave",
        "status:update",
        "call:offer",
        "call:answer",
        "call:ice",
        "call:hangup",
    ];

    /// The wire name of this command (`"message:send"`...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::SendMessage(_) => "message:send",
            Self::EditMessage(_) => "message:edit",
            Self::DeleteMessage(_) => "message:delete",
            Self::MarkDelivered(_) => "message:delivered",
            Self::MarkRead(_) => "message:read",
            Self::StartTyping(_) => "typing:start",
            Self::StopTyping(_) => "typing:stop",
            Self::Sync(_) => "sync",
            Self::JoinRoom(_) => "room:join",
            Self::LeaveRoom(_) => "room:leave",
            Self::UpdateStatus(_) => "status:update",
            Self::CallOffer(_) => "call:offer",
            Self::CallAnswer(_) => "call:answer",
            Self::CallIce(_) => "call:ice",
            Self::CallHangup(_) => "call:hangup",
        }
    }
}

/// `message:send`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    /// Where to post.
    pub conversation_id: ConversationId,
    /// The sender's idempotency key: a retry with the same key returns the first result.
    pub client_msg_id: String,
    /// The text.
    pub body: String,
    /// A message of the same conversation this one answers.
    #[serde(default)]
    pub reply_to_id: Option<MessageId>,
}

/// `message:edit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditMessage {
    /// The message to change.
    pub message_id: MessageId,
    /// Its new text.
    pub body: String,
}

/// `message:delete`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteMessage {
    /// The message to delete.
    pub message_id: MessageId,
}

/// `message:delivered` and `message:read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptUpdate {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Everything up to and including this seq.
    pub seq: Seq,
}

/// Commands that name only a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversationRef {
    /// The conversation.
    pub conversation_id: ConversationId,
}

/// `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The last seq the client has; 0 for everything.
    pub after_seq: Seq,
    /// At most this many messages (capped by the engine's page size).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `status:update`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusUpdate {
    /// The new status.
    pub status: PresenceStatus,
    /// A new status text; unchanged when absent.
    #[serde(default)]
    pub text: Option<String>,
}

/// `call:offer`, `call:answer`, `call:ice`, `call:hangup`: opaque signalling for WebRTC.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallSignal {
    /// Chosen by the caller; ties the signals of one call together.
    pub call_id: String,
    /// The peer.
    pub to_user_id: UserId,
    /// A session description (offer, answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<serde_json::Value>,
    /// An ICE candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<serde_json::Value>,
}

/// The answer to a command, as `data` of an `ack` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// `{message}`: sends, edits and deletes.
    Message {
        /// The message as stored.
        message: Message,
        /// This command stored the message (a first send, not a retry, edit or delete).
        /// Not on the wire: for metrics.
        #[serde(skip)]
        stored_now: bool,
    },
    /// `{messages, hasMore}`: sync.
    #[serde(rename_all = "camelCase")]
    Sync {
        /// In seq order.
        messages: Vec<Message>,
        /// More messages follow the last one returned.
        has_more: bool,
    },
    /// `{}`: the command took effect.
    Done {},
    /// Nothing is sent back (typing).
    #[serde(skip)]
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One command of every variant, in declaration order.
    fn every_command() -> Vec<ClientCommand> {
        let conversation_id = ConversationId(2);
        let room = ConversationRef { conversation_id };
        let receipt = ReceiptUpdate {
            conversation_id,
            seq: Seq(3),
        };
        let signal = CallSignal {
            call_id: "k".into(),
            to_user_id: UserId(4),
            sdp: None,
            candidate: None,
        };
        let all = vec![
            ClientCommand::SendMessage(SendMessage {
                conversation_id,
                client_msg_id: "c-1".into(),
                body: "hi".into(),
                reply_to_id: None,
            }),
            ClientCommand::EditMessage(EditMessage {
                message_id: MessageId(1),
                body: "hello".into(),
            }),
            ClientCommand::DeleteMessage(DeleteMessage {
                message_id: MessageId(1),
            }),
            ClientCommand::MarkDelivered(receipt),
            ClientCommand::MarkRead(receipt),
            ClientCommand::StartTyping(room),
            ClientCommand::StopTyping(room),
            ClientCommand::Sync(SyncRequest {
                conversation_id,
                after_seq: Seq(0),
                limit: None,
            }),
            ClientCommand::JoinRoom(room),
            ClientCommand::LeaveRoom(room),
            ClientCommand::UpdateStatus(StatusUpdate {
                status: PresenceStatus::Away,
                text: None,
            }),
            ClientCommand::CallOffer(signal.clone()),
            ClientCommand::CallAnswer(signal.clone()),
            ClientCommand::CallIce(signal.clone()),
            ClientCommand::CallHangup(signal),
        ];
        // Exhaustive on purpose: a new variant does not compile here until it is added
        // to the list above (and then the tests below demand it in `NAMES`).
        for command in &all {
            match command {
                ClientCommand::SendMessage(_)
                | ClientCommand::EditMessage(_)
                | ClientCommand::DeleteMessage(_)
                | ClientCommand::MarkDelivered(_)
                | ClientCommand::MarkRead(_)
                | ClientCommand::StartTyping(_)
                | ClientCommand::StopTyping(_)
                | ClientCommand::Sync(_)
                | ClientCommand::JoinRoom(_)
                | ClientCommand::LeaveRoom(_)
                | ClientCommand::UpdateStatus(_)
                | ClientCommand::CallOffer(_)
                | ClientCommand::CallAnswer(_)
                | ClientCommand::CallIce(_)
                | ClientCommand::CallHangup(_) => {}
            }
        }
        all
    }

    #[test]
    fn names_list_every_variant_once_in_declaration_order() {
        let names: Vec<&str> = every_command().iter().map(ClientCommand::name).collect();
        assert_eq!(names, ClientCommand::NAMES);
    }

    #[test]
    fn names_are_the_serde_tags() {
        for command in every_command() {
            let value = serde_json::to_value(&command).unwrap();
            assert_eq!(value["type"], command.name());
            let back: ClientCommand = serde_json::from_value(value).unwrap();
            assert_eq!(back, command);
        }
    }
}
