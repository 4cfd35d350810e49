//! The delivery model, end to end through the engine, on SQLite and PostgreSQL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::interposed::{Hooks, Interposed};
use common::{Pushed, TestClient, TestStore, quick_limits, send};
use courier_engine::protocol::{
    CallSignal, ClientCommand, ConversationRef, PresenceStatus, Reply, SendMessage, ServerEvent,
    StatusUpdate, SyncRequest,
};
use courier_engine::store::{ConversationStore, Store, Watermark};
use courier_engine::{
    CloseReason, ConversationId, CreateConversation, EngineError, HistoryPage, Limits, Seq, UserId,
};
use futures_util::future::join_all;
use tokio::sync::Notify;

const QUIET: Duration = Duration::from_millis(300);

async fn group(
    store: &TestStore,
    engine: &courier_engine::Engine,
    owner: UserId,
    others: &[UserId],
) -> ConversationId {
    let request = CreateConversation::Group {
        title: "team".into(),
        members: others.to_vec(),
    };
    let (conversation, created) = engine.create_conversation(owner, request).await.unwrap();
    assert!(created);
    let _ = store;
    conversation.id
}

fn is_message(event: &ServerEvent) -> bool {
    matches!(event, ServerEvent::MessageReceived(_))
}

on_both_stores!(
    concurrent_senders_share_one_gap_free_order,
    retried_sends_return_the_first_result,
    sync_returns_exactly_what_was_missed,
    edits_and_deletes_are_events_and_keep_seq,
    replies_must_stay_in_their_conversation,
    non_members_are_refused_everywhere,
    receipts_move_watermarks_and_unread_counts,
    concurrent_receipts_are_heard_moving_forward,
    typing_is_coalesced_and_expires,
    presence_is_debounced_across_devices,
    slow_consumers_lose_typing_first_then_are_closed,
    leaving_a_room_stops_its_events_for_that_session,
    calls_are_relayed_between_contacts_only,
    conversations_and_membership,
    the_conversations_of_many_users_are_read_in_one_call,
    membership_changes_apply_in_the_order_they_come,
    concurrent_edits_end_on_what_is_stored,
    one_serialisation_is_shared_by_all_recipients,
    a_burst_reaches_a_session_in_one_wake_up_in_order,
    what_comes_before_the_transport_reads_waits_for_it_and_the_close_comes_last,
    a_write_delay_gathers_several_commits_in_one_wake_up,
    events_held_by_the_write_delay_go_out_before_a_shutdown_close,
    only_events_for_a_large_audience_wait_for_the_write_delay,
    events_waiting_for_a_room_left_meanwhile_are_not_written,
    group_commit_settles_every_send_of_a_batch,
    one_commit_settles_the_batches_of_several_conversations,
    idle_conversations_stop_and_restart_on_demand,
    a_conversation_asked_for_before_it_existed_is_found_once_created,
    a_failed_write_stores_nothing_and_the_next_commit_goes_on,
    racing_direct_conversations_resolve_to_one,
    a_receipt_write_goes_on_while_its_conversation_waits_on_a_membership_change,
);

async fn concurrent_senders_share_one_gap_free_order(store: TestStore) {
    let engine = store.engine(Limits::default());
    let users = [
        store.user("ann").await,
        store.user("bob").await,
        store.user("cat").await,
    ];
    let conversation = group(&store, &engine, users[0], &users[1..]).await;
    let mut clients = Vec::new();
    for &user in &users {
        clients.push(TestClient::connect(&engine, user).await);
    }

    const PER_SENDER: usize = 40;
    let sends = users.iter().flat_map(|&user| {
        let engine = engine.clone();
        (0..PER_SENDER).map(move |n| {
            let engine = engine.clone();
            async move {
                let request = send(
                    conversation,
                    &format!("{user}-{n}"),
                    &format!("{user} says {n}"),
                );
                engine.send_message(user, request).await
            }
        })
    });
    let acked = join_all(sends).await;
    let mut acked_seqs: Vec<i64> = acked
        .into_iter()
        .map(|result| result.expect("every send is acked").0.seq.0)
        .collect();
    acked_seqs.sort_unstable();
    let total = users.len() * PER_SENDER;
    assert_eq!(acked_seqs, (1..=total as i64).collect::<Vec<_>>());

    let mut orders = Vec::new();
    for client in &mut clients {
        let mut seen = Vec::new();
        for _ in 0..total {
            let message = client.next_message().await;
            seen.push((message.seq.0, message.id));
        }
        let seqs: Vec<i64> = seen.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=total as i64).collect::<Vec<_>>(),
            "pushed in seq order"
        );
        orders.push(seen);
    }
    assert!(
        orders.windows(2).all(|pair| pair[0] == pair[1]),
        "one order for all"
    );

    let page = engine
        .history(
            users[1],
            conversation,
            HistoryPage {
                limit: Some(200),
                ..HistoryPage::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.messages.len(), total);
    assert!(!page.has_more);
}

/// A commit whose answer never comes back in time (the server gave up waiting; the
/// database committed anyway) is still published to members, in order, exactly once.
#[actix_rt::test]
async fn a_commit_stored_after_its_timeout_still_reaches_members() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let Some(database) = courier_test_db::TestDatabase::new(common::Backend::Postgres).await else {
        return;
    };
    let url = database.url().to_owned();
    let store = TestStore::configured(database, |config| {
        config.query_timeout = Duration::from_millis(400);
    })
    .await
    .unwrap();
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut watcher = TestClient::connect(&engine, bob).await;

    // A deferred trigger makes COMMIT itself take 1.5 s: the store gives up after 0.4 s,
    // while PostgreSQL goes on and commits.
    let mut admin = AsyncPgConnection::establish(&url).await.unwrap();
    admin
        .batch_execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON messages
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let lost_answer = engine
        .send_message(ann, send(conversation, "k-1", "first"))
        .await;
    assert!(
        matches!(lost_answer, Err(EngineError::Unavailable(_))),
        "{lost_answer:?}"
    );
    // Waits for the slow commit's lock on the table, so it returns once it committed.
    admin
        .batch_execute("DROP TRIGGER slow_commit ON messages")
        .await
        .unwrap();

    // No new send is needed for the stored message to go out.
    let first = watcher.next_message().await;
    assert_eq!((first.seq, first.body.as_deref()), (Seq(1), Some("first")));
    let (retried, created) = engine
        .send_message(ann, send(conversation, "k-1", "first"))
        .await
        .unwrap();
    assert!(!created, "the retry finds the stored message");
    assert_eq!(retried.id, first.id);
    let (second, _) = engine
        .send_message(ann, send(conversation, "k-2", "second"))
        .await
        .unwrap();
    assert_eq!(watcher.next_message().await.id, second.id);
    assert_eq!(second.seq, Seq(2));
    watcher.assert_none(QUIET, is_message).await;
}

/// Records each group commit: (conversations, sends, committed).
#[derive(Default)]
struct RecordedCommits(std::sync::Mutex<Vec<(usize, usize, bool)>>);

impl courier_engine::EngineObserver for RecordedCommits {
    fn commit_finished(&self, conversations: usize, sends: usize, _: Duration, committed: bool) {
        self.0
            .lock()
            .unwrap()
            .push((conversations, sends, committed));
    }
}

/// Sends to many conversations share transactions: while the one commit allowed runs,
/// every batch that queues behind it goes in the next.
#[actix_rt::test]
async fn busy_conversations_share_one_transaction() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let Some(store) = TestStore::new(common::Backend::Postgres).await else {
        return;
    };
    let commits = std::sync::Arc::new(RecordedCommits::default());
    let limits = Limits {
        commit_concurrency: 1,
        ..Limits::default()
    };
    let engine = courier_engine::Engine::builder(store.store.clone())
        .limits(limits)
        .observer(commits.clone())
        .build();
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let mut conversations = Vec::new();
    for _ in 0..20 {
        conversations.push(group(&store, &engine, ann, &[bob]).await);
    }

    // The first commit stalls at its insert until the lock is released, and the other
    // nineteen sends queue meanwhile.
    let mut admin = AsyncPgConnection::establish(&store.url).await.unwrap();
    admin
        .batch_execute("BEGIN; LOCK TABLE messages IN SHARE MODE")
        .await
        .unwrap();
    let sends = conversations.iter().enumerate().map(|(n, &conversation)| {
        engine.send_message(ann, send(conversation, &format!("k-{n}"), "hello"))
    });
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        admin.batch_execute("COMMIT").await.unwrap();
    };
    let (acks, ()) = tokio::join!(join_all(sends), release);

    for (ack, conversation) in acks.into_iter().zip(&conversations) {
        let (message, created) = ack.unwrap();
        assert!(created);
        assert_eq!(
            (message.conversation_id, message.seq),
            (*conversation, Seq(1))
        );
    }
    let commits = commits.0.lock().unwrap().clone();
    assert_eq!(
        commits.len(),
        2,
        "the stalled one and all the rest: {commits:?}"
    );
    assert!(
        commits
            .iter()
            .all(|&(conversations, sends, committed)| { committed && conversations == sends })
    );
    assert_eq!(commits.iter().map(|commit| commit.0).sum::<usize>(), 20);
}

