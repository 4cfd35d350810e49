//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use courier_engine::Engine;

use crate::error::{ApiError, ErrorBody, ErrorCode};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

#[utoipa::path(
    get,
    path = "/api/v1/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"))
)]
/// # GET /api/v1/metrics
///
/// Prometheus text format.
pub(crate) async fn metrics(metrics: web::Data<crate::metrics::Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "The process is up")
    )
)]
/// # GET /api/v1/health
///
/// The process is up.
pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/api/v1/ready",
    tag = "health",
    responses(
        (status = 200, description = "The store answers"),
        (status = 503, description = "The store is not reachable", body = ErrorBody)
    )
)]
/// # GET /api/v1/ready
///
/// The store answers; 503 otherwise.
pub(crate) async fn ready(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
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
