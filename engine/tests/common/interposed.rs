//! The test store with hooks around a few of its calls, for tests that must hold a call
//! at a chosen point (a membership read, a receipt's write) while something else happens.
//! Every call reaches the real store.

use std::sync::Arc;

use async_trait::async_trait;
use courier_engine::protocol::{Conversation, ConversationSummary, Member, MemberRole, Message};
use courier_engine::store::{
    AppendOutcome, ConversationSends, ConversationStore, DieselStore, MessageStore,
    NewConversation, NewRefreshToken, NewUser, ProfileChanges, RefreshTokenRow, Store, TokenStore,
    UserRow, UserStore, Watermark,
};
use courier_engine::{ConversationId, MessageId, Seq, StoreError, Timestamp, UserId};

/// What runs around the hooked calls; each does nothing unless a test says otherwise.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// `memberships_of` has read, and is about to answer.
    async fn memberships_read(&self) {}
    /// `advance_watermark` is about to run.
    async fn before_advance_watermark(&self) {}
    /// `advance_watermark` has run.
    async fn after_advance_watermark(&self) {}
    /// `add_member` is about to run; an error is its answer instead.
    async fn before_add_member(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The store behind `store`, with `hooks` around some of its calls.
pub struct Interposed {
    store: Arc<DieselStore>,
    hooks: Arc<dyn Hooks>,
}

impl Interposed {
    pub fn new(store: Arc<DieselStore>, hooks: Arc<dyn Hooks>) -> Self {
        Self { store, hooks }
    }
}

#[async_trait]
impl UserStore for Interposed {
    async fn create_user(&self, user: NewUser) -> Result<UserRow, StoreError> {
        self.store.create_user(user).await
    }
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRow>, StoreError> {
        self.store.user_by_id(id).await
    }
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        self.store.user_by_username(username).await
    }
    async fn users_by_ids(&self, ids: &[UserId]) -> Result<Vec<UserRow>, StoreError> {
        self.store.users_by_ids(ids).await
    }
    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<UserRow>, StoreError> {
        self.store.search_users(prefix, limit).await
    }
    async fn update_profile(
        &self,
        id: UserId,
        changes: ProfileChanges,
    ) -> Result<UserRow, StoreError> {
        self.store.update_profile(id, changes).await
    }
    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> Result<(), StoreError> {
        self.store.set_last_seen(id, at).await
    }
    async fn contacts_of(&self, id: UserId) -> Result<Vec<UserId>, StoreError> {
        self.store.contacts_of(id).await
    }
    async fn contacts_of_many(&self, ids: &[UserId]) -> Result<Vec<(UserId, UserId)>, StoreError> {
        self.store.contacts_of_many(ids).await
    }
    async fn set_last_seen_many(&self, seen: &[(UserId, Timestamp)]) -> Result<(), StoreError> {
        self.store.set_last_seen_many(seen).await
    }
}

#[async_trait]
impl ConversationStore for Interposed {
    async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<(Conversation, bool), StoreError> {
        self.store.create_conversation(new).await
    }
    async fn conversation(&self, id: ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.store.conversation(id).await
    }
    async fn members(&self, id: ConversationId) -> Result<Vec<Member>, StoreError> {
        self.store.members(id).await
    }
    async fn add_member(
        &self,
        id: ConversationId,
        user: UserId,
        role: MemberRole,
    ) -> Result<bool, StoreError> {
        self.hooks.before_add_member().await?;
        self.store.add_member(id, user, role).await
    }
    async fn remove_member(&self, id: ConversationId, user: UserId) -> Result<bool, StoreError> {
        self.store.remove_member(id, user).await
    }
    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationSummary>, StoreError> {
        self.store.conversations_of(user).await
    }
    async fn memberships_of(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, ConversationId, Seq)>, StoreError> {
        let read = self.store.memberships_of(users).await;
        self.hooks.memberships_read().await;
        read
    }
    async fn advance_watermark(
        &self,
        id: ConversationId,
        user: UserId,
        watermark: Watermark,
        seq: Seq,
    ) -> Result<bool, StoreError> {
        self.hooks.before_advance_watermark().await;
        let advanced = self.store.advance_watermark(id, user, watermark, seq).await;
        self.hooks.after_advance_watermark().await;
        advanced
    }
}

#[async_trait]
impl MessageStore for Interposed {
    async fn append_message_batches(
        &self,
        batches: Vec<ConversationSends>,
    ) -> Result<Vec<Result<Vec<AppendOutcome>, StoreError>>, StoreError> {
        self.store.append_message_batches(batches).await
    }
    async fn messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.store.messages_after(conversation, after, limit).await
    }
    async fn settled_messages_after(
        &self,
        conversation: ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.store
            .settled_messages_after(conversation, after, limit)
            .await
    }
    async fn messages_before(
        &self,
        conversation: ConversationId,
        before: Seq,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.store
            .messages_before(conversation, before, limit)
            .await
    }
    async fn message(&self, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.store.message(id).await
    }
    async fn edit_message(
        &self,
        id: MessageId,
        body: String,
        at: Timestamp,
    ) -> Result<Message, StoreError> {
        self.store.edit_message(id, body, at).await
    }
    async fn delete_message(&self, id: MessageId, at: Timestamp) -> Result<Message, StoreError> {
        self.store.delete_message(id, at).await
    }
}

#[async_trait]
impl TokenStore for Interposed {
    async fn insert_refresh_token(&self, token: NewRefreshToken) -> Result<(), StoreError> {
        self.store.insert_refresh_token(token).await
    }
    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRow>, StoreError> {
        self.store.refresh_token(token_hash).await
    }
    async fn rotate_refresh_token(
        &self,
        spent: i64,
        next: NewRefreshToken,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.store.rotate_refresh_token(spent, next, at).await
    }
    async fn revoke_token_family(&self, family_id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.store.revoke_token_family(family_id, at).await
    }
}

#[async_trait]
impl Store for Interposed {
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
    fn concurrent_writers(&self) -> usize {
        self.store.concurrent_writers()
    }
    fn commits_on_own_thread(&self) -> bool {
        self.store.commits_on_own_thread()
    }
}
