//! Two engines on one store, joined by the Redis bus (a private `redis-server`; skipped
//! where none is installed, unless `COURIER_REQUIRE_REDIS` is set): what a node must not
//! miss while a user's first session arrives there.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestClient, TestStore};
use courier_engine::bus::{Audience, RedisBus, RedisBusConfig};
use courier_engine::protocol::{
    Conversation, ConversationSummary, Member, MemberRole, Message, PresenceChanged, ServerEvent,
};
use courier_engine::store::{
    AppendOutcome, ConversationSends, ConversationStore, DieselStore, MessageStore,
    NewConversation, NewRefreshToken, NewUser, ProfileChanges, RefreshTokenRow, Store, TokenStore,
    UserRow, UserStore, Watermark,
};
use courier_engine::{
    ConversationId, CreateConversation, Engine, Limits, MessageId, Seq, StoreError, Timestamp,
    UserId,
};
use courier_test_db::TestRedis;
use tokio::sync::Notify;

/// The store, except that the first membership read, once it has read, waits for the
/// test's word before it answers: the window in which another node's note that the user
/// joined a conversation must not be lost.
struct HeldMembershipRead {
    store: Arc<DieselStore>,
    hold: AtomicBool,
    read: Notify,
    release: Notify,
}

impl HeldMembershipRead {
    fn new(store: Arc<DieselStore>) -> Self {
        Self {
            store,
            hold: AtomicBool::new(true),
            read: Notify::new(),
            release: Notify::new(),
        }
    }
}

/// An engine on a Redis bus whose store is `bus_store` (the engine's own is the plain
/// one), once its bus is up.
async fn node(
    store: &TestStore,
    redis_url: &str,
    bus_store: Arc<dyn Store>,
) -> (Engine, Arc<RedisBus>) {
    let mut config = RedisBusConfig::new(redis_url);
    config.prefix = "courier-engine-test".into();
    // Heartbeats (after which a node publishes a resync it owes) every half second.
    config.presence_ttl = Duration::from_secs(3);
    let handle = Arc::new(std::sync::Mutex::new(None));
    let engine = Engine::builder(store.store.clone() as Arc<dyn Store>)
        .limits(Limits::default())
        .bus({
            let handle = Arc::clone(&handle);
            move |local| {
                let bus = RedisBus::start(config, bus_store, local).expect("a Redis URL");
                *handle.lock().unwrap() = Some(Arc::clone(&bus));
                bus
            }
        })
        .build();
    let bus = handle.lock().unwrap().take().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(error) = engine.bus_health() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bus not up: {error}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (engine, bus)
}

async fn empty_group(engine: &Engine, owner: UserId) -> ConversationId {
    let request = CreateConversation::Group {
        title: "team".into(),
        members: Vec::new(),
    };
    let created = engine.create_conversation(owner, request).await.unwrap();
    created.0.id
}

/// The next message `client` hears is `sent`.
async fn hears(client: &mut TestClient, sent: &Message) {
    let received = client.next_message().await;
    assert_eq!(received.conversation_id, sent.conversation_id);
    assert_eq!(received.seq, sent.seq);
    assert_eq!(received.body, sent.body);
}

/// Returns once `bus` has sent more than `before` envelopes to Redis and then nothing more
/// for a while: what was queued has been published, so Redis has handed it to whoever was
/// subscribed.
async fn until_published(bus: &RedisBus, before: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = before;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = bus.stats().published;
        if now > before && now == last {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing published");
        last = now;
    }
}

async fn a_user_added_on_another_node_while_arriving_hears_the_conversation(store: TestStore) {
    let Some(redis) = TestRedis::start() else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let owner = store.user("owner").await;
    let late = store.user("late").await;
    let held = Arc::new(HeldMembershipRead::new(store.store.clone()));
    let (arriving, _) = node(&store, &redis.url(), Arc::clone(&held) as Arc<dyn Store>).await;
    let (adding, adding_bus) = node(&store, &redis.url(), store.store.clone()).await;
    let conversation = empty_group(&adding, owner).await;
    let owner_client = TestClient::connect(&adding, owner).await;

    // `late`'s first session arrives on one node; its membership read has read (nothing)
    // and is held while the other node adds `late` to the group.
    let connecting = actix::spawn({
        let arriving = arriving.clone();
        async move { TestClient::connect(&arriving, late).await }
    });
    tokio::time::timeout(Duration::from_secs(10), held.read.notified())
        .await
        .expect("the arrival reads the user's memberships");
    let published = adding_bus.stats().published;
    assert!(adding.add_member(owner, conversation, late).await.unwrap());
    until_published(&adding_bus, published).await;
    held.release.notify_one();
    let mut late_client = connecting.await.unwrap();

    // The arriving node heard the note: it tells the session, and follows the group.
    let created = late_client
        .next_where(|event| matches!(event, ServerEvent::ConversationCreated(_)))
        .await;
    let ServerEvent::ConversationCreated(created) = created else {
        unreachable!()
    };
    assert_eq!(created.id, conversation);
    let sent = owner_client
        .send(conversation, "after-join", "welcome")
        .await;
    hears(&mut late_client, &sent).await;
}

