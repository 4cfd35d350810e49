//! Storage: traits named for domain operations, and their Diesel implementation for
//! SQLite (embedded, the default) and PostgreSQL (diesel-async, pooled).
//!
//! The store is the source of truth for ordering: [`MessageStore::append_message_batches`]
//! assigns `seq` inside the same transaction as the insert, so any number of writers
//! (actors, nodes) get one gap-free sequence per conversation.

mod diesel;
pub(crate) mod group_commit;
mod models;
mod pg_statements;
pub(crate) mod schema;

use async_trait::async_trait;

pub use self::diesel::{DieselStore, SqliteDurability, StoreConfig};

/// Users whose memberships one read covers: the store makes one query per this many in
/// [`ConversationStore::memberships_of`], and a resync reads this many at a time, so a
/// failed read costs only its own users.
pub(crate) const USERS_PER_MEMBERSHIP_READ: usize = 1_000;
pub use models::{NewRefreshToken, NewUser, ProfileChanges, RefreshTokenRow, UserRow};

use crate::error::StoreError;
use crate::ids::{ConversationId, MessageId, Seq, Timestamp, UserId};
use crate::protocol::{
    Conversation, ConversationKind, ConversationSummary, Member, MemberRole, Message,
};

/// User accounts.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates an account; [`StoreError::Conflict`] when the username is taken.
    async fn create_user(&self, user: NewUser) -> Result<UserRow, StoreError>;
    /// One account by id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRow>, StoreError>;
    /// One account by its exact username.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError>;
    /// The accounts among `ids` that exist, in no particular order.
    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRow>, StoreError>;
    /// Accounts whose username or display name starts with `prefix`, by username.
    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<UserRow>, StoreError>;
    /// Applies profile changes and returns the updated account.
    async fn update_profile(
        &self,
        id: UserId,
        changes: ProfileChanges,
    ) -> Result<UserRow, StoreError>;
    /// Records when the user was last connected.
    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> Result<(), StoreError>;
    /// Everyone who shares at least one conversation with `id` (for presence).
    async fn contacts_of(&self, id: UserId) -> Result<Vec<UserId>, StoreError>;
    /// The contacts of each of `ids`, as `(user, contact)` pairs: one query for a
    /// batch of presence changes.
    async fn contacts_of_many(&self, ids: &[UserId]) -> Result<Vec<(UserId, UserId)>, StoreError>;
    /// Records when each user was last connected, in one transaction.
    async fn set_last_seen_many(&self, seen: &[(UserId, Timestamp)]) -> Result<(), StoreError>;
}

/// A conversation to create. Members are deduplicated; the creator is always one.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Direct or group.
    pub kind: ConversationKind,
    /// A group's title.
    pub title: Option<String>,
    /// The creator, made owner.
    pub created_by: UserId,
    /// The other members.
    pub members: Vec<UserId>,
}

/// Which watermark a receipt moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watermark {
    /// Received by one of the member's devices.
    Delivered,
    /// Read by the member (implies delivered).
    Read,
}

/// Conversations, membership and watermarks.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Creates a conversation. For a direct conversation that exists already, returns it
    /// with `false`.
    async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<(Conversation, bool), StoreError>;
    /// One conversation with its members.
    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError>;
    /// The members of a conversation (empty if it does not exist).
    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError>;
    /// Adds a member; `false` if they were one already.
    async fn add_member(
        &self,
        id: ConversationId,
        user: UserId,
        role: MemberRole,
    ) -> Result<bool, StoreError>;
    /// Removes a member; `false` if they were not one.
    async fn remove_member(&self, id: ConversationId, user: UserId) -> Result<bool, StoreError>;
    /// The user's conversations, most recently active first, with last message and unread count.
    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationSummary>, StoreError>;
    /// The conversations of each of `users`, as (user, conversation id, last seq), in no
    /// particular order: what a node subscribes to when a user's first session arrives
    /// there, or for every user there when it resyncs.
    async fn memberships_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, ConversationId, Seq)>, StoreError>;
    /// Moves a watermark forward to `seq` (never back; read also moves delivered).
    /// Returns whether it moved.
    async fn advance_watermark(
        &self,
        id: ConversationId,
        user: UserId,
        watermark: Watermark,
        seq: Seq,
    ) -> Result<bool, StoreError>;
}

