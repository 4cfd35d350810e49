//! Socket.IO v4 compatibility: `/socket.io/` speaks Engine.IO 4 and Socket.IO 5 on the main
//! namespace, so existing `socket.io-client` apps connect unchanged. Events, payloads and
//! replies are those of the native protocol; the ack callback gets the reply.
//!
//! Transports: HTTP long-polling with the upgrade to WebSocket (the official client's
//! default), or WebSocket alone (`transports: ['websocket']`).

mod connection;
pub mod packet;
mod polling;
mod websocket;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use courier_engine::Engine;
use serde::Deserialize;

pub use polling::PollingRegistry;

use self::connection::Connection;
use self::polling::{Poll, PollingIo, Posted};
use crate::auth::Tokens;
use crate::error::{ApiError, ErrorCode};
use crate::realtime::dispatch::Dispatcher;
use crate::startup::SocketSettings;

/// Mounts `/socket.io/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/socket.io/", web::get().to(get))
        .route("/socket.io/", web::post().to(post));
}

#[derive(Debug, Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct SocketIoState {
    /// Long-polling sessions of this node.
    pub registry: Arc<PollingRegistry>,
}

fn check_version(query: &EngineQuery) -> Result<(), ApiError> {
    if query.eio.as_deref() == Some("4") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::BadRequest,
            "only Engine.IO protocol 4 (EIO=4) is served",
        ))
    }
}

fn unknown_session() -> ApiError {
    ApiError::new(ErrorCode::BadRequest, "Session ID unknown")
}

fn text(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=UTF-8")
        .body(body)
}

/// # GET /socket.io/?EIO=4&transport=polling|websocket[&sid=]
#[allow(clippy::too_many_arguments)]
async fn get(
    req: HttpRequest,
    stream: web::Payload,
    query: web::Query<EngineQuery>,
    settings: web::Data<SocketSettings>,
    dispatcher: web::Data<Dispatcher>,
    engine: web::Data<Engine>,
    tokens: web::Data<Tokens>,
    state: web::Data<SocketIoState>,
) -> Result<HttpResponse, actix_web::Error> {
    crate::realtime::check_origin(&req, &settings.allowed_origins)?;
    check_version(&query)?;
    let new_connection = || {
        Connection::new(
            engine.get_ref().clone(),
            tokens.clone().into_inner(),
            dispatcher.clone().into_inner(),
            settings.max_frame_bytes,
        )
    };
    match (query.transport.as_deref(), query.sid.as_deref()) {
        (Some("websocket"), None) => websocket::connect(
            &req,
            stream,
            &settings,
            dispatcher.clone().into_inner(),
            engine.get_ref().clone(),
            tokens.clone().into_inner(),
        ),
        (Some("websocket"), Some(sid)) => {
            let polling = state.registry.get(sid).ok_or_else(unknown_session)?;
            websocket::upgrade(&req, stream, &settings, polling)
        }
        (Some("polling"), None) => Ok(text(PollingIo::open(
            new_connection(),
            Arc::clone(&state.registry),
        ))),
        (Some("polling"), Some(sid)) => {
            let polling = state.registry.get(sid).ok_or_else(unknown_session)?;
            let waiting = polling
                .send(Poll)
                .await
                .map_err(|_| unknown_session())?
                .map_err(|reason| ApiError::new(ErrorCode::BadRequest, reason))?;
            let payload = waiting.await.unwrap_or_else(|_| "1".into());
            Ok(text(payload))
        }
        _ => Err(ApiError::new(ErrorCode::BadRequest, "unknown transport").into()),
    }
}

/// # POST /socket.io/?EIO=4&transport=polling&sid=
async fn post(
    req: HttpRequest,
    query: web::Query<EngineQuery>,
    body: String,
    settings: web::Data<SocketSettings>,
    state: web::Data<SocketIoState>,
) -> Result<HttpResponse, ApiError> {
    crate::realtime::check_origin(&req, &settings.allowed_origins)?;
    check_version(&query)?;
    let sid = query.sid.as_deref().ok_or_else(unknown_session)?;
    let polling = state.registry.get(sid).ok_or_else(unknown_session)?;
    polling.do_send(Posted(body));
    Ok(text("ok".into()))
}
