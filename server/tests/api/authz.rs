//! The authorization matrix: every REST operation and every WebSocket command, for the
//! owner of a group, a member, an outsider, and callers with no or a bad token. An
//! outsider gets exactly the answer it would get for a conversation or message that does
//! not exist, so it never learns that one does.
//!
//! The product has no account deletion, so there is no "deleted user" row; the nearest
//! is a validly signed token whose account is not in the database (removed by hand, or a
//! database restored from before it was made).

use courier_test_db::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::forged::{SECRET, assert_unauthorized, bad_tokens, call, claims, signed, without_ids};
use crate::helpers::{Socket, TestApp, TestUser, spawn_app_with};

courier_test_db::on_both_stores!(rest_authorization_matrix, socket_authorization_matrix);

/// Far above any id the tests create: a conversation or message that does not exist.
const MISSING: i64 = 1_000_000;

struct World {
    app: TestApp,
    ann: TestUser,
    bob: TestUser,
    eve: TestUser,
    carl: TestUser,
    dan: TestUser,
    group: i64,
    message: i64,
}

/// ann owns a group with bob and dan in it and has posted one message; eve and carl are
/// in nothing.
async fn world(db: TestDatabase) -> World {
    let app = spawn_app_with(db, |config| {
        config.auth_requests_per_minute = 10_000;
        config.sends_per_second = 10_000;
    })
    .await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let carl = app.register("carl").await;
    let dan = app.register("dan").await;
    let group = app.group(&ann, &[&bob, &dan]).await;
    let message = app.send(&ann, group, "first", "hello").await["id"]
        .as_i64()
        .unwrap();
    World {
        app,
        ann,
        bob,
        eve,
        carl,
        dan,
        group,
        message,
    }
}

/// The operations on one conversation and one message, with what each caller gets.
struct Op {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
}

fn scoped_ops(world: &World, conversation: i64, message: i64, key: &str) -> Vec<Op> {
    let op = |name, method, path: String, body: Option<Value>| Op {
        name,
        method,
        path,
        body,
    };
    vec![
        op(
            "GET conversation",
            Method::GET,
            format!("/conversations/{conversation}"),
            None,
        ),
        op(
            "GET history",
            Method::GET,
            format!("/conversations/{conversation}/messages?afterSeq=0"),
            None,
        ),
        op(
            "POST message",
            Method::POST,
            format!("/conversations/{conversation}/messages"),
            Some(json!({"clientMsgId": key, "body": "hi"})),
        ),
        op(
            "POST read",
            Method::POST,
            format!("/conversations/{conversation}/read"),
            Some(json!({"seq": 1})),
        ),
        op(
            "POST member",
            Method::POST,
            format!("/conversations/{conversation}/members"),
            Some(json!({"userId": world.carl.id})),
        ),
        op(
            "DELETE member",
            Method::DELETE,
            format!("/conversations/{conversation}/members/{}", world.dan.id),
            None,
        ),
        op(
            "PATCH message",
            Method::PATCH,
            format!("/messages/{message}"),
            Some(json!({"body": "changed"})),
        ),
        op(
            "DELETE message",
            Method::DELETE,
            format!("/messages/{message}"),
            None,
        ),
    ]
}

async fn run(world: &World, op: &Op, token: Option<&str>) -> (u16, Value) {
    call(
        &world.app,
        op.method.clone(),
        &op.path,
        token,
        op.body.as_ref(),
    )
    .await
}

/// The operations that are not about one conversation, and the public ones.
fn unscoped_ops(world: &World) -> Vec<Op> {
    let op = |name, method, path: &str, body: Option<Value>| Op {
        name,
        method,
        path: path.to_owned(),
        body,
    };
    vec![
        op("GET conversations", Method::GET, "/conversations", None),
        op(
            "POST conversation",
            Method::POST,
            "/conversations",
            Some(json!({"kind": "group", "title": "mine", "memberIds": []})),
        ),
        op("GET me", Method::GET, "/users/me", None),
        op(
            "PATCH me",
            Method::PATCH,
            "/users/me",
            Some(json!({"statusText": "here"})),
        ),
        op("GET users", Method::GET, "/users?query=a", None),
        op(
            "GET user",
            Method::GET,
            &format!("/users/{}", world.ann.id),
            None,
        ),
    ]
}

