//! Conversations, membership, history, sends and read receipts.

use actix_web::{HttpResponse, web};
use courier_engine::protocol::{Conversation, ConversationSummary, Message, SendMessage};
use courier_engine::store::Watermark;
use courier_engine::{
    ConversationId, CreateConversation, Engine, HistoryPage, MessageId, Seq, UserId,
};
use serde::Deserialize;
use validator::Validate;

use super::{MessagePageView, validated};
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::realtime::dispatch::Dispatcher;

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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum CreateRequest {
    #[serde(rename_all = "camelCase")]
    Direct { peer_id: UserId },
    #[serde(rename_all = "camelCase")]
    Group {
        title: String,
        member_ids: Vec<UserId>,
    },
}

const MAX_GROUP_MEMBERS: usize = 1024;

#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "conversations",
    request_body = CreateRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Conversation),
        (status = 200, description = "The existing direct conversation of the pair", body = Conversation),
        (status = 404, description = "A named user does not exist", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # POST /api/v1/conversations
///
/// 201 with a new conversation; 200 with the existing direct conversation of the pair.
pub(crate) async fn create(
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

#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's conversations, most recently active first", body = [ConversationSummary]),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/conversations
pub(crate) async fn list(
    engine: web::Data<Engine>,
    caller: AuthUser,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(engine.conversations(caller.0).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = i64, Path, description = "Conversation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversation and its members", body = Conversation),
        (status = 404, description = "No such conversation, or the caller is not a member", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/conversations/{id}
pub(crate) async fn one(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    Ok(HttpResponse::Ok().json(engine.conversation(caller.0, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AddMemberRequest {
    user_id: UserId,
}

#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/members",
    tag = "conversations",
    params(("id" = i64, Path, description = "Conversation id")),
    request_body = AddMemberRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Added", body = Conversation),
        (status = 200, description = "Already a member", body = Conversation),
        (status = 403, description = "Direct conversations have fixed members", body = ErrorBody),
        (status = 404, description = "No such conversation, or the caller is not a member", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # POST /api/v1/conversations/{id}/members
///
/// Adds a user to a group; answers the conversation (201 if added, 200 if already in).
pub(crate) async fn add_member(
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

#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}/members/{userId}",
    tag = "conversations",
    params(("id" = i64, Path, description = "Conversation id"), ("userId" = i64, Path, description = "Member to remove")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Only an owner may remove others", body = ErrorBody),
        (status = 404, description = "No such conversation, or the caller is not a member", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # DELETE /api/v1/conversations/{id}/members/{userId}
///
/// An owner removes anyone; a member removes themselves (leaves).
pub(crate) async fn remove_member(
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

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub(crate) struct HistoryQuery {
    #[validate(range(min = 0, message = "must not be negative"))]
    after_seq: Option<i64>,
    #[validate(range(min = 1, message = "must be positive"))]
    before_seq: Option<i64>,
    #[validate(range(min = 1, max = 200, message = "must be 1 to 200"))]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = i64, Path, description = "Conversation id")),
    params(HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page in seq order", body = MessagePageView),
        (status = 422, description = "Invalid query", body = ErrorBody),
        (status = 404, description = "No such conversation, or the caller is not a member", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/conversations/{id}/messages?afterSeq=&beforeSeq=&limit=
///
/// Pages in seq order: forwards after `afterSeq`, or the newest before `beforeSeq`.
pub(crate) async fn history(
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

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SendRequest {
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    client_msg_id: String,
    #[validate(length(min = 1, max = 16384, message = "must be 1 to 16384 bytes"))]
    body: String,
    reply_to_id: Option<MessageId>,
}

#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = i64, Path, description = "Conversation id")),
    request_body = SendRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored (durably) and pushed", body = Message),
        (status = 200, description = "A retry: the first result", body = Message),
        (status = 409, description = "clientMsgId already used for another conversation", body = ErrorBody),
        (status = 422, description = "Invalid fields or replyToId", body = ErrorBody),
        (status = 429, description = "Too many sends by this user (REST and WebSocket together)", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until a retry can succeed"),
            ("RateLimit-Limit" = u32, description = "Requests allowed in a burst"),
            ("RateLimit-Remaining" = u32, description = "Requests still allowed now: 0"),
            ("RateLimit-Reset" = u64, description = "Seconds until the whole burst is available again")
        )),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody),
        (status = 404, description = "No such conversation, or the caller is not a member", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # POST /api/v1/conversations/{id}/messages
///
/// 201 with the stored message; 200 with the same message when `clientMsgId` was sent before.
pub(crate) async fn send(
    engine: web::Data<Engine>,
    dispatcher: web::Data<Dispatcher>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let request = validated(body.into_inner())?;
    let standing = dispatcher
        .limits
        .check_rest_send(caller.0, &dispatcher.metrics)?;
    let send = SendMessage {
        conversation_id: ConversationId(path.into_inner()),
        client_msg_id: request.client_msg_id,
        body: request.body,
        reply_to_id: request.reply_to_id,
    };
    let (message, created) = engine.send_message(caller.0, send).await?;
    if created {
        dispatcher.metrics.messages_sent.inc();
        dispatcher
            .metrics
            .send_to_ack_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    }
    .json(message);
    standing.write_headers(response.headers_mut());
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReadRequest {
    seq: Seq,
}

#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/read",
    tag = "messages",
    params(("id" = i64, Path, description = "Conversation id")),
    request_body = ReadRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Watermark moved (or already there)"),
        (status = 422, description = "seq beyond the last message", body = ErrorBody),
        (status = 404, description = "No such conversation, or the caller is not a member", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # POST /api/v1/conversations/{id}/read
///
/// Moves the caller's read watermark forward; 204.
pub(crate) async fn read(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
    body: web::Json<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    engine.mark(caller.0, id, Watermark::Read, body.seq).await?;
    Ok(HttpResponse::NoContent().finish())
}
