//! Hostile sockets and rate limits: a page of a foreign origin cannot open a socket,
//! oversized and non-UTF-8 text frames close it with the RFC 6455 codes, REST answers
//! carry the `RateLimit-*` fields, and the send budget is one for REST and WebSocket.

use std::time::Duration;

use awc::ws;
use courier_test_db::{Backend, TestDatabase};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};

courier_test_db::on_both_stores!(
    rest_answers_say_where_the_client_stands_with_its_limits,
    the_send_budget_is_shared_by_rest_and_websocket,
);

async fn sqlite() -> TestDatabase {
    TestDatabase::new(Backend::Sqlite).await.unwrap()
}

const ALLOWED: &str = "https://app.example.com";

/// What a native WebSocket upgrade with this `Origin` gets: its status.
async fn native_upgrade(app: &TestApp, token: &str, origin: Option<&str>) -> u16 {
    let url = format!("ws://127.0.0.1:{}/api/v1/ws", app.port);
    let mut request = awc::Client::new().ws(url).bearer_auth(token);
    if let Some(origin) = origin {
        request = request.origin(origin);
    }
    match request.connect().await {
        Ok((response, _)) => response.status().as_u16(),
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(other) => panic!("{other}"),
    }
}

async fn socketio_upgrade(app: &TestApp, origin: Option<&str>) -> u16 {
    let url = format!(
        "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
        app.port
    );
    let mut request = awc::Client::new().ws(url);
    if let Some(origin) = origin {
        request = request.origin(origin);
    }
    match request.connect().await {
        Ok((response, _)) => response.status().as_u16(),
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[actix_rt::test]
async fn sockets_refuse_pages_of_foreign_origins() {
    let app = spawn_app_with(sqlite().await, |config| {
        config.cors_allowed_origins = vec![ALLOWED.to_owned()];
    })
    .await;
    let ann = app.register("ann").await;
    let same = format!("http://127.0.0.1:{}", app.port);
    let cases: [(Option<&str>, u16); 7] = [
        (None, 101),
        (Some(&same), 101),
        (Some(ALLOWED), 101),
        (Some("https://evil.example"), 403),
        (Some("http://127.0.0.1:1"), 403),
        (Some("https://app.example.com.evil.example"), 403),
        (Some("null"), 403),
    ];
    for (origin, status) in cases {
        assert_eq!(
            native_upgrade(&app, &ann.access, origin).await,
            status,
            "native, Origin {origin:?}"
        );
        assert_eq!(
            socketio_upgrade(&app, origin).await,
            status,
            "Socket.IO, Origin {origin:?}"
        );
    }

    // The refusal is the documented error, before the token is even looked at.
    for path in ["/api/v1/ws", "/socket.io/?EIO=4&transport=polling"] {
        let response = app
            .http
            .get(format!("http://127.0.0.1:{}{path}", app.port))
            .header("Origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "forbidden", "{path}: {body}");
        assert!(body["message"].is_string());
    }
    // Long-polling: a foreign page can neither open a session nor post into one.
    let polling = format!(
        "http://127.0.0.1:{}/socket.io/?EIO=4&transport=polling",
        app.port
    );
    let open = app.text(polling.clone()).await;
    let handshake: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let sid = handshake["sid"].as_str().unwrap();
    let response = app
        .http
        .post(format!("{polling}&sid={sid}"))
        .header("Origin", "https://evil.example")
        .body(format!("40{}", json!({"token": ann.access})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

/// A raw WebSocket over TCP, to send what well-behaved clients cannot: a text frame
/// that is not UTF-8.
async fn raw_upgrade(port: u16, path: &str, token: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{auth}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// A client frame: final, masked.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | u8::try_from(len).unwrap()),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads server frames until a close frame, and answers its code.
async fn close_code(stream: &mut TcpStream) -> u16 {
    let read = async {
        loop {
            let first = stream.read_u8().await.unwrap();
            let len = match stream.read_u8().await.unwrap() & 0x7f {
                126 => u64::from(stream.read_u16().await.unwrap()),
                127 => stream.read_u64().await.unwrap(),
                len => u64::from(len),
            };
            let mut payload = vec![0; usize::try_from(len).unwrap()];
            stream.read_exact(&mut payload).await.unwrap();
            if first & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a close frame")
}

#[actix_rt::test]
async fn oversized_and_non_utf8_text_frames_close_the_socket() {
    let app = spawn_app_with(sqlite().await, |config| config.ws_max_frame_bytes = 1024).await;
    let ann = app.register("ann").await;
    let native = ("/api/v1/ws", Some(ann.access.as_str()));
    let socketio = ("/socket.io/?EIO=4&transport=websocket", None);
    for (path, token) in [native, socketio] {
        let mut stream = raw_upgrade(app.port, path, token).await;
        stream
            .write_all(&client_frame(0x1, &[b'"', 0xff, 0xfe, b'"']))
            .await
            .unwrap();
        assert_eq!(close_code(&mut stream).await, 1007, "{path}: invalid UTF-8");

        let mut stream = raw_upgrade(app.port, path, token).await;
        stream
            .write_all(&client_frame(0x1, &[b'x'; 2048]))
            .await
            .unwrap();
        assert_eq!(close_code(&mut stream).await, 1009, "{path}: too large");

        // A frame that announces 1 TiB is refused as soon as more than the limit of it
        // has come, not buffered until all of it has.
        let mut stream = raw_upgrade(app.port, path, token).await;
        let mut announced = vec![0x81, 0x80 | 127];
        announced.extend_from_slice(&(1_u64 << 40).to_be_bytes());
        announced.extend_from_slice(&[1, 2, 3, 4]);
        announced.extend_from_slice(&[b'x'; 16 * 1024]);
        stream.write_all(&announced).await.unwrap();
        assert_eq!(
            close_code(&mut stream).await,
            1009,
            "{path}: announced 1 TiB"
        );

        // At the limit is fine: the frame is answered, the socket stays.
        let mut stream = raw_upgrade(app.port, path, token).await;
        let frame = format!("{{\"type\":\"nope\",\"ref\":\"{}\"}}", "r".repeat(1000));
        stream
            .write_all(&client_frame(0x1, frame.as_bytes()))
            .await
            .unwrap();
        stream
            .write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(
            close_code(&mut stream).await,
            1000,
            "{path}: the client's own close"
        );
    }

    // The same through an ordinary client library.
    let mut socket = app.socket(&ann).await;
    socket.send_text("x".repeat(1025)).await;
    let reason = socket.closed().await.expect("a close reason");
    assert_eq!(reason.code, ws::CloseCode::Size);
}

/// The `RateLimit-*` fields of a response, as numbers.
fn standing(response: &reqwest::Response) -> (u64, u64, u64) {
    let field = |name: &str| -> u64 {
        response.headers()[name]
            .to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{name}"))
    };
    (
        field("ratelimit-limit"),
        field("ratelimit-remaining"),
        field("ratelimit-reset"),
    )
}

async fn rest_answers_say_where_the_client_stands_with_its_limits(db: TestDatabase) {
    let app = spawn_app_with(db, |config| {
        config.auth_requests_per_minute = 3;
        config.sends_per_second = 2;
    })
    .await;
    let ann = app.register("ann").await; // the first of 3 auth requests this minute
    let login = json!({"username": "ann", "password": "wrong password"});
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = app
            .http
            .post(app.url("/auth/login"))
            .json(&login)
            .send()
            .await
            .unwrap();
        answers.push((response.status().as_u16(), standing(&response)));
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let (_, _, reset) = standing(&response);
            assert!((1..=60).contains(&retry_after), "{retry_after}");
            assert!(reset >= retry_after && reset <= 60, "{reset}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "rate_limited");
        }
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!((answers[0].1).0, 3, "RateLimit-Limit");
    assert_eq!(
        (answers[0].1).1,
        1,
        "RateLimit-Remaining after two of three"
    );
    assert!((1..=60).contains(&(answers[0].1).2), "RateLimit-Reset");
    assert_eq!((answers[1].0, (answers[1].1).1), (401, 0));
    assert_eq!(
        (answers[2].0, (answers[2].1).0, (answers[2].1).1),
        (429, 3, 0)
    );

    // Sends: the same fields on the 201 and on the 429.
    let group = app.group(&ann, &[]).await;
    let path = app.url(&format!("/conversations/{group}/messages"));
    let mut seen = Vec::new();
    for key in ["1", "2", "3"] {
        let response = app
            .http
            .post(&path)
            .bearer_auth(&ann.access)
            .json(&json!({"clientMsgId": key, "body": "hi"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let (limit, remaining, reset) = standing(&response);
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        seen.push((status, limit, remaining, reset <= 1));
    }
    assert_eq!(
        seen,
        [(201, 2, 1, true), (201, 2, 0, true), (429, 2, 0, true)]
    );
}

async fn the_send_budget_is_shared_by_rest_and_websocket(db: TestDatabase) {
    let app = spawn_app_with(db, |config| config.sends_per_second = 1).await;
    let ann = app.register("ann").await;
    let group = app.group(&ann, &[]).await;
    let mut socket = app.socket(&ann).await;
    // The budget is spent over REST ...
    app.send(&ann, group, "rest-1", "one").await;
    let (status, body) = app
        .post(
            &format!("/conversations/{group}/messages"),
            Some(&ann.access),
            json!({"clientMsgId": "rest-2", "body": "two"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    // ... so the socket is limited too, with its own ref and a time to wait.
    let send = json!({"conversationId": group, "clientMsgId": "ws-1", "body": "three"});
    let refused = socket.request("message:send", send.clone()).await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("rate_limited")),
        "{refused}"
    );
    let retry_after = refused["retryAfter"].as_u64().unwrap();
    assert!((1..=2).contains(&retry_after), "{refused}");
    // Other commands are not sends: they still run.
    let synced = socket
        .request("sync", json!({"conversationId": group, "afterSeq": 0}))
        .await;
    assert_eq!(synced["data"]["messages"].as_array().unwrap().len(), 1);
    // After the wait the same send goes through.
    actix_rt::time::sleep(Duration::from_secs(retry_after)).await;
    let acked = socket.request("message:send", send).await;
    assert_eq!(acked["type"], "ack", "{acked}");
}
