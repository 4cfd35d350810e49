//! What a browser needs to place a call: the ICE servers (STUN, TURN) of the config.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::auth::AuthUser;
use crate::config::IceServer;
use crate::error::ErrorBody;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/calls/ice-servers", "GET").route(web::get().to(ice_servers)));
}

/// The configured ICE servers, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct CallSettings {
    /// As configured (`ice_servers`).
    pub ice_servers: Vec<IceServer>,
}

/// `{iceServers}`: ready for `new RTCPeerConnection({iceServers})`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IceServersView {
    /// Empty when none is configured: peers then use their host candidates only.
    ice_servers: Vec<IceServer>,
}

#[utoipa::path(
    get,
    path = "/api/v1/calls/ice-servers",
    tag = "calls",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The STUN and TURN servers to use for calls", body = IceServersView),
        (status = 401, description = "Missing, bad or expired access token", body = ErrorBody)
    )
)]
/// # GET /api/v1/calls/ice-servers
///
/// Signed-in users only: TURN credentials are not for the public.
pub(crate) async fn ice_servers(_caller: AuthUser, calls: web::Data<CallSettings>) -> HttpResponse {
    HttpResponse::Ok().json(IceServersView {
        ice_servers: calls.ice_servers.clone(),
    })
}
