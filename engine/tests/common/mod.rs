//! Test fixtures: a fresh store per test (a temp SQLite file, or a new PostgreSQL
//! database dropped afterwards), users, and in-process clients that record what they get.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use courier_engine::protocol::EventFrame;
use courier_engine::protocol::{Message, SendMessage, ServerEvent};
use courier_engine::store::{DieselStore, NewUser, Store, StoreConfig, UserStore};
use courier_engine::{
    CloseReason, ConversationId, Engine, Limits, Outbound, Session, Timestamp, UserId,
};
use tokio::sync::mpsc;

pub use courier_test_db::Backend;

pub mod interposed;
use courier_test_db::TestDatabase;

/// A migrated store on an isolated database.
pub struct TestStore {
    pub store: Arc<DieselStore>,
    /// The URL the store was opened with.
    pub url: String,
    _database: TestDatabase,
}

impl TestStore {
    /// A fresh store, or `None` when the backend is not configured here.
    pub async fn new(backend: Backend) -> Option<Self> {
        let database = TestDatabase::new(backend).await?;
        Self::on(database).await
    }

    /// Opens (and migrates) a store on `database`.
    pub async fn on(database: TestDatabase) -> Option<Self> {
        Self::configured(database, |_| {}).await
    }

    /// Opens (and migrates) a store on `database` with settings of the test's own.
    pub async fn configured(
        database: TestDatabase,
        configure: impl FnOnce(&mut StoreConfig),
    ) -> Option<Self> {
        let url = database.url().to_owned();
        let mut config = StoreConfig::new(url.clone());
        configure(&mut config);
        let store = DieselStore::connect(config).await.expect("open store");
        Some(Self {
            store: Arc::new(store),
            url,
            _database: database,
        })
    }

    pub fn engine(&self, limits: Limits) -> Engine {
        Engine::builder(self.store.clone() as Arc<dyn Store>)
            .limits(limits)
            .build()
    }

    pub async fn user(&self, name: &str) -> UserId {
        let row = self
            .store
            .create_user(NewUser {
                username: name.to_owned(),
                display_name: name.to_uppercase(),
                email: None,
                password_hash: "not-a-real-hash".into(),
                status_text: String::new(),
                last_seen_at: None,
                created_at: Timestamp::now().as_millis(),
            })
            .await
            .expect("create user");
        row.user_id()
    }
}

/// Limits with short timers, so expiry tests run fast.
pub fn quick_limits() -> Limits {
    Limits {
        typing_ttl: Duration::from_millis(300),
        presence_grace: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// What a test client was pushed: the engine's [`Outbound`], one event at a time.
#[derive(Debug)]
pub enum Pushed {
    Event(EventFrame),
    Close(CloseReason),
}

/// Forwards what the engine pushes into a channel the test reads. It takes events from
/// the session's queue but does not report them written: the test does, as it reads them.
struct Probe {
    events: mpsc::UnboundedSender<Pushed>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl StreamHandler<Outbound> for Probe {
    fn handle(&mut self, msg: Outbound, _ctx: &mut Self::Context) {
        match msg {
            Outbound::Events(pending) => {
                pending.drain(|frame| {
                    let _ = self.events.send(Pushed::Event(frame));
                });
            }
            Outbound::Close(reason) => {
                let _ = self.events.send(Pushed::Close(reason));
            }
        }
    }
}

/// An in-process client: a session plus the events it received.
pub struct TestClient {
    pub session: Session,
    pub user: UserId,
    events: mpsc::UnboundedReceiver<Pushed>,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl TestClient {
    pub async fn connect(engine: &Engine, user: UserId) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let (session, outbound) = engine.connect(user).await.expect("connect");
        Probe::create(|ctx| {
            ctx.add_stream(outbound);
            Probe { events: tx }
        });
        Self {
            session,
            user,
            events,
        }
    }

    /// The next outbound item, raw.
    pub async fn next_outbound(&mut self) -> Pushed {
        let item = tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("session channel closed");
        if let Pushed::Event(_) = item {
            self.session.queue().written(1);
        }
        item
    }

    /// The next event.
    pub async fn next(&mut self) -> ServerEvent {
        match self.next_outbound().await {
            Pushed::Event(frame) => frame.decode().expect("decodable event"),
            Pushed::Close(reason) => panic!("session closed: {reason:?}"),
        }
    }

    /// The next event that `keep` accepts, skipping others (presence, say).
    pub async fn next_where(&mut self, keep: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        loop {
            let event = self.next().await;
            if keep(&event) {
                return event;
            }
        }
    }

    /// The next `message:received`.
    pub async fn next_message(&mut self) -> Message {
        match self
            .next_where(|event| matches!(event, ServerEvent::MessageReceived(_)))
            .await
        {
            ServerEvent::MessageReceived(message) => message,
            _ => unreachable!(),
        }
    }

    /// Asserts that no event `matching` arrives within `quiet`.
    pub async fn assert_none(&mut self, quiet: Duration, matching: impl Fn(&ServerEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let Pushed::Event(frame) = item {
                self.session.queue().written(1);
                let event = frame.decode().expect("decodable event");
                assert!(!matching(&event), "unexpected event: {event:?}");
            }
        }
    }

    /// Everything received so far, without waiting.
    pub fn drain(&mut self) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        while let Ok(item) = self.events.try_recv() {
            if let Pushed::Event(frame) = item {
                self.session.queue().written(1);
                out.push(frame.decode().expect("decodable event"));
            }
        }
        out
    }

    pub fn take_raw(&mut self) -> Option<Pushed> {
        self.events.try_recv().ok()
    }

    pub async fn send(&self, conversation: ConversationId, key: &str, body: &str) -> Message {
        let (message, _) = self
            .session
            .engine()
            .send_message(self.user, send(conversation, key, body))
            .await
            .expect("send");
        message
    }
}

pub fn send(conversation: ConversationId, key: &str, body: &str) -> SendMessage {
    SendMessage {
        conversation_id: conversation,
        client_msg_id: key.to_owned(),
        body: body.to_owned(),
        reply_to_id: None,
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests from one scenario taking a
/// [`TestStore`].
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod scenarios {
            $(
                pub(super) async fn $scenario(db: courier_test_db::TestDatabase) {
                    if let Some(store) = $crate::common::TestStore::on(db).await {
                        super::$scenario(store).await;
                    }
                }
            )*
        }
        mod both {
            use super::scenarios::*;
            courier_test_db::on_both_stores!($($scenario),*);
        }
    };
}
