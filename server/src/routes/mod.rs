//! REST routes, one file per resource, mounted by [`configure`].

pub(crate) mod auth;
pub(crate) mod conversations;
pub(crate) mod health;
pub(crate) mod messages;
pub(crate) mod users;

use actix_web::web;
use serde::Serialize;

use crate::error::ApiError;

/// Mounts every route under `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Before the `/api/v1` scope, which would otherwise answer 404 for `/api/v1/docs`.
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/api/v1/docs/{_:.*}").url(
            "/api/v1/docs/openapi.json",
            <crate::openapi::ApiDoc as utoipa::OpenApi>::openapi(),
        ),
    )
    .configure(crate::realtime::socketio::configure)
    .service(
        web::scope("/api/v1")
            .configure(health::configure)
            .configure(auth::configure)
            .configure(users::configure)
            .configure(conversations::configure)
            .configure(messages::configure)
            .route("/ws", web::get().to(crate::realtime::native::connect))
            .route("/openapi.json", web::get().to(openapi_json)),
    );
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document"))
)]
/// # GET /api/v1/openapi.json
pub(crate) async fn openapi_json() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::json())
}

/// Runs validator's checks, mapping failures to `validation_failed`.
pub(crate) fn validated<T: validator::Validate>(input: T) -> Result<T, ApiError> {
    input.validate()?;
    Ok(input)
}

/// Names refuse NUL and must show something: not only white space.
pub(crate) fn visible_name(text: &str) -> Result<(), validator::ValidationError> {
    no_nul(text)?;
    if text.trim().is_empty() {
        let mut error = validator::ValidationError::new("blank");
        error.message = Some("must not be blank".into());
        return Err(error);
    }
    Ok(())
}

/// Text fields refuse NUL: PostgreSQL cannot store it, and no client needs it.
pub(crate) fn no_nul(text: &str) -> Result<(), validator::ValidationError> {
    if text.contains('\0') {
        let mut error = validator::ValidationError::new("nul");
        error.message = Some("must not contain NUL characters".into());
        return Err(error);
    }
    Ok(())
}

/// `{messages, hasMore}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessagePageView {
    /// In seq order.
    messages: Vec<courier_engine::protocol::Message>,
    /// More messages lie beyond this page in the direction asked.
    has_more: bool,
}

impl From<courier_engine::MessagePage> for MessagePageView {
    fn from(page: courier_engine::MessagePage) -> Self {
        Self {
            messages: page.messages,
            has_more: page.has_more,
        }
    }
}
