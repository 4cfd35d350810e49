//! Rate limits (429 with Retry-After; `rate_limited` frames with retryAfter) and metrics.

use courier_test_db::TestDatabase;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

courier_test_db::on_both_stores!(
    auth_is_limited_per_ip,
    sends_are_limited_per_user_across_transports,
    socket_frames_are_limited_per_session,
    metrics_count_what_happened,
);

async fn auth_is_limited_per_ip(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.auth_requests_per_minute = 3).await;
    for _ in 0..3 {
        let (status, _) = app
            .post(
                "/auth/login",
                None,
                json!({"username": "ann", "password": "whatever"}),
            )
            .await;
        assert_eq!(status, 401);
    }
    let response = app
        .http
        .post(app.url("/auth/login"))
        .json(&json!({"username": "ann", "password": "whatever"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(
        response.headers().contains_key("x-request-id"),
        "refusals are logged like the rest"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
}

async fn sends_are_limited_per_user_across_transports(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.sends_per_second = 2).await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;
    app.send(&ann, group, "1", "one").await;
    let mut socket = app.socket(&ann).await;
    let ack = socket
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "2", "body": "two"}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
    let refused = socket
        .request(
            "message:send",
            json!({"conversationId": group, "clientMsgId": "3", "body": "three"}),
        )
        .await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("rate_limited"))
    );
    assert!(refused["retryAfter"].as_u64().unwrap() >= 1);
    let (status, body) = app
        .post(
            &format!("/conversations/{group}/messages"),
            Some(&ann.access),
            json!({"clientMsgId": "4", "body": "four"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    let (_, page) = app
        .get(&format!("/conversations/{group}/messages"), &ann.access)
        .await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        2,
        "refused sends stored nothing"
    );
}

async fn socket_frames_are_limited_per_session(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.ws_frames_per_second = 3).await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;
    let mut socket = app.socket(&ann).await;
    for _ in 0..6 {
        socket
            .command("typing:start", json!({"conversationId": group}))
            .await;
    }
    let refused = socket
        .next_where(|frame| frame["error"] == "rate_limited")
        .await;
    assert_eq!(refused["type"], "error");
    assert!(
        refused["ref"].is_string(),
        "the refused frame's ref comes back: {refused}"
    );
    assert!(refused["retryAfter"].is_u64());
}

async fn metrics_count_what_happened(db: TestDatabase) {
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let group = app.group(&ann, &[&bob]).await;
    let mut bob_socket = app.socket(&bob).await;
    app.send(&ann, group, "m", "counted").await;
    bob_socket.next_event("message:received").await;
    assert_eq!(app.metric("courier_messages_sent_total").await, 1.0);
    assert_eq!(app.metric("courier_websocket_connections").await, 1.0);
    assert_eq!(
        app.metric("courier_sessions{transport=\"native\"}").await,
        1.0
    );
    assert!(app.metric("courier_events_delivered_total").await >= 1.0);
    assert_eq!(app.metric("courier_send_to_ack_seconds_count").await, 1.0);
    assert!(
        app.metric("courier_http_responses_total{class=\"2xx\"}")
            .await
            >= 4.0
    );
    assert_eq!(app.metric("courier_store_commit_seconds_count").await, 1.0);
    assert_eq!(app.metric("courier_commit_batch_size_sum").await, 1.0);

    // A retry over the socket is answered, and not counted as a second message.
    let data = json!({"conversationId": group, "clientMsgId": "w", "body": "once"});
    bob_socket.request("message:send", data.clone()).await;
    bob_socket.request("message:send", data).await;
    assert_eq!(app.metric("courier_messages_sent_total").await, 2.0);
}
