//! Editing and deleting one's own messages.

use actix_web::{HttpResponse, web};
use courier_engine::protocol::Message;
use courier_engine::{Engine, MessageId};
use serde::Deserialize;
use validator::Validate;

use super::validated;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/messages").service(
            super::resource("/{id}", "PATCH, DELETE")
                .route(web::patch().to(edit))
                .route(web::delete().to(delete)),
        ),
    );
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EditRequest {
    #[validate(length(min = 1, max = 16384, message = "must be 1 to 16384 bytes"))]
    #[schema(
        min_length = 1,
        max_length = 16384,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    body: String,
}

#[utoipa::path(
    patch,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    request_body = EditRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Edited; members get message:edited", body = Message),
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 403, description = "Not the sender", body = ErrorBody),
        (status = 409, description = "The message was deleted", body = ErrorBody),
        (status = 404, description = "No such message visible to the caller", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # PATCH /api/v1/messages/{id}
pub(crate) async fn edit(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<super::Object<EditRequest>>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner().0)?;
    let message = engine
        .edit_message(caller.0, MessageId(path.into_inner()), request.body)
        .await?;
    Ok(HttpResponse::Ok().json(message))
}

#[utoipa::path(
    delete,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    params(("id" = i64, Path, description = "Message id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tombstone; members get message:deleted", body = Message),
        (status = 403, description = "Not the sender", body = ErrorBody),
        (status = 404, description = "No such message visible to the caller", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # DELETE /api/v1/messages/{id}
///
/// Answers the tombstone: the message keeps its seq, its body becomes null.
pub(crate) async fn delete(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let message = engine
        .delete_message(caller.0, MessageId(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(message))
}
