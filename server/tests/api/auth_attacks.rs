//! Attacks on authentication: forged, expired and misused tokens get the documented 401
//! on every transport and never a 500; a refresh token is spent once however many
//! requests race for it; login does not tell unknown users from wrong passwords; long
//! passwords count to their last byte.

use std::time::{Duration, Instant};

use awc::ws;
use courier_test_db::TestDatabase;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};

use crate::forged::{assert_unauthorized, bad_tokens, call};
use crate::helpers::{TestApp, spawn_app_with};

courier_test_db::on_both_stores!(
    forged_and_misused_tokens_get_401_on_every_transport,
    ten_racing_refreshes_have_exactly_one_winner,
    login_answers_unknown_users_and_wrong_passwords_alike,
    passwords_longer_than_72_bytes_are_not_truncated,
);

async fn app(db: TestDatabase) -> TestApp {
    spawn_app_with(db, |config| config.auth_requests_per_minute = 10_000).await
}

/// What a Socket.IO client over WebSocket hears after CONNECT with `token`.
async fn socketio_connect(app: &TestApp, token: &str) -> String {
    let url = format!(
        "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
        app.port
    );
    let (_, mut framed) = awc::Client::new().ws(url).connect().await.unwrap();
    assert!(
        next_text(&mut framed).await.starts_with('0'),
        "the open packet first"
    );
    let connect = format!("40{}", json!({ "token": token }));
    framed
        .send(ws::Message::Text(connect.into()))
        .await
        .unwrap();
    next_text(&mut framed).await
}

/// The next text frame.
pub async fn next_text(framed: &mut actix_codec::Framed<awc::BoxedSocket, ws::Codec>) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), framed.next())
            .await
            .expect("a packet")
            .expect("the socket is open")
            .unwrap();
        if let ws::Frame::Text(bytes) = frame {
            return String::from_utf8(bytes.to_vec()).unwrap();
        }
    }
}

