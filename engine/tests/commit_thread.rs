//! SQLite's group commits run on a thread of their own, which goes when the engine does.
//! Alone in its test binary: it counts the process's threads by name.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestClient, TestStore};
use courier_engine::{CreateConversation, Limits};

/// Threads of this process named like the commit thread.
fn commit_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux's /proc")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "courier-commit")
        .count()
}

/// Waits until `count` such threads run: a new thread names itself once it runs.
fn wait_for_commit_threads(count: usize, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while commit_threads() != count {
        assert!(
            Instant::now() < deadline,
            "{why}: {} threads",
            commit_threads()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn sqlite_commits_have_a_thread_that_stops_with_the_engine() {
    assert_eq!(commit_threads(), 0);
    actix::System::new().block_on(async {
        let store = TestStore::new(Backend::Sqlite).await.unwrap();
        let engine = store.engine(Limits::default());
        wait_for_commit_threads(1, "one thread per engine");
        let (ann, bob) = (store.user("ann").await, store.user("bob").await);
        let request = CreateConversation::Group {
            title: "team".into(),
            members: vec![bob],
        };
        let (conversation, _) = engine.create_conversation(ann, request).await.unwrap();
        let mut bob_client = TestClient::connect(&engine, bob).await;
        let sent = TestClient::connect(&engine, ann)
            .await
            .send(conversation.id, "k1", "committed there")
            .await;
        assert_eq!(bob_client.next_message().await, sent);
    });
    // The system is gone, and with it every actor holding the engine.
    wait_for_commit_threads(0, "the commit thread outlived its engine");
}
