//! Profiles and people search, with presence.

use actix_web::{HttpResponse, web};
use courier_engine::protocol::PresenceStatus;
use courier_engine::store::{ProfileChanges, UserRow};
use courier_engine::{Engine, StoreError, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use validator::Validate;

use super::validated;
use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/users")
            .service(super::resource("", "GET").route(web::get().to(search)))
            .service(
                super::resource("/me", "GET, PATCH")
                    .route(web::get().to(me))
                    .route(web::patch().to(update_me)),
            )
            .service(super::resource("/{id}", "GET").route(web::get().to(one))),
    );
}

/// A user as the API shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserView {
    id: UserId,
    username: String,
    display_name: String,
    /// Only on the caller's own profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    status_text: String,
    online: bool,
    status: Option<PresenceStatus>,
    last_seen: Option<Timestamp>,
    created_at: Timestamp,
}

/// The API view of a user with their presence; `own` shows private fields.
pub(crate) async fn user_view(
    engine: &Engine,
    row: UserRow,
    own: bool,
) -> Result<UserView, ApiError> {
    user_views(engine, vec![row], own)
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("a user view went missing"))
}

pub(crate) async fn user_views(
    engine: &Engine,
    rows: Vec<UserRow>,
    own: bool,
) -> Result<Vec<UserView>, ApiError> {
    let ids: Vec<UserId> = rows.iter().map(UserRow::user_id).collect();
    let presence = engine.presence(&ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let seen = presence.iter().find(|p| p.user_id.0 == row.id);
            UserView {
                id: row.user_id(),
                username: row.username,
                display_name: row.display_name,
                email: if own { row.email } else { None },
                status_text: seen.map_or(row.status_text.clone(), |p| p.status_text.clone()),
                online: seen.is_some_and(|p| p.online),
                status: seen.and_then(|p| p.status),
                last_seen: seen
                    .and_then(|p| p.last_seen)
                    .or(row.last_seen_at.map(Timestamp)),
                created_at: Timestamp(row.created_at),
            }
        })
        .collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/users/me
pub(crate) async fn me(
    engine: web::Data<Engine>,
    caller: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let row = engine
        .store()
        .user_by_id(caller.0)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    Ok(HttpResponse::Ok().json(user_view(&engine, row, true).await?))
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ProfilePatch {
    #[validate(
        length(min = 1, max = 64, message = "must be 1 to 64 characters"),
        custom(function = "super::visible_name")
    )]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    display_name: Option<String>,
    #[validate(
        length(max = 140, message = "must be at most 140 characters"),
        custom(function = "super::no_nul")
    )]
    #[schema(max_length = 140, pattern = r"^[^\u0000]*$")]
    status_text: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/api/v1/users/me",
    tag = "users",
    request_body = ProfilePatch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated caller", body = UserView),
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # PATCH /api/v1/users/me
pub(crate) async fn update_me(
    engine: web::Data<Engine>,
    caller: AuthUser,
    body: web::Json<super::Object<ProfilePatch>>,
) -> Result<HttpResponse, ApiError> {
    let patch = validated(body.into_inner().0)?;
    let changes = ProfileChanges {
        display_name: patch.display_name,
        status_text: patch.status_text,
    };
    // A valid token can outlive its account (removed from the database by hand): the
    // same 401 as `GET /users/me`, not a 500.
    let row = match engine.store().update_profile(caller.0, changes).await {
        Ok(row) => row,
        Err(StoreError::NotFound) => {
            return Err(ApiError::unauthorized("the account no longer exists"));
        }
        Err(other) => return Err(other.into()),
    };
    Ok(HttpResponse::Ok().json(user_view(&engine, row, true).await?))
}

#[derive(Debug, Deserialize, Validate, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchQuery {
    /// The start of a username or display name.
    #[validate(
        length(min = 1, max = 64, message = "must be 1 to 64 characters"),
        custom(function = "super::no_nul")
    )]
    #[param(min_length = 1, max_length = 64, pattern = r"^[^\u0000]*$")]
    query: String,
    /// At most this many (1 to 50, default 20).
    #[validate(range(min = 1, max = 50, message = "must be 1 to 50"))]
    #[param(minimum = 1, maximum = 50)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    params(SearchQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Matching users by username", body = [UserView]),
        (status = 400, description = "Unreadable query: a missing `query`, a value of the wrong type", body = ErrorBody),
        (status = 422, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/users?query=
///
/// People whose username or display name starts with `query`.
pub(crate) async fn search(
    engine: web::Data<Engine>,
    _caller: AuthUser,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = validated(query.into_inner())?;
    let rows = engine
        .store()
        .search_users(&query.query, query.limit.unwrap_or(20))
        .await?;
    Ok(HttpResponse::Ok().json(user_views(&engine, rows, false).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user with presence", body = UserView),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/users/{id}
pub(crate) async fn one(
    engine: web::Data<Engine>,
    caller: AuthUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(path.into_inner());
    let row = engine
        .store()
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(HttpResponse::Ok().json(user_view(&engine, row, id == caller.0).await?))
}
