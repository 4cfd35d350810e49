//! The fan-out path: one `message:received` to every session of a conversation's members.
//!
//! Each sample publishes the event through the engine's bus (serialised once) and waits
//! until every attached in-process session actor has handled it, all on one thread.
//! Run: `cargo bench -p courier-engine --bench fanout`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use courier_engine::bus::Audience;
use courier_engine::protocol::{Message, ServerEvent};
use courier_engine::store::{DieselStore, StoreConfig};
use courier_engine::{
    ConversationId, Engine, Limits, MessageId, Outbound, Seq, Session, Timestamp, UserId,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::Notify;

/// A session that counts deliveries and wakes the bench when the last one lands.
struct Receiver {
    remaining: Arc<AtomicUsize>,
    done: Arc<Notify>,
}

impl Actor for Receiver {
    type Context = Context<Self>;
}

impl StreamHandler<Outbound> for Receiver {
    fn handle(&mut self, msg: Outbound, _ctx: &mut Self::Context) {
        let Outbound::Events(pending) = msg else {
            return;
        };
        let events = pending.drain(drop);
        pending.queue().written(events);
        if events > 0 && self.remaining.fetch_sub(events, Ordering::AcqRel) == events {
            self.done.notify_one();
        }
    }
}

fn message() -> ServerEvent {
    ServerEvent::MessageReceived(Message {
        id: MessageId(1),
        conversation_id: ConversationId(1),
        seq: Seq(1),
        sender_id: UserId(1),
        client_msg_id: "0f8e5c2a-bench".into(),
        body: Some("x".repeat(100)),
        reply_to: None,
        created_at: Timestamp(1_700_000_000_000),
        edited_at: None,
        deleted_at: None,
    })
}

struct Fixture {
    engine: Engine,
    audience: Audience,
    event: ServerEvent,
    remaining: Arc<AtomicUsize>,
    done: Arc<Notify>,
    _sessions: Vec<Session>,
    _dir: tempfile::TempDir,
}

/// An engine with `members` users, one attached session each.
async fn attach(members: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.sqlite3");
    let store = DieselStore::connect(StoreConfig::new(path.to_string_lossy()))
        .await
        .expect("store");
    let limits = Limits {
        outbound_queue_capacity: usize::MAX / 2,
        // What is measured is the path to the sessions, not the wait for the next flush.
        write_delay: Duration::ZERO,
        ..Limits::default()
    };
    let engine = Engine::builder(Arc::new(store)).limits(limits).build();
    let remaining = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let mut users = Vec::with_capacity(members);
    let mut sessions = Vec::with_capacity(members);
    for n in 0..members {
        let user = UserId(n as i64 + 1);
        users.push(user);
        let (session, outbound) = engine.connect(user).await.expect("connect");
        Receiver::create(|ctx| {
            ctx.add_stream(outbound);
            Receiver {
                remaining: Arc::clone(&remaining),
                done: Arc::clone(&done),
            }
        });
        sessions.push(session);
    }
    // Let the users' actors finish starting (they look up their accounts) before timing.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    Fixture {
        engine,
        audience: Audience::Members {
            conversation: ConversationId(1),
            members: users.into(),
            except: None,
            seq: None,
        },
        event: message(),
        remaining,
        done,
        _sessions: sessions,
        _dir: dir,
    }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.measurement_time(Duration::from_secs(5));
    for members in [10usize, 100, 1_000, 10_000] {
        group.throughput(Throughput::Elements(members as u64));
        // One actix system per size, set up once: `block_on` can be called again and
        // the session actors stay alive between samples.
        let system = System::new();
        let fixture = system.block_on(attach(members));
        group.bench_with_input(
            BenchmarkId::from_parameter(members),
            &members,
            |b, &members| {
                b.iter_custom(|iters| {
                    system.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            fixture.remaining.store(members, Ordering::Release);
                            fixture
                                .engine
                                .publish(fixture.audience.clone(), &fixture.event);
                            fixture.done.notified().await;
                        }
                        started.elapsed()
                    })
                });
            },
        );
        drop(fixture);
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
