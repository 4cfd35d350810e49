//! Two `courier` processes on two ports sharing one PostgreSQL database and one Redis:
//! what a client on one node does reaches clients on the other, in order, and survives
//! a node's death and a Redis restart.
//!
//! Needs PostgreSQL (`DATABASE_URL`) and `redis-server` on the PATH; skips without them
//! unless `COURIER_REQUIRE_POSTGRES` / `COURIER_REQUIRE_REDIS` say they must be there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod support;

use std::time::Duration;

use awc::ws;
use courier_test_db::{Backend, TestDatabase, TestRedis};
use futures_util::StreamExt;
use helpers::{Api, Socket, TestUser};
use serde_json::{Value, json};
use support::{Node, NodeSpec};

/// How fast a dead node is noticed in these tests (the default is 30 s).
const PRESENCE_TTL_MS: &str = "3000";

/// The shared services of one test's cluster.
struct Cluster {
    database: TestDatabase,
    redis: TestRedis,
}

impl Cluster {
    async fn new() -> Option<Self> {
        let Some(database) = TestDatabase::new(Backend::Postgres).await else {
            eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
            return None;
        };
        let Some(redis) = TestRedis::start() else {
            eprintln!("skipped: redis-server is not installed");
            return None;
        };
        Some(Self { database, redis })
    }

    /// Two nodes, started one after the other (the first applies the migrations).
    async fn two_nodes(&self) -> (Node, Node) {
        self.two_nodes_with(&[]).await
    }

    async fn two_nodes_with(&self, overrides: &[(&str, &str)]) -> (Node, Node) {
        let spec = overrides.iter().fold(
            NodeSpec::new(self.database.url())
                .redis(&self.redis.url())
                .set("COURIER_PRESENCE_TTL_MS", PRESENCE_TTL_MS),
            |spec, (key, value)| spec.set(key, value),
        );
        let a = Node::start(spec.clone());
        let b = Node::start(spec);
        a.wait_until("ready").await;
        b.wait_until("ready").await;
        (a, b)
    }
}

/// The next frame `keep` accepts within `within`, skipping others.
async fn within(socket: &mut Socket, within: Duration, keep: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.framed.next())
            .await
            .expect("the frame arrived in time");
        if let Some(Ok(ws::Frame::Text(bytes))) = frame {
            let frame: Value = serde_json::from_slice(&bytes).unwrap();
            if keep(&frame) {
                return frame;
            }
        }
    }
}

fn is(kind: &'static str, user: i64) -> impl Fn(&Value) -> bool {
    move |frame| frame["type"] == kind && frame["data"]["userId"] == user
}

