//! Objects carried by commands, replies and events (camelCase on the wire).

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, MessageId, Seq, Timestamp, UserId};

/// A stored chat message as every member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Unique across conversations.
    pub id: MessageId,
    /// Where it was posted.
    pub conversation_id: ConversationId,
    /// Its gap-free position in the conversation.
    pub seq: Seq,
    /// Who posted it.
    pub sender_id: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// The text; `None` once the message is deleted.
    pub body: Option<String>,
    /// The message this one answers, if any.
    pub reply_to: Option<ReplyPreview>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When its body last changed.
    pub edited_at: Option<Timestamp>,
    /// When it was deleted; the message keeps its seq as a tombstone.
    pub deleted_at: Option<Timestamp>,
}

/// Enough of a replied-to message to draw a quote without fetching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplyPreview {
    /// The replied-to message.
    pub id: MessageId,
    /// Its sender.
    pub sender_id: UserId,
    /// The start of its body (empty once it is deleted).
    pub preview: String,
}

impl ReplyPreview {
    /// Characters of the quoted body kept in a preview.
    pub const PREVIEW_CHARS: usize = 100;

    /// The preview of a message with this id, sender and body.
    pub fn of(id: MessageId, sender_id: UserId, body: Option<&str>) -> Self {
        let preview = body
            .map(|body| body.chars().take(Self::PREVIEW_CHARS).collect())
            .unwrap_or_default();
        Self {
            id,
            sender_id,
            preview,
        }
    }
}

/// Direct (two people, one conversation per pair) or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Between exactly two users.
    Direct,
    /// A titled conversation with any number of members.
    Group,
}

impl ConversationKind {
    /// The value stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
        }
    }

    /// Reads the `kind` column.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "direct" => Some(Self::Direct),
            "group" => Some(Self::Group),
            _ => None,
        }
    }
}

/// A member's role in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Created the conversation; may add and remove members.
    Owner,
    /// Any other member.
    Member,
}

impl MemberRole {
    /// The value stored in the `role` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Member => "member",
        }
    }

    /// Reads the `role` column.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "owner" => Some(Self::Owner),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// A conversation and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// A group's title; `None` for direct conversations.
    pub title: Option<String>,
    /// The seq of its newest message (0 when empty).
    pub last_seq: Seq,
    /// Who created it.
    pub created_by: UserId,
    /// When.
    pub created_at: Timestamp,
    /// Everyone in it, with their watermarks.
    pub members: Vec<Member>,
}

/// One member of a conversation and how far they have got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member.
    pub user_id: UserId,
    /// Owner or member.
    pub role: MemberRole,
    /// Highest seq one of the member's devices has received.
    pub delivered_seq: Seq,
    /// Highest seq the member has read.
    pub read_seq: Seq,
    /// When the member joined.
    pub joined_at: Timestamp,
}

/// A conversation as listed for one of its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConversationSummary {
    /// The conversation with its members.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Its newest message, if any.
    pub last_message: Option<Message>,
    /// Messages from others after the caller's read watermark.
    pub unread_count: i64,
}

/// What a user shows to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Connected and available.
    Online,
    /// Connected, not at the device.
    Away,
    /// Connected, do not disturb.
    Busy,
    /// Connected, shown to others as offline.
    Invisible,
}

/// Whether a user is reachable now, and when they last were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// The user.
    pub user_id: UserId,
    /// Connected and not invisible.
    pub online: bool,
    /// The status they chose, while online (`None` when offline or invisible).
    pub status: Option<PresenceStatus>,
    /// The status text they chose.
    pub status_text: String,
    /// When they were last connected (`None` if never, or while online).
    pub last_seen: Option<Timestamp>,
}
