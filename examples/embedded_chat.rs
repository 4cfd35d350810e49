//! Embeds the engine with no server: two in-process clients talk, one goes offline,
//! comes back and catches up with `sync`.
//!
//! Run: `cargo run -p courier-engine --example embedded_chat`

use std::sync::Arc;

use actix::prelude::*;
use anyhow::Context as _;
use courier_engine::protocol::{ClientCommand, Reply, SendMessage, ServerEvent, SyncRequest};
use courier_engine::store::{DieselStore, NewUser, StoreConfig, UserStore};
use courier_engine::{CreateConversation, Engine, Outbound, Seq, Session, Timestamp, UserId};

/// A client that prints what it is pushed.
struct Printer {
    name: &'static str,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl StreamHandler<Outbound> for Printer {
    fn handle(&mut self, msg: Outbound, _ctx: &mut Self::Context) {
        let Outbound::Events(pending) = msg else {
            return;
        };
        let printed = pending.drain(|frame| {
            if let Ok(ServerEvent::MessageReceived(message)) = frame.decode() {
                println!(
                    "  {} <- #{} from user {}: {}",
                    self.name,
                    message.seq,
                    message.sender_id,
                    message.body.unwrap_or_default()
                );
            }
        });
        // Reported, so the session's queue never counts them as waiting.
        pending.queue().written(printed);
    }
}

async fn connect(engine: &Engine, user: UserId, name: &'static str) -> anyhow::Result<Session> {
    let (session, outbound) = engine.connect(user).await?;
    Printer::create(|ctx| {
        ctx.add_stream(outbound);
        Printer { name }
    });
    Ok(session)
}

async fn say(
    session: &Session,
    conversation: courier_engine::ConversationId,
    key: &str,
    body: &str,
) -> anyhow::Result<Seq> {
    let command = ClientCommand::SendMessage(SendMessage {
        conversation_id: conversation,
        client_msg_id: key.into(),
        body: body.into(),
        reply_to_id: None,
    });
    match session.execute(command).await? {
        Reply::Message { message, .. } => Ok(message.seq),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("chat.sqlite3");
    let store = DieselStore::connect(StoreConfig::new(path.to_string_lossy())).await?;
    let user = |name: &str| NewUser {
        username: name.into(),
        display_name: name.into(),
        email: None,
        password_hash: "set by your auth layer".into(),
        status_text: String::new(),
        last_seen_at: None,
        created_at: Timestamp::now().as_millis(),
    };
    let ann = store.create_user(user("ann")).await?.user_id();
    let bob = store.create_user(user("bob")).await?.user_id();
    let engine = Engine::builder(Arc::new(store)).build();

    let (chat, _) = engine
        .create_conversation(ann, CreateConversation::Direct { peer: bob })
        .await?;
    let ann_session = connect(&engine, ann, "ann").await?;
    let bob_session = connect(&engine, bob, "bob").await?;

    println!("both online:");
    say(&ann_session, chat.id, "a1", "hi bob").await?;
    let bob_has = say(&bob_session, chat.id, "b1", "hi ann").await?;
    actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;

    println!("bob goes offline; ann keeps talking:");
    drop(bob_session);
    say(&ann_session, chat.id, "a2", "are you there?").await?;
    say(&ann_session, chat.id, "a3", "call me when you're back").await?;

    println!("bob is back and syncs after seq {bob_has}:");
    let bob_session = connect(&engine, bob, "bob").await?;
    let sync = ClientCommand::Sync(SyncRequest {
        conversation_id: chat.id,
        after_seq: bob_has,
        limit: None,
    });
    let Reply::Sync { messages, has_more } = bob_session.execute(sync).await? else {
        anyhow::bail!("sync answers messages");
    };
    for message in &messages {
        println!(
            "  bob synced #{}: {}",
            message.seq,
            message.body.as_deref().unwrap_or("")
        );
    }
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq.0).collect();
    anyhow::ensure!(seqs == [3, 4] && !has_more, "sync returned {seqs:?}");
    println!("caught up: nothing lost, nothing twice");
    drop(bob_session);
    drop(ann_session);
    dir.close().context("removing the example's database")?;
    Ok(())
}
