//! Editing and deleting one's own messages.

use actix_web::{HttpResponse, web};
use courier_engine::{Engine, MessageId};
use serde::Deserialize;
use validator::Validate;

use super::validated;
use crate::auth::AuthUser;
use crate::error::ApiError;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/messages")
            .route("/{id}", web::patch().to(edit))
            .route("/{id}", web::delete().to(delete)),
    );
}

#[derive(Debug, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EditRequest {
    #[validate(length(min = 1, max = 16384, message = "must be 1 to 16384 bytes"))]
    body: String,
}

/// # PATCH /api/v1/messages/{id}
async fn edit(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<EditRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner())?;
    let message = engine
        .edit_message(caller.0, MessageId(path.into_inner()), request.body)
        .await?;
    Ok(HttpResponse::Ok().json(message))
}

/// # DELETE /api/v1/messages/{id}
///
/// Answers the tombstone: the message keeps its seq, its body becomes null.
async fn delete(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let message = engine
        .delete_message(caller.0, MessageId(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(message))
}