async fn forged_and_misused_tokens_get_401_on_every_transport(db: TestDatabase) {
    let app = app(db).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let group = app.group(&ann, &[&bob]).await;
    let send_path = format!("/conversations/{group}/messages");
    let send_body = json!({"clientMsgId": "k", "body": "hi"});

    // The good token works everywhere the bad ones are tried.
    let (status, _) = call(&app, Method::GET, "/users/me", Some(&ann.access), None).await;
    assert_eq!(status, 200);
    assert!(socketio_connect(&app, &ann.access).await.starts_with("40"));

    for (name, token) in bad_tokens(&ann, &bob) {
        let token = token.as_deref();
        let requests: [(Method, &str, Option<&Value>); 4] = [
            (Method::GET, "/users/me", None),
            (Method::GET, "/conversations", None),
            (Method::POST, &send_path, Some(&send_body)),
            (
                Method::PATCH,
                "/users/me",
                Some(&json!({"statusText": "pwned"})),
            ),
        ];
        for (method, path, body) in requests {
            let what = format!("{name}: {method} {path}");
            assert_unauthorized(&what, &call(&app, method, path, token, body).await);
        }

        // The WebSocket handshake: the header, and the query parameter of browsers.
        let answer = call(&app, Method::GET, "/ws", token, None).await;
        assert_unauthorized(&format!("{name}: GET /ws"), &answer);
        let url = format!("ws://127.0.0.1:{}/api/v1/ws", app.port);
        let mut upgrade = awc::Client::new().ws(url.as_str());
        if let Some(token) = token {
            upgrade = upgrade.bearer_auth(token);
        }
        let refused = upgrade.connect().await;
        assert!(
            matches!(refused, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s == 401),
            "{name}: upgrade with the header"
        );
        if let Some(token) = token {
            let query = format!("{url}?access_token={}", urlencode(token));
            let refused = awc::Client::new().ws(query).connect().await;
            assert!(
                matches!(refused, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s == 401),
                "{name}: upgrade with the query parameter"
            );
            let packet = socketio_connect(&app, token).await;
            assert!(
                packet.starts_with("44"),
                "{name}: Socket.IO says connect_error: {packet}"
            );
            let error: Value = serde_json::from_str(&packet[2..]).unwrap();
            assert!(error["message"].is_string(), "{packet}");
        }
    }

    // Nothing a forged token tried took effect.
    let (_, page) = app.get(&send_path, &ann.access).await;
    assert_eq!(page["messages"], json!([]));
    let (_, me) = app.get("/users/me", &ann.access).await;
    assert_eq!(me["statusText"], "");

    // Other spellings of a bad credential.
    for header in [
        "Basic YW5uOnB3",
        "Bearer",
        "Bearer  ",
        "Token abc",
        "bearer",
    ] {
        let response = app
            .http
            .get(app.url("/users/me"))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_unauthorized(&format!("Authorization: {header}"), &(status, body));
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn ten_racing_refreshes_have_exactly_one_winner(db: TestDatabase) {
    let app = app(db).await;
    let ann = app.register("ann").await;
    let body = json!({"refreshToken": ann.refresh});
    let answers = futures_util::future::join_all(
        (0..10).map(|_| app.post("/auth/refresh", None, body.clone())),
    )
    .await;
    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one wins: {answers:?}");
    for answer in answers.iter().filter(|(status, _)| *status != 200) {
        assert_unauthorized("a losing refresh", answer);
    }
    // The losers used a spent token: its family is revoked, the winner's new token too.
    let successor = json!({"refreshToken": winners[0]["refreshToken"]});
    let answer = app.post("/auth/refresh", None, successor).await;
    assert_unauthorized("the winner's token after the reuse", &answer);

    // In sequence: a spent token used again revokes the token that replaced it.
    let (_, login) = app
        .post(
            "/auth/login",
            None,
            json!({"username": "ann", "password": "correct horse battery"}),
        )
        .await;
    let first = json!({"refreshToken": login["refreshToken"]});
    let (status, rotated) = app.post("/auth/refresh", None, first.clone()).await;
    assert_eq!(status, 200);
    assert_unauthorized(
        "a spent token",
        &app.post("/auth/refresh", None, first).await,
    );
    let second = json!({"refreshToken": rotated["refreshToken"]});
    assert_unauthorized(
        "the successor of a reused token",
        &app.post("/auth/refresh", None, second).await,
    );
    // The access tokens stay valid until they expire: they are not looked up.
    let access = rotated["accessToken"].as_str().unwrap();
    assert_eq!(app.get("/users/me", access).await.0, 200);
}

async fn login_answers_unknown_users_and_wrong_passwords_alike(db: TestDatabase) {
    let app = app(db).await;
    app.register("ann").await;
    let unknown = json!({"username": "nobody", "password": "correct horse battery"});
    let wrong = json!({"username": "ann", "password": "wrong horse battery"});
    let unknown_answer = app.post("/auth/login", None, unknown.clone()).await;
    let wrong_answer = app.post("/auth/login", None, wrong.clone()).await;
    assert_unauthorized("unknown user", &unknown_answer);
    assert_eq!(unknown_answer, wrong_answer, "same status, same body");

    // Interleaved, so that a slow moment of the machine hits both alike.
    let (mut unknown_ms, mut wrong_ms) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        for (body, times) in [(&unknown, &mut unknown_ms), (&wrong, &mut wrong_ms)] {
            let started = Instant::now();
            let (status, _) = app.post("/auth/login", None, body.clone()).await;
            times.push(started.elapsed().as_secs_f64());
            assert_eq!(status, 401);
        }
    }
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let (unknown_median, wrong_median) = (median(&mut unknown_ms), median(&mut wrong_ms));
    let ratio = unknown_median.max(wrong_median) / unknown_median.min(wrong_median);
    assert!(
        ratio < 3.0,
        "unknown user {unknown_median:.4}s, wrong password {wrong_median:.4}s"
    );
}

async fn passwords_longer_than_72_bytes_are_not_truncated(db: TestDatabase) {
    let app = app(db).await;
    let prefix = "x".repeat(72);
    let accented = "é".repeat(36); // 72 bytes in UTF-8
    for (user, stored, other) in [
        ("ann", format!("{prefix}one"), format!("{prefix}two")),
        ("bob", format!("{accented}1"), format!("{accented}2")),
        ("cid", "y".repeat(128), format!("{}z", "y".repeat(127))),
    ] {
        let (status, body) = app
            .post(
                "/auth/register",
                None,
                json!({"username": user, "password": stored}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let login = |password: &str| {
            app.post(
                "/auth/login",
                None,
                json!({"username": user, "password": password}),
            )
        };
        assert_unauthorized(
            &format!("{user}: a password sharing the first 72 bytes"),
            &login(&other).await,
        );
        assert_eq!(login(&stored).await.0, 200, "{user}: the real password");
        assert_unauthorized(
            &format!("{user}: the first 72 bytes alone"),
            &login(&stored[..72]).await,
        );
    }
    // Over the documented 128 characters: refused, not cut.
    let (status, body) = app
        .post(
            "/auth/register",
            None,
            json!({"username": "dee", "password": "z".repeat(129)}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("validation_failed"))
    );
    assert!(body["fields"]["password"].is_array(), "{body}");
}
