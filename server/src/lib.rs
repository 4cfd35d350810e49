//! # courier-server
//!
//! The reference server over [`courier_engine`]. This release serves liveness and
//! readiness; REST, WebSocket and auth follow.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use courier_engine::Engine;
use courier_engine::store::{DieselStore, StoreConfig};

/// Where the server keeps its data and listens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://…` or a SQLite file path.
    pub database_url: String,
    /// `host:port`; port 0 picks a free one.
    pub listen: String,
}

impl Settings {
    /// From `DATABASE_URL` and `COURIER_LISTEN`, defaulting to an embedded SQLite file
    /// in `data/` and 127.0.0.1:8080.
    pub fn from_env() -> Self {
        Self {
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "data/courier.sqlite3".into()),
            listen: std::env::var("COURIER_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into()),
        }
    }
}

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects the store (running migrations), builds the engine and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = DieselStore::connect(StoreConfig::new(&settings.database_url)).await?;
        let engine = Engine::builder(Arc::new(store)).build();
        let listener = TcpListener::bind(&settings.listen)?;
        let port = listener.local_addr()?.port();
        let engine = web::Data::new(engine);
        let server = HttpServer::new(move || {
            App::new().app_data(engine.clone()).service(
                web::scope("/api/v1")
                    .route("/health", web::get().to(health))
                    .route("/ready", web::get().to(ready)),
            )
        })
        .listen(listener)?
        .run();
        Ok(Self { port, server })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// # GET /api/v1/health
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// # GET /api/v1/ready
async fn ready(engine: web::Data<Engine>) -> HttpResponse {
    match engine.store().ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(error) => {
            tracing::warn!(%error, "store not reachable");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "error": "unavailable",
                "message": "the store is not reachable"
            }))
        }
    }
}
