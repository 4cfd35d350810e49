//! Real-time transports. Each connection decodes a frame once into a typed command and
//! hands it to [`dispatch`], which every transport shares; the engine never sees a socket.

pub mod dispatch;
pub mod native;
pub mod socketio;

use actix::{Actor, ActorContext};
use actix_web_actors::ws;
use bytestring::ByteString;

/// Closes a socket with a close code and reason.
pub(crate) fn close_with<A>(ctx: &mut ws::WebsocketContext<A>, code: u16, reason: &str)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    let code = match code {
        1000 => ws::CloseCode::Normal,
        1001 => ws::CloseCode::Away,
        1002 => ws::CloseCode::Protocol,
        1009 => ws::CloseCode::Size,
        other => ws::CloseCode::Other(other),
    };
    ctx.close(Some(ws::CloseReason {
        code,
        description: Some(reason.to_owned()),
    }));
    ctx.stop();
}

/// Handles one incoming WebSocket frame the same way for every transport: pings are
/// answered, a close is echoed, an oversized frame closes with 1009, a broken one with
/// 1002, binary and continuation frames go to `refuse_binary`. Text is handed back.
pub(crate) fn read_frame<A>(
    item: Result<ws::Message, ws::ProtocolError>,
    ctx: &mut ws::WebsocketContext<A>,
    refuse_binary: impl FnOnce(&mut ws::WebsocketContext<A>),
) -> Option<ByteString>
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    match item {
        Ok(ws::Message::Text(text)) => return Some(text),
        Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
        Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
        Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => refuse_binary(ctx),
        Ok(ws::Message::Close(reason)) => {
            ctx.close(reason);
            ctx.stop();
        }
        Err(ws::ProtocolError::Overflow) => close_with(ctx, 1009, "frame too large"),
        Err(error) => {
            tracing::debug!(%error, "websocket protocol error");
            close_with(ctx, 1002, "protocol error");
        }
    }
    None
}
