//! `spawn_app()`: a server on a random port over an isolated database, with typed helpers.

use std::time::Duration;

use awc::ws;
use courier_server::config::Config;
use courier_server::startup::{Application, ShutdownHandle};
use courier_test_db::TestDatabase;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub api: Api,
    /// The database the server runs on.
    pub database_url: String,
    pub shutdown: ShutdownHandle,
    _data_dir: tempfile::TempDir,
    _database: TestDatabase,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A client of one server: REST with typed helpers, and native WebSocket sessions.
pub struct Api {
    pub base: String,
    pub port: u16,
    pub http: reqwest::Client,
}

/// A registered user with tokens.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub access: String,
    pub refresh: String,
}

pub async fn spawn_app(database: TestDatabase) -> TestApp {
    spawn_app_with(database, |_| {}).await
}

pub async fn spawn_app_with(database: TestDatabase, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database.url().to_owned(),
        data_dir: data_dir.path().to_owned(),
        jwt_secret: Some("test-secret-test-secret-test-secret!".to_owned().into()),
        bcrypt_cost: 4,
        presence_grace_ms: 200,
        ..Config::default()
    };
    tweak(&mut config);
    let app = Application::build(config).await.expect("build app");
    let port = app.port();
    let shutdown = app.handle();
    actix_rt::spawn(app.run());
    TestApp {
        api: Api::new(port),
        database_url: database.url().to_owned(),
        shutdown,
        _data_dir: data_dir,
        _database: database,
    }
}

impl Api {
    /// A client of the server listening on `port` of the loopback.
    pub fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}/api/v1"),
            port,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        read(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        read(
            self.http
                .patch(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        read(
            self.http
                .delete(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The body of a GET to any URL on the server, as text.
    pub async fn text(&self, url: String) -> String {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One value from `/metrics`: the first line starting with `name`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.text(self.url("/metrics")).await;
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    }

    pub async fn register(&self, username: &str) -> TestUser {
        let (status, body) = self
            .post(
                "/auth/register",
                None,
                json!({"username": username, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        TestUser {
            id: body["user"]["id"].as_i64().unwrap(),

            access: body["accessToken"].as_str().unwrap().to_owned(),
            refresh: body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    /// A group of `owner` and `members`; past the 1,024 a create request may name, the
    /// rest are added one by one.
    pub async fn group(&self, owner: &TestUser, members: &[&TestUser]) -> i64 {
        let (first, rest) = members.split_at(members.len().min(1024));
        let ids: Vec<i64> = first.iter().map(|m| m.id).collect();
        let (status, body) = self
            .post(
                "/conversations",
                Some(&owner.access),
                json!({"kind": "group", "title": "team", "memberIds": ids}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let group = body["id"].as_i64().unwrap();
        for member in rest {
            let path = format!("/conversations/{group}/members");
            let (status, body) = self
                .post(&path, Some(&owner.access), json!({"userId": member.id}))
                .await;
            assert_eq!(status, 201, "{body}");
        }
        group
    }

    pub async fn send(&self, user: &TestUser, conversation: i64, key: &str, text: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/conversations/{conversation}/messages"),
                Some(&user.access),
                json!({"clientMsgId": key, "body": text}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn socket(&self, user: &TestUser) -> Socket {
        let url = format!("ws://127.0.0.1:{}/api/v1/ws", self.port);
        let (_, framed) = awc::Client::new()
            .ws(url)
            .bearer_auth(&user.access)
            .connect()
            .await
            .expect("websocket connects");
        Socket::from_framed(framed)
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

type Framed = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

/// A native WebSocket client.
pub struct Socket {
    pub framed: Framed,
    next_ref: u64,
}

/// What the server sent, as the test sees it.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    Closed(Option<ws::CloseReason>),
}

impl Socket {
    pub fn from_framed(framed: Framed) -> Self {
        Self {
            framed,
            next_ref: 0,
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.framed
            .send(ws::Message::Text(text.into().into()))
            .await
            .unwrap();
    }

    /// Sends `{"type", "ref", "data"}` and returns the ref used.
    pub async fn command(&mut self, kind: &str, data: Value) -> String {
        self.next_ref += 1;
        let reference = format!("c{}", self.next_ref);
        let frame = json!({"type": kind, "ref": reference, "data": data});
        self.send_text(frame.to_string()).await;
        reference
    }

    /// Sends a command and waits for its ack or error, keeping pushed events aside.
    pub async fn request(&mut self, kind: &str, data: Value) -> Value {
        let reference = self.command(kind, data).await;
        self.next_where(|frame| frame["ref"] == reference.as_str())
            .await
    }

    pub async fn incoming(&mut self) -> Incoming {
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next())
                .await
                .expect("timed out waiting for a frame");
            match frame {
                Some(Ok(ws::Frame::Text(bytes))) => {
                    return Incoming::Json(serde_json::from_slice(&bytes).unwrap());
                }
                Some(Ok(ws::Frame::Close(reason))) => return Incoming::Closed(reason),
                Some(Ok(ws::Frame::Ping(payload))) => {
                    let _ = self.framed.send(ws::Message::Pong(payload)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("socket error: {error}"),
                None => return Incoming::Closed(None),
            }
        }
    }

    /// Waits for the server to close the socket, skipping pushed events.
    pub async fn closed(&mut self) -> Option<ws::CloseReason> {
        loop {
            if let Incoming::Closed(reason) = self.incoming().await {
                return reason;
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        match self.incoming().await {
            Incoming::Json(value) => value,
            Incoming::Closed(reason) => panic!("socket closed: {reason:?}"),
        }
    }

    /// The next frame `keep` accepts, skipping others (presence, say).
    pub async fn next_where(&mut self, keep: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.next_json().await;
            if keep(&frame) {
                return frame;
            }
        }
    }

    pub async fn next_event(&mut self, kind: &str) -> Value {
        self.next_where(|frame| frame["type"] == kind).await
    }

    /// Asserts no frame `matching` arrives within `quiet`.
    pub async fn assert_none(&mut self, quiet: Duration, matching: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) | Ok(None) => return,
                Ok(Some(Ok(ws::Frame::Text(bytes)))) => {
                    let frame: Value = serde_json::from_slice(&bytes).unwrap();
                    assert!(!matching(&frame), "unexpected frame {frame}");
                }
                Ok(Some(_)) => {}
            }
        }
    }
}
