//! Sustained acked sends: many sends in flight per conversation, each answered only after
//! its group commit is durable. Throughput is acked sends per second.
//!
//! Run: `cargo bench -p courier-engine --bench persist` (SQLite); with
//! `DATABASE_URL=postgres://…` the PostgreSQL store is measured too.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use courier_engine::protocol::SendMessage;
use courier_engine::store::{DieselStore, NewUser, StoreConfig};
use courier_engine::{CreateConversation, Engine, Timestamp};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;

/// (conversations, sends in flight per conversation): one busy conversation queueing
/// during each commit, many of them, and many conversations each with a few sends in
/// flight (the load generator's `pairs`, where commits are grouped across conversations).
const CASES: [(usize, usize); 3] = [(1, 64), (100, 64), (500, 8)];

async fn engine_on(url: &str) -> Engine {
    let store = DieselStore::connect(StoreConfig::new(url))
        .await
        .expect("store");
    Engine::builder(Arc::new(store)).build()
}

async fn run(
    engine: &Engine,
    (conversations, in_flight): (usize, usize),
    sends: u64,
    round: u64,
) -> Duration {
    let store = engine.store();
    let stamp = format!("{round}-{}", rand::random::<u32>());
    let make = |name: String| NewUser {
        username: name.clone(),
        display_name: name,
        email: None,
        password_hash: "x".into(),
        status_text: String::new(),
        last_seen_at: None,
        created_at: Timestamp::now().as_millis(),
    };
    let ann = store
        .create_user(make(format!("a{stamp}")))
        .await
        .expect("user")
        .user_id();
    let bob = store
        .create_user(make(format!("b{stamp}")))
        .await
        .expect("user")
        .user_id();
    let mut ids = Vec::new();
    for _ in 0..conversations {
        let request = CreateConversation::Group {
            title: "bench".into(),
            members: vec![bob],
        };
        ids.push(
            engine
                .create_conversation(ann, request)
                .await
                .expect("conversation")
                .0
                .id,
        );
    }
    // One send to each first, untimed: the conversations' actors start and load their
    // members now, so the timed sends measure steady state, not start-up.
    futures_util::future::join_all(ids.iter().enumerate().map(|(n, &conversation_id)| {
        engine.send_message(
            ann,
            SendMessage {
                conversation_id,
                client_msg_id: format!("{stamp}-warm-{n}"),
                body: "warm-up".into(),
                reply_to_id: None,
            },
        )
    }))
    .await
    .into_iter()
    .for_each(|acked| {
        acked.expect("acked");
    });
    let window = in_flight * conversations;
    // A sample shorter than a few windows would time the first commits' latency, not the
    // steady rate: with 4,000 sends in flight, criterion's first guesses are shorter than
    // that. Every sample sends at least four windows, and its time is scaled back to the
    // sends criterion asked for.
    let asked = sends;
    let sends = sends.max(4 * window as u64);
    let started = Instant::now();
    futures_util::stream::iter(0..sends)
        .map(|n| {
            let send = SendMessage {
                conversation_id: ids[(n as usize) % ids.len()],
                client_msg_id: format!("{stamp}-{n}"),
                body: "a message of about the length people type, give or take".into(),
                reply_to_id: None,
            };
            engine.send_message(ann, send)
        })
        .buffer_unordered(window)
        .for_each(|acked| async move {
            acked.expect("acked");
        })
        .await;
    started.elapsed().mul_f64(asked as f64 / sends as f64)
}

fn persist(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut targets = vec![(
        "sqlite",
        dir.path()
            .join("bench.sqlite3")
            .to_string_lossy()
            .into_owned(),
    )];
    if let Ok(url) = std::env::var("DATABASE_URL")
        && url.starts_with("postgres")
    {
        targets.push(("postgres", url));
    }
    let mut group = c.benchmark_group("persist");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    for (backend, url) in &targets {
        for case in CASES {
            let id = BenchmarkId::new(*backend, format!("{}-conversations", case.0));
            // One engine per case: opening the store again for every sample would race
            // the last engine's connections, still closing, for the file's lock.
            let system = System::new();
            let engine = system.block_on(engine_on(url));
            group.bench_function(id, |b| {
                let mut round = 0;
                b.iter_custom(|iters| {
                    round += 1;
                    system.block_on(run(&engine, case, iters, round))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, persist);
criterion_main!(benches);
