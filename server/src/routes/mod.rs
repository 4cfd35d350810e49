//! REST routes, one file per resource, mounted by [`configure`].

mod auth;
mod conversations;
mod health;
mod messages;
mod users;

use actix_web::web;
use serde::Serialize;

use crate::error::ApiError;

/// Mounts every route under `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(health::configure)
            .configure(auth::configure)
            .configure(users::configure)
            .configure(conversations::configure)
            .configure(messages::configure)
            .route("/ws", web::get().to(crate::realtime::native::connect)),
    );
}

/// Runs validator's checks, mapping failures to `validation_failed`.
pub(crate) fn validated<T: validator::Validate>(input: T) -> Result<T, ApiError> {
    input.validate()?;
    Ok(input)
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessagePageView {
    messages: Vec<courier_engine::protocol::Message>,
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
