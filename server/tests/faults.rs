//! Faults on purpose, against the `courier` binary: killed with SIGKILL and stopped with
//! SIGTERM under load, its PostgreSQL paused and restarted under it. Afterwards, checked
//! against the store and every client's log: every acked message is stored exactly
//! once, seqs are gap-free, and every client saw its pushes in seq order.
//!
//! PostgreSQL variants need `DATABASE_URL` (or PostgreSQL's server binaries, for the
//! private server the pause test starts) and skip without them unless
//! `COURIER_REQUIRE_POSTGRES` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use courier_test_db::{Backend, TestDatabase, TestPostgresServer};
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::chatter::Chatter;
use support::{Node, NodeSpec};

/// How a node goes down mid-load.
#[derive(Debug, Clone, Copy)]
enum Crash {
    Kill,
    Terminate,
}

/// Three clients chat at a steady rate in one group while the node goes down `crashes`
/// times and comes back; then every client settles its unacked sends and syncs.
async fn chat_through_crashes(database_url: &str, crash: Crash, crashes: usize) {
    let mut node = Node::start(NodeSpec::new(database_url));
    let api = &node.api;
    let users = [
        api.register("ann").await,
        api.register("bob").await,
        api.register("cat").await,
    ];
    let group = api.group(&users[0], &[&users[1], &users[2]]).await;
    let port = api.port;
    let mut chatters: Vec<Chatter> = ["ann", "bob", "cat"]
        .iter()
        .zip(users.iter())
        .map(|(name, user)| Chatter::new(name, user.clone(), group, port))
        .collect();

    for _ in 0..crashes {
        let until = tokio::time::Instant::now() + Duration::from_millis(1200);
        join_all(
            chatters
                .iter_mut()
                .map(|chatter| chatter.run(until, Duration::from_millis(15))),
        )
        .await;
        match crash {
            Crash::Kill => node.kill(),
            Crash::Terminate => node.terminate(),
        }
        node.restart();
    }
    join_all(
        chatters
            .iter_mut()
            .map(|chatter| chatter.settle(Duration::from_secs(20))),
    )
    .await;

    let stored = chatters[0].sync_all().await;
    check_store_and_logs(&stored, &chatters);
    for chatter in &mut chatters {
        assert!(
            chatter.reconnects > crashes,
            "{} reconnected after each crash",
            chatter.name
        );
        assert_eq!(
            chatter.sync_all().await,
            stored,
            "every member syncs the same history"
        );
    }
    let panics: Vec<String> = node
        .logs()
        .into_iter()
        .filter(|line| line.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");
}

/// Every acked send stored exactly once with its acked seq, seqs gap-free, and every
/// connection's pushes in increasing seq order.
fn check_store_and_logs(stored: &[Value], chatters: &[Chatter]) {
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=stored.len() as i64).collect();
    assert_eq!(seqs, expected, "seqs are gap-free from 1");
    let keys: Vec<(&str, i64)> = stored
        .iter()
        .map(|m| {
            (
                m["clientMsgId"].as_str().unwrap(),
                m["seq"].as_i64().unwrap(),
            )
        })
        .collect();
    let unique: HashSet<&str> = keys.iter().map(|(key, _)| *key).collect();
    assert_eq!(unique.len(), keys.len(), "no send is stored twice");
    let mut acked = 0;
    for chatter in chatters {
        assert!(
            chatter.unacked.is_empty(),
            "{} has sends never acked: {:?}",
            chatter.name,
            chatter.unacked.keys().collect::<Vec<_>>()
        );
        for (key, seq) in &chatter.acked {
            assert!(
                keys.contains(&(key.as_str(), *seq)),
                "acked {key} at seq {seq} is stored there"
            );
            acked += 1;
        }
        for (connection, pushes) in chatter.pushed.iter().enumerate() {
            assert!(
                pushes.windows(2).all(|pair| pair[0] < pair[1]),
                "{}'s connection {connection} got pushes out of order: {pushes:?}",
                chatter.name
            );
        }
    }
    assert_eq!(
        acked,
        stored.len(),
        "everything stored was acked to its sender"
    );
    assert!(acked > 100, "the load was real: {acked} messages");
}

#[actix_rt::test]
async fn sigkill_under_load_loses_nothing_acked_on_sqlite() {
    chat_through_crashes("", Crash::Kill, 3).await;
}

