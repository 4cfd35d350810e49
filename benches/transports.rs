//! The fan-out path through real sockets: one message to 200 receivers connected to an
//! in-process server over loopback, on the native WebSocket and on Socket.IO (WebSocket
//! transport). A sample ends when every receiver has read the message.
//!
//! Run: `cargo bench -p courier-server --bench transports`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::System;
use awc::ws;
use courier_server::config::Config;
use courier_server::startup::Application;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

const RECEIVERS: usize = 200;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Native,
    SocketIo,
}

struct Fixture {
    base: String,
    port: u16,
    sender_token: String,
    conversation: i64,
    received: Arc<AtomicUsize>,
    done: Arc<Notify>,
    sent: usize,
    _data: tempfile::TempDir,
}

async fn post(base: &str, path: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = awc::Client::new().post(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send_json(&body).await.unwrap();
    response.json::<Value>().limit(1 << 20).await.unwrap()
}

async fn register(base: &str, name: &str) -> (i64, String) {
    let body = post(
        base,
        "/auth/register",
        None,
        json!({"username": name, "password": "bench password"}),
    )
    .await;
    (
        body["user"]["id"].as_i64().unwrap(),
        body["accessToken"].as_str().unwrap().to_owned(),
    )
}

/// A receiver: reads frames and counts `message:received` events.
async fn receive(
    port: u16,
    token: String,
    transport: Transport,
    received: Arc<AtomicUsize>,
    done: Arc<Notify>,
    ready: Arc<Notify>,
) {
    let client = awc::Client::new();
    let (_, mut socket) = match transport {
        Transport::Native => client
            .ws(format!("ws://127.0.0.1:{port}/api/v1/ws"))
            .bearer_auth(&token)
            .max_frame_size(1 << 20)
            .connect()
            .await
            .unwrap(),
        Transport::SocketIo => client
            .ws(format!(
                "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
            ))
            .max_frame_size(1 << 20)
            .connect()
            .await
            .unwrap(),
    };
    if let Transport::SocketIo = transport {
        let _open = socket.next().await;
        let connect = format!("40{}", json!({ "token": token }));
        socket
            .send(ws::Message::Text(connect.into()))
            .await
            .unwrap();
        let _connected = socket.next().await;
    }
    ready.notify_one();
    let marker: &[u8] = match transport {
        Transport::Native => b"{\"type\":\"message:received\"",
        Transport::SocketIo => b"42[\"message:received\"",
    };
    while let Some(Ok(frame)) = socket.next().await {
        match frame {
            ws::Frame::Text(bytes) if bytes.starts_with(marker) => {
                let all_in = received.fetch_add(1, Ordering::AcqRel) + 1 == RECEIVERS;
                if all_in {
                    done.notify_one();
                }
            }
            ws::Frame::Text(bytes) if bytes.as_ref() == b"2" => {
                let _ = socket.send(ws::Message::Text("3".into())).await;
            }
            ws::Frame::Ping(payload) => {
                let _ = socket.send(ws::Message::Pong(payload)).await;
            }
            _ => {}
        }
    }
}

async fn fixture(transport: Transport) -> Fixture {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().to_owned(),
        jwt_secret: Some("bench-secret-bench-secret-bench-secret".to_owned().into()),
        bcrypt_cost: 4,
        auth_requests_per_minute: 100_000,
        sends_per_second: 100_000,
        // What is measured is the path to the sockets, not the wait for the next flush.
        write_delay_ms: 0,
        ..Config::default()
    };
    let app = Application::build(config).await.unwrap();
    let port = app.port();
    actix_rt::spawn(app.run());
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let (_, sender_token) = register(&base, "sender").await;
    let mut members = Vec::new();
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let ready = Arc::new(Notify::new());
    for n in 0..RECEIVERS {
        let (id, token) = register(&base, &format!("receiver{n}")).await;
        members.push(id);
        actix_rt::spawn(receive(
            port,
            token,
            transport,
            received.clone(),
            done.clone(),
            ready.clone(),
        ));
        ready.notified().await;
    }
    let conversation = post(
        &base,
        "/conversations",
        Some(&sender_token),
        json!({"kind": "group", "title": "bench", "memberIds": members}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    // Let presence announcements drain before timing.
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    Fixture {
        base,
        port,
        sender_token,
        conversation,
        received,
        done,
        sent: 0,
        _data: data,
    }
}

fn transports(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport-fanout");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(RECEIVERS as u64));
    for transport in [Transport::Native, Transport::SocketIo] {
        let system = System::new();
        let mut fixture = system.block_on(fixture(transport));
        let _ = fixture.port;
        group.bench_function(BenchmarkId::new(format!("{transport:?}"), RECEIVERS), |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        fixture.sent += 1;
                        fixture.received.store(0, Ordering::Release);
                        let path = format!("/conversations/{}/messages", fixture.conversation);
                        let body = json!({"clientMsgId": format!("m{}", fixture.sent), "body": "a message of about the length people type"});
                        post(&fixture.base, &path, Some(&fixture.sender_token), body).await;
                        fixture.done.notified().await;
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, transports);
criterion_main!(benches);
