//! Secrets never reach the logs: a `courier` process with JSON logs at trace level
//! registers, logs in, refreshes, opens sockets with the token in the query string and
//! in a Socket.IO handshake, and sends; no access token, refresh token, password or JWT
//! secret appears in anything it wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Node, NodeSpec};

const SECRET: &str = "log-test-secret-log-test-secret-log!";

#[actix_rt::test]
async fn secrets_never_appear_in_the_logs() {
    let mut node = Node::start(
        NodeSpec::new("")
            .set("COURIER_JWT_SECRET", SECRET)
            .set("RUST_LOG", "trace"),
    );
    let api = &node.api;
    let port = api.port;

    let password = "log-test-password-ann";
    let other_password = "log-test-password-bob";
    let wrong_password = "log-test-wrong-password";
    let mut secrets = vec![
        SECRET.to_owned(),
        password.to_owned(),
        other_password.to_owned(),
        wrong_password.to_owned(),
    ];
    let mut keep = |body: &Value| {
        for field in ["accessToken", "refreshToken"] {
            if let Some(token) = body[field].as_str() {
                secrets.push(token.to_owned());
            }
        }
    };

    let (status, registered) = api
        .post(
            "/auth/register",
            None,
            json!({"username": "ann", "password": password}),
        )
        .await;
    assert_eq!(status, 201);
    keep(&registered);
    let (_, bob) = api
        .post(
            "/auth/register",
            None,
            json!({"username": "bob", "password": other_password}),
        )
        .await;
    keep(&bob);
    let (status, _) = api
        .post(
            "/auth/login",
            None,
            json!({"username": "ann", "password": wrong_password}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, login) = api
        .post(
            "/auth/login",
            None,
            json!({"username": "ann", "password": password}),
        )
        .await;
    assert_eq!(status, 200);
    keep(&login);
    let (status, refreshed) = api
        .post(
            "/auth/refresh",
            None,
            json!({"refreshToken": login["refreshToken"]}),
        )
        .await;
    assert_eq!(status, 200);
    keep(&refreshed);
    // A reused token is logged as a warning: by whom, not what.
    let (status, _) = api
        .post(
            "/auth/refresh",
            None,
            json!({"refreshToken": login["refreshToken"]}),
        )
        .await;
    assert_eq!(status, 401);
    let access = registered["accessToken"].as_str().unwrap();
    let (status, _) = api
        .post(
            "/auth/register",
            None,
            json!({"username": "ann", "password": password}),
        )
        .await;
    assert_eq!(status, 409);

    let (_, group) = api
        .post(
            "/conversations",
            Some(access),
            json!({"kind": "group", "title": "logs", "memberIds": [bob["user"]["id"]]}),
        )
        .await;
    let group = group["id"].as_i64().unwrap();
    let (status, _) = api
        .post(
            &format!("/conversations/{group}/messages"),
            Some(access),
            json!({"clientMsgId": "rest", "body": "over REST"}),
        )
        .await;
    assert_eq!(status, 201);
    // A bad token in a header, and a malformed body.
    let (status, _) = api
        .post(
            "/conversations",
            Some(&format!("{access}x")),
            json!({"kind": "group"}),
        )
        .await;
    assert_eq!(status, 401);

    // A browser-style socket: the token in the query string.
    let url = format!("ws://127.0.0.1:{port}/api/v1/ws?access_token={access}");
    let (_, mut framed) = awc::Client::new().ws(url).connect().await.unwrap();
    let command = json!({"type": "message:send", "ref": "r1", "data": {"conversationId": group, "clientMsgId": "ws", "body": "over the socket"}});
    framed
        .send(awc::ws::Message::Text(command.to_string().into()))
        .await
        .unwrap();
    let ack = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), framed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let awc::ws::Frame::Text(bytes) = frame {
            let reply: Value = serde_json::from_slice(&bytes).unwrap();
            if reply["ref"] == "r1" {
                break reply;
            }
        }
    };
    assert_eq!(ack["type"], "ack");
    // A refused query token.
    let refused = awc::Client::new()
        .ws(format!(
            "ws://127.0.0.1:{port}/api/v1/ws?access_token={access}tampered"
        ))
        .connect()
        .await;
    assert!(refused.is_err());

    // Socket.IO: the token in the CONNECT packet.
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (_, mut io) = awc::Client::new().ws(url).connect().await.unwrap();
    let connect = format!("40{}", json!({"token": bob["accessToken"]}));
    io.send(awc::ws::Message::Text(connect.into()))
        .await
        .unwrap();
    let mut connected = false;
    while !connected {
        let frame = tokio::time::timeout(Duration::from_secs(5), io.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let awc::ws::Frame::Text(bytes) = frame {
            connected = bytes.starts_with(b"40");
        }
    }
    let (status, _) = api
        .post(
            "/auth/logout",
            None,
            json!({"refreshToken": refreshed["refreshToken"]}),
        )
        .await;
    assert_eq!(status, 204);

    // A graceful stop flushes everything the process had to say.
    node.terminate();
    let lines = node.logs();
    let logs = lines.join("\n");
    let requests = lines
        .iter()
        .filter(|line| line.contains("\"request\""))
        .count();
    assert!(requests >= 10, "the request log was captured:\n{logs}");
    assert!(
        logs.contains("\"path\":\"/api/v1/ws\""),
        "socket upgrades are logged, by path:\n{logs}"
    );
    assert!(logs.contains("refresh token reused"), "{logs}");
    for secret in &secrets {
        // Parts too: a token's signature alone is as good as the token to a reader.
        let pieces: Vec<&str> = std::iter::once(secret.as_str())
            .chain(secret.split('.').filter(|part| part.len() >= 20))
            .collect();
        for piece in pieces {
            assert!(!logs.contains(piece), "{piece} is in the logs:\n{logs}");
        }
    }
}