#[actix_rt::test]
async fn sigkill_under_load_loses_nothing_acked_on_postgres() {
    let Some(database) = TestDatabase::new(Backend::Postgres).await else {
        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
        return;
    };
    chat_through_crashes(database.url(), Crash::Kill, 3).await;
}

#[actix_rt::test]
async fn sigterm_under_load_loses_nothing_acked() {
    chat_through_crashes("", Crash::Terminate, 2).await;
}

/// One REST send: its status, error code and how long it took.
async fn timed_send(
    node: &Node,
    user: &helpers::TestUser,
    group: i64,
    key: &str,
) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = node
        .api
        .http
        .post(node.api.url(&format!("/conversations/{group}/messages")))
        .bearer_auth(&user.access)
        .json(&json!({"clientMsgId": key, "body": key}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// A send during an outage: a retryable `unavailable`, answered fast, never a hang.
async fn fails_fast(node: &Node, user: &helpers::TestUser, group: i64, key: &str) {
    let (status, body, took) = timed_send(node, user, group, key).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        took < Duration::from_secs(4),
        "failed fast, not after {took:?}"
    );
}

/// Sends every 100 ms until one is stored, each failure a fast `unavailable` (its key
/// goes into `failed`, to retry). Returns how long that took and the key stored.
async fn recover(
    node: &Node,
    user: &helpers::TestUser,
    group: i64,
    prefix: &str,
    failed: &mut Vec<String>,
) -> (Duration, String) {
    let started = Instant::now();
    for n in 1.. {
        let key = format!("{prefix}-{n}");
        let (status, body, took) = timed_send(node, user, group, &key).await;
        match status {
            201 => return (started.elapsed(), key),
            503 => {
                assert_eq!(body["error"], "unavailable", "{body}");
                assert!(
                    took < Duration::from_secs(4),
                    "failed fast, not after {took:?}"
                );
                failed.push(key);
            }
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not recover"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[actix_rt::test]
async fn postgres_paused_or_restarted_fails_fast_and_recovers_by_itself() {
    let Some(postgres) = TestPostgresServer::start() else {
        eprintln!("skipped: PostgreSQL's server binaries are not installed");
        return;
    };
    let node = Node::start(NodeSpec::new(&postgres.url()));
    let ann = node.api.register("ann").await;
    let bob = node.api.register("bob").await;
    let group = node.api.group(&ann, &[&bob]).await;
    node.api.send(&ann, group, "before", "before").await;
    let mut failed = Vec::new();

    // Paused: nothing answers and connections hang. Sends must not.
    postgres.pause();
    for n in 0..2 {
        let key = format!("paused-{n}");
        fails_fast(&node, &ann, group, &key).await;
        failed.push(key);
    }
    postgres.unpause();
    let (took, after_pause) = recover(&node, &ann, group, "after-pause", &mut failed).await;
    assert!(
        took < Duration::from_secs(10),
        "recovered by itself, in {took:?}"
    );

    // Restarted: every pooled connection breaks.
    postgres.stop();
    for n in 0..2 {
        let key = format!("stopped-{n}");
        fails_fast(&node, &ann, group, &key).await;
        failed.push(key);
    }
    postgres.resume_start();
    let (took, after_restart) = recover(&node, &ann, group, "after-restart", &mut failed).await;
    assert!(
        took < Duration::from_secs(10),
        "recovered by itself, in {took:?}"
    );

    // A failed send was not acked; its retry, with the same id, is stored once.
    for key in &failed {
        let (status, body, _) = timed_send(&node, &ann, group, key).await;
        assert!(
            status == 201 || status == 200,
            "retry of {key}: {status} {body}"
        );
    }
    let (_, history) = node
        .api
        .get(&format!("/conversations/{group}/messages"), &bob.access)
        .await;
    let messages = history["messages"].as_array().unwrap();
    let mut stored: Vec<&str> = messages
        .iter()
        .map(|m| m["clientMsgId"].as_str().unwrap())
        .collect();
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "gap-free"
    );
    let mut expected = vec!["before", after_pause.as_str(), after_restart.as_str()];
    expected.extend(failed.iter().map(String::as_str));
    stored.sort_unstable();
    expected.sort_unstable();
    assert_eq!(stored, expected, "every acked send once, nothing else");
    let panics: Vec<String> = node
        .logs()
        .into_iter()
        .filter(|line| line.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");
}
