//! Isolated databases for tests, so tests run in parallel without sharing state: a SQLite
//! file in a temp directory, or a new PostgreSQL database on the server named by
//! `DATABASE_URL`, dropped when the [`TestDatabase`] is.
//!
//! PostgreSQL tests skip (returning `None`) when `DATABASE_URL` names no PostgreSQL server,
//! unless `COURIER_REQUIRE_POSTGRES` is set, as CI does: then they fail.
//!
//! [`TestRedis`] and [`TestPostgresServer`] are private servers a test can stop, restart
//! (and, for PostgreSQL, pause).

#![allow(clippy::expect_used)]

mod postgres_server;
mod redis;

pub use postgres_server::TestPostgresServer;
pub use redis::TestRedis;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temp SQLite file.
    Sqlite,
    /// A fresh database on `DATABASE_URL`.
    Postgres,
}

/// An isolated database; removed on drop.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    File(#[allow(dead_code)] tempfile::TempDir),
    Database { admin_url: String, name: String },
}

/// The PostgreSQL server to test against, if any.
pub fn postgres_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Some(url),
        _ => {
            assert!(
                std::env::var("COURIER_REQUIRE_POSTGRES").is_err(),
                "COURIER_REQUIRE_POSTGRES is set but DATABASE_URL names no PostgreSQL server"
            );
            None
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{name}")
}

impl TestDatabase {
    /// A new, empty database; `None` when PostgreSQL is not configured here.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = dir
                    .path()
                    .join("courier.sqlite3")
                    .to_string_lossy()
                    .into_owned();
                Some(Self {
                    url,
                    cleanup: Cleanup::File(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_url()?;
                let name = format!("courier_test_{:016x}", rand::random::<u64>());
                let mut admin = AsyncPgConnection::establish(&admin_url)
                    .await
                    .expect("connect to DATABASE_URL");
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                Some(Self {
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Database { admin_url, name },
                })
            }
        }
    }

    /// Its connection URL (a file path for SQLite).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Database { admin_url, name } = &self.cleanup {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside async code: a short-lived runtime on its own thread.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut conn) = AsyncPgConnection::establish(&admin_url).await {
                            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                            let _ = conn.batch_execute(&sql).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests, each calling
/// `<name>(TestDatabase)` from the enclosing module.
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    if let Some(db) = $crate::TestDatabase::new($crate::Backend::Sqlite).await {
                        super::$scenario(db).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    match $crate::TestDatabase::new($crate::Backend::Postgres).await {
                        Some(db) => super::$scenario(db).await,
                        None => eprintln!("skipped: DATABASE_URL is not set"),
                    }
                }
            )*
        }
    };
}
