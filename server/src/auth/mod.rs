//! Authentication: passwords, tokens, and the extractor that turns a bearer token into
//! the caller's user id.

pub mod passwords;
pub mod tokens;

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use courier_engine::UserId;

use crate::error::ApiError;
pub use tokens::{TokenPair, Tokens};

/// The authenticated caller, from `Authorization: Bearer <access token>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, false).map(|(user, _)| user))
    }
}

/// Reads the bearer token, or with `allow_query` the `access_token` query parameter
/// (browsers cannot set headers on a WebSocket). Answers the caller and when the token
/// expires, in seconds since the epoch.
pub fn authenticate(req: &HttpRequest, allow_query: bool) -> Result<(AuthUser, i64), ApiError> {
    let tokens = req
        .app_data::<web::Data<Tokens>>()
        .ok_or_else(|| ApiError::internal("token service missing"))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            // The scheme name is case-insensitive (RFC 9110).
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
    let token = match header {
        Some(token) => Some(token.trim().to_owned()),
        None if allow_query => web::Query::<TokenQuery>::from_query(req.query_string())
            .ok()
            .and_then(|query| query.into_inner().access_token),
        None => None,
    };
    let token = token.ok_or_else(|| ApiError::unauthorized("missing access token"))?;
    let (user, expires_at) = tokens.verify_access(&token)?;
    Ok((AuthUser(user), expires_at))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}