async fn rest_authorization_matrix(db: TestDatabase) {
    let world = world(db).await;
    let (ann, bob, eve) = (&world.ann, &world.bob, &world.eve);
    let existing = scoped_ops(&world, world.group, world.message, "k");
    let missing = scoped_ops(&world, MISSING, MISSING, "k");

    // No token or a bad one: 401 for every operation that needs a caller, existing
    // target or not.
    for (name, token) in bad_tokens(ann, bob) {
        let token = token.as_deref();
        for op in existing.iter().chain(&missing).chain(&unscoped_ops(&world)) {
            let answer = run(&world, op, token).await;
            assert_unauthorized(&format!("{name}: {}", op.name), &answer);
        }
        let answer = call(&world.app, Method::GET, "/ws", token, None).await;
        assert_unauthorized(&format!("{name}: GET /ws"), &answer);
    }

    // The outsider: 404, and the same answer as for what does not exist.
    let outsider = scoped_ops(&world, world.group, world.message, "eve-1");
    for (op, missing_op) in outsider.iter().zip(&missing) {
        let answer = run(&world, op, Some(&eve.access)).await;
        let nothing = run(&world, missing_op, Some(&eve.access)).await;
        assert_eq!(
            (answer.0, answer.1["error"].as_str()),
            (404, Some("not_found")),
            "outsider: {}: {}",
            op.name,
            answer.1
        );
        assert_eq!(
            without_ids(&answer.1),
            without_ids(&nothing.1),
            "outsider: {} tells an existing conversation from a missing one",
            op.name
        );
    }
    // A receipt beyond the last seq is judged only after membership.
    let beyond = json!({"seq": 99});
    let path = format!("/conversations/{}/read", world.group);
    let answer = call(
        &world.app,
        Method::POST,
        &path,
        Some(&eve.access),
        Some(&beyond),
    )
    .await;
    let missing_path = format!("/conversations/{MISSING}/read");
    let nothing = call(
        &world.app,
        Method::POST,
        &missing_path,
        Some(&eve.access),
        Some(&beyond),
    )
    .await;
    assert_eq!(answer.0, 404, "{}", answer.1);
    assert_eq!(without_ids(&answer.1), without_ids(&nothing.1));
    // The outsider's list does not have the group, and nothing it tried took effect.
    let (_, listed) = world.app.get("/conversations", &eve.access).await;
    assert_eq!(listed, json!([]));
    let (_, group) = world
        .app
        .get(&format!("/conversations/{}", world.group), &ann.access)
        .await;
    let members: Vec<i64> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_i64().unwrap())
        .collect();
    assert_eq!(members.len(), 3, "{group}");
    assert!(!members.contains(&world.carl.id) && members.contains(&world.dan.id));
    assert_eq!(group["lastSeq"], 1, "the outsider stored nothing");

    // Members and the owner see nothing of a missing conversation either.
    for user in [ann, bob] {
        for op in &missing {
            let answer = run(&world, op, Some(&user.access)).await;
            assert_eq!(answer.0, 404, "{}: {}", op.name, answer.1);
        }
    }

    // The member: reads, sends and adds people; may not remove others or touch the
    // owner's message.
    let member = scoped_ops(&world, world.group, world.message, "bob-1");
    let expected = [200, 200, 201, 204, 201, 403, 403, 403];
    for (op, status) in member.iter().zip(expected) {
        let answer = run(&world, op, Some(&bob.access)).await;
        assert_eq!(answer.0, status, "member: {}: {}", op.name, answer.1);
        if status == 403 {
            assert_eq!(answer.1["error"], "forbidden");
        }
    }

    // The owner: everything (carl is already in; dan is removed; the message is its own).
    let owner = scoped_ops(&world, world.group, world.message, "ann-1");
    let expected = [200, 200, 201, 204, 200, 204, 200, 200];
    for (op, status) in owner.iter().zip(expected) {
        let answer = run(&world, op, Some(&ann.access)).await;
        assert_eq!(answer.0, status, "owner: {}: {}", op.name, answer.1);
    }

    // Operations on no conversation: any signed-in user; the socket route wants an upgrade.
    for user in [ann, bob, eve] {
        for op in unscoped_ops(&world) {
            let answer = run(&world, &op, Some(&user.access)).await;
            let status = if op.name == "POST conversation" {
                201
            } else {
                200
            };
            assert_eq!(answer.0, status, "{}: {}", op.name, answer.1);
        }
        let answer = call(&world.app, Method::GET, "/ws", Some(&user.access), None).await;
        assert_eq!(
            (answer.0, answer.1["error"].as_str()),
            (400, Some("bad_request"))
        );
    }
    let answer = call(
        &world.app,
        Method::GET,
        &format!("/users/{MISSING}"),
        Some(&eve.access),
        None,
    )
    .await;
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (404, Some("not_found"))
    );

    // A signed token of an account that is not there: its profile is 401, every
    // conversation is not found, and nothing is a 500.
    let ghost = signed(
        &claims(MISSING, 600),
        jsonwebtoken::Algorithm::HS256,
        SECRET,
    );
    for op in unscoped_ops(&world)
        .iter()
        .filter(|op| op.path == "/users/me")
    {
        assert_unauthorized(
            &format!("vanished account: {}", op.name),
            &run(&world, op, Some(&ghost)).await,
        );
    }
    for op in scoped_ops(&world, world.group, world.message, "ghost")
        .iter()
        .chain(&missing)
    {
        let answer = run(&world, op, Some(&ghost)).await;
        assert_eq!(answer.0, 404, "vanished account: {}: {}", op.name, answer.1);
    }
    let (status, listed) = call(
        &world.app,
        Method::GET,
        "/conversations",
        Some(&ghost),
        None,
    )
    .await;
    assert_eq!((status, listed), (200, json!([])));

    // Public routes answer anyone, a bad token changes nothing; /auth ignores tokens.
    for (name, token) in bad_tokens(ann, bob).into_iter().take(3) {
        for path in ["/health", "/ready", "/openapi.json", "/metrics"] {
            let (status, _) = call(&world.app, Method::GET, path, token.as_deref(), None).await;
            assert_eq!(status, 200, "{name}: {path}");
        }
        let login = json!({"username": "eve", "password": "correct horse battery"});
        let (status, _) = call(
            &world.app,
            Method::POST,
            "/auth/login",
            token.as_deref(),
            Some(&login),
        )
        .await;
        assert_eq!(status, 200, "{name}: login");
    }
}

