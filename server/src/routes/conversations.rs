//! Conversations, membership, history, sends and read receipts.

use actix_web::{HttpResponse, web};
use courier_engine::protocol::SendMessage;
use courier_engine::store::Watermark;
use courier_engine::{
    ConversationId, CreateConversation, Engine, HistoryPage, MessageId, Seq, UserId,
};
use serde::Deserialize;
use validator::Validate;

use super::{MessagePageView, validated};
use crate::auth::AuthUser;
use crate::error::ApiError;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/conversations")
            .route("", web::post().to(create))
            .route("", web::get().to(list))
            .route("/{id}", web::get().to(one))
            .route("/{id}/members", web::post().to(add_member))
            .route("/{id}/members/{user_id}", web::delete().to(remove_member))
            .route("/{id}/messages", web::get().to(history))
            .route("/{id}/messages", web::post().to(send))
            .route("/{id}/read", web::post().to(read)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum CreateRequest {
    #[serde(rename_all = "camelCase")]
    Direct { peer_id: UserId },
    #[serde(rename_all = "camelCase")]
    Group {
        title: String,
        member_ids: Vec<UserId>,
    },
}

const MAX_GROUP_MEMBERS: usize = 1024;

/// # POST /api/v1/conversations
///
/// 201 with a new conversation; 200 with the existing direct conversation of the pair.
async fn create(
    engine: web::Data<Engine>,
    caller: AuthUser,
    body: web::Json<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = match body.into_inner() {
        CreateRequest::Direct { peer_id } => CreateConversation::Direct { peer: peer_id },
        CreateRequest::Group { title, member_ids } => {
            let title = title.trim().to_owned();
            if title.is_empty() || title.chars().count() > 100 || title.contains('\0') {
                return Err(ApiError::invalid_field(
                    "title",
                    "must be 1 to 100 characters",
                ));
            }
            if member_ids.len() > MAX_GROUP_MEMBERS {
                return Err(ApiError::invalid_field(
                    "memberIds",
                    format!("at most {MAX_GROUP_MEMBERS} members"),
                ));
            }
            CreateConversation::Group {
                title,
                members: member_ids,
            }
        }
    };
    let (conversation, created) = engine.create_conversation(caller.0, request).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(conversation))
}

/// # GET /api/v1/conversations
async fn list(engine: web::Data<Engine>, caller: AuthUser) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.conversations(caller.0).await?))
}

/// # GET /api/v1/conversations/{id}
async fn one(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    Ok(HttpResponse::Ok().json(engine.conversation(caller.0, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddMemberRequest {
    user_id: UserId,
}

/// # POST /api/v1/conversations/{id}/members
///
/// Adds a user to a group; answers the conversation (201 if added, 200 if already in).
async fn add_member(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<AddMemberRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    let added = engine.add_member(caller.0, id, body.user_id).await?;
    let conversation = engine.conversation(caller.0, id).await?;
    let mut response = if added {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(conversation))
}

/// # DELETE /api/v1/conversations/{id}/members/{userId}
///
/// An owner removes anyone; a member removes themselves (leaves).
async fn remove_member(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = path.into_inner();
    let removed = engine
        .remove_member(caller.0, ConversationId(id), UserId(user))
        .await?;
    if removed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("that user is not a member"))
    }
}

#[derive(Debug, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HistoryQuery {
    #[validate(range(min = 0, message = "must not be negative"))]
    after_seq: Option<i64>,
    #[validate(range(min = 1, message = "must be positive"))]
    before_seq: Option<i64>,
    #[validate(range(min = 1, max = 200, message = "must be 1 to 200"))]
    limit: Option<u32>,
}

/// # GET /api/v1/conversations/{id}/messages?afterSeq=&beforeSeq=&limit=
///
/// Pages in seq order: forwards after `afterSeq`, or the newest before `beforeSeq`.
async fn history(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = validated(query.into_inner())?;
    let page = HistoryPage {
        after: query.after_seq.map(Seq),
        before: query.before_seq.map(Seq),
        limit: query.limit,
    };
    let page = engine
        .history(caller.0, ConversationId(path.into_inner()), page)
        .await?;
    Ok(HttpResponse::Ok().json(MessagePageView::from(page)))
}

#[derive(Debug, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendRequest {
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    client_msg_id: String,
    #[validate(length(min = 1, max = 16384, message = "must be 1 to 16384 bytes"))]
    body: String,
    reply_to_id: Option<MessageId>,
}

/// # POST /api/v1/conversations/{id}/messages
///
/// 201 with the stored message; 200 with the same message when `clientMsgId` was sent before.
async fn send(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner())?;
    let send = SendMessage {
        conversation_id: ConversationId(path.into_inner()),
        client_msg_id: request.client_msg_id,
        body: request.body,
        reply_to_id: request.reply_to_id,
    };
    let (message, created) = engine.send_message(caller.0, send).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(message))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReadRequest {
    seq: Seq,
}

/// # POST /api/v1/conversations/{id}/read
///
/// Moves the caller's read watermark forward; 204.
async fn read(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    engine.mark(caller.0, id, Watermark::Read, body.seq).await?;
    Ok(HttpResponse::NoContent().finish())
}
