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
    // The soak script raises the number of crashes.
    let crashes = std::env::var("COURIER_FAULT_CRASHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(crashes);
    let started = Instant::now();
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
    let store = if database_url.is_empty() {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    eprintln!(
        "{crash:?} x{crashes} on {store}: {} messages acked by 3 clients in {:.1} s, \
         0 lost, 0 duplicated, 0 reordered",
        stored.len(),
        started.elapsed().as_secs_f64()
    );
    for chatter in &mut chatters {
        // A client whose sends were all acked before the last crash notices that crash
        // only when it next talks to the server: here, its sync.
        let history = chatter.sync_all().await;
        assert!(
            chatter.reconnects > crashes,
            "{} reconnected after each crash",
            chatter.name
        );
        assert_eq!(history, stored, "every member syncs the same history");
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

/// A member who sends `count` messages over WebSocket, at most 32 unacked at a time,
/// while reading every push; returns the seqs pushed to it, in arrival order.
async fn send_and_read(
    api: &helpers::Api,
    user: &helpers::TestUser,
    group: i64,
    name: &str,
    count: usize,
    expect_pushes: usize,
    body: &str,
) -> Vec<i64> {
    const WINDOW: usize = 32;
    let socket = api.socket(user).await;
    let (mut sink, mut stream) = futures_util::StreamExt::split(socket.framed);
    let acks = std::cell::Cell::new(0);
    let acked = tokio::sync::Notify::new();
    let write = async {
        for n in 0..count {
            while n - acks.get() >= WINDOW {
                acked.notified().await;
            }
            let frame = json!({"type": "message:send", "ref": n.to_string(), "data": {
                "conversationId": group, "clientMsgId": format!("{name}-{n}"), "body": body}});
            let text = awc::ws::Message::Text(frame.to_string().into());
            futures_util::SinkExt::send(&mut sink, text).await.unwrap();
        }
    };
    let read = async {
        let mut pushed = Vec::with_capacity(expect_pushes);
        while pushed.len() < expect_pushes || acks.get() < count {
            let next = futures_util::StreamExt::next(&mut stream);
            let Ok(frame) = tokio::time::timeout(Duration::from_secs(20), next).await else {
                // Says whether the stall ended, to tell one that something else unblocks
                // (the socket's 25 s heartbeat, a slow disk) from one that lasts.
                let later = futures_util::StreamExt::next(&mut stream);
                let resumed = tokio::time::timeout(Duration::from_secs(30), later).await;
                panic!(
                    "pushes keep flowing to a reading member: {name} heard nothing for 20 s \
                     after {} pushes and {} acks; 30 s later: {}",
                    pushed.len(),
                    acks.get(),
                    if resumed.is_ok() {
                        "frames again"
                    } else {
                        "still nothing"
                    }
                );
            };
            let text = match frame {
                Some(Ok(awc::ws::Frame::Text(bytes))) => bytes,
                Some(Ok(awc::ws::Frame::Close(reason))) => panic!("{name} was closed: {reason:?}"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("{name}: {error}"),
                None => panic!("{name}'s connection ended"),
            };
            // Only the head of each frame is read: parsing 12 KiB bodies in a debug
            // build would make this client, not the server, the bottleneck.
            let text = std::str::from_utf8(&text).unwrap();
            if text.starts_with(r#"{"type":"message:received""#) {
                let seq = text
                    .split_once(r#""seq":"#)
                    .and_then(|(_, rest)| rest.split([',', '}']).next())
                    .and_then(|digits| digits.parse().ok())
                    .expect("a seq");
                pushed.push(seq);
            } else if text.starts_with(r#"{"type":"ack""#) {
                acks.set(acks.get() + 1);
                acked.notify_one();
            } else if text.starts_with(r#"{"type":"error""#) {
                panic!("{name}: {text}");
            }
        }
        pushed
    };
    let ((), pushed) = futures_util::future::join(write, read).await;
    pushed
}

#[actix_rt::test]
async fn a_slow_consumer_is_cut_off_with_memory_bounded_and_catches_up() {
    let node = Node::start(NodeSpec::new(""));
    let api = &node.api;
    let fast_a = api.register("fast_a").await;
    let fast_b = api.register("fast_b").await;
    let slow = api.register("slow").await;
    let group = api.group(&fast_a, &[&fast_b, &slow]).await;
    let body = "x".repeat(12 * 1024);
    const WARM: usize = 2_000;
    const BUSY: usize = 5_000;
    let round = |name: &'static str, each: usize| {
        let body = body.clone();
        let (fast_a, fast_b) = (fast_a.clone(), fast_b.clone());
        async move {
            futures_util::future::join(
                send_and_read(
                    api,
                    &fast_a,
                    group,
                    &format!("{name}a"),
                    each,
                    2 * each,
                    &body,
                ),
                send_and_read(
                    api,
                    &fast_b,
                    group,
                    &format!("{name}b"),
                    each,
                    2 * each,
                    &body,
                ),
            )
            .await
        }
    };

    // A first round with everyone reading takes the allocator and caches to their
    // working size, so that the second round measures only what a stalled reader costs.
    let mut slow_ws = api.socket(&slow).await;
    let (_, slow_read) = futures_util::future::join(round("warm", WARM), async {
        for _ in 0..2 * WARM {
            slow_ws.next_event("message:received").await;
        }
    })
    .await;
    let () = slow_read;
    let before = node.rss_bytes();

    // The slow client stops reading; the two others chat at full speed, and get
    // everything in order: the stalled one holds nobody up. It is owed 117 MiB.
    let busy_started = Instant::now();
    let (pushed_a, pushed_b) = round("busy", BUSY).await;
    let first = 2 * WARM as i64 + 1;
    let total = first - 1 + 2 * BUSY as i64;
    let expected: Vec<i64> = (first..=total).collect();
    assert_eq!(
        pushed_a, expected,
        "a reading member gets everything, in order"
    );
    assert_eq!(pushed_b, expected);
    eprintln!(
        "slow consumer: {} messages of 12 KiB pushed to 2 readers in {:.1} s while one reader stalled",
        2 * BUSY,
        busy_started.elapsed().as_secs_f64()
    );
    let grown_mib = node.rss_bytes().saturating_sub(before) >> 20;
    eprintln!("server RSS grew {grown_mib} MiB in the round with a stalled reader");
    assert!(
        grown_mib < 48,
        "server memory stayed bounded: it grew {grown_mib} MiB while owing the stalled client 117 MiB"
    );

    // Reading again, the slow client finds what was queued for it, then the close.
    let mut last_seq = first - 1;
    let reason = loop {
        match slow_ws.incoming().await {
            helpers::Incoming::Json(frame) if frame["type"] == "message:received" => {
                let seq = frame["data"]["seq"].as_i64().unwrap();
                assert_eq!(seq, last_seq + 1, "in order, no gap before the cut");
                last_seq = seq;
            }
            helpers::Incoming::Json(_) => {}
            helpers::Incoming::Closed(reason) => break reason,
        }
    };
    let reason = reason.expect("a close frame with a reason");
    assert_eq!(u16::from(reason.code), 4008, "closed as a slow consumer");
    assert!(last_seq < total, "the cut came before the end");

    // It catches up with sync (small pages: 12 KiB messages).
    let mut slow_ws = api.socket(&slow).await;
    loop {
        let page = slow_ws
            .request(
                "sync",
                json!({"conversationId": group, "afterSeq": last_seq, "limit": 4}),
            )
            .await;
        for message in page["data"]["messages"].as_array().unwrap() {
            let seq = message["seq"].as_i64().unwrap();
            assert_eq!(seq, last_seq + 1, "sync continues where the pushes stopped");
            last_seq = seq;
        }
        if page["data"]["hasMore"] != true {
            break;
        }
    }
    assert_eq!(last_seq, total, "sync brought the rest");
}

/// Opens a native WebSocket for each token at once; answers the sockets in order.
async fn connect_all(port: u16, tokens: &[String]) -> Vec<helpers::Socket> {
    // awc's default connector allows 100 connections per host.
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(30))
        .finish();
    let url = format!("ws://127.0.0.1:{port}/api/v1/ws");
    let connecting = tokens.iter().map(|token| {
        let request = client.ws(url.as_str()).bearer_auth(token);
        async move {
            let (_, framed) = request.connect().await.expect("connects in the storm");
            helpers::Socket::from_framed(framed)
        }
    });
    join_all(connecting).await
}

/// Collects presence frames about others than `me` until none arrives for `quiet`.
async fn presence_until_quiet(
    socket: &mut helpers::Socket,
    me: i64,
    quiet: Duration,
) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let next = futures_util::StreamExt::next(&mut socket.framed);
        match tokio::time::timeout(quiet, next).await {
            Err(_) | Ok(None) => return seen,
            Ok(Some(Ok(awc::ws::Frame::Text(bytes)))) => {
                let frame: Value = serde_json::from_slice(&bytes).unwrap();
                let presence = frame["type"] == "user:online" || frame["type"] == "user:offline";
                if presence && frame["data"]["userId"] != me {
                    seen.push(frame);
                }
            }
            Ok(Some(_)) => {}
        }
    }
}

/// How many of `frames` are `kind`, for each user.
fn count_by_user(frames: &[Value], kind: &str) -> std::collections::HashMap<i64, usize> {
    let mut counts = std::collections::HashMap::new();
    for frame in frames.iter().filter(|frame| frame["type"] == kind) {
        *counts
            .entry(frame["data"]["userId"].as_i64().unwrap())
            .or_default() += 1;
    }
    counts
}

#[actix_rt::test]
async fn a_connection_storm_settles_presence_to_the_truth_without_flapping() {
    // 2,000 connections by default; COURIER_STORM_USERS scales it (five each) up to
    // what the open-file limit allows.
    let users_wanted = std::env::var("COURIER_STORM_USERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    const DEVICES: usize = 5;
    let users_count: usize = users_wanted.min(open_file_limit().saturating_sub(256) / DEVICES / 2);
    let node = Node::start(NodeSpec::new("").set("COURIER_PRESENCE_GRACE_MS", "3000"));
    let api = &node.api;
    let observer = api.register("observer").await;
    let mut users = Vec::with_capacity(users_count);
    for n in 0..users_count {
        users.push(api.register(&format!("user{n}")).await);
    }
    let everyone: Vec<&helpers::TestUser> = users.iter().collect();
    api.group(&observer, &everyone).await;
    let tokens: Vec<String> = users
        .iter()
        .flat_map(|user| std::iter::repeat_n(user.access.clone(), DEVICES))
        .collect();
    let ids: HashSet<i64> = users.iter().map(|user| user.id).collect();
    let mut watcher = api.socket(&observer).await;

    // Everyone at once: the observer hears each user come online exactly once.
    let storm_started = Instant::now();
    let sockets = connect_all(api.port, &tokens).await;
    assert_eq!(sockets.len(), users_count * DEVICES);
    eprintln!(
        "storm: {} connections of {users_count} users opened at once in {:.1} s",
        sockets.len(),
        storm_started.elapsed().as_secs_f64()
    );
    let heard = presence_until_quiet(&mut watcher, observer.id, Duration::from_secs(3)).await;
    for line in node.logs().iter().filter(|l| l.contains("WARN")).take(5) {
        eprintln!("{line}");
    }
    let online = count_by_user(&heard, "user:online");
    let announced: HashSet<i64> = online.keys().copied().collect();
    assert_eq!(
        announced.symmetric_difference(&ids).collect::<Vec<_>>(),
        Vec::<&i64>::new(),
        "everyone announced online, nobody else"
    );
    assert!(online.values().all(|&n| n == 1), "one user:online per user");
    assert!(count_by_user(&heard, "user:offline").is_empty());

    // Everyone drops and comes back at once, within the grace period: nothing to hear.
    drop(sockets);
    let sockets = connect_all(api.port, &tokens).await;
    let heard = presence_until_quiet(&mut watcher, observer.id, Duration::from_secs(4)).await;
    assert!(
        heard.is_empty(),
        "no presence storm on a mass reconnect: {}",
        heard.len()
    );

    // Everyone leaves for good: once the grace has passed, one user:offline each.
    drop(sockets);
    let heard = presence_until_quiet(&mut watcher, observer.id, Duration::from_secs(5)).await;
    let offline = count_by_user(&heard, "user:offline");
    assert_eq!(offline.keys().copied().collect::<HashSet<_>>(), ids);
    assert!(
        offline.values().all(|&n| n == 1),
        "one user:offline per user"
    );
    for user in &users {
        let (status, presence) = api
            .get(&format!("/users/{}", user.id), &observer.access)
            .await;
        assert_eq!(status, 200, "{presence}");
        assert_eq!(
            presence["online"], false,
            "settled to the truth: {presence}"
        );
    }
}

/// The open-file limit, after raising the soft limit to the hard one: each connection
/// costs a descriptor here and one in the server (which inherits the raised limit).
fn open_file_limit() -> usize {
    let limits = || -> Option<(usize, usize)> {
        let text = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = text
            .lines()
            .find(|line| line.starts_with("Max open files"))?;
        let mut fields = line.split_whitespace().skip(3);
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    };
    let Some((soft, hard)) = limits() else {
        return 1024;
    };
    if soft < hard {
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string()])
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
    }
    limits().map_or(soft, |(soft, _)| soft)
}