async fn retried_sends_return_the_first_result(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let other = group(&store, &engine, ann, &[bob]).await;
    let mut watcher = TestClient::connect(&engine, bob).await;

    let (first, created) = engine
        .send_message(ann, send(conversation, "k-1", "hello"))
        .await
        .unwrap();
    assert!(created);
    let (again, created_again) = engine
        .send_message(ann, send(conversation, "k-1", "hello, edited by a retry"))
        .await
        .unwrap();
    assert!(!created_again);
    assert_eq!(
        again, first,
        "a retry answers the first result, body included"
    );

    // Two copies racing into one group commit still store one message.
    let racing =
        join_all((0..2).map(|_| engine.send_message(ann, send(conversation, "k-2", "once")))).await;
    let racing: Vec<_> = racing.into_iter().map(Result::unwrap).collect();
    assert_eq!(racing[0].0.id, racing[1].0.id);
    assert_eq!(racing.iter().filter(|(_, created)| *created).count(), 1);

    let reused = engine
        .send_message(ann, send(other, "k-1", "elsewhere"))
        .await;
    assert!(
        matches!(reused, Err(EngineError::Conflict(_))),
        "{reused:?}"
    );

    assert_eq!(watcher.next_message().await.id, first.id);
    assert_eq!(watcher.next_message().await.seq, Seq(2));
    watcher.assert_none(QUIET, is_message).await;
    let page = engine
        .history(bob, conversation, HistoryPage::default())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2);
}