async fn members_added_while_a_nodes_notes_are_dropped_hear_the_conversation(store: TestStore) {
    let Some(redis) = TestRedis::start() else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let owner = store.user("owner").await;
    let near = store.user("near").await;
    let far = store.user("far").await;
    let (adding, adding_bus) = node(&store, &redis.url(), store.store.clone()).await;
    let (other, other_bus) = node(&store, &redis.url(), store.store.clone()).await;
    let conversation = empty_group(&other, owner).await;
    let owner_client = TestClient::connect(&other, owner).await;
    let mut near_client = TestClient::connect(&adding, near).await;
    let mut far_client = TestClient::connect(&other, far).await;
    // The other node's conversation actor holds the member list: the owner alone.
    owner_client.send(conversation, "before", "before").await;

    // Redis stops taking writes: the adding node's publishes wait, fill its outbox, and
    // then are dropped, the notes of the two joins with them.
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pause = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .clone();
    pause.query_async::<()>(&mut admin).await.unwrap();
    let nobody = Audience::Users(Arc::from([UserId(i64::MAX)]));
    let filler = ServerEvent::UserOnline(PresenceChanged {
        user_id: UserId(i64::MAX),
        last_seen: None,
    });
    while adding_bus.stats().dropped == 0 {
        for _ in 0..1_000 {
            adding.publish(nobody.clone(), &filler);
        }
        tokio::task::yield_now().await;
    }
    assert!(adding.add_member(owner, conversation, near).await.unwrap());
    assert!(adding.add_member(owner, conversation, far).await.unwrap());
    let unpause = redis::cmd("CLIENT").arg("UNPAUSE").clone();
    unpause.query_async::<()>(&mut admin).await.unwrap();

    // Once writes pass again, the adding node owes the cluster a resync.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while adding_bus.stats().resyncs == 0 || other_bus.stats().resyncs == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no resync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = owner_client.send(conversation, "after", "after").await;
    // `far` is on the node that commits: its reloaded member list has them. `near` is on
    // the adding node, which follows the conversation again.
    for client in [&mut far_client, &mut near_client] {
        hears(client, &sent).await;
    }
}

on_both_stores!(
    a_user_added_on_another_node_while_arriving_hears_the_conversation,
    members_added_while_a_nodes_notes_are_dropped_hear_the_conversation,
);

#[async_trait]
impl UserStore for HeldMembershipRead {
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
impl ConversationStore for HeldMembershipRead {
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
        self.store.add_member(id, user, role).await
    }
    async fn remove_member(&self, id: ConversationId, user: UserId) -> Result<bool, StoreError> {
        self.store.remove_member(id, user).await
    }
    async fn conversations_of(&self, user: UserId) -> Result<Vec<ConversationSummary>, StoreError> {
        self.store.conversations_of(user).await
    }
    async fn memberships_of(&self, user: UserId) -> Result<Vec<(ConversationId, Seq)>, StoreError> {
        let read = self.store.memberships_of(user).await;
        if self.hold.swap(false, Ordering::AcqRel) {
            self.read.notify_one();
            self.release.notified().await;
        }
        read
    }
    async fn advance_watermark(
        &self,
        id: ConversationId,
        user: UserId,
        watermark: Watermark,
        seq: Seq,
    ) -> Result<bool, StoreError> {
        self.store.advance_watermark(id, user, watermark, seq).await
    }
}

#[async_trait]
impl MessageStore for HeldMembershipRead {
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
impl TokenStore for HeldMembershipRead {
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
impl Store for HeldMembershipRead {
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