/// Sends a command and returns the reply with its ref.
async fn ask(socket: &mut Socket, kind: &str, data: Value) -> Value {
    socket.request(kind, data).await
}

fn conversation_commands(
    conversation: i64,
    message: i64,
    seq: i64,
    key: &str,
) -> Vec<(&'static str, Value)> {
    vec![
        (
            "message:send",
            json!({"conversationId": conversation, "clientMsgId": key, "body": "hi"}),
        ),
        (
            "message:edit",
            json!({"messageId": message, "body": "changed"}),
        ),
        ("message:delete", json!({"messageId": message})),
        (
            "message:delivered",
            json!({"conversationId": conversation, "seq": seq}),
        ),
        (
            "message:read",
            json!({"conversationId": conversation, "seq": seq}),
        ),
        ("typing:start", json!({"conversationId": conversation})),
        ("typing:stop", json!({"conversationId": conversation})),
        (
            "sync",
            json!({"conversationId": conversation, "afterSeq": 0}),
        ),
        ("room:join", json!({"conversationId": conversation})),
        ("room:leave", json!({"conversationId": conversation})),
    ]
}

fn call_commands(to: i64) -> Vec<(&'static str, Value)> {
    vec![
        (
            "call:offer",
            json!({"callId": "c1", "toUserId": to, "sdp": "v=0"}),
        ),
        (
            "call:answer",
            json!({"callId": "c1", "toUserId": to, "sdp": "v=0"}),
        ),
        (
            "call:ice",
            json!({"callId": "c1", "toUserId": to, "candidate": {"candidate": "a"}}),
        ),
        ("call:hangup", json!({"callId": "c1", "toUserId": to})),
    ]
}

fn assert_error(who: &str, kind: &str, reply: &Value, code: &str) {
    assert_eq!(
        (reply["type"].as_str(), reply["error"].as_str()),
        (Some("error"), Some(code)),
        "{who}: {kind}: {reply}"
    );
}

fn assert_ack(who: &str, kind: &str, reply: &Value) {
    assert_eq!(reply["type"], "ack", "{who}: {kind}: {reply}");
}