async fn sync_returns_exactly_what_was_missed(store: TestStore) {
    let engine = store.engine(quick_limits());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let sender = TestClient::connect(&engine, ann).await;
    let mut away = TestClient::connect(&engine, bob).await;
    sender.send(conversation, "m1", "one").await;
    let last_seen = away.next_message().await.seq;
    drop(away);

    for n in 2..=6 {
        sender
            .send(conversation, &format!("m{n}"), &format!("message {n}"))
            .await;
    }
    let back = TestClient::connect(&engine, bob).await;
    let sync = |after: Seq, limit: Option<u32>| {
        back.session.execute(ClientCommand::Sync(SyncRequest {
            conversation_id: conversation,
            after_seq: after,
            limit,
        }))
    };
    let Reply::Sync { messages, has_more } = sync(last_seen, None).await.unwrap() else {
        panic!("sync answers messages");
    };
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    assert_eq!(messages[0].body.as_deref(), Some("message 2"));
    assert!(!has_more);

    let Reply::Sync { messages, has_more } = sync(last_seen, Some(2)).await.unwrap() else {
        panic!("sync answers messages");
    };
    assert_eq!(messages.iter().map(|m| m.seq.0).collect::<Vec<_>>(), [2, 3]);
    assert!(has_more);

    let older = engine
        .history(
            bob,
            conversation,
            HistoryPage {
                before: Some(Seq(4)),
                limit: Some(2),
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        older.messages.iter().map(|m| m.seq.0).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(older.has_more);
}

async fn edits_and_deletes_are_events_and_keep_seq(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let ann_client = TestClient::connect(&engine, ann).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;
    let original = ann_client.send(conversation, "e1", "helo").await;
    bob_client.next_message().await;

    let edited = engine
        .edit_message(ann, original.id, "hello".into())
        .await
        .unwrap();
    assert_eq!(edited.body.as_deref(), Some("hello"));
    assert!(edited.edited_at.is_some());
    assert_eq!(edited.seq, original.seq);
    let event = bob_client
        .next_where(|e| matches!(e, ServerEvent::MessageEdited(_)))
        .await;
    assert_eq!(event, ServerEvent::MessageEdited(edited.clone()));

    let not_yours = engine
        .edit_message(bob, original.id, "mine now".into())
        .await;
    assert!(
        matches!(not_yours, Err(EngineError::Forbidden(_))),
        "{not_yours:?}"
    );
    let not_yours = engine.delete_message(bob, original.id).await;
    assert!(
        matches!(not_yours, Err(EngineError::Forbidden(_))),
        "{not_yours:?}"
    );

    let deleted = engine.delete_message(ann, original.id).await.unwrap();
    assert_eq!(deleted.body, None);
    assert!(deleted.deleted_at.is_some());
    assert_eq!(deleted.seq, original.seq);
    let event = bob_client
        .next_where(|e| matches!(e, ServerEvent::MessageDeleted(_)))
        .await;
    assert_eq!(event, ServerEvent::MessageDeleted(deleted.clone()));

    let after_delete = engine.edit_message(ann, original.id, "back".into()).await;
    assert!(
        matches!(after_delete, Err(EngineError::Conflict(_))),
        "{after_delete:?}"
    );
    let page = engine
        .history(bob, conversation, HistoryPage::default())
        .await
        .unwrap();
    assert_eq!(page.messages, vec![deleted]);
    let next = ann_client.send(conversation, "e2", "after").await;
    assert_eq!(next.seq, Seq(2), "a tombstone keeps its seq");
}

async fn replies_must_stay_in_their_conversation(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let here = group(&store, &engine, ann, &[bob]).await;
    let elsewhere = group(&store, &engine, ann, &[bob]).await;
    let question = TestClient::connect(&engine, ann)
        .await
        .send(here, "q", "lunch at noon? ".repeat(20).as_str())
        .await;
    let foreign = TestClient::connect(&engine, ann)
        .await
        .send(elsewhere, "f", "other")
        .await;

    let answer = SendMessage {
        reply_to_id: Some(question.id),
        ..send(here, "a", "yes")
    };
    let (answer, _) = engine.send_message(bob, answer).await.unwrap();
    let reply = answer.reply_to.expect("reply preview");
    assert_eq!(reply.id, question.id);
    assert_eq!(reply.sender_id, ann);
    assert_eq!(reply.preview.chars().count(), 100);
    assert!(question.body.unwrap().starts_with(&reply.preview));

    let across = SendMessage {
        reply_to_id: Some(foreign.id),
        ..send(here, "x", "sneaky")
    };
    let refused = engine.send_message(bob, across).await;
    assert!(
        matches!(refused, Err(EngineError::Invalid(_))),
        "{refused:?}"
    );
    let page = engine
        .history(bob, here, HistoryPage::default())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2, "the refused reply stored nothing");
    assert_eq!(engine.authorize(bob, here).await.unwrap(), Seq(2));
}

async fn non_members_are_refused_everywhere(store: TestStore) {
    let engine = store.engine(quick_limits());
    let (ann, bob, eve) = (
        store.user("ann").await,
        store.user("bob").await,
        store.user("eve").await,
    );
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut outsider = TestClient::connect(&engine, eve).await;
    let member = TestClient::connect(&engine, ann).await;
    let message = member.send(conversation, "s1", "secret").await;
    member
        .session
        .execute(ClientCommand::StartTyping(ConversationRef {
            conversation_id: conversation,
        }))
        .await
        .unwrap();

    let commands = [
        ClientCommand::SendMessage(send(conversation, "e1", "let me in")),
        ClientCommand::Sync(SyncRequest {
            conversation_id: conversation,
            after_seq: Seq(0),
            limit: None,
        }),
        ClientCommand::StartTyping(ConversationRef {
            conversation_id: conversation,
        }),
        ClientCommand::JoinRoom(ConversationRef {
            conversation_id: conversation,
        }),
        ClientCommand::MarkRead(courier_engine::protocol::ReceiptUpdate {
            conversation_id: conversation,
            seq: Seq(1),
        }),
        ClientCommand::EditMessage(courier_engine::protocol::EditMessage {
            message_id: message.id,
            body: "x".into(),
        }),
        ClientCommand::DeleteMessage(courier_engine::protocol::DeleteMessage {
            message_id: message.id,
        }),
    ];
    for command in commands {
        let name = command.name();
        let refused = outsider.session.execute(command).await;
        assert!(
            matches!(
                refused,
                Err(EngineError::ConversationNotFound(_) | EngineError::MessageNotFound(_))
            ),
            "{name}: {refused:?}"
        );
    }
    assert!(matches!(
        engine
            .history(eve, conversation, HistoryPage::default())
            .await,
        Err(EngineError::ConversationNotFound(_))
    ));
    assert!(matches!(
        engine.conversation(eve, conversation).await,
        Err(EngineError::ConversationNotFound(_))
    ));
    let missing = engine
        .send_message(eve, send(ConversationId(987_654), "m", "nobody"))
        .await;
    assert!(
        matches!(missing, Err(EngineError::ConversationNotFound(_))),
        "{missing:?}"
    );
    outsider
        .assert_none(QUIET, |event| event.conversation_id() == Some(conversation))
        .await;
    assert_eq!(
        engine.authorize(ann, conversation).await.unwrap(),
        Seq(1),
        "nothing was stored"
    );
}

/// A member's stored (delivered, read) watermarks, as another member sees them.
async fn watermarks(
    engine: &courier_engine::Engine,
    viewer: UserId,
    conversation: ConversationId,
    member: UserId,
) -> (Seq, Seq) {
    let members = engine
        .conversation(viewer, conversation)
        .await
        .unwrap()
        .members;
    let member = members.iter().find(|m| m.user_id == member).unwrap();
    (member.delivered_seq, member.read_seq)
}

async fn receipts_move_watermarks_and_unread_counts(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut ann_client = TestClient::connect(&engine, ann).await;
    for n in 1..=3 {
        ann_client
            .send(conversation, &format!("r{n}"), "ping")
            .await;
    }
    let unread = |engine: courier_engine::Engine| async move {
        let list = engine.conversations(bob).await.unwrap();
        let summary = list
            .into_iter()
            .find(|s| s.conversation.id == conversation)
            .unwrap();
        (summary.unread_count, summary.last_message.map(|m| m.seq))
    };
    assert_eq!(unread(engine.clone()).await, (3, Some(Seq(3))));

    engine
        .mark(bob, conversation, Watermark::Delivered, Seq(3))
        .await
        .unwrap();
    let delivered = ann_client
        .next_where(|e| matches!(e, ServerEvent::MessageDelivered(_)))
        .await;
    assert_eq!(
        delivered,
        ServerEvent::MessageDelivered(courier_engine::protocol::ReceiptAdvanced {
            conversation_id: conversation,
            user_id: bob,
            seq: Seq(3)
        })
    );
    engine
        .mark(bob, conversation, Watermark::Read, Seq(2))
        .await
        .unwrap();
    let read = ann_client
        .next_where(|e| matches!(e, ServerEvent::MessageRead(_)))
        .await;
    assert_eq!(
        read,
        ServerEvent::MessageRead(courier_engine::protocol::ReceiptAdvanced {
            conversation_id: conversation,
            user_id: bob,
            seq: Seq(2)
        })
    );
    assert_eq!(unread(engine.clone()).await, (1, Some(Seq(3))));

    engine
        .mark(bob, conversation, Watermark::Read, Seq(1))
        .await
        .unwrap();
    ann_client
        .assert_none(QUIET, |e| matches!(e, ServerEvent::MessageRead(_)))
        .await;
    let beyond = engine
        .mark(bob, conversation, Watermark::Read, Seq(4))
        .await;
    assert!(matches!(beyond, Err(EngineError::Invalid(_))), "{beyond:?}");

    assert_eq!(
        watermarks(&engine, ann, conversation, bob).await,
        (Seq(3), Seq(2))
    );
    assert_eq!(unread(engine.clone()).await.0, 1);
    let ann_list = engine.conversations(ann).await.unwrap();
    assert_eq!(
        ann_list[0].unread_count, 0,
        "one's own messages are never unread"
    );
}

async fn concurrent_receipts_are_heard_moving_forward(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut ann_client = TestClient::connect(&engine, ann).await;
    const ROUNDS: i64 = 20;
    const PER_ROUND: i64 = 16;
    let mut heard = Vec::new();
    for round in 0..ROUNDS {
        for n in 1..=PER_ROUND {
            ann_client
                .send(conversation, &format!("m{round}-{n}"), "ping")
                .await;
        }
        // Bob's devices report reading at once, each up to a different seq: on PostgreSQL
        // the receipts are stored concurrently and answered in any order (SQLite's one
        // writer answers them in order), and ann must never hear bob's watermark go back.
        let last = (round + 1) * PER_ROUND;
        let marks = (last - PER_ROUND + 1..=last)
            .map(|seq| engine.mark(bob, conversation, Watermark::Read, Seq(seq)));
        for marked in join_all(marks).await {
            marked.unwrap();
        }
        loop {
            let read = ann_client
                .next_where(|e| matches!(e, ServerEvent::MessageRead(_)))
                .await;
            let ServerEvent::MessageRead(receipt) = read else {
                unreachable!("{read:?}")
            };
            assert_eq!(
                (receipt.conversation_id, receipt.user_id),
                (conversation, bob)
            );
            heard.push(receipt.seq.0);
            if receipt.seq == Seq(last) {
                break;
            }
        }
    }
    ann_client
        .assert_none(QUIET, |e| matches!(e, ServerEvent::MessageRead(_)))
        .await;
    assert!(
        heard.windows(2).all(|pair| pair[0] < pair[1]),
        "read receipts are heard moving forward only: {heard:?}"
    );
    let (_, read) = watermarks(&engine, ann, conversation, bob).await;
    assert_eq!(read, Seq(ROUNDS * PER_ROUND));
}

async fn typing_is_coalesced_and_expires(store: TestStore) {
    let engine = store.engine(quick_limits());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut ann_client = TestClient::connect(&engine, ann).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;
    let typing = |typing| engine.set_typing(ann, conversation, typing);
    let is_typing = |e: &ServerEvent| {
        matches!(
            e,
            ServerEvent::TypingStarted(_) | ServerEvent::TypingStopped(_)
        )
    };

    typing(true).await.unwrap();
    typing(true).await.unwrap();
    let started = bob_client.next_where(is_typing).await;
    assert_eq!(
        started,
        ServerEvent::TypingStarted(courier_engine::protocol::TypingChanged {
            conversation_id: conversation,
            user_id: ann
        })
    );
    // Refreshed before expiry: still one "started", then one "stopped" when it lapses.
    tokio::time::sleep(Duration::from_millis(200)).await;
    typing(true).await.unwrap();
    let stopped = bob_client.next_where(is_typing).await;
    assert!(
        matches!(stopped, ServerEvent::TypingStopped(_)),
        "{stopped:?}"
    );
    ann_client.assert_none(QUIET, is_typing).await;

    typing(true).await.unwrap();
    assert!(matches!(
        bob_client.next_where(is_typing).await,
        ServerEvent::TypingStarted(_)
    ));
    ann_client.send(conversation, "t1", "done typing").await;
    assert!(
        matches!(
            bob_client
                .next_where(|e| is_typing(e) || is_message(e))
                .await,
            ServerEvent::TypingStopped(_)
        ),
        "sending stops typing"
    );
    typing(false).await.unwrap();
    bob_client.assert_none(QUIET, is_typing).await;
}

async fn presence_is_debounced_across_devices(store: TestStore) {
    let engine = store.engine(quick_limits());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let _conversation = group(&store, &engine, ann, &[bob]).await;
    let mut watcher = TestClient::connect(&engine, bob).await;
    let is_presence = |e: &ServerEvent| matches!(e, ServerEvent::UserOnline(p) | ServerEvent::UserOffline(p) if p.user_id != bob);

    let phone = TestClient::connect(&engine, ann).await;
    assert!(
        matches!(watcher.next_where(is_presence).await, ServerEvent::UserOnline(p) if p.user_id == ann)
    );
    let laptop = TestClient::connect(&engine, ann).await;
    drop(phone);
    watcher.assert_none(QUIET, is_presence).await;
    let online = engine.presence(&[ann]).await.unwrap();
    assert!(online[0].online);
    assert_eq!(online[0].status, Some(PresenceStatus::Online));

    // Last device gone, back within the grace period: contacts see nothing.
    drop(laptop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let laptop = TestClient::connect(&engine, ann).await;
    watcher
        .assert_none(Duration::from_millis(500), is_presence)
        .await;

    laptop
        .session
        .execute(ClientCommand::UpdateStatus(StatusUpdate {
            status: PresenceStatus::Busy,
            text: Some("in a meeting".into()),
        }))
        .await
        .unwrap();
    let status = watcher
        .next_where(|e| matches!(e, ServerEvent::UserStatus(_)))
        .await;
    assert_eq!(
        status,
        ServerEvent::UserStatus(courier_engine::protocol::StatusChanged {
            user_id: ann,
            status: PresenceStatus::Busy,
            text: "in a meeting".into()
        })
    );

    drop(laptop);
    let offline = watcher.next_where(is_presence).await;
    let ServerEvent::UserOffline(offline) = offline else {
        panic!("{offline:?}")
    };
    assert_eq!(offline.user_id, ann);
    assert!(offline.last_seen.is_some());
    let presence = engine.presence(&[ann]).await.unwrap();
    assert!(!presence[0].online);
    assert_eq!(presence[0].last_seen, offline.last_seen);
    assert_eq!(presence[0].status_text, "in a meeting");
}

async fn slow_consumers_lose_typing_first_then_are_closed(store: TestStore) {
    let limits = Limits {
        outbound_queue_capacity: 8,
        ..quick_limits()
    };
    let engine = store.engine(limits);
    let (ann, bob, cat) = (
        store.user("ann").await,
        store.user("bob").await,
        store.user("cat").await,
    );
    let conversation = group(&store, &engine, ann, &[bob, cat]).await;
    let mut stuck = TestClient::connect(&engine, bob).await; // never reads
    let mut reader = TestClient::connect(&engine, cat).await;
    let sender = TestClient::connect(&engine, ann).await;
    tokio::time::sleep(QUIET).await; // presence settles
    let _ = stuck.take_raw(); // leave the queue's count as it is: nothing is "written"

    for n in 0..5 {
        engine
            .set_typing(ann, conversation, n % 2 == 0)
            .await
            .unwrap();
    }
    // The reader keeps up and gets everything.
    for n in 1..=12 {
        sender.send(conversation, &format!("s{n}"), "flood").await;
        assert_eq!(reader.next_message().await.seq, Seq(n));
    }
    assert!(stuck.session.queue().overflowed());
    assert!(
        stuck.session.queue().dropped_ephemeral() > 0,
        "typing went first"
    );
    let mut closed = false;
    let mut delivered = Vec::new();
    while let Some(item) = stuck.take_raw() {
        match item {
            Pushed::Event(frame) => {
                if let Ok(ServerEvent::MessageReceived(m)) = frame.decode() {
                    delivered.push(m.seq.0);
                }
            }
            Pushed::Close(reason) => {
                assert_eq!(reason, CloseReason::SlowConsumer);
                assert_eq!(reason.close_code(), 4008);
                closed = true;
            }
        }
    }
    assert!(closed, "the stuck session is told to close");
    // Even if its transport never handles the close, the engine let go of it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !engine.presence(&[bob]).await.unwrap()[0].online,
        "the stuck session was detached"
    );
    assert!(delivered.len() < 12);
    assert_eq!(
        delivered,
        (1..=delivered.len() as i64).collect::<Vec<_>>(),
        "what was pushed is a gap-free prefix"
    );
    let resumed = TestClient::connect(&engine, bob).await;
    let after = Seq(*delivered.last().unwrap_or(&0));
    let Reply::Sync { messages, .. } = resumed
        .session
        .execute(ClientCommand::Sync(SyncRequest {
            conversation_id: conversation,
            after_seq: after,
            limit: None,
        }))
        .await
        .unwrap()
    else {
        panic!()
    };
    let mut all: Vec<i64> = delivered.clone();
    all.extend(messages.iter().map(|m| m.seq.0));
    assert_eq!(
        all,
        (1..=12).collect::<Vec<_>>(),
        "sync fills in exactly the rest"
    );
}

async fn leaving_a_room_stops_its_events_for_that_session(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let first = group(&store, &engine, ann, &[bob]).await;
    let second = group(&store, &engine, ann, &[bob]).await;
    let sender = TestClient::connect(&engine, ann).await;
    let mut left = TestClient::connect(&engine, bob).await;
    let mut other_device = TestClient::connect(&engine, bob).await;

    let room = ConversationRef {
        conversation_id: first,
    };
    assert_eq!(
        left.session
            .execute(ClientCommand::LeaveRoom(room))
            .await
            .unwrap(),
        Reply::Done {}
    );
    sender.send(first, "l1", "muted here").await;
    sender.send(second, "l2", "still heard").await;
    assert_eq!(left.next_message().await.conversation_id, second);
    assert_eq!(
        other_device.next_message().await.conversation_id,
        first,
        "other sessions unaffected"
    );

    left.session
        .execute(ClientCommand::JoinRoom(room))
        .await
        .unwrap();
    sender.send(first, "l3", "heard again").await;
    assert_eq!(left.next_message().await.client_msg_id, "l3");
}

async fn calls_are_relayed_between_contacts_only(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob, eve) = (
        store.user("ann").await,
        store.user("bob").await,
        store.user("eve").await,
    );
    let (_direct, _) = engine
        .create_conversation(ann, CreateConversation::Direct { peer: bob })
        .await
        .unwrap();
    let caller = TestClient::connect(&engine, ann).await;
    let mut callee = TestClient::connect(&engine, bob).await;
    let mut stranger = TestClient::connect(&engine, eve).await;

    let offer = CallSignal {
        call_id: "call-1".into(),
        to_user_id: bob,
        sdp: Some(serde_json::json!("v=0 offer")),
        candidate: None,
    };
    assert_eq!(
        caller
            .session
            .execute(ClientCommand::CallOffer(offer))
            .await
            .unwrap(),
        Reply::Done {}
    );
    let relayed = callee
        .next_where(|e| matches!(e, ServerEvent::CallOffer(_)))
        .await;
    let ServerEvent::CallOffer(relayed) = relayed else {
        unreachable!()
    };
    assert_eq!(
        (relayed.call_id.as_str(), relayed.from_user_id),
        ("call-1", ann)
    );
    assert_eq!(relayed.sdp, Some(serde_json::json!("v=0 offer")));

    let cold_call = CallSignal {
        call_id: "call-2".into(),
        to_user_id: eve,
        sdp: None,
        candidate: None,
    };
    let refused = caller
        .session
        .execute(ClientCommand::CallOffer(cold_call))
        .await;
    assert!(
        matches!(refused, Err(EngineError::UserNotFound(_))),
        "{refused:?}"
    );
    stranger
        .assert_none(QUIET, |e| matches!(e, ServerEvent::CallOffer(_)))
        .await;
}

