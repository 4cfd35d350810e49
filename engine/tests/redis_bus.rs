//! Two engines on one store, joined by the Redis bus (a private `redis-server`; skipped
//! where none is installed, unless `COURIER_REQUIRE_REDIS` is set): what a node must not
//! miss while a user's first session arrives there.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::interposed::{Hooks, Interposed};
use common::{TestClient, TestStore};
use courier_engine::bus::{RedisBus, RedisBusConfig};
use courier_engine::protocol::{Message, ServerEvent};
use courier_engine::store::Store;
use courier_engine::{ConversationId, CreateConversation, Engine, Limits, UserId};
use courier_test_db::TestRedis;
use tokio::sync::Notify;

/// Holds the first membership read, once it has read, until the test's word: the window
/// in which another node's note that the user joined a conversation must not be lost.
struct HoldFirstMembershipRead {
    hold: AtomicBool,
    read: Notify,
    release: Notify,
}

#[async_trait]
impl Hooks for HoldFirstMembershipRead {
    async fn memberships_read(&self) {
        if self.hold.swap(false, Ordering::AcqRel) {
            self.read.notify_one();
            self.release.notified().await;
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
    node_with(store, redis_url, bus_store, Limits::default()).await
}

/// [`node`] with limits of the test's own.
async fn node_with(
    store: &TestStore,
    redis_url: &str,
    bus_store: Arc<dyn Store>,
    limits: Limits,
) -> (Engine, Arc<RedisBus>) {
    let mut config = RedisBusConfig::new(redis_url);
    config.prefix = "courier-engine-test".into();
    // Heartbeats (after which a node publishes a resync it owes) every half second.
    config.presence_ttl = Duration::from_secs(3);
    let handle = Arc::new(std::sync::Mutex::new(None));
    let engine = Engine::builder(store.store.clone() as Arc<dyn Store>)
        .limits(limits)
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

/// A `redis-server` of the test's own, or `None` (the test skips) where none is installed.
fn private_redis() -> Option<TestRedis> {
    let redis = TestRedis::start();
    if redis.is_none() {
        eprintln!("skipped: redis-server is not installed");
    }
    redis
}

/// A connection for the test's own commands to Redis.
async fn admin(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
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
    let Some(redis) = private_redis() else {
        return;
    };
    let owner = store.user("owner").await;
    let late = store.user("late").await;
    let held = Arc::new(HoldFirstMembershipRead {
        hold: AtomicBool::new(true),
        read: Notify::new(),
        release: Notify::new(),
    });
    let bus_store = Interposed::new(store.store.clone(), Arc::clone(&held) as Arc<dyn Hooks>);
    let (arriving, _) = node(&store, &redis.url(), Arc::new(bus_store)).await;
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
    let Some(redis) = private_redis() else {
        return;
    };
    let owner = store.user("owner").await;
    let early = store.user("early").await;
    let far = store.user("far").await;
    let lone = store.user("lone").await;
    let (adding, adding_bus) = node(&store, &redis.url(), store.store.clone()).await;
    let (other, other_bus) = node(&store, &redis.url(), store.store.clone()).await;
    // `team` has a member on each node, and each node's conversation actor has loaded
    // its member list (owner and early). `solo` has its owner alone, on the adding node.
    let team = empty_group(&adding, owner).await;
    assert!(adding.add_member(owner, team, early).await.unwrap());
    let solo = empty_group(&adding, owner).await;
    let owner_client = TestClient::connect(&adding, owner).await;
    let early_client = TestClient::connect(&other, early).await;
    let mut far_client = TestClient::connect(&other, far).await;
    let mut lone_client = TestClient::connect(&other, lone).await;
    owner_client.send(team, "owner-before", "before").await;
    early_client.send(team, "early-before", "before").await;
    // Each node has done the resync of its first subscription.
    until(|| adding_bus.stats().resyncs > 0 && other_bus.stats().resyncs > 0).await;
    let resyncs = (adding_bus.stats().resyncs, other_bus.stats().resyncs);

    // Redis refuses every publish for a while: the notes of both joins are dropped. The
    // other node hears nothing of them, though its subscription stays up.
    let mut admin = admin(&redis).await;
    let acl = |rule: &str| {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rule)
            .clone()
    };
    acl("-publish").query_async::<()>(&mut admin).await.unwrap();
    let dropped = adding_bus.stats().dropped;
    assert!(adding.add_member(owner, team, far).await.unwrap());
    assert!(adding.add_member(owner, solo, lone).await.unwrap());
    until(|| adding_bus.stats().dropped >= dropped + 4).await;
    acl("+publish").query_async::<()>(&mut admin).await.unwrap();

    // Once publishes pass again, the adding node owes the cluster a resync.
    until(|| adding_bus.stats().resyncs > resyncs.0 && other_bus.stats().resyncs > resyncs.1).await;
    // `far` hears a send on the other node: its reloaded member list has them.
    let sent = early_client.send(team, "early-after", "after").await;
    hears(&mut far_client, &sent).await;
    // `lone` hears a send on the adding node: the other node follows `solo` again.
    let sent = owner_client.send(solo, "owner-after", "after").await;
    hears(&mut lone_client, &sent).await;
}

/// A member added on their own node hears the sends that follow once each, in order, also
/// while the note of their join is still on its way through Redis (held by a short pause of
/// Redis's writes, shorter than a publish's timeout).
async fn a_member_added_on_their_own_node_hears_each_message_once(store: TestStore) {
    let Some(redis) = private_redis() else {
        return;
    };
    let owner = store.user("owner").await;
    let new = store.user("new").await;
    let (node, bus) = node(&store, &redis.url(), store.store.clone()).await;
    let team = empty_group(&node, owner).await;
    let mut new_client = TestClient::connect(&node, new).await;
    let mut admin = admin(&redis).await;
    let published = bus.stats().published;
    let pause = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(300)
        .arg("WRITE")
        .clone();
    pause.query_async::<()>(&mut admin).await.unwrap();

    assert!(node.add_member(owner, team, new).await.unwrap());
    let mut sent = Vec::new();
    for key in ["one", "two", "three"] {
        let (message, _) = node
            .send_message(owner, common::send(team, key, key))
            .await
            .unwrap();
        sent.push(message);
    }
    for message in &sent {
        hears(&mut new_client, message).await;
    }
    // The note comes back once the pause ends; nothing is pushed again after it.
    until_published(&bus, published).await;
    new_client
        .assert_none(Duration::from_millis(500), |event| {
            matches!(event, ServerEvent::MessageReceived(_))
        })
        .await;
}

async fn an_event_for_many_users_waits_for_the_write_delay_on_every_node(store: TestStore) {
    let Some(redis) = private_redis() else {
        return;
    };
    let limits = Limits {
        // Longer than the test: whatever arrives was not held back by it.
        write_delay: Duration::from_secs(60),
        write_delay_min_audience: 3,
        ..Limits::default()
    };
    let owner = store.user("owner").await;
    let far = store.user("far").await;
    let other = store.user("other").await;
    let (creating, _) = node_with(&store, &redis.url(), store.store.clone(), limits.clone()).await;
    let (far_node, _) = node_with(&store, &redis.url(), store.store.clone(), limits).await;
    let mut far_client = TestClient::connect(&far_node, far).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    far_client.drain();

    // Three members: `conversation:created` crosses to the far node in an envelope of
    // `far`'s own, and waits there as it would on the creating node.
    let create = |members: Vec<UserId>| CreateConversation::Group {
        title: "team".into(),
        members,
    };
    let (large, _) = creating
        .create_conversation(owner, create(vec![far, other]))
        .await
        .unwrap();
    far_client
        .assert_none(Duration::from_millis(500), |event| {
            matches!(event, ServerEvent::ConversationCreated(_))
        })
        .await;
    // Two members: at once, bringing the waiting one along first.
    let (small, _) = creating
        .create_conversation(owner, create(vec![far]))
        .await
        .unwrap();
    let created = |event: &ServerEvent| matches!(event, ServerEvent::ConversationCreated(_));
    let mut heard = Vec::new();
    for _ in 0..2 {
        if let ServerEvent::ConversationCreated(conversation) = far_client.next_where(created).await
        {
            heard.push(conversation.id);
        }
    }
    assert_eq!(heard, [large.id, small.id]);
}

/// A node's only user in a conversation leaves as another member arrives there, over and
/// over: the node hears each send made meanwhile on another node, so its subscription to
/// the conversation outlives every handover; and it lets the subscription go once none
/// of its users is in the conversation.
async fn a_conversation_stays_heard_while_its_users_here_hand_over(store: TestStore) {
    let Some(redis) = private_redis() else {
        return;
    };
    const ROUNDS: usize = 30;
    let owner = store.user("owner").await;
    let ann = store.user("ann").await;
    let bob = store.user("bob").await;
    let (sending, _) = node(&store, &redis.url(), store.store.clone()).await;
    // No grace period: a user whose last session goes leaves the node at once.
    let limits = Limits {
        presence_grace: Duration::ZERO,
        ..Limits::default()
    };
    let (handing, _) = node_with(&store, &redis.url(), store.store.clone(), limits).await;
    let team = empty_group(&sending, owner).await;
    assert!(sending.add_member(owner, team, ann).await.unwrap());
    assert!(sending.add_member(owner, team, bob).await.unwrap());
    let channel = format!("courier-engine-test:c:{}", team.0);
    let owner_client = TestClient::connect(&sending, owner).await;
    let mut here = TestClient::connect(&handing, ann).await;
    let mut next_user = bob;
    for round in 0..ROUNDS {
        // Every other round the one here goes first, so the node has nobody in the
        // conversation for a moment.
        if round % 2 == 0 {
            drop(std::mem::replace(
                &mut here,
                TestClient::connect(&handing, next_user).await,
            ));
        } else {
            drop(here);
            here = TestClient::connect(&handing, next_user).await;
        }
        next_user = if next_user == ann { bob } else { ann };
        let key = format!("round-{round}");
        let sent = owner_client.send(team, &key, &key).await;
        hears(&mut here, &sent).await;
    }
    assert_eq!(subscribers(&redis, &channel).await, 2, "both nodes listen");
    drop(here);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while subscribers(&redis, &channel).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node with nobody in the conversation still listens to it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many connections listen on `channel`.
async fn subscribers(redis: &TestRedis, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut admin(redis).await)
        .await
        .unwrap();
    count
}

async fn until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_stores!(
    a_user_added_on_another_node_while_arriving_hears_the_conversation,
    members_added_while_a_nodes_notes_are_dropped_hear_the_conversation,
    a_member_added_on_their_own_node_hears_each_message_once,
    an_event_for_many_users_waits_for_the_write_delay_on_every_node,
    a_conversation_stays_heard_while_its_users_here_hand_over,
);
