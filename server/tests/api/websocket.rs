//! The native WebSocket: events, acks, receipts, typing, sync, calls, bad input.

use std::time::Duration;

use awc::ws;
use courier_test_db::TestDatabase;
use futures_util::SinkExt;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};

courier_test_db::on_both_stores!(
    two_clients_exchange_messages_replies_edits_and_deletes,
    typing_and_receipts_reach_members_only,
    reconnect_and_sync_loses_nothing,
    bad_input_gets_error_frames_and_the_socket_stays,
    oversized_frames_close_with_1009,
    calls_are_relayed,
    unauthenticated_upgrades_are_refused,
    graceful_shutdown_says_going_away,
    presence_events_reach_contacts,
    sockets_close_when_their_token_expires,
    a_write_delay_holds_events_back_but_not_acks,
    a_small_conversation_is_not_held_by_the_write_delay,
);

async fn sockets_close_when_their_token_expires(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.access_token_ttl_s = 2).await;
    let ann = app.register("ann").await;
    let mut socket = app.socket(&ann).await;
    let reason = socket.closed().await.expect("a close reason");
    assert_eq!(reason.code, ws::CloseCode::Other(4001));
    assert_eq!(reason.description.as_deref(), Some("token_expired"));
}

async fn presence_events_reach_contacts(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    app.post(
        "/conversations",
        Some(&ann.access),
        json!({"kind": "direct", "peerId": bob.id}),
    )
    .await;
    let mut bob_ws = app.socket(&bob).await;
    let mut eve_ws = app.socket(&eve).await;
    let mut ann_ws = app.socket(&ann).await;
    let online = bob_ws
        .next_where(|f| f["type"] == "user:online" && f["data"]["userId"] == ann.id)
        .await;
    assert_eq!(online["data"]["lastSeen"], Value::Null);
    let ack = ann_ws
        .request(
            "status:update",
            json!({"status": "busy", "text": "in a meeting"}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
    let changed = bob_ws.next_event("user:status").await;
    assert_eq!(
        changed["data"],
        json!({"userId": ann.id, "status": "busy", "text": "in a meeting"})
    );
    drop(ann_ws);
    let offline = bob_ws
        .next_where(|f| f["type"] == "user:offline" && f["data"]["userId"] == ann.id)
        .await;
    assert!(offline["data"]["lastSeen"].is_string());
    eve_ws
        .assert_none(QUIET, |f| f["data"]["userId"] == ann.id)
        .await;
}

const QUIET: Duration = Duration::from_millis(300);

async fn two_clients_exchange_messages_replies_edits_and_deletes(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let group = app.group(&ann, &[&bob]).await;
    let mut ann_ws = app.socket(&ann).await;
    let mut bob_ws = app.socket(&bob).await;

    let ack = ann_ws
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "w1", "body": "hi bob"}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let sent = ack["data"]["message"].clone();
    assert_eq!(
        (sent["seq"].as_i64(), sent["body"].as_str()),
        (Some(1), Some("hi bob"))
    );
    let pushed = bob_ws.next_event("message:received").await;
    assert_eq!(
        pushed["data"], sent,
        "the pushed data is the message object itself"
    );

    // Idempotent retry over the socket: same message, nothing pushed twice.
    let again = ann_ws
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "w1", "body": "hi bob"}),
        )
        .await;
    assert_eq!(again["data"]["message"], sent);

    let reply = bob_ws
        .request("message:send", json!({"conversationId": group, "clientMsgId": "b1", "body": "hey", "replyToId": sent["id"]}))
        .await;
    assert_eq!(reply["data"]["message"]["replyTo"]["id"], sent["id"]);
    let received = ann_ws.next_event("message:received").await;
    assert_eq!(
        received["data"]["seq"], 2,
        "no duplicate of seq 1 came first"
    );

    let edited = ann_ws
        .request(
            "message:edit",
            json!({"messageId": sent["id"], "body": "hi, bob"}),
        )
        .await;
    assert_eq!(edited["data"]["message"]["body"], "hi, bob");
    assert_eq!(
        bob_ws.next_event("message:edited").await["data"]["body"],
        "hi, bob"
    );
    let refused = bob_ws
        .request("message:delete", json!({"messageId": sent["id"]}))
        .await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    ann_ws
        .request("message:delete", json!({"messageId": sent["id"]}))
        .await;
    let deleted = bob_ws.next_event("message:deleted").await;
    assert_eq!(
        (
            deleted["data"]["body"].clone(),
            deleted["data"]["seq"].clone()
        ),
        (Value::Null, json!(1))
    );
}