async fn conversations_and_membership(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob, cat) = (
        store.user("ann").await,
        store.user("bob").await,
        store.user("cat").await,
    );
    let mut bob_client = TestClient::connect(&engine, bob).await;
    let mut cat_client = TestClient::connect(&engine, cat).await;

    let (direct, created) = engine
        .create_conversation(ann, CreateConversation::Direct { peer: bob })
        .await
        .unwrap();
    assert!(created);
    let created_event = bob_client
        .next_where(|e| matches!(e, ServerEvent::ConversationCreated(_)))
        .await;
    assert_eq!(
        created_event,
        ServerEvent::ConversationCreated(direct.clone())
    );
    let (again, created) = engine
        .create_conversation(bob, CreateConversation::Direct { peer: ann })
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, direct.id);
    assert!(matches!(
        engine
            .create_conversation(ann, CreateConversation::Direct { peer: ann })
            .await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        engine
            .create_conversation(
                ann,
                CreateConversation::Direct {
                    peer: UserId(424_242)
                }
            )
            .await,
        Err(EngineError::UserNotFound(_))
    ));
    assert!(matches!(
        engine.add_member(ann, direct.id, cat).await,
        Err(EngineError::Forbidden(_))
    ));

    let team = group(&store, &engine, ann, &[bob]).await;
    assert!(engine.add_member(bob, team, cat).await.unwrap());
    assert!(
        !engine.add_member(bob, team, cat).await.unwrap(),
        "adding twice changes nothing"
    );
    let joined = cat_client
        .next_where(|e| matches!(e, ServerEvent::ConversationCreated(_)))
        .await;
    assert!(matches!(joined, ServerEvent::ConversationCreated(c) if c.id == team));
    let message = TestClient::connect(&engine, ann)
        .await
        .send(team, "w", "welcome")
        .await;
    assert_eq!(cat_client.next_message().await.id, message.id);

    assert!(
        matches!(
            engine.remove_member(bob, team, cat).await,
            Err(EngineError::Forbidden(_))
        ),
        "members remove only themselves"
    );
    assert!(engine.remove_member(ann, team, cat).await.unwrap());
    let left = cat_client
        .next_where(|e| matches!(e, ServerEvent::MemberLeft(_)))
        .await;
    assert!(matches!(left, ServerEvent::MemberLeft(change) if change.user_id == cat));
    TestClient::connect(&engine, ann)
        .await
        .send(team, "x", "after cat left")
        .await;
    cat_client.assert_none(QUIET, is_message).await;
    assert!(matches!(
        engine.history(cat, team, HistoryPage::default()).await,
        Err(EngineError::ConversationNotFound(_))
    ));
    assert!(
        engine.remove_member(bob, team, bob).await.unwrap(),
        "anyone may leave"
    );

    let listed = engine.conversations(ann).await.unwrap();
    assert_eq!(
        listed.first().map(|s| s.conversation.id),
        Some(team),
        "most recent activity first"
    );
    assert_eq!(listed.len(), 2);
}

