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
            .service(
                super::resource("", "GET, POST")
                    .route(web::post().to(create))
                    .route(web::get().to(list)),
            )
            .service(super::resource("/{id}", "GET").route(web::get().to(one)))
            .service(super::resource("/{id}/members", "POST").route(web::post().to(add_member)))
            .service(
                super::resource("/{id}/members/{user_id}", "DELETE")
                    .route(web::delete().to(remove_member)),
            )
            .service(
                super::resource("/{id}/messages", "GET, POST")
                    .route(web::get().to(history))
                    .route(web::post().to(send)),
            )
            .service(super::resource("/{id}/read", "POST").route(web::post().to(read))),
    );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum CreateRequest {
    #[serde(rename_all = "camelCase")]
    Direct {
        #[serde(deserialize_with = "super::integer")]
        peer_id: UserId,
    },
    #[serde(rename_all = "camelCase")]
    Group {
        /// Shown trimmed; must show something.
        #[schema(
            min_length = 1,
            max_length = 100,
            pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
        )]
        title: String,
        /// Besides the creator.
        #[serde(deserialize_with = "super::integers")]
        #[schema(max_items = 1024)]
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
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
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
    body: web::Json<super::Object<CreateRequest>>,
) -> Result<HttpResponse, ApiError> {
    let request = match body.into_inner().0 {
        CreateRequest::Direct { peer_id } => CreateConversation::Direct { peer: peer_id },
        CreateRequest::Group { title, member_ids } => {
            // The length counts what the client sent, as the schema does; the title is
            // stored trimmed.
            if title.trim().is_empty() || title.chars().count() > 100 || title.contains('\0') {
                return Err(ApiError::invalid_field(
                    "title",
                    "must be 1 to 100 characters, not only white space",
                ));
            }
            let title = title.trim().to_owned();
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
    #[serde(deserialize_with = "super::integer")]
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
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
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
    body: web::Json<super::Object<AddMemberRequest>>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    let super::Object(request) = body.into_inner();
    let added = engine.add_member(caller.0, id, request.user_id).await?;
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
    /// Messages after this seq, oldest first.
    #[validate(range(min = 0, message = "must not be negative"))]
    #[param(minimum = 0)]
    after_seq: Option<i64>,
    /// The newest messages before this seq.
    #[validate(range(min = 1, message = "must be positive"))]
    #[param(minimum = 1)]
    before_seq: Option<i64>,
    /// At most this many (1 to 200, default 200).
    #[validate(range(min = 1, max = 200, message = "must be 1 to 200"))]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = i64, Path, description = "Conversation id"), HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page in seq order", body = MessagePageView),
        (status = 400, description = "Unreadable query: a value of the wrong type, an unknown parameter", body = ErrorBody),
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
    #[validate(
        length(min = 1, max = 64, message = "must be 1 to 64 characters"),
        custom(function = "super::no_nul")
    )]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000]*$")]
    client_msg_id: String,
    #[validate(length(min = 1, max = 16384, message = "must be 1 to 16384 bytes"))]
    #[schema(
        min_length = 1,
        max_length = 16384,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    body: String,
    #[serde(default, deserialize_with = "super::optional_integer")]
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
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
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
    body: web::Json<super::Object<SendRequest>>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let request = validated(body.into_inner().0)?;
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
    /// The seq read up to: 0 up to the conversation's last seq.
    #[serde(deserialize_with = "super::integer")]
    #[schema(value_type = i64, minimum = 0)]
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
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
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
    body: web::Json<super::Object<ReadRequest>>,
) -> Result<HttpResponse, ApiError> {
    let id = ConversationId(path.into_inner());
    let super::Object(request) = body.into_inner();
    if request.seq.0 < 0 {
        return Err(ApiError::invalid_field("seq", "must not be negative"));
    }
    engine
        .mark(caller.0, id, Watermark::Read, request.seq)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
