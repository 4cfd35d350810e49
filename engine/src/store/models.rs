//! Row, insert and changeset structs, side by side, and their conversion to protocol views.

use diesel::prelude::*;

use super::schema::{conversations, members, messages, refresh_tokens, users};
use crate::ids::{ConversationId, MessageId, Seq, Timestamp, UserId};
use crate::protocol::{Conversation, ConversationKind, Member, MemberRole, Message, ReplyPreview};

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    /// Its id.
    pub id: i64,
    /// Unique login name.
    pub username: String,
    /// Shown to others.
    pub display_name: String,
    /// Optional contact address.
    pub email: Option<String>,
    /// The password hash (bcrypt, as the server writes it).
    pub password_hash: String,
    /// Free text shown next to presence.
    pub status_text: String,
    /// When the user was last connected, in ms since the epoch.
    pub last_seen_at: Option<i64>,
    /// When the account was created, in ms since the epoch.
    pub created_at: i64,
}

impl UserRow {
    /// The typed id.
    pub fn user_id(&self) -> UserId {
        UserId(self.id)
    }
}

/// A new user account.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// Shown to others.
    pub display_name: String,
    /// Optional contact address.
    pub email: Option<String>,
    /// The password hash, computed by the caller.
    pub password_hash: String,
    /// Usually empty.
    pub status_text: String,
    /// Never connected yet.
    pub last_seen_at: Option<i64>,
    /// Now, in ms since the epoch.
    pub created_at: i64,
}

/// Changes to a profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct ProfileChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new status text.
    pub status_text: Option<String>,
}

/// A stored refresh token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    /// Its id.
    pub id: i64,
    /// Whose it is.
    pub user_id: i64,
    /// The rotation family it belongs to (one per login).
    pub family_id: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// When it stops being accepted, ms since the epoch.
    pub expires_at: i64,
    /// When it was used to get a new pair.
    pub spent_at: Option<i64>,
    /// When its family was revoked.
    pub revoked_at: Option<i64>,
    /// When it was issued.
    pub created_at: i64,
}

/// A refresh token to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefreshToken {
    /// Whose it is.
    pub user_id: i64,
    /// Its rotation family.
    pub family_id: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Expiry, ms since the epoch.
    pub expires_at: i64,
    /// Now, ms since the epoch.
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations)]
pub(crate) struct ConversationRow {
    pub id: i64,
    pub kind: String,
    pub title: Option<String>,
    pub last_seq: i64,
    pub created_by: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = conversations, treat_none_as_default_value = false)]
pub(crate) struct NewConversationRow {
    pub kind: String,
    pub title: Option<String>,
    pub direct_key: Option<String>,
    pub last_seq: i64,
    pub created_by: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = members)]
pub(crate) struct MemberRow {
    pub conversation_id: i64,
    pub user_id: i64,
    pub role: String,
    pub delivered_seq: i64,
    pub read_seq: i64,
    pub joined_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = messages)]
pub(crate) struct MessageRow {
    pub id: i64,
    pub conversation_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub client_msg_id: String,
    pub body: Option<String>,
    pub reply_to_id: Option<i64>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = messages, treat_none_as_default_value = false)]
pub(crate) struct NewMessageRow {
    pub conversation_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub client_msg_id: String,
    pub body: Option<String>,
    pub reply_to_id: Option<i64>,
    pub created_at: i64,
}

impl MemberRow {
    pub(crate) fn into_member(self) -> Member {
        Member {
            user_id: UserId(self.user_id),
            role: MemberRole::parse(&self.role).unwrap_or(MemberRole::Member),
            delivered_seq: Seq(self.delivered_seq),
            read_seq: Seq(self.read_seq),
            joined_at: Timestamp(self.joined_at),
        }
    }
}

impl ConversationRow {
    pub(crate) fn into_conversation(self, members: Vec<Member>) -> Conversation {
        Conversation {
            id: ConversationId(self.id),
            kind: ConversationKind::parse(&self.kind).unwrap_or(ConversationKind::Group),
            title: self.title,
            last_seq: Seq(self.last_seq),
            created_by: UserId(self.created_by),
            created_at: Timestamp(self.created_at),
            members,
        }
    }
}

impl MessageRow {
    pub(crate) fn preview(&self) -> ReplyPreview {
        ReplyPreview::of(
            MessageId(self.id),
            UserId(self.sender_id),
            self.body.as_deref(),
        )
    }

    pub(crate) fn into_message(self, reply_to: Option<ReplyPreview>) -> Message {
        Message {
            id: MessageId(self.id),
            conversation_id: ConversationId(self.conversation_id),
            seq: Seq(self.seq),
            sender_id: UserId(self.sender_id),
            client_msg_id: self.client_msg_id,
            body: self.body,
            reply_to,
            created_at: Timestamp(self.created_at),
            edited_at: self.edited_at.map(Timestamp),
            deleted_at: self.deleted_at.map(Timestamp),
        }
    }
}