async fn typing_and_receipts_reach_members_only(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let group = app.group(&ann, &[&bob]).await;
    let mut ann_ws = app.socket(&ann).await;
    let mut bob_ws = app.socket(&bob).await;
    let mut eve_ws = app.socket(&eve).await;

    ann_ws
        .command("typing:start", json!({"conversationId": group}))
        .await;
    let typing = bob_ws.next_event("typing:started").await;
    assert_eq!(
        typing["data"],
        json!({"conversationId": group, "userId": ann.id})
    );
    ann_ws
        .command("typing:stop", json!({"conversationId": group}))
        .await;
    bob_ws.next_event("typing:stopped").await;

    let sent = app.send(&ann, group, "r1", "read me").await;
    bob_ws.next_event("message:received").await;
    let ack = bob_ws
        .request(
            "message:delivered",
            json!({"conversationId": group, "seq": 1}),
        )
        .await;
    assert_eq!(ack, json!({"type": "ack", "ref": ack["ref"], "data": {}}));
    let delivered = ann_ws.next_event("message:delivered").await;
    assert_eq!(
        delivered["data"],
        json!({"conversationId": group, "userId": bob.id, "seq": 1})
    );
    bob_ws
        .request(
            "message:read",
            json!({"conversationId": group, "seq": sent["seq"]}),
        )
        .await;
    assert_eq!(ann_ws.next_event("message:read").await["data"]["seq"], 1);

    let refused = eve_ws
        .request("typing:start", json!({"conversationId": group}))
        .await;
    assert_eq!(
        refused["error"], "not_found",
        "a non-member's typing is refused"
    );
    let refused = eve_ws
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "e", "body": "let me in"}),
        )
        .await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("not_found"))
    );
    eve_ws
        .assert_none(QUIET, |frame| frame["data"]["conversationId"] == group)
        .await;
}

async fn reconnect_and_sync_loses_nothing(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let group = app.group(&ann, &[&bob]).await;
    let mut bob_ws = app.socket(&bob).await;
    app.send(&ann, group, "1", "one").await;
    let last = bob_ws.next_event("message:received").await["data"]["seq"]
        .as_i64()
        .unwrap();
    drop(bob_ws);
    for n in 2..=4 {
        app.send(&ann, group, &n.to_string(), "while away").await;
    }
    let mut bob_ws = app.socket(&bob).await;
    let synced = bob_ws
        .request("sync", json!({"conversationId": group, "afterSeq": last}))
        .await;
    let seqs: Vec<i64> = synced["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(synced["data"]["hasMore"], false);
    let room = json!({"conversationId": group});
    assert_eq!(
        bob_ws.request("room:join", room.clone()).await["type"],
        "ack"
    );
    assert_eq!(
        bob_ws.request("room:leave", room.clone()).await["type"],
        "ack"
    );
    app.send(&ann, group, "5", "not for this session").await;
    bob_ws
        .assert_none(QUIET, |frame| frame["type"] == "message:received")
        .await;
    bob_ws.request("room:join", room).await;
    app.send(&ann, group, "6", "for this session").await;
    assert_eq!(
        bob_ws.next_event("message:received").await["data"]["seq"],
        6
    );
}

async fn bad_input_gets_error_frames_and_the_socket_stays(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;
    let mut socket = app.socket(&ann).await;

    socket.send_text("{not json").await;
    let frame = socket.next_event("error").await;
    assert_eq!(
        (frame["error"].as_str(), frame["ref"].clone()),
        (Some("bad_request"), Value::Null)
    );
    socket
        .send_text(r#"{"type":"message:shout","ref":"u1","data":{}}"#)
        .await;
    let frame = socket.next_event("error").await;
    assert_eq!(
        (frame["error"].as_str(), frame["ref"].as_str()),
        (Some("unknown_type"), Some("u1"))
    );
    socket
        .send_text(r#"{"type":"message:send","ref":"v1","data":{"conversationId":"x"}}"#)
        .await;
    let frame = socket.next_event("error").await;
    assert_eq!(
        (frame["error"].as_str(), frame["ref"].as_str()),
        (Some("validation_failed"), Some("v1"))
    );
    let frame = socket
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "k", "body": ""}),
        )
        .await;
    assert_eq!(frame["error"], "validation_failed");
    socket
        .framed
        .send(ws::Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        socket.next_event("error").await["error"],
        "unsupported_frame"
    );

    // Still connected and working.
    let ack = socket
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "ok", "body": "still here"}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
}

async fn oversized_frames_close_with_1009(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.ws_max_frame_bytes = 1024).await;
    let ann = app.register("ann").await;
    let mut socket = app.socket(&ann).await;
    socket.send_text("x".repeat(2048)).await;
    let reason = socket.closed().await.expect("a close reason");
    assert_eq!(reason.code, ws::CloseCode::Size);
}

