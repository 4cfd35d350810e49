//! `GET /calls/ice-servers`: the configured STUN/TURN servers, for signed-in users only.

use courier_server::config::IceServer;
use courier_test_db::TestDatabase;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

courier_test_db::on_both_stores!(ice_servers_are_served_to_signed_in_users);

async fn ice_servers_are_served_to_signed_in_users(db: TestDatabase) {
    let app = spawn_app_with(db, |config| {
        config.ice_servers = vec![
            IceServer {
                urls: vec!["stun:stun.example.com:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:turn.example.com:3478?transport=udp".into(),
                    "turns:turn.example.com:5349".into(),
                ],
                username: Some("courier".into()),
                credential: Some("s3cret".into()),
            },
        ];
    })
    .await;
    let ann = app.register("ann").await;

    let (status, body) = app.get("/calls/ice-servers", &ann.access).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"iceServers": [
            {"urls": ["stun:stun.example.com:3478"]},
            {
                "urls": ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"],
                "username": "courier",
                "credential": "s3cret"
            }
        ]})
    );

    let anonymous = app
        .http
        .get(app.url("/calls/ice-servers"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let error: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(error["error"], "unauthorized");

    let (status, body) = app.get("/calls/ice-servers", "not-a-token").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );

    let (status, body) = app
        .post("/calls/ice-servers", Some(&ann.access), json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[actix_rt::test]
async fn no_ice_servers_by_default() {
    let db = TestDatabase::new(courier_test_db::Backend::Sqlite)
        .await
        .unwrap();
    let app = spawn_app(db).await;
    let ann = app.register("ann").await;
    let (status, body) = app.get("/calls/ice-servers", &ann.access).await;
    assert_eq!((status, body), (200, json!({"iceServers": []})));
}