/// What a node reads when it resyncs every user it has: each user's conversations with
/// their last seqs, also across the store's chunks of users per query.
async fn the_conversations_of_many_users_are_read_in_one_call(store: TestStore) {
    let engine = store.engine(quick_limits());
    let ann = store.user("ann").await;
    let bob = store.user("bob").await;
    let cat = store.user("cat").await;
    let loner = store.user("loner").await;
    let team = group(&store, &engine, ann, &[bob]).await;
    let (direct, _) = engine
        .create_conversation(bob, CreateConversation::Direct { peer: cat })
        .await
        .unwrap();
    let direct = direct.id;
    engine
        .send_message(ann, send(team, "k1", "one"))
        .await
        .unwrap();
    engine
        .send_message(bob, send(team, "k2", "two"))
        .await
        .unwrap();
    engine
        .send_message(cat, send(direct, "k3", "three"))
        .await
        .unwrap();

    // `cat` comes after 1,500 users who do not exist, so in another query than `ann`'s.
    let mut users = vec![ann, bob, loner];
    users.extend((0..1_500).map(|n| UserId(1_000_000 + n)));
    users.push(cat);
    let mut read = store.store.memberships_of(&users).await.unwrap();
    read.sort();
    let mut expected = vec![
        (ann, team, Seq(2)),
        (bob, team, Seq(2)),
        (bob, direct, Seq(1)),
        (cat, direct, Seq(1)),
    ];
    expected.sort();
    assert_eq!(read, expected);
    assert_eq!(store.store.memberships_of(&[]).await.unwrap(), vec![]);
}

async fn membership_changes_apply_in_the_order_they_come(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob, cat) = (
        store.user("ann").await,
        store.user("bob").await,
        store.user("cat").await,
    );
    let team = group(&store, &engine, ann, &[bob]).await;
    let member_ids = |conversation: courier_engine::protocol::Conversation| {
        let mut ids: Vec<UserId> = conversation.members.iter().map(|m| m.user_id).collect();
        ids.sort();
        ids
    };

    // The owner removes bob; bob, not yet told, adds cat. Both reach the conversation in
    // that order, so bob is no longer a member when his request is checked.
    let (removed, added) = tokio::join!(
        engine.remove_member(ann, team, bob),
        engine.add_member(bob, team, cat)
    );
    assert!(removed.unwrap());
    assert!(
        matches!(added, Err(EngineError::ConversationNotFound(_))),
        "a removed member adds nobody: {added:?}"
    );
    assert_eq!(
        member_ids(engine.conversation(ann, team).await.unwrap()),
        vec![ann]
    );

    // Added and removed again at once: the later request wins.
    let mut ann_client = TestClient::connect(&engine, ann).await;
    let (added, removed) = tokio::join!(
        engine.add_member(ann, team, cat),
        engine.remove_member(ann, team, cat)
    );
    assert!(added.unwrap());
    assert!(removed.unwrap());
    assert_eq!(
        member_ids(engine.conversation(ann, team).await.unwrap()),
        vec![ann]
    );
    let joined = ann_client
        .next_where(|e| matches!(e, ServerEvent::MemberJoined(_) | ServerEvent::MemberLeft(_)))
        .await;
    assert!(matches!(joined, ServerEvent::MemberJoined(c) if c.user_id == cat));
    let left = ann_client
        .next_where(|e| matches!(e, ServerEvent::MemberJoined(_) | ServerEvent::MemberLeft(_)))
        .await;
    assert!(matches!(left, ServerEvent::MemberLeft(c) if c.user_id == cat));
}

async fn concurrent_edits_end_on_what_is_stored(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let ann_client = TestClient::connect(&engine, ann).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;
    let original = ann_client.send(conversation, "c1", "draft").await;
    bob_client.next_message().await;

    const EDITS: usize = 8;
    let edits = (0..EDITS).map(|n| engine.edit_message(ann, original.id, format!("take {n}")));
    let mut answered: Vec<String> = join_all(edits)
        .await
        .into_iter()
        .map(|edited| edited.unwrap().body.unwrap())
        .collect();

    let mut heard = Vec::new();
    for _ in 0..EDITS {
        match bob_client
            .next_where(|e| matches!(e, ServerEvent::MessageEdited(_)))
            .await
        {
            ServerEvent::MessageEdited(message) => heard.push(message),
            other => unreachable!("{other:?}"),
        }
    }
    let stored = engine
        .history(bob, conversation, HistoryPage::default())
        .await
        .unwrap()
        .messages;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        heard.last(),
        stored.first(),
        "the last edit members hear is the one stored"
    );
    assert!(
        heard
            .windows(2)
            .all(|pair| pair[0].edited_at <= pair[1].edited_at),
        "edits are heard in the order they were applied: {heard:?}"
    );
    let mut bodies: Vec<String> = heard.into_iter().filter_map(|m| m.body).collect();
    bodies.sort();
    answered.sort();
    assert_eq!(bodies, answered, "every edit is heard once");
}

/// Publishes to `user` that they type in each of `conversations`, with no await in between.
fn publish_typing(
    engine: &courier_engine::Engine,
    user: UserId,
    conversations: std::ops::RangeInclusive<i64>,
) {
    let audience = courier_engine::bus::Audience::Users(vec![user].into());
    for n in conversations {
        let event = ServerEvent::TypingStarted(courier_engine::protocol::TypingChanged {
            conversation_id: ConversationId(n),
            user_id: user,
        });
        engine.publish(audience.clone(), &event);
    }
}

/// A transport that records the events of each wake-up and reports them written. A close
/// ends the recording, so a test waiting for a wake-up sees it as "recorder gone".
fn record(
    mut outbound: courier_engine::OutboundStream,
) -> tokio::sync::mpsc::UnboundedReceiver<Vec<courier_engine::protocol::EventFrame>> {
    use futures_util::StreamExt as _;
    let (taken, wake_ups) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        while let Some(courier_engine::Outbound::Events(pending)) = outbound.next().await {
            let mut events = Vec::new();
            pending.drain(|frame| events.push(frame));
            pending.queue().written(events.len());
            if taken.send(events).is_err() {
                break;
            }
        }
    });
    wake_ups
}

