//! Accounts and tokens: register, login, refresh, logout.

use actix_web::{HttpResponse, web};
use courier_engine::store::NewUser;
use courier_engine::{Engine, StoreError, Timestamp};
use serde::{Deserialize, Serialize};
use validator::Validate;

use super::users::{UserView, user_view};
use super::validated;
use crate::auth::{TokenPair, Tokens, passwords};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::startup::AuthSettings;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/auth")
            .wrap(actix_web::middleware::from_fn(limit_by_ip))
            .service(super::resource("/register", "POST").route(web::post().to(register)))
            .service(super::resource("/login", "POST").route(web::post().to(login)))
            .service(super::resource("/refresh", "POST").route(web::post().to(refresh)))
            .service(super::resource("/logout", "POST").route(web::post().to(logout))),
    );
}

/// Refuses a client IP past its `/auth/*` quota with 429 and `Retry-After`, as a response
/// (not an error) so the outer middleware still logs it and adds the headers. Every answer
/// carries the `RateLimit-*` fields.
async fn limit_by_ip(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let limits = req.app_data::<web::Data<RateLimits>>();
    let metrics = req.app_data::<web::Data<Metrics>>();
    let standing = match (limits, metrics, req.peer_addr()) {
        (Some(limits), Some(metrics), Some(peer)) => match limits.check_auth(peer.ip(), metrics) {
            Ok(standing) => Some(standing),
            Err(refused) => return Ok(req.error_response(refused).map_into_right_body()),
        },
        _ => None,
    };
    let mut response = next.call(req).await?;
    // Every answer tells the client how much of its quota is left, not only the 429.
    if let Some(standing) = standing {
        standing.write_headers(response.headers_mut());
    }
    Ok(response.map_into_left_body())
}

/// Usernames: 3 to 32 of `a-z 0-9 _ . -`.
pub(crate) fn valid_username(name: &str) -> Result<(), validator::ValidationError> {
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if allowed {
        Ok(())
    } else {
        let mut error = validator::ValidationError::new("charset");
        error.message = Some("use only a-z, 0-9, '_', '.' and '-'".into());
        Err(error)
    }
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    #[schema(min_length = 3, max_length = 32, pattern = r"^[a-z0-9_.-]*$")]
    #[validate(
        length(min = 3, max = 32, message = "must be 3 to 32 characters"),
        custom(function = "valid_username")
    )]
    username: String,
    #[validate(
        length(min = 8, max = 128, message = "must be 8 to 128 characters"),
        custom(function = "super::no_nul")
    )]
    #[schema(min_length = 8, max_length = 128, pattern = r"^[^\u0000]*$")]
    password: String,
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
    #[validate(email(message = "must be an email address"))]
    #[schema(format = Email)]
    email: Option<String>,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LoginRequest {
    #[validate(
        length(min = 1, max = 64, message = "must be 1 to 64 characters"),
        custom(function = "super::no_nul")
    )]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\u0000]*$")]
    username: String,
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    #[schema(min_length = 1, max_length = 128)]
    password: String,
}

#[derive(Debug, Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    #[validate(length(min = 1, max = 256, message = "must be 1 to 256 characters"))]
    #[schema(min_length = 1, max_length = 256)]
    refresh_token: String,
}

/// `{user, accessToken, refreshToken, expiresIn}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    user: UserView,
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

