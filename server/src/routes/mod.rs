//! REST routes, one file per resource, mounted by [`configure`].

pub(crate) mod auth;
pub(crate) mod calls;
pub(crate) mod conversations;
pub(crate) mod health;
pub(crate) mod messages;
pub(crate) mod users;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ApiError, ErrorBody, ErrorCode};

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
    .configure(crate::web_client::configure)
    .service(
        web::scope("/api/v1")
            .configure(health::configure)
            .configure(auth::configure)
            .configure(users::configure)
            .configure(conversations::configure)
            .configure(messages::configure)
            .configure(calls::configure)
            .service(resource("/ws", "GET").route(web::get().to(crate::realtime::native::connect)))
            .service(resource("/openapi.json", "GET").route(web::get().to(openapi_json))),
    );
}

/// A path whose other methods answer 405 with `Allow` and the error body. Routes added
/// with `.route(path, ...)` alone fall through to the 404 of unknown paths instead.
pub(crate) fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(ErrorBody {
                error: ErrorCode::MethodNotAllowed,
                message: format!("this path answers {allow} only"),
                fields: None,
            })
    }))
}

/// A request body that must be a JSON object. serde's derived structs also accept an
/// array of their fields in order (`[null, null]`), which the schema does not allow and
/// no client means.
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visitor(std::marker::PhantomData))
            .map(Object)
    }
}

/// A JSON integer. JSON has one number type, and `7.0` is the integer 7 to JSON Schema
/// (and to a JavaScript client), so ids and seqs accept it; fractions and numbers out of
/// the 64-bit range are refused.
struct Integral(i64);

impl<'de> Deserialize<'de> for Integral {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Integral;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a 64-bit integer")
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Integral, E> {
                Ok(Integral(n))
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Integral, E> {
                i64::try_from(n)
                    .map(Integral)
                    .map_err(|_| E::custom("integer out of the 64-bit range"))
            }

            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Integral, E> {
                // 2^63 is exact in f64; every integral f64 in [-2^63, 2^63) fits an i64.
                const LIMIT: f64 = 9_223_372_036_854_775_808.0;
                if n.fract() == 0.0 && (-LIMIT..LIMIT).contains(&n) {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(Integral(n as i64))
                } else {
                    Err(E::custom(format!("expected an integer, found {n}")))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `deserialize_with` for an id or seq: see [`Integral`].
pub(crate) fn integer<'de, D: Deserializer<'de>, T: From<i64>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Integral::deserialize(deserializer).map(|Integral(n)| T::from(n))
}

/// `deserialize_with` for an optional id (with `#[serde(default)]`).
pub(crate) fn optional_integer<'de, D: Deserializer<'de>, T: From<i64>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<Integral>::deserialize(deserializer).map(|n| n.map(|Integral(n)| T::from(n)))
}

/// `deserialize_with` for a list of ids.
pub(crate) fn integers<'de, D: Deserializer<'de>, T: From<i64>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<Integral>::deserialize(deserializer)
        .map(|list| list.into_iter().map(|Integral(n)| T::from(n)).collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "This document"))
)]
/// # GET /api/v1/openapi.json
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
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
