//! Engine.IO long-polling at the protocol level (the official client is exercised by
//! clients/socketio-tests): handshake, CONNECT with a token, an event with its ack.

use courier_test_db::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

courier_test_db::on_both_stores!(
    polling_handshake_connect_and_ack,
    bad_sessions_and_versions_are_refused
);

#[actix_rt::test]
async fn a_polling_client_that_posts_but_never_fetches_is_closed() {
    let db = TestDatabase::new(courier_test_db::Backend::Sqlite)
        .await
        .unwrap();
    polling_client_that_never_fetches(db).await;
}

const SEPARATOR: char = '\u{1e}';

async fn poll(app: &TestApp, sid: &str) -> Vec<String> {
    let url = format!(
        "http://127.0.0.1:{}/socket.io/?EIO=4&transport=polling&sid={sid}",
        app.port
    );
    let text = app.text(url).await;
    text.split(SEPARATOR).map(str::to_owned).collect()
}

async fn send(app: &TestApp, sid: &str, packets: &[String]) {
    let url = format!(
        "http://127.0.0.1:{}/socket.io/?EIO=4&transport=polling&sid={sid}",
        app.port
    );
    let body = packets.join(&SEPARATOR.to_string());
    let response = app.http.post(url).body(body).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");
}

async fn open(app: &TestApp) -> Value {
    let url = format!(
        "http://127.0.0.1:{}/socket.io/?EIO=4&transport=polling",
        app.port
    );
    let response = app.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let json = text.strip_prefix('0').expect("an open packet");
    serde_json::from_str(json).unwrap()
}

/// Packets received and not yet looked at.
struct Received(Vec<String>);

impl Received {
    /// The first packet starting with `prefix`, polling until one arrives.
    async fn take(&mut self, app: &TestApp, sid: &str, prefix: &str) -> String {
        for _ in 0..5 {
            if let Some(at) = self.0.iter().position(|p| p.starts_with(prefix)) {
                return self.0.remove(at);
            }
            let more = tokio::time::timeout(std::time::Duration::from_secs(5), poll(app, sid))
                .await
                .unwrap_or_default();
            self.0.extend(more);
        }
        panic!("no packet starting with {prefix}; received {:?}", self.0);
    }
}

async fn polling_handshake_connect_and_ack(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;

    let handshake = open(&app).await;
    assert_eq!(handshake["upgrades"], json!(["websocket"]));
    assert_eq!(
        (
            handshake["pingInterval"].as_u64(),
            handshake["pingTimeout"].as_u64()
        ),
        (Some(25000), Some(20000))
    );
    assert!(handshake["maxPayload"].as_u64().unwrap() > 0);
    let sid = handshake["sid"].as_str().unwrap().to_owned();
    let mut received = Received(Vec::new());

    send(&app, &sid, &[format!("40{}", json!({"token": "forged"}))]).await;
    let refused = received.take(&app, &sid, "44").await;
    assert_eq!(
        refused,
        r#"44{"message":"invalid or expired access token"}"#
    );

    send(&app, &sid, &[format!("40{}", json!({"token": ann.access}))]).await;
    let connected = received.take(&app, &sid, "40").await;
    assert!(connected.starts_with(r#"40{"sid":"#), "{connected}");

    let event = json!(["message:send", {"conversationId": group, "clientMsgId": "p1", "body": "over polling"}]);
    send(&app, &sid, &[format!("4217{event}")]).await;
    let ack = received.take(&app, &sid, "4317").await;
    let reply: Value = serde_json::from_str(ack.strip_prefix("4317").unwrap()).unwrap();
    assert_eq!(reply[0]["message"]["body"], "over polling");

    send(
        &app,
        &sid,
        &[
            "4218[\"message:shout\",{}]".to_owned(),
            "451-[\"x\",{\"_placeholder\":true,\"num\":0}]".to_owned(),
        ],
    )
    .await;
    let unknown = received.take(&app, &sid, "4318").await;
    assert!(unknown.contains("unknown_type"), "{unknown}");
    let binary = received.take(&app, &sid, "42[\"error\"").await;
    assert!(binary.contains("unsupported_frame"), "{binary}");
}

async fn bad_sessions_and_versions_are_refused(db: TestDatabase) {
    let app = spawn_app(db).await;
    let base = format!("http://127.0.0.1:{}/socket.io/", app.port);
    let response = app
        .http
        .get(format!("{base}?EIO=4&transport=polling&sid=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Session ID unknown");
    let response = app
        .http
        .get(format!("{base}?EIO=3&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app
        .http
        .post(format!("{base}?EIO=4&transport=polling&sid=nope"))
        .body("40")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

/// Replies pile up for a client that posts `sync`s and never polls, until the server
/// closes the connection (past 16 MiB of them) instead of holding them all.
async fn polling_client_that_never_fetches(db: TestDatabase) {
    let app = spawn_app_with(db, |config| {
        config.sends_per_second = 1000;
        config.ws_frames_per_second = 1000;
    })
    .await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;
    let body = "x".repeat(16 * 1024);
    for index in 0..100 {
        app.send(&ann, group, &format!("big-{index}"), &body).await;
    }
    let sessions = r#"courier_sessions{transport="socketio"}"#;
    let sid = open(&app).await["sid"].as_str().unwrap().to_owned();
    send(&app, &sid, &[format!("40{}", json!({"token": ann.access}))]).await;
    let connected = Received(Vec::new()).take(&app, &sid, "40").await;
    assert!(connected.starts_with(r#"40{"sid":"#), "{connected}");
    assert_eq!(app.metric(sessions).await, 1.0);

    // Twenty pages of about 1.7 MB each, answered while nobody fetches them.
    let sync = json!(["sync", {"conversationId": group, "afterSeq": 0, "limit": 100}]);
    let pages: Vec<String> = (0..20).map(|ack| format!("42{ack}{sync}")).collect();
    send(&app, &sid, &pages).await;
    let mut open_sessions = 1.0;
    for _ in 0..100 {
        open_sessions = app.metric(sessions).await;
        if open_sessions == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(open_sessions, 0.0, "the connection was not closed");
    let url = format!(
        "http://127.0.0.1:{}/socket.io/?EIO=4&transport=polling&sid={sid}",
        app.port
    );
    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["message"], "Session ID unknown");
}