fn session_view(user: UserView, pair: TokenPair) -> SessionView {
    SessionView {
        user,
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        expires_in: pair.expires_in,
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created and signed in", body = SessionView),
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
        (status = 409, description = "The username is taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until a retry can succeed"),
            ("RateLimit-Limit" = u32, description = "Requests allowed in a burst"),
            ("RateLimit-Remaining" = u32, description = "Requests still allowed now: 0"),
            ("RateLimit-Reset" = u64, description = "Seconds until the whole burst is available again")
        ))
    )
)]
/// # POST /api/v1/auth/register
pub(crate) async fn register(
    engine: web::Data<Engine>,
    tokens: web::Data<Tokens>,
    settings: web::Data<AuthSettings>,
    body: web::Json<super::Object<RegisterRequest>>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner().0)?;
    let password_hash = passwords::hash(request.password, settings.bcrypt_cost).await?;
    let new = NewUser {
        display_name: request
            .display_name
            .unwrap_or_else(|| request.username.clone()),
        username: request.username,
        email: request.email,
        password_hash,
        status_text: String::new(),
        last_seen_at: None,
        created_at: Timestamp::now().as_millis(),
    };
    let row = match engine.store().create_user(new).await {
        Ok(row) => row,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(ErrorCode::Conflict, "that username is taken"));
        }
        Err(other) => return Err(other.into()),
    };
    let pair = tokens.issue(engine.store().as_ref(), row.user_id()).await?;
    let user = user_view(&engine, row, true).await?;
    Ok(HttpResponse::Created().json(session_view(user, pair)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionView),
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password (indistinguishable)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until a retry can succeed"),
            ("RateLimit-Limit" = u32, description = "Requests allowed in a burst"),
            ("RateLimit-Remaining" = u32, description = "Requests still allowed now: 0"),
            ("RateLimit-Reset" = u64, description = "Seconds until the whole burst is available again")
        ))
    )
)]
/// # POST /api/v1/auth/login
///
/// Unknown users and wrong passwords get the same answer in about the same time.
pub(crate) async fn login(
    engine: web::Data<Engine>,
    tokens: web::Data<Tokens>,
    settings: web::Data<AuthSettings>,
    body: web::Json<super::Object<LoginRequest>>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner().0)?;
    let row = engine.store().user_by_username(&request.username).await?;
    let stored = row.as_ref().map(|row| row.password_hash.clone());
    let matches = passwords::verify(request.password, stored, settings.bcrypt_cost).await;
    let Some(row) = row.filter(|_| matches) else {
        return Err(ApiError::unauthorized("invalid username or password"));
    };
    let pair = tokens.issue(engine.store().as_ref(), row.user_id()).await?;
    let user = user_view(&engine, row, true).await?;
    Ok(HttpResponse::Ok().json(session_view(user, pair)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the old refresh token is spent", body = SessionView),
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 401, description = "Invalid, expired, spent or revoked refresh token", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until a retry can succeed"),
            ("RateLimit-Limit" = u32, description = "Requests allowed in a burst"),
            ("RateLimit-Remaining" = u32, description = "Requests still allowed now: 0"),
            ("RateLimit-Reset" = u64, description = "Seconds until the whole burst is available again")
        ))
    )
)]
/// # POST /api/v1/auth/refresh
///
/// Spends the refresh token for a new pair. A spent token used again revokes its family.
pub(crate) async fn refresh(
    engine: web::Data<Engine>,
    tokens: web::Data<Tokens>,
    body: web::Json<super::Object<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner().0)?;
    let (user, pair) = tokens
        .rotate(engine.store().as_ref(), &request.refresh_token)
        .await?;
    let row = engine
        .store()
        .user_by_id(user)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    let user = user_view(&engine, row, true).await?;
    Ok(HttpResponse::Ok().json(session_view(user, pair)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The token family is revoked"),
        (status = 400, description = "Unreadable body: not JSON, wrong types, unknown fields, or not `Content-Type: application/json`", body = ErrorBody),
        (status = 413, description = "The body is larger than `max_json_body_bytes`", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody, headers(
            ("Retry-After" = u64, description = "Seconds until a retry can succeed"),
            ("RateLimit-Limit" = u32, description = "Requests allowed in a burst"),
            ("RateLimit-Remaining" = u32, description = "Requests still allowed now: 0"),
            ("RateLimit-Reset" = u64, description = "Seconds until the whole burst is available again")
        ))
    )
)]
/// # POST /api/v1/auth/logout
///
/// Revokes the refresh token's family. 204 whether or not the token was known.
pub(crate) async fn logout(
    engine: web::Data<Engine>,
    tokens: web::Data<Tokens>,
    body: web::Json<super::Object<RefreshRequest>>,
) -> Result<HttpResponse, ApiError> {
    let request = validated(body.into_inner().0)?;
    tokens
        .revoke(engine.store().as_ref(), &request.refresh_token)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
