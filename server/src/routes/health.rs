//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use courier_engine::Engine;

use crate::error::{ApiError, ErrorBody, ErrorCode};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/health", "GET").route(web::get().to(health)))
        .service(super::resource("/ready", "GET").route(web::get().to(ready)))
        .service(super::resource("/metrics", "GET").route(web::get().to(metrics)));
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
pub(crate) async fn metrics(
    metrics: web::Data<crate::metrics::Metrics>,
    engine: web::Data<Engine>,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render(engine.bus_health().is_ok()))
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
        (status = 200, description = "The store answers. `status` is `ready`, or `degraded` while the bus cannot reach the other nodes (this node still serves its own sessions; `busError` says why)", body = Readiness),
        (status = 503, description = "The store is not reachable", body = ErrorBody)
    )
)]
/// # GET /api/v1/ready
///
/// The store answers; 503 otherwise. A node whose bus lost Redis stays ready (it serves
/// its own sessions) and says `degraded`.
pub(crate) async fn ready(engine: web::Data<Engine>) -> Result<HttpResponse, ApiError> {
    if let Err(error) = engine.store().ping().await {
        tracing::warn!(%error, "store not reachable");
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the store is not reachable",
        ));
    }
    let bus_error = engine.bus_health().err();
    Ok(HttpResponse::Ok().json(Readiness {
        status: if bus_error.is_some() {
            "degraded"
        } else {
            "ready"
        },
        bus: engine.bus_name(),
        bus_error,
    }))
}

/// What `/ready` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Readiness {
    /// `ready`, or `degraded` while the bus cannot reach the other nodes.
    #[schema(example = "ready")]
    status: &'static str,
    /// `local` or `redis`.
    #[schema(example = "redis")]
    bus: &'static str,
    /// Why the bus is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    bus_error: Option<String>,
}
