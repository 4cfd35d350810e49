//! Both migration sets apply, revert completely with their `down.sql`, and apply again.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestStore};
use diesel::{Connection, SqliteConnection};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const SQLITE: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

fn round_trip<C: MigrationHarness<B>, B: diesel::backend::Backend>(
    conn: &mut C,
    migrations: fn() -> EmbeddedMigrations,
) {
    assert!(
        conn.pending_migrations(migrations()).unwrap().is_empty(),
        "the store applied every migration at connect"
    );
    let reverted = conn.revert_all_migrations(migrations()).unwrap().len();
    assert!(reverted > 0);
    let applied = conn.run_pending_migrations(migrations()).unwrap().len();
    assert_eq!(applied, reverted);
}

#[actix_rt::test]
async fn sqlite_migrations_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite3").to_string_lossy().into_owned();
    let config = courier_engine::store::StoreConfig::new(path.clone());
    drop(
        courier_engine::store::DieselStore::connect(config)
            .await
            .unwrap(),
    );
    tokio::task::spawn_blocking(move || {
        let mut conn = SqliteConnection::establish(&path).unwrap();
        round_trip(&mut conn, || SQLITE);
    })
    .await
    .unwrap();
}

#[actix_rt::test]
async fn postgres_migrations_round_trip() {
    let Some(store) = TestStore::new(Backend::Postgres).await else {
        eprintln!("skipped: DATABASE_URL is not set");
        return;
    };
    let url = store.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url).unwrap();
        round_trip(&mut conn, || POSTGRES);
    })
    .await
    .unwrap();
}

/// `courier migrate` may run beside a server on the same file, and a store reopened
/// right after another closed meets that one's last checkpoint: migrating waits for the
/// write lock as the store's own connections do, instead of failing "database is locked".
#[actix_rt::test]
async fn sqlite_migrations_wait_for_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite3").to_string_lossy().into_owned();
    let (locked, lock_taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn({
        let path = path.clone();
        move || {
            use diesel::connection::SimpleConnection;
            let mut conn = SqliteConnection::establish(&path).unwrap();
            conn.batch_execute("PRAGMA journal_mode = WAL; BEGIN IMMEDIATE;")
                .unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
            conn.batch_execute("COMMIT;").unwrap();
        }
    });
    lock_taken.recv().unwrap();
    let config = courier_engine::store::StoreConfig::new(path);
    let store = courier_engine::store::DieselStore::connect(config).await;
    holder.join().unwrap();
    assert!(store.is_ok(), "{:?}", store.err());
}
