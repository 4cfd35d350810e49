//! Socket.IO v4 compatibility: `/socket.io/` speaks Engine.IO 4 and Socket.IO 5 on the main
//! namespace, so existing `socket.io-client` apps connect unchanged. Events, payloads and
//! replies are those of the native protocol; the ack callback gets the reply.
//!
//! Transport: WebSocket (`transports: ['websocket']`). HTTP long-polling answers 400 with
//! a clear message until it is served.

pub mod packet;
mod websocket;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};

/// Mounts `/socket.io/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/socket.io/", web::get().to(handshake))
        .route("/socket.io/", web::post().to(handshake_post));
}

#[derive(Debug, Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
}

/// # GET /socket.io/?EIO=4&transport=websocket
async fn handshake(
    req: HttpRequest,
    stream: web::Payload,
    query: web::Query<EngineQuery>,
    settings: web::Data<crate::startup::SocketSettings>,
    dispatcher: web::Data<crate::realtime::dispatch::Dispatcher>,
    engine: web::Data<courier_engine::Engine>,
    tokens: web::Data<crate::auth::Tokens>,
) -> Result<HttpResponse, actix_web::Error> {
    if query.eio.as_deref() != Some("4") {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "only Engine.IO protocol 4 (EIO=4) is served",
        )
        .into());
    }
    match query.transport.as_deref() {
        Some("websocket") => websocket::connect(
            req,
            stream,
            &settings,
            dispatcher.into_inner(),
            engine.get_ref().clone(),
            tokens.into_inner(),
        ),
        Some("polling") => Err(polling_unsupported().into()),
        _ => Err(ApiError::new(ErrorCode::BadRequest, "unknown transport").into()),
    }
}

async fn handshake_post() -> Result<HttpResponse, ApiError> {
    Err(polling_unsupported())
}

fn polling_unsupported() -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        "HTTP long-polling is not served yet: connect with transports: ['websocket']",
    )
}