async fn direct(api: &Api, from: &TestUser, to: &TestUser) -> i64 {
    let (status, body) = api
        .post(
            "/conversations",
            Some(&from.access),
            json!({"kind": "direct", "peerId": to.id}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

#[actix_rt::test]
async fn clients_on_two_nodes_share_messages_typing_receipts_and_presence() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = cluster.two_nodes().await;
    let ann = a.api.register("ann").await;
    let bob = b.api.register("bob").await;
    let chat = direct(&a.api, &ann, &bob).await;

    let mut ann_ws = a.api.socket(&ann).await;
    let mut bob_ws = b.api.socket(&bob).await;
    let online = ann_ws.next_where(is("user:online", bob.id)).await;
    assert_eq!(online["data"]["lastSeen"], Value::Null);
    let (_, presence) = a.api.get(&format!("/users/{}", bob.id), &ann.access).await;
    assert_eq!(
        presence["online"], true,
        "node A sees bob online on B: {presence}"
    );

    // A message sent on A reaches B as the sender's ack says.
    let ack = ann_ws
        .request(
            "message:send",
            json!({"conversationId": chat, "clientMsgId": "m1", "body": "hello from A"}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let received = bob_ws.next_event("message:received").await;
    assert_eq!(received["data"], ack["data"]["message"]);
    assert_eq!(received["data"]["seq"], 1);

    // And back, over REST on B.
    let reply = b.api.send(&bob, chat, "m2", "hello from B").await;
    let received = ann_ws.next_event("message:received").await;
    assert_eq!(received["data"], reply);

    bob_ws
        .command("typing:start", json!({"conversationId": chat}))
        .await;
    let typing = ann_ws.next_event("typing:started").await;
    assert_eq!(
        typing["data"],
        json!({"conversationId": chat, "userId": bob.id})
    );

    bob_ws
        .request("message:read", json!({"conversationId": chat, "seq": 1}))
        .await;
    let read = ann_ws.next_event("message:read").await;
    assert_eq!(
        read["data"],
        json!({"conversationId": chat, "userId": bob.id, "seq": 1})
    );

    let message_id = ack["data"]["message"]["id"].clone();
    ann_ws
        .request(
            "message:edit",
            json!({"messageId": message_id, "body": "hello, edited"}),
        )
        .await;
    let edited = bob_ws.next_event("message:edited").await;
    assert_eq!(edited["data"]["body"], "hello, edited");
    ann_ws
        .request("message:delete", json!({"messageId": message_id}))
        .await;
    let deleted = bob_ws.next_event("message:deleted").await;
    assert_eq!(deleted["data"]["id"], message_id);

    // A status set on B shows on A.
    bob_ws
        .request(
            "status:update",
            json!({"status": "busy", "text": "in a call"}),
        )
        .await;
    let status = ann_ws.next_event("user:status").await;
    assert_eq!(
        status["data"],
        json!({"userId": bob.id, "status": "busy", "text": "in a call"})
    );
    let (_, presence) = a.api.get(&format!("/users/{}", bob.id), &ann.access).await;
    assert_eq!(presence["status"], "busy", "{presence}");

    // A group created on B reaches ann's session on A, which then gets its messages.
    let cat = a.api.register("cat").await;
    let group = b.api.group(&bob, &[&cat]).await;
    let (status, _) = b
        .api
        .post(
            &format!("/conversations/{group}/members"),
            Some(&bob.access),
            json!({"userId": ann.id}),
        )
        .await;
    assert_eq!(status, 201);
    let created = ann_ws.next_event("conversation:created").await;
    assert_eq!(created["data"]["id"], group);
    let sent = b.api.send(&cat, group, "g1", "welcome ann").await;
    let received = ann_ws.next_event("message:received").await;
    assert_eq!(received["data"], sent);
    // ann, a member since a moment ago on node B, may post through node A.
    let ack = ann_ws
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "g2", "body": "thanks"}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "node A knows ann joined on B: {ack}");

    drop(bob_ws);
    let offline = ann_ws.next_where(is("user:offline", bob.id)).await;
    assert!(offline["data"]["lastSeen"].is_string(), "{offline}");
}

#[actix_rt::test]
async fn concurrent_sends_through_both_nodes_give_every_member_one_gap_free_sequence() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = cluster.two_nodes().await;
    let owner = a.api.register("owner").await;
    let on_a = a.api.register("reader_a").await;
    let on_b = b.api.register("reader_b").await;
    let sender_b = b.api.register("sender_b").await;
    let group = a.api.group(&owner, &[&on_a, &on_b, &sender_b]).await;

    let mut sockets = vec![
        a.api.socket(&owner).await,
        a.api.socket(&on_a).await,
        b.api.socket(&on_b).await,
        b.api.socket(&sender_b).await,
    ];
    const EACH: usize = 150;
    // Both senders put every send on the wire before reading any ack.
    for (index, sender) in [0, 3].into_iter().enumerate() {
        for n in 0..EACH {
            sockets[sender]
                .command(
                    "message:send",
                    json!({"conversationId": group, "clientMsgId": format!("{index}-{n}"), "body": format!("{index}:{n}")}),
                )
                .await;
        }
    }
    let mut sequences = Vec::new();
    for socket in &mut sockets {
        let mut ids = Vec::new();
        let mut seqs = Vec::new();
        while seqs.len() < 2 * EACH {
            let frame = socket.next_event("message:received").await;
            seqs.push(frame["data"]["seq"].as_i64().unwrap());
            ids.push(frame["data"]["id"].as_i64().unwrap());
        }
        let expected: Vec<i64> = (1..=(2 * EACH) as i64).collect();
        assert_eq!(seqs, expected, "gap-free, in order, each once");
        sequences.push(ids);
    }
    assert!(
        sequences.windows(2).all(|pair| pair[0] == pair[1]),
        "every member saw the same messages in the same order"
    );
    let (_, history) = b
        .api
        .get(
            &format!("/conversations/{group}/messages?limit=200"),
            &on_b.access,
        )
        .await;
    let stored: Vec<i64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["id"].as_i64().unwrap())
        .collect();
    assert_eq!(stored[..], sequences[0][..200], "pushes match the store");
}