async fn what_comes_before_the_transport_reads_waits_for_it_and_the_close_comes_last(
    store: TestStore,
) {
    use futures_util::StreamExt as _;
    let engine = store.engine(Limits::default());
    let bob = store.user("bob").await;
    let (session, mut outbound) = engine.connect(bob).await.unwrap();
    tokio::time::sleep(QUIET).await;
    // Nothing has polled the stream yet, as when a transport takes its session late.
    publish_typing(&engine, bob, 1..=3);
    engine.close_all_sessions();

    let mut taken = Vec::new();
    let mut closes = Vec::new();
    while closes.is_empty() {
        let item = tokio::time::timeout(common::WAIT, outbound.next())
            .await
            .expect("the stream yields")
            .expect("the stream does not end");
        match item {
            courier_engine::Outbound::Events(pending) => {
                pending.drain(|frame| taken.push(frame.conversation_id().map(|id| id.0)));
            }
            courier_engine::Outbound::Close(reason) => closes.push(reason),
        }
    }
    let typed: Vec<_> = taken.into_iter().flatten().collect();
    assert_eq!(typed, [1, 2, 3], "every event, in order, before the close");
    assert_eq!(closes, [CloseReason::Shutdown]);
    let after = tokio::time::timeout(QUIET, outbound.next()).await;
    assert!(after.is_err(), "nothing after the close: {after:?}");
    drop(session);
}

async fn a_burst_reaches_a_session_in_one_wake_up_in_order(store: TestStore) {
    let engine = store.engine(Limits::default());
    let bob = store.user("bob").await;
    let (session, outbound) = engine.connect(bob).await.unwrap();
    let mut wake_ups = record(outbound);
    tokio::time::sleep(QUIET).await;
    while wake_ups.try_recv().is_ok() {}

    // Published with no await in between, so the session's actor cannot run meanwhile
    // (the test runs on one thread): all five wait in its queue for one wake-up.
    publish_typing(&engine, bob, 1..=5);
    assert_eq!(session.queue().pending(), 5);
    let burst = tokio::time::timeout(common::WAIT, wake_ups.recv())
        .await
        .expect("a wake-up")
        .expect("recorder alive");
    let conversations: Vec<_> = burst
        .iter()
        .map(|frame| frame.conversation_id().map(|id| id.0))
        .collect();
    assert_eq!(
        conversations,
        [1, 2, 3, 4, 5].map(Some),
        "all of them, in order"
    );
    assert_eq!(session.queue().pending(), 0, "reported written");
    let more = tokio::time::timeout(QUIET, wake_ups.recv()).await;
    assert!(more.is_err(), "no second wake-up: {more:?}");

    // The next event after a take wakes the actor again.
    engine.publish(
        courier_engine::bus::Audience::Users(vec![bob].into()),
        &ServerEvent::TypingStopped(courier_engine::protocol::TypingChanged {
            conversation_id: ConversationId(6),
            user_id: bob,
        }),
    );
    let next = tokio::time::timeout(common::WAIT, wake_ups.recv())
        .await
        .expect("a second wake-up")
        .expect("recorder alive");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].name(), "typing:stopped");
}

/// Waits for the recorder's next wake-up and returns its events, decoded.
async fn next_wake_up(
    wake_ups: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<courier_engine::protocol::EventFrame>>,
) -> Vec<ServerEvent> {
    let frames = tokio::time::timeout(common::WAIT, wake_ups.recv())
        .await
        .expect("a wake-up")
        .expect("recorder alive");
    frames
        .iter()
        .map(|frame| frame.decode().expect("decodable event"))
        .collect()
}

