//! A conversation's member list changing while its sends are in flight: removed here, or
//! reloaded because another node changed it (what the Redis bus asks of a node). On
//! PostgreSQL, where a test can hold a commit at a table lock for as long as it needs.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestClient, TestStore, send};
use courier_engine::bus::{LocalBus, LocalDelivery};
use courier_engine::protocol::ServerEvent;
use courier_engine::store::Store;
use courier_engine::{
    ConversationId, CreateConversation, Engine, EngineError, Limits, Seq, UserId,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

const QUIET: Duration = Duration::from_millis(300);

/// An engine on the in-process bus, and that bus's end of it, through which the test says
/// what another node would: "this conversation's member list changed".
fn engine_with_its_delivery(store: &TestStore) -> (Engine, LocalDelivery) {
    let delivery = Arc::new(Mutex::new(None));
    let engine = Engine::builder(store.store.clone() as Arc<dyn Store>)
        .limits(Limits::default())
        .bus({
            let delivery = Arc::clone(&delivery);
            move |local: LocalDelivery| {
                *delivery.lock().unwrap() = Some(local.clone());
                Arc::new(LocalBus::new(local))
            }
        })
        .build();
    let delivery = delivery.lock().unwrap().take().unwrap();
    (engine, delivery)
}

async fn group(engine: &Engine, owner: UserId, others: &[UserId]) -> ConversationId {
    let request = CreateConversation::Group {
        title: "team".into(),
        members: others.to_vec(),
    };
    engine
        .create_conversation(owner, request)
        .await
        .unwrap()
        .0
        .id
}

/// Returns once `count` sessions of the test's database wait for a lock (the commit or the
/// reload the test holds up is in place).
async fn lock_waiters(url: &str, count: i64) {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    let mut watcher = AsyncPgConnection::establish(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = diesel::select(diesel::dsl::sql::<BigInt>(
            "(SELECT count(*) FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock')",
        ))
        .get_result(&mut watcher)
        .await
        .unwrap();
        if waiting >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{waiting} of {count} lock waiters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An administrator's connection holding `lock` in an open transaction.
async fn hold(url: &str, lock: &str) -> AsyncPgConnection {
    let mut admin = AsyncPgConnection::establish(url).await.unwrap();
    admin
        .batch_execute(&format!("BEGIN; {lock}"))
        .await
        .unwrap();
    admin
}

/// A reload that reads the store after a commit landed, but before the conversation heard
/// that commit's answer, must not count the commit's message as pushed: members still get
/// it.
#[actix_rt::test]
async fn a_reload_during_a_commit_does_not_swallow_its_message() {
    let Some(database) = courier_test_db::TestDatabase::new(common::Backend::Postgres).await else {
        return;
    };
    // One connection: the reload waits for the commit to give it back, so it reads what
    // the commit stored.
    let store = TestStore::configured(database, |config| config.pool_size = 1)
        .await
        .unwrap();
    let (engine, delivery) = engine_with_its_delivery(&store);
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&engine, ann, &[bob]).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;

    let mut admin = hold(&store.url, "LOCK TABLE messages IN SHARE MODE").await;
    let sent = engine.send_message(ann, send(conversation, "k-1", "while reloading"));
    let reload_and_release = async {
        // The commit is at the lock, holding the one connection, when the reload comes.
        lock_waiters(&store.url, 1).await;
        delivery.roster_changed(conversation);
        tokio::time::sleep(Duration::from_millis(200)).await;
        admin.batch_execute("COMMIT").await.unwrap();
    };
    let (sent, ()) = tokio::join!(sent, reload_and_release);
    let (message, created) = sent.unwrap();
    assert!(created);
    assert_eq!(message.seq, Seq(1));

    let pushed = bob_client.next_message().await;
    assert_eq!(
        (pushed.seq, pushed.body.as_deref()),
        (Seq(1), Some("while reloading"))
    );
    let (next, _) = engine
        .send_message(ann, send(conversation, "k-2", "after"))
        .await
        .unwrap();
    assert_eq!(bob_client.next_message().await.seq, next.seq);
}

/// A reload the store cannot answer keeps the member list the conversation had: its
/// members go on sending, and hear each other. A second later it is tried again, and a
/// change made meanwhile takes effect.
#[actix_rt::test]
async fn a_failed_reload_keeps_the_member_list_and_is_tried_again() {
    let Some(database) = courier_test_db::TestDatabase::new(common::Backend::Postgres).await else {
        return;
    };
    const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
    let store = TestStore::configured(database, |config| config.query_timeout = QUERY_TIMEOUT)
        .await
        .unwrap();
    let (engine, delivery) = engine_with_its_delivery(&store);
    let (ann, bob, cat) = (
        store.user("ann").await,
        store.user("bob").await,
        store.user("cat").await,
    );
    let conversation = group(&engine, ann, &[bob, cat]).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;
    engine
        .send_message(ann, send(conversation, "k-1", "before"))
        .await
        .unwrap();
    assert_eq!(bob_client.next_message().await.seq, Seq(1));

    // The reload reads the member list, which the lock holds past the store's timeout;
    // meanwhile cat is removed, as another node would.
    let mut admin = hold(&store.url, "LOCK TABLE members IN ACCESS EXCLUSIVE MODE").await;
    delivery.roster_changed(conversation);
    lock_waiters(&store.url, 1).await;
    tokio::time::sleep(QUERY_TIMEOUT + Duration::from_millis(300)).await;
    admin
        .batch_execute(&format!(
            "DELETE FROM members WHERE conversation_id = {} AND user_id = {}; COMMIT",
            conversation.0, cat.0
        ))
        .await
        .unwrap();

    let (message, _) = engine
        .send_message(ann, send(conversation, "k-2", "after a failed reload"))
        .await
        .unwrap();
    assert_eq!(message.seq, Seq(2));
    let pushed = bob_client.next_message().await;
    assert_eq!(
        (pushed.seq, pushed.body.as_deref()),
        (Seq(2), Some("after a failed reload"))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.authorize(cat, conversation).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload was never tried again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        engine.authorize(cat, conversation).await,
        Err(EngineError::ConversationNotFound(_))
    ));
}

/// A send that passed the membership check but still waits for the commit before it is
/// refused when its sender is removed meanwhile: stored, it would come after the sender
/// left.
#[actix_rt::test]
async fn a_queued_send_of_a_removed_member_is_refused() {
    let Some(store) = TestStore::new(common::Backend::Postgres).await else {
        return;
    };
    let (engine, _) = engine_with_its_delivery(&store);
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&engine, ann, &[bob]).await;
    let mut ann_client = TestClient::connect(&engine, ann).await;

    let mut admin = hold(&store.url, "LOCK TABLE messages IN SHARE MODE").await;
    let anns = engine.send_message(ann, send(conversation, "a-1", "in flight"));
    let bobs = async {
        // Behind ann's commit, which waits at the lock.
        lock_waiters(&store.url, 1).await;
        engine
            .send_message(bob, send(conversation, "b-1", "queued"))
            .await
    };
    let remove_and_release = async {
        lock_waiters(&store.url, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(engine.remove_member(ann, conversation, bob).await.unwrap());
        admin.batch_execute("COMMIT").await.unwrap();
    };
    let (anns, bobs, ()) = tokio::join!(anns, bobs, remove_and_release);

    assert_eq!(anns.unwrap().0.seq, Seq(1));
    assert!(
        matches!(bobs, Err(EngineError::ConversationNotFound(id)) if id == conversation),
        "{bobs:?}"
    );
    let history = engine
        .history(ann, conversation, Default::default())
        .await
        .unwrap();
    let stored: Vec<(Seq, UserId)> = history
        .messages
        .iter()
        .map(|message| (message.seq, message.sender_id))
        .collect();
    assert_eq!(stored, [(Seq(1), ann)]);
    let left = ann_client
        .next_where(|event| matches!(event, ServerEvent::MemberLeft(_)))
        .await;
    assert!(matches!(left, ServerEvent::MemberLeft(change) if change.user_id == bob));
    ann_client
        .assert_none(QUIET, |event| {
            matches!(event, ServerEvent::MessageReceived(message) if message.sender_id == bob)
        })
        .await;
}