/// A node that answered for an id as missing hears when another node creates it: the new
/// member's first message through that node is stored, not refused.
#[actix_rt::test]
async fn a_conversation_created_on_one_node_is_found_at_once_on_the_other() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = cluster.two_nodes().await;
    let ann = a.api.register("ann").await;
    let bob = b.api.register("bob").await;
    let first = direct(&a.api, &ann, &bob).await;
    let mut bob_ws = b.api.socket(&bob).await;
    let next = first + 1;
    let (status, body) = b
        .api
        .get(&format!("/conversations/{next}"), &bob.access)
        .await;
    assert_eq!(status, 404, "{body}");

    let group = a.api.group(&ann, &[&bob]).await;
    assert_eq!(group, next, "ids are given out in order");
    let created = bob_ws.next_event("conversation:created").await;
    assert_eq!(created["data"]["id"], group);
    let reply = bob_ws
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "first", "body": "hi"}),
        )
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(reply["data"]["message"]["seq"], 1, "{reply}");
}

/// A member added and removed through one node while messages flow, connected to another:
/// they hear every message stored from their join on, in order, and then that they left
/// (which their node stops following the conversation for as it arrives).
#[actix_rt::test]
async fn a_member_added_and_removed_elsewhere_hears_every_message_then_the_removal() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = cluster.two_nodes().await;
    let ann = a.api.register("ann").await;
    let cat = a.api.register("cat").await;
    let bob = b.api.register("bob").await;
    let group = a.api.group(&ann, &[&cat]).await;
    let mut bob_ws = b.api.socket(&bob).await;

    let done = std::cell::Cell::new(false);
    let stream = |sender: usize| {
        let (api, cat, done) = (&a.api, &cat, &done);
        async move {
            let mut n = 0;
            while !done.get() {
                api.send(cat, group, &format!("{sender}-{n}"), "flowing")
                    .await;
                n += 1;
            }
        }
    };
    let joins = async {
        for round in 0..8 {
            let path = format!("/conversations/{group}/members");
            let (status, body) = a
                .api
                .post(&path, Some(&ann.access), json!({"userId": bob.id}))
                .await;
            assert_eq!(status, 201, "{body}");
            // A message committed between the read of `lastSeq` and the publish of
            // `conversation:created` can reach bob before that event: it counts as heard.
            let mut heard = Vec::new();
            let created = loop {
                let frame = bob_ws
                    .next_where(|frame| {
                        frame["type"] == "conversation:created"
                            || frame["type"] == "message:received"
                    })
                    .await;
                if frame["type"] == "conversation:created" {
                    break frame;
                }
                heard.push(frame["data"]["seq"].as_i64().unwrap());
            };
            let joined_at = created["data"]["lastSeq"].as_i64().unwrap();
            // Everything bob hears until the next round, past what was stored at the join.
            let until = tokio::time::Instant::now() + Duration::from_millis(300);
            while let Ok(frame) =
                tokio::time::timeout_at(until, bob_ws.next_event("message:received")).await
            {
                heard.push(frame["data"]["seq"].as_i64().unwrap());
            }
            let (status, body) = a
                .api
                .delete(
                    &format!("/conversations/{group}/members/{}", bob.id),
                    &ann.access,
                )
                .await;
            assert_eq!(status, 204, "{body}");
            bob_ws.next_event("member:left").await;
            let later: Vec<i64> = heard.into_iter().filter(|&seq| seq > joined_at).collect();
            assert!(!later.is_empty(), "round {round}: messages kept flowing");
            let expected: Vec<i64> = (joined_at + 1..=*later.last().unwrap()).collect();
            assert_eq!(later, expected, "round {round}: joined at seq {joined_at}");
        }
        done.set(true);
    };
    futures_util::join!(stream(0), stream(1), joins);
}