/// A send to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The sender, already checked to be a member.
    pub sender_id: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// The text.
    pub body: String,
    /// A message this one answers; must be in the same conversation.
    pub reply_to_id: Option<MessageId>,
}

/// One conversation's part of a group commit.
#[derive(Debug, Clone)]
pub struct ConversationSends {
    /// Where the sends go.
    pub conversation: ConversationId,
    /// Oldest first: seqs follow this order.
    pub sends: Vec<NewMessage>,
}

/// What became of one send in a group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored now, with a new seq.
    Created(Message),
    /// Stored before (same sender and clientMsgId): the first result.
    Existing(Message),
    /// `replyToId` names no message of this conversation.
    ReplyNotFound(MessageId),
    /// The sender used this clientMsgId for another conversation.
    ClientMsgIdReused,
}

/// Messages.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores the sends of several conversations in one transaction (a group commit
    /// across conversations), giving each conversation consecutive seqs. Returns, per
    /// batch and in the order given, one outcome per send, or [`StoreError::NotFound`]
    /// for a conversation that does not exist (the other batches still commit). An error
    /// for the whole call means nothing was stored, or, when it is
    /// [`StoreError::Unavailable`], that whether it was is unknown.
    ///
    /// A clientMsgId is the sender's across conversations: a second send of it in the
    /// same call is `Existing` in the same conversation and `ClientMsgIdReused` in another.
    async fn append_message_batches(
        &self,
        batches: Vec<ConversationSends>,
    ) -> Result<Vec<Result<Vec<AppendOutcome>, StoreError>>, StoreError>;
    /// Stores one conversation's sends in one transaction: [`Self::append_message_batches`]
    /// with one batch. [`StoreError::NotFound`] when the conversation does not exist.
    async fn append_messages(
        &self,
        conversation: ConversationId,
        sends: Vec<NewMessage>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let batch = ConversationSends {
            conversation,
            sends,
        };
        let mut results = self.append_message_batches(vec![batch]).await?;
        results.pop().unwrap_or(Err(StoreError::NotFound))
    }
    /// Up to `limit` messages with seq greater than `after`, in seq order.
    async fn messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// As [`MessageStore::messages_after`], once every commit on the conversation still
    /// running has finished: what a commit whose answer was lost stored is then seen.
    async fn settled_messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// Up to `limit` messages with seq less than `before`, the newest of them, in seq order.
    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;
    /// One message by id.
    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError>;
    /// Replaces a live message's body. [`StoreError::NotFound`] if it is gone.
    async fn edit_message(
        &self,
        id: MessageId,
        body: String,
        at: Timestamp,
    ) -> Result<Message, StoreError>;
    /// Turns a message into a tombstone: body cleared, seq kept. Deleting twice is a no-op
    /// that returns the tombstone.
    async fn delete_message(&self, id: MessageId, at: Timestamp) -> Result<Message, StoreError>;
}

/// Refresh tokens, stored by hash, in families that rotate: each use spends one token and
/// issues the next of its family.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores the first token of a new family (a login).
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError>;
    /// Looks a token up by its hash; `revoked_at` is its family's.
    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRow>, StoreError>;
    /// In one transaction that locks the family: spends token `spent` and stores `next` in
    /// its family. `false` when the family is revoked or the token was spent already: of
    /// two concurrent uses of a token, and of a use racing a revocation, only one wins.
    async fn rotate_refresh_token(
        &self,
        spent: i64,
        next: NewRefreshToken,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Revokes a family: none of its tokens is accepted again (logout, or reuse of a spent
    /// token).
    async fn revoke_token_family(&self, family_id: &str, at: Timestamp) -> Result<(), StoreError>;
}

/// Everything the engine stores.
#[async_trait]
pub trait Store: UserStore + ConversationStore + MessageStore + TokenStore + 'static {
    /// Succeeds when the store answers a trivial query (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Most write transactions that make progress side by side: more group commits at
    /// once would only wait for a connection (and could time out there), so the engine
    /// runs at most this many.
    fn concurrent_writers(&self) -> usize {
        usize::MAX
    }
    /// Whether the engine should run group commits on a thread of their own. Worth it
    /// for a store whose queries run on blocking threads: a commit is then only a chain
    /// of hops there and back, and on the caller's executor each hop back waits behind
    /// whatever else that executor has queued (a server's socket writes, under fan-out).
    fn commits_on_own_thread(&self) -> bool {
        false
    }
}