async fn calls_are_relayed(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    app.post(
        "/conversations",
        Some(&ann.access),
        json!({"kind": "direct", "peerId": bob.id}),
    )
    .await;
    let mut ann_ws = app.socket(&ann).await;
    let mut bob_ws = app.socket(&bob).await;
    let ack = ann_ws
        .request(
            "call:offer",
            json!({"callId": "c-1", "toUserId": bob.id, "sdp": "v=0"}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
    let offer = bob_ws.next_event("call:offer").await;
    assert_eq!(
        offer["data"],
        json!({"callId": "c-1", "fromUserId": ann.id, "sdp": "v=0"})
    );
    bob_ws
        .request(
            "call:ice",
            json!({"callId": "c-1", "toUserId": ann.id, "candidate": {"candidate": "a=1"}}),
        )
        .await;
    assert_eq!(
        ann_ws.next_event("call:ice").await["data"]["candidate"],
        json!({"candidate": "a=1"})
    );
    let refused = ann_ws
        .request(
            "call:offer",
            json!({"callId": "c-2", "toUserId": eve.id, "sdp": "v=0"}),
        )
        .await;
    assert_eq!(refused["error"], "not_found");
}

async fn unauthenticated_upgrades_are_refused(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let url = format!("ws://127.0.0.1:{}/api/v1/ws", app.port);
    let refused = awc::Client::new().ws(url.as_str()).connect().await;
    assert!(
        matches!(refused, Err(awc::error::WsClientError::InvalidResponseStatus(status)) if status == 401)
    );
    let refused = awc::Client::new()
        .ws(format!("{url}?access_token=forged"))
        .connect()
        .await;
    assert!(refused.is_err());
    let accepted = awc::Client::new()
        .ws(format!("{url}?access_token={}", ann.access))
        .connect()
        .await;
    assert!(
        accepted.is_ok(),
        "browsers authenticate with the query parameter"
    );
}

async fn graceful_shutdown_says_going_away(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;
    let mut socket = app.socket(&ann).await;
    let acked = socket
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "last", "body": "before shutdown"}),
        )
        .await;
    assert_eq!(acked["type"], "ack");
    let shutdown = app.shutdown.clone();
    actix_rt::spawn(async move { shutdown.stop().await });
    let reason = socket.closed().await.expect("a close reason");
    assert_eq!(reason.code, ws::CloseCode::Away);
    // The acked message is in the store after the server stopped.
    use courier_engine::store::{DieselStore, MessageStore, StoreConfig};
    let store = DieselStore::connect(StoreConfig::new(app.database_url.clone()))
        .await
        .unwrap();
    let stored = store
        .messages_after(
            courier_engine::ConversationId(group),
            courier_engine::Seq(0),
            10,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].client_msg_id, "last");
}

async fn a_write_delay_holds_events_back_but_not_acks(db: TestDatabase) {
    let app = spawn_app_with(db, |config| {
        config.write_delay_ms = 1_000;
        config.write_delay_min_audience = 1;
    })
    .await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let group = app.group(&ann, &[&bob]).await;
    let mut ann_ws = app.socket(&ann).await;
    let mut bob_ws = app.socket(&bob).await;

    let mut sent = Vec::new();
    for n in 1..=3 {
        let ack = ann_ws
            .request(
                "message:send",
                json!({"conversationId": group, "clientMsgId": format!("d{n}"), "body": format!("m{n}")}),
            )
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        sent.push(ack["data"]["message"]["seq"].as_i64());
    }
    assert_eq!(sent, [Some(1), Some(2), Some(3)]);
    // The acks came at once; the events wait for the delay (1 s from the first push).
    bob_ws
        .assert_none(Duration::from_millis(200), |frame| {
            frame["type"] == "message:received"
        })
        .await;
    let mut heard = Vec::new();
    for _ in 0..3 {
        heard.push(bob_ws.next_event("message:received").await["data"]["seq"].as_i64());
    }
    assert_eq!(heard, sent, "every message, in order");

    // A shutdown lets held events out before the close frame.
    ann_ws
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "d4", "body": "last"}),
        )
        .await;
    let shutdown = app.shutdown.clone();
    actix_rt::spawn(async move { shutdown.stop().await });
    let last = bob_ws.next_event("message:received").await;
    assert_eq!(last["data"]["body"], "last");
    let reason = bob_ws.closed().await.expect("a close reason");
    assert_eq!(reason.code, ws::CloseCode::Away);
}

async fn a_small_conversation_is_not_held_by_the_write_delay(db: TestDatabase) {
    const DELAY: Duration = Duration::from_millis(1_000);
    let app = spawn_app_with(db, |config| {
        config.write_delay_ms = DELAY.as_millis() as u64;
        config.write_delay_min_audience = 3;
    })
    .await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let cat = app.register("cat").await;
    let large = app.group(&ann, &[&bob, &cat]).await;
    let small = app.group(&ann, &[&bob]).await;
    let mut bob_ws = app.socket(&bob).await;

    app.send(&ann, large, "l1", "to three").await;
    bob_ws
        .assert_none(Duration::from_millis(200), |frame| {
            frame["type"] == "message:received"
        })
        .await;
    app.send(&ann, small, "s1", "to two").await;
    // Both well within the delay: the small conversation's message did not wait, and it
    // took the large one's along, in the order they were sent.
    let heard = tokio::time::timeout(DELAY / 2, async {
        let first = bob_ws.next_event("message:received").await;
        let second = bob_ws.next_event("message:received").await;
        [first, second]
    })
    .await
    .expect("not held back by the delay");
    let bodies: Vec<&str> = heard
        .iter()
        .map(|frame| frame["data"]["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(bodies, ["to three", "to two"]);
}