async fn socket_authorization_matrix(db: TestDatabase) {
    let world = world(db).await;
    let (ann, bob, eve) = (&world.ann, &world.bob, &world.eve);
    let mut ann_ws = world.app.socket(ann).await;
    let mut bob_ws = world.app.socket(bob).await;
    let mut eve_ws = world.app.socket(eve).await;

    // The outsider: not_found for every command on the group, its message and the
    // people in it, word for word what a missing conversation, message or user gets.
    let on_group = conversation_commands(world.group, world.message, 99, "eve-1");
    let on_nothing = conversation_commands(MISSING, MISSING, 1, "eve-2");
    let calls_to_ann = call_commands(ann.id);
    let calls_to_nobody = call_commands(MISSING);
    for ((kind, data), (_, missing)) in on_group
        .into_iter()
        .chain(calls_to_ann)
        .zip(on_nothing.into_iter().chain(calls_to_nobody))
    {
        let reply = ask(&mut eve_ws, kind, data).await;
        let nothing = ask(&mut eve_ws, kind, missing).await;
        assert_error("outsider", kind, &reply, "not_found");
        assert_eq!(
            without_ids(&reply["message"]),
            without_ids(&nothing["message"]),
            "outsider: {kind} tells what exists from what does not"
        );
    }
    // Nothing of the group reached the outsider, and nothing it sent was stored.
    eve_ws
        .assert_none(std::time::Duration::from_millis(200), |frame| {
            frame["data"]["conversationId"] == world.group
        })
        .await;
    let (_, group) = world
        .app
        .get(&format!("/conversations/{}", world.group), &ann.access)
        .await;
    assert_eq!(group["lastSeq"], 1);

    // Members and the owner get not_found for a missing conversation too.
    for (who, socket) in [("owner", &mut ann_ws), ("member", &mut bob_ws)] {
        for (kind, data) in conversation_commands(MISSING, MISSING, 1, "x") {
            let reply = ask(socket, kind, data).await;
            assert_error(who, kind, &reply, "not_found");
        }
    }

    // The member: everything but changing the owner's message.
    for (kind, data) in conversation_commands(world.group, world.message, 1, "bob-1") {
        match kind {
            "message:edit" | "message:delete" => {
                assert_error(
                    "member",
                    kind,
                    &ask(&mut bob_ws, kind, data).await,
                    "forbidden",
                );
            }
            "typing:start" | "typing:stop" => {
                // No ack; the owner hears it.
                bob_ws.command(kind, data).await;
                let event = if kind == "typing:start" {
                    "typing:started"
                } else {
                    "typing:stopped"
                };
                let heard = ann_ws
                    .next_where(|f| f["type"] == event && f["data"]["userId"] == bob.id)
                    .await;
                assert_eq!(heard["data"]["conversationId"], world.group);
            }
            _ => assert_ack("member", kind, &ask(&mut bob_ws, kind, data).await),
        }
    }
    assert_ack(
        "member",
        "room:join",
        &ask(
            &mut bob_ws,
            "room:join",
            json!({"conversationId": world.group}),
        )
        .await,
    );

    // The owner: everything, its own message included.
    for (kind, data) in conversation_commands(world.group, world.message, 1, "ann-1") {
        match kind {
            "typing:start" | "typing:stop" => {
                ann_ws.command(kind, data).await;
                let event = if kind == "typing:start" {
                    "typing:started"
                } else {
                    "typing:stopped"
                };
                bob_ws
                    .next_where(|f| f["type"] == event && f["data"]["userId"] == ann.id)
                    .await;
            }
            _ => assert_ack("owner", kind, &ask(&mut ann_ws, kind, data).await),
        }
    }

    // Calls between people who share a conversation, status for anyone.
    for (kind, data) in call_commands(bob.id) {
        assert_ack("owner", kind, &ask(&mut ann_ws, kind, data).await);
        bob_ws.next_event(kind).await;
    }
    for (who, socket) in [
        ("owner", &mut ann_ws),
        ("member", &mut bob_ws),
        ("outsider", &mut eve_ws),
    ] {
        let reply = ask(socket, "status:update", json!({"status": "away"})).await;
        assert_ack(who, "status:update", &reply);
    }
}
