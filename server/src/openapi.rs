//! The OpenAPI document, generated from the `#[utoipa::path]` of every handler. The
//! committed copy in `openapi/openapi.json` is checked against it by a test.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::realtime::native;
use crate::routes::{auth, calls, conversations, health, messages, users};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Courier",
        description = "REST API of the Courier messaging server. Real-time events flow over \
                       the WebSocket at /api/v1/ws (see docs/protocol.md and openapi/asyncapi.yaml). \
                       Every error has the body {error, message, fields?}."
    ),
    paths(
        health::health,
        health::ready,
        health::metrics,
        crate::routes::openapi_json,
        auth::register,
        auth::login,
        auth::refresh,
        auth::logout,
        users::me,
        users::update_me,
        users::search,
        users::one,
        conversations::create,
        conversations::list,
        conversations::one,
        conversations::add_member,
        conversations::remove_member,
        conversations::history,
        conversations::send,
        conversations::read,
        messages::edit,
        messages::delete,
        calls::ice_servers,
        native::connect,
    ),
    modifiers(&BearerAuth, &ClosedVariants),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "users", description = "Profiles, search, presence"),
        (name = "conversations", description = "Conversations and membership"),
        (name = "messages", description = "History, sends, receipts, edits"),
        (name = "calls", description = "What WebRTC calls need besides the call:* signals"),
        (name = "realtime", description = "The WebSocket upgrade"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Marks each variant of the tagged request enums as closed (`additionalProperties:
/// false`), as `deny_unknown_fields` makes them: utoipa does so for structs only.
struct ClosedVariants;

impl Modify for ClosedVariants {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in ["CreateRequest"] {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) {
                for variant in &mut one_of.items {
                    if let RefOr::T(Schema::Object(object)) = variant {
                        object.additional_properties =
                            Some(Box::new(AdditionalProperties::FreeForm(false)));
                    }
                }
            }
        }
    }
}

/// The document as pretty JSON with a trailing newline, as committed.
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}