async fn a_write_delay_gathers_several_commits_in_one_wake_up(store: TestStore) {
    let limits = Limits {
        write_delay: Duration::from_secs(1),
        write_delay_min_audience: 1,
        ..Limits::default()
    };
    let engine = store.engine(limits);
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let (session, outbound) = engine.connect(bob).await.unwrap();
    let mut wake_ups = record(outbound);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    // What the creation pushed (the conversation, presence) comes in one wake-up.
    let created = next_wake_up(&mut wake_ups).await;
    assert!(
        matches!(created.first(), Some(ServerEvent::ConversationCreated(_))),
        "{created:?}"
    );
    assert_eq!(session.queue().pending(), 0);

    // Five sends, each acked (so each committed) before the next: five commits.
    let mut acked = Vec::new();
    for n in 1..=5 {
        let (message, _) = engine
            .send_message(ann, send(conversation, &format!("k{n}"), &format!("m{n}")))
            .await
            .unwrap();
        acked.push(message.seq.0);
    }
    assert_eq!(acked, [1, 2, 3, 4, 5]);
    assert!(
        wake_ups.try_recv().is_err(),
        "acks are not delayed, events are: bob's transport has not been told yet"
    );
    assert_eq!(session.queue().pending(), 5);

    let burst = next_wake_up(&mut wake_ups).await;
    // Presence from the connect may ride along; the messages come all in this one.
    let seqs: Vec<i64> = burst
        .iter()
        .filter_map(|event| match event {
            ServerEvent::MessageReceived(message) => Some(message.seq.0),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "one wake-up, every commit, in order");
    let more = tokio::time::timeout(QUIET, wake_ups.recv()).await;
    assert!(more.is_err(), "no second wake-up: {more:?}");
}

/// Limits under which events for three users or more wait longer than any test, and
/// events for fewer go out at once.
fn only_three_or_more_wait() -> Limits {
    Limits {
        write_delay: Duration::from_secs(60),
        write_delay_min_audience: 3,
        ..Limits::default()
    }
}

/// `user`'s session with [`record`] for its transport, once the connect's own events
/// are taken: each later wake-up comes out of the receiver.
async fn recorded_session(
    engine: &courier_engine::Engine,
    user: UserId,
) -> (
    courier_engine::Session,
    tokio::sync::mpsc::UnboundedReceiver<Vec<courier_engine::protocol::EventFrame>>,
) {
    let (session, outbound) = engine.connect(user).await.unwrap();
    let mut wake_ups = record(outbound);
    tokio::time::sleep(QUIET).await;
    while wake_ups.try_recv().is_ok() {}
    (session, wake_ups)
}

async fn only_events_for_a_large_audience_wait_for_the_write_delay(store: TestStore) {
    let engine = store.engine(only_three_or_more_wait());
    let ann = store.user("ann").await;
    let bob = store.user("bob").await;
    let cat = store.user("cat").await;
    let (session, mut wake_ups) = recorded_session(&engine, bob).await;
    // Three members: the creation waits for the delay.
    let large = group(&store, &engine, ann, &[bob, cat]).await;
    no_wake_up(&mut wake_ups).await;
    assert_eq!(session.queue().pending(), 1);
    // Two members: at once, and what waited comes along, in order.
    let small = group(&store, &engine, ann, &[bob]).await;
    assert_eq!(
        about(next_wake_up(&mut wake_ups).await),
        [(large, 0), (small, 0)]
    );

    engine
        .send_message(ann, send(large, "l1", "to three"))
        .await
        .unwrap();
    no_wake_up(&mut wake_ups).await;
    engine
        .send_message(ann, send(small, "s1", "to two"))
        .await
        .unwrap();
    assert_eq!(
        about(next_wake_up(&mut wake_ups).await),
        [(large, 1), (small, 1)]
    );

    // Once taken, the next event for the large audience waits again.
    engine
        .send_message(ann, send(large, "l2", "to three again"))
        .await
        .unwrap();
    no_wake_up(&mut wake_ups).await;
    assert_eq!(session.queue().pending(), 1);
}

/// What events are about: a creation's conversation with seq 0, a message's conversation
/// and seq; other events are left out.
fn about(events: Vec<ServerEvent>) -> Vec<(ConversationId, i64)> {
    events
        .into_iter()
        .filter_map(|event| match event {
            ServerEvent::ConversationCreated(created) => Some((created.id, 0)),
            ServerEvent::MessageReceived(message) => Some((message.conversation_id, message.seq.0)),
            _ => None,
        })
        .collect()
}

async fn events_waiting_for_a_room_left_meanwhile_are_not_written(store: TestStore) {
    let engine = store.engine(only_three_or_more_wait());
    let ann = store.user("ann").await;
    let bob = store.user("bob").await;
    let cat = store.user("cat").await;
    let large = group(&store, &engine, ann, &[bob, cat]).await;
    let small = group(&store, &engine, ann, &[bob]).await;
    let (session, mut wake_ups) = recorded_session(&engine, bob).await;

    engine
        .send_message(ann, send(large, "l1", "waits"))
        .await
        .unwrap();
    no_wake_up(&mut wake_ups).await;
    let room = ConversationRef {
        conversation_id: large,
    };
    assert_eq!(
        session
            .execute(ClientCommand::LeaveRoom(room))
            .await
            .unwrap(),
        Reply::Done {}
    );
    engine
        .send_message(ann, send(small, "s1", "at once"))
        .await
        .unwrap();
    assert_eq!(
        about(next_wake_up(&mut wake_ups).await),
        [(small, 1)],
        "the left room's waiting message is not written"
    );
    assert_eq!(session.queue().pending(), 0, "and not counted as waiting");
}

/// Asserts the transport is not told of anything for a while: events are held back.
async fn no_wake_up(
    wake_ups: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<courier_engine::protocol::EventFrame>>,
) {
    let held = tokio::time::timeout(QUIET, wake_ups.recv()).await;
    assert!(held.is_err(), "held back by the delay: {held:?}");
}

async fn events_held_by_the_write_delay_go_out_before_a_shutdown_close(store: TestStore) {
    let limits = Limits {
        // Longer than the test: only the shutdown can let these events out in time.
        write_delay: Duration::from_secs(60),
        write_delay_min_audience: 1,
        ..Limits::default()
    };
    let engine = store.engine(limits);
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut client = TestClient::connect(&engine, bob).await;
    engine
        .send_message(ann, send(conversation, "last", "before the close"))
        .await
        .unwrap();
    assert!(client.take_raw().is_none(), "held back by the delay");

    engine.close_all_sessions();
    match client.next_outbound().await {
        Pushed::Event(frame) => assert_eq!(frame.name(), "message:received"),
        Pushed::Close(reason) => panic!("closed before the held event: {reason:?}"),
    }
    assert!(matches!(
        client.next_outbound().await,
        Pushed::Close(CloseReason::Shutdown)
    ));
}

async fn one_serialisation_is_shared_by_all_recipients(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut first = TestClient::connect(&engine, bob).await;
    let mut second = TestClient::connect(&engine, bob).await;
    tokio::time::sleep(QUIET).await;
    first.drain();
    second.drain();
    engine
        .send_message(ann, send(conversation, "once", "shared"))
        .await
        .unwrap();
    let frame = |item: Pushed| match item {
        Pushed::Event(frame) => frame,
        Pushed::Close(_) => panic!("closed"),
    };
    let a = frame(first.next_outbound().await);
    let b = frame(second.next_outbound().await);
    assert!(a.ptr_eq(&b), "both sessions got the same allocation");
    assert_eq!(a.name(), "message:received");
}

/// A send as the store takes it, its body named after its key.
fn new_message(
    sender: UserId,
    key: &str,
    reply_to_id: Option<courier_engine::MessageId>,
) -> courier_engine::store::NewMessage {
    courier_engine::store::NewMessage {
        sender_id: sender,
        client_msg_id: key.into(),
        body: format!("body {key}"),
        reply_to_id,
    }
}

async fn group_commit_settles_every_send_of_a_batch(store: TestStore) {
    use courier_engine::store::{AppendOutcome, MessageStore};
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let other = group(&store, &engine, ann, &[bob]).await;
    let new = new_message;
    let first = store
        .store
        .append_messages(other, vec![new(ann, "elsewhere", None)])
        .await
        .unwrap();
    let AppendOutcome::Created(foreign) = &first[0] else {
        panic!("{first:?}")
    };

    let outcomes = store
        .store
        .append_messages(
            conversation,
            vec![
                new(ann, "a", None),
                new(bob, "a", None),
                new(ann, "a", None),
                new(ann, "elsewhere", None),
                new(bob, "r", Some(foreign.id)),
                new(bob, "b", None),
                new(bob, "elsewhere", None),
            ],
        )
        .await
        .unwrap();
    let AppendOutcome::Created(a) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    let AppendOutcome::Created(b_a) = &outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert_eq!((a.seq, b_a.seq), (Seq(1), Seq(2)), "keys are per sender");
    assert_eq!(outcomes[2], AppendOutcome::Existing(a.clone()));
    assert_eq!(outcomes[3], AppendOutcome::ClientMsgIdReused);
    assert_eq!(outcomes[4], AppendOutcome::ReplyNotFound(foreign.id));
    let AppendOutcome::Created(b) = &outcomes[5] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(b.seq, Seq(3), "refused sends take no seq");
    let AppendOutcome::Created(b_elsewhere) = &outcomes[6] else {
        panic!("ann's stored key is not bob's: {outcomes:?}")
    };
    assert_eq!((b_elsewhere.seq, b_elsewhere.sender_id), (Seq(4), bob));
    let missing = store
        .store
        .append_messages(ConversationId(999_999), vec![new(ann, "z", None)])
        .await;
    assert!(
        matches!(missing, Err(courier_engine::StoreError::NotFound)),
        "{missing:?}"
    );
}

async fn one_commit_settles_the_batches_of_several_conversations(store: TestStore) {
    use courier_engine::store::{AppendOutcome, ConversationSends, MessageStore};
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let first = group(&store, &engine, ann, &[bob]).await;
    let second = group(&store, &engine, ann, &[bob]).await;
    let new = |sender, key: &str| new_message(sender, key, None);
    let stored = store
        .store
        .append_messages(second, vec![new(bob, "earlier")])
        .await
        .unwrap();
    let batch = |conversation, sends| ConversationSends {
        conversation,
        sends,
    };
    let results = store
        .store
        .append_message_batches(vec![
            batch(first, vec![new(ann, "a"), new(ann, "b")]),
            batch(ConversationId(999_999), vec![new(ann, "lost")]),
            batch(
                second,
                vec![new(bob, "a"), new(ann, "a"), new(bob, "earlier")],
            ),
            batch(first, vec![new(ann, "b"), new(ann, "c")]),
        ])
        .await
        .unwrap();
    let [in_first, missing, in_second, first_again] = &results[..] else {
        panic!("one result per batch: {results:?}")
    };
    let created = |outcome: &AppendOutcome| match outcome {
        AppendOutcome::Created(message) => {
            (message.conversation_id, message.seq, message.body.clone())
        }
        other => panic!("not created: {other:?}"),
    };
    let in_first = in_first.as_ref().unwrap();
    assert_eq!(
        in_first.iter().map(created).collect::<Vec<_>>(),
        [
            (first, Seq(1), Some("body a".to_owned())),
            (first, Seq(2), Some("body b".to_owned()))
        ]
    );
    assert!(
        matches!(missing, Err(courier_engine::StoreError::NotFound)),
        "a conversation that does not exist fails alone: {missing:?}"
    );
    let in_second = in_second.as_ref().unwrap();
    assert_eq!(
        created(&in_second[0]),
        (second, Seq(2), Some("body a".to_owned())),
        "seqs are per conversation; keys per sender"
    );
    assert_eq!(
        in_second[1],
        AppendOutcome::ClientMsgIdReused,
        "ann used \"a\" in another conversation of the same commit"
    );
    let AppendOutcome::Created(earlier) = &stored[0] else {
        panic!("{stored:?}")
    };
    assert_eq!(in_second[2], AppendOutcome::Existing(earlier.clone()));
    let first_again = first_again.as_ref().unwrap();
    let AppendOutcome::Created(b) = &in_first[1] else {
        unreachable!()
    };
    assert_eq!(
        first_again[0],
        AppendOutcome::Existing(b.clone()),
        "a repeat in a later batch of the same conversation is the first result"
    );
    assert_eq!(
        created(&first_again[1]).1,
        Seq(3),
        "and the sequence goes on"
    );

    // Nothing of the missing conversation's batch was written, and each conversation's
    // history is exactly its own, gap-free.
    let history = |conversation| {
        let store = &store.store;
        async move {
            store
                .messages_after(conversation, Seq(0), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|message| (message.seq.0, message.client_msg_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        history(first).await,
        [(1, "a".into()), (2, "b".into()), (3, "c".into())]
    );
    assert_eq!(
        history(second).await,
        [(1, "earlier".into()), (2, "a".into())]
    );
    let reused = store
        .store
        .append_messages(first, vec![new(ann, "lost")])
        .await
        .unwrap();
    assert!(
        matches!(&reused[0], AppendOutcome::Created(message) if message.seq == Seq(4)),
        "the refused batch claimed no key: {reused:?}"
    );
}

async fn idle_conversations_stop_and_restart_on_demand(store: TestStore) {
    let limits = Limits {
        conversation_idle: Duration::from_millis(200),
        ..Limits::default()
    };
    let engine = store.engine(limits);
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;
    engine
        .send_message(ann, send(conversation, "i1", "before"))
        .await
        .unwrap();
    assert_eq!(engine.active_conversations(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while engine.active_conversations() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle actor never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, _) = engine
        .send_message(ann, send(conversation, "i2", "after"))
        .await
        .unwrap();
    assert_eq!(
        after.seq,
        Seq(2),
        "a restarted actor continues the sequence"
    );
    assert_eq!(bob_client.next_message().await.seq, Seq(1));
    assert_eq!(bob_client.next_message().await.seq, Seq(2));
}

/// Ids are sequential, so a client (or a prober) may ask for the next one before anyone
/// created it. Once it is created, its members must find it at once.
async fn a_conversation_asked_for_before_it_existed_is_found_once_created(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let first = group(&store, &engine, ann, &[bob]).await;
    let next = ConversationId(first.0 + 1);
    assert!(matches!(
        engine.authorize(bob, next).await,
        Err(EngineError::ConversationNotFound(id)) if id == next
    ));
    assert!(matches!(
        engine
            .send_message(ann, send(next, "early", "too early"))
            .await,
        Err(EngineError::ConversationNotFound(_))
    ));

    let created = group(&store, &engine, ann, &[bob]).await;
    assert_eq!(created, next, "ids are given out in order");
    let mut bob_client = TestClient::connect(&engine, bob).await;
    assert_eq!(engine.conversation(bob, created).await.unwrap().id, created);
    let (message, _) = engine
        .send_message(ann, send(created, "first", "hello"))
        .await
        .unwrap();
    assert_eq!(message.seq, Seq(1));
    assert_eq!(
        bob_client.next_message().await.body.as_deref(),
        Some("hello")
    );
}

/// Runs `sql` on the test's database from a connection of its own.
async fn run_sql(store: &TestStore, sql: &'static str) {
    use diesel::connection::SimpleConnection;
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    if store.url.starts_with("postgres") {
        let mut conn = AsyncPgConnection::establish(&store.url).await.unwrap();
        conn.batch_execute(sql).await.unwrap();
    } else {
        let url = store.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn =
                <diesel::SqliteConnection as diesel::Connection>::establish(&url).unwrap();
            // The engine's writer may hold the lock for a moment (a checkpoint).
            conn.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
            conn.batch_execute(sql).unwrap();
        })
        .await
        .unwrap();
    }
}

/// A group commit whose insert fails stores nothing and fails its sends; the transaction
/// it leaves is rolled back, so the next commit on the same connection goes on from the
/// same seq.
async fn a_failed_write_stores_nothing_and_the_next_commit_goes_on(store: TestStore) {
    let trigger = if store.url.starts_with("postgres") {
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN IF NEW.body = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF;
           RETURN NEW; END $$;
         CREATE TRIGGER refuse_boom BEFORE INSERT ON messages
           FOR EACH ROW EXECUTE FUNCTION refuse_boom();"
    } else {
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON messages WHEN NEW.body = 'boom'
           BEGIN SELECT RAISE(ABORT, 'boom refused'); END;"
    };
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let mut bob_client = TestClient::connect(&engine, bob).await;
    engine
        .send_message(ann, send(conversation, "k-1", "first"))
        .await
        .unwrap();
    run_sql(&store, trigger).await;

    let refused = engine
        .send_message(ann, send(conversation, "k-2", "boom"))
        .await;
    assert!(
        matches!(refused, Err(EngineError::Internal(_))),
        "{refused:?}"
    );
    for n in 3..=5 {
        let (message, created) = engine
            .send_message(ann, send(conversation, &format!("k-{n}"), "fine"))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(message.seq, Seq(n - 1), "the failed send took no seq");
    }
    let pushed: Vec<Seq> = [
        bob_client.next_message().await,
        bob_client.next_message().await,
        bob_client.next_message().await,
        bob_client.next_message().await,
    ]
    .iter()
    .map(|message| message.seq)
    .collect();
    assert_eq!(pushed, [Seq(1), Seq(2), Seq(3), Seq(4)]);
    bob_client.assert_none(QUIET, is_message).await;
    let history = engine
        .history(ann, conversation, HistoryPage::default())
        .await
        .unwrap();
    let bodies: Vec<Option<&str>> = history
        .messages
        .iter()
        .map(|message| message.body.as_deref())
        .collect();
    assert_eq!(
        bodies,
        [Some("first"), Some("fine"), Some("fine"), Some("fine")]
    );
}

async fn racing_direct_conversations_resolve_to_one(store: TestStore) {
    let engine = store.engine(Limits::default());
    let (ann, bob) = (store.user("ann").await, store.user("bob").await);
    let attempts = join_all([
        engine.create_conversation(ann, CreateConversation::Direct { peer: bob }),
        engine.create_conversation(bob, CreateConversation::Direct { peer: ann }),
        engine.create_conversation(ann, CreateConversation::Direct { peer: bob }),
    ])
    .await;
    let attempts: Vec<_> = attempts.into_iter().map(Result::unwrap).collect();
    assert!(attempts.iter().all(|(c, _)| c.id == attempts[0].0.id));
    assert_eq!(attempts.iter().filter(|(_, created)| *created).count(), 1);
}

/// A receipt's write that starts only once a membership change has begun, and a change
/// that waits for that write to finish (5 s at most, then fails as unavailable): the
/// write must go on while the conversation waits on the change. On SQLite, with its single
/// writer connection, the change needs the connection the write holds.
#[derive(Default)]
struct ReceiptAcrossAChange {
    receipt_reached_store: Notify,
    change_began: Notify,
    receipt_written: Notify,
}

#[async_trait]
impl Hooks for ReceiptAcrossAChange {
    async fn before_advance_watermark(&self) {
        self.receipt_reached_store.notify_one();
        self.change_began.notified().await;
    }

    async fn after_advance_watermark(&self) {
        self.receipt_written.notify_one();
    }

    async fn before_add_member(&self) -> Result<(), courier_engine::StoreError> {
        self.change_began.notify_one();
        tokio::time::timeout(Duration::from_secs(5), self.receipt_written.notified())
            .await
            .map_err(|_| {
                courier_engine::StoreError::Unavailable("the receipt was never written".into())
            })
    }
}

async fn a_receipt_write_goes_on_while_its_conversation_waits_on_a_membership_change(
    store: TestStore,
) {
    let hooks = Arc::new(ReceiptAcrossAChange::default());
    let interposed = Interposed::new(store.store.clone(), Arc::clone(&hooks) as Arc<dyn Hooks>);
    let engine = courier_engine::Engine::builder(Arc::new(interposed) as Arc<dyn Store>).build();
    let ann = store.user("ann").await;
    let bob = store.user("bob").await;
    let cat = store.user("cat").await;
    let conversation = group(&store, &engine, ann, &[bob]).await;
    let (message, _) = engine
        .send_message(ann, send(conversation, "first", "hello"))
        .await
        .unwrap();

    let receipt = actix::spawn({
        let engine = engine.clone();
        async move {
            engine
                .mark(bob, conversation, Watermark::Read, message.seq)
                .await
        }
    });
    tokio::time::timeout(
        Duration::from_secs(5),
        hooks.receipt_reached_store.notified(),
    )
    .await
    .expect("the receipt reaches the store");
    let added = engine.add_member(ann, conversation, cat).await;
    assert!(
        matches!(added, Ok(true)),
        "the change waited for the receipt's write: {added:?}"
    );
    let marked = receipt.await.unwrap();
    assert!(marked.is_ok(), "{marked:?}");

    let members = store.store.members(conversation).await.unwrap();
    let bob_read = members.iter().find(|member| member.user_id == bob).unwrap();
    assert_eq!(bob_read.read_seq, message.seq);
    assert!(members.iter().any(|member| member.user_id == cat));
}
