//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use courier_engine::Engine;

use crate::error::{ApiError, ErrorCode};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready));
}

/// # GET /api/v1/health
///
/// The process is up.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// # GET /api/v1/ready
///
/// The store answers; 503 otherwise.
async fn ready(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    match engine.store().ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "bus": engine.bus_name(),
        }))),
        Err(error) => {
            tracing::warn!(%error, "store not reachable");
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the store is not reachable",
            ))
        }
    }
}