#[actix_rt::test]
async fn the_users_of_a_killed_node_go_offline_for_the_others() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, mut b) = cluster.two_nodes().await;
    let ann = a.api.register("ann").await;
    let bob = b.api.register("bob").await;
    direct(&a.api, &ann, &bob).await;
    let mut ann_ws = a.api.socket(&ann).await;
    let _bob_ws = b.api.socket(&bob).await;
    ann_ws.next_where(is("user:online", bob.id)).await;

    b.kill();
    let ttl = Duration::from_millis(PRESENCE_TTL_MS.parse().unwrap());
    let offline = within(
        &mut ann_ws,
        ttl + Duration::from_secs(3),
        is("user:offline", bob.id),
    )
    .await;
    assert!(offline["data"]["lastSeen"].is_string(), "{offline}");
    let (_, presence) = a.api.get(&format!("/users/{}", bob.id), &ann.access).await;
    assert_eq!(presence["online"], false, "{presence}");
    assert!(presence["lastSeen"].is_string(), "{presence}");
}

#[actix_rt::test]
async fn a_node_stopped_gracefully_takes_its_users_offline_at_once() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    // A presence TTL and grace far beyond the wait below: only the stopping node's
    // goodbye can take bob offline in time.
    let slow = [
        ("COURIER_PRESENCE_TTL_MS", "120000"),
        ("COURIER_PRESENCE_GRACE_MS", "60000"),
    ];
    let (a, mut b) = cluster.two_nodes_with(&slow).await;
    let ann = a.api.register("ann").await;
    let bob = b.api.register("bob").await;
    direct(&a.api, &ann, &bob).await;
    let mut ann_ws = a.api.socket(&ann).await;
    let _bob_ws = b.api.socket(&bob).await;
    ann_ws.next_where(is("user:online", bob.id)).await;

    b.terminate();
    let offline = within(
        &mut ann_ws,
        Duration::from_secs(5),
        is("user:offline", bob.id),
    )
    .await;
    assert!(offline["data"]["lastSeen"].is_string(), "{offline}");
}

#[actix_rt::test]
async fn a_redis_restart_loses_nothing_acked() {
    let Some(mut cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = cluster.two_nodes().await;
    let ann = a.api.register("ann").await;
    let bob = b.api.register("bob").await;
    let chat = direct(&a.api, &ann, &bob).await;
    let mut ann_ws = a.api.socket(&ann).await;
    let mut bob_ws = b.api.socket(&bob).await;
    a.api.send(&ann, chat, "before", "before the outage").await;
    assert_eq!(
        bob_ws.next_event("message:received").await["data"]["seq"],
        1
    );

    cluster.redis.stop();
    a.wait_until("degraded").await;
    let mut acked = vec![1];
    for n in 0..5 {
        // Each node still serves its own users: sends are stored and acked.
        let ack = ann_ws
            .request(
                "message:send",
                json!({"conversationId": chat, "clientMsgId": format!("during-{n}"), "body": "during"}),
            )
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        acked.push(ack["data"]["message"]["seq"].as_i64().unwrap());
    }
    let ready = a.ready().await;
    assert_eq!(ready["bus"], "redis");
    assert!(ready["busError"].is_string(), "{ready}");

    cluster.redis.restart();
    a.wait_until("ready").await;
    b.wait_until("ready").await;
    let ack = ann_ws
        .request(
            "message:send",
            json!({"conversationId": chat, "clientMsgId": "after", "body": "after the outage"}),
        )
        .await;
    acked.push(ack["data"]["message"]["seq"].as_i64().unwrap());

    // Pushes resume, and node B fills what its sessions missed from the store.
    let mut seen = vec![1];
    while seen.last() != acked.last() {
        let frame = bob_ws.next_event("message:received").await;
        seen.push(frame["data"]["seq"].as_i64().unwrap());
    }
    let synced = bob_ws
        .request("sync", json!({"conversationId": chat, "afterSeq": 0}))
        .await;
    let stored: Vec<i64> = synced["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, acked, "every acked message is stored once");
    assert_eq!(
        seen, acked,
        "what bob missed while Redis was down was pushed once it was back, in order"
    );
}
