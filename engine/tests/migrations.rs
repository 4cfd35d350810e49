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
