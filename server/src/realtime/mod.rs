//! Real-time transports. Each connection decodes a frame once into a typed command and
//! hands it to [`dispatch`], which every transport shares; the engine never sees a socket.

pub mod dispatch;
pub mod heartbeat;
pub mod native;
mod read_ahead;
pub mod socketio;

use actix::{Actor, ActorContext, Addr, StreamHandler};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use bytestring::ByteString;

pub(crate) use read_ahead::DecodedFrames;

use crate::error::{ApiError, ErrorCode};

/// Refuses a socket handshake sent by a web page of a foreign origin: a page may open a
/// WebSocket to any server, and the browser does not stop it as it stops `fetch`, so the
/// server checks. Allowed: no `Origin` (not a browser), the origin of the host the
/// request was sent to, and the configured origins (`cors_allowed_origins`).
pub(crate) fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let info = req.connection_info();
    if origin_allowed(origin, Some(info.host()), allowed) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "this origin may not open a socket",
        ))
    }
}

/// Whether a browser `Origin` may connect to `host` (the Host the request was sent to).
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim();
    let listed = allowed.iter().any(|entry| {
        entry
            .trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(origin)
    });
    if listed {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return false,
    };
    let (Some((origin_host, origin_port)), Some((host, port))) =
        (split_host_port(authority), split_host_port(host))
    else {
        return false;
    };
    // A proxy may pass the host without its port (nginx's `$host`): the name decides then.
    origin_host.eq_ignore_ascii_case(host)
        && port.is_none_or(|port| origin_port.unwrap_or(default_port) == port)
}

/// `name[:port]` or `[v6]:port`; `None` when it is not a bare authority.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// Starts a WebSocket actor on an upgrade request. `actor` is built with the socket's
/// [`DecodedFrames`], which it hands to [`read_frame`] with every frame: that is what
/// lets the socket read on (see [`read_ahead`]).
pub(crate) fn start_socket<A>(
    actor: impl FnOnce(DecodedFrames) -> A,
    req: &HttpRequest,
    payload: web::Payload,
    max_frame_bytes: usize,
) -> Result<(Addr<A>, HttpResponse), actix_web::Error>
where
    A: Actor<Context = ws::WebsocketContext<A>>
        + StreamHandler<Result<ws::Message, ws::ProtocolError>>,
{
    let (payload, frames) = read_ahead::read_ahead(payload, max_frame_bytes);
    ws::WsResponseBuilder::new(actor(frames), req, payload)
        .frame_size(max_frame_bytes)
        .start_with_addr()
        .map_err(|error| ApiError::new(ErrorCode::BadRequest, error.to_string()).into())
}

/// Closes a socket with a close code and reason.
pub(crate) fn close_with<A>(ctx: &mut ws::WebsocketContext<A>, code: u16, reason: &str)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    let code = match code {
        1000 => ws::CloseCode::Normal,
        1001 => ws::CloseCode::Away,
        1002 => ws::CloseCode::Protocol,
        1007 => ws::CloseCode::Invalid,
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
/// answered, a close is echoed, an oversized frame closes with 1009, a text frame that is
/// not UTF-8 with 1007, a broken one with 1002, binary and continuation frames go to
/// `refuse_binary`. Text is handed back. Every frame is reported to `frames`.
pub(crate) fn read_frame<A>(
    item: Result<ws::Message, ws::ProtocolError>,
    frames: &DecodedFrames,
    ctx: &mut ws::WebsocketContext<A>,
    refuse_binary: impl FnOnce(&mut ws::WebsocketContext<A>),
) -> Option<ByteString>
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    frames.decoded(&item);
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
        Err(_) if frames.oversized() => close_with(ctx, 1009, "frame too large"),
        // actix reports a text frame that is not UTF-8 as an I/O error carrying the
        // `Utf8Error` text; RFC 6455 wants 1007 (inconsistent data) for it, not 1002.
        Err(ws::ProtocolError::Io(error)) if error.to_string().contains("utf-8") => {
            close_with(ctx, 1007, "invalid utf-8")
        }
        Err(error) => {
            tracing::debug!(%error, "websocket protocol error");
            close_with(ctx, 1002, "protocol error");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_allowed_when_same_host_or_listed() {
        let listed = vec!["https://app.example.com".to_owned()];
        let allowed = |origin: &str, host: &str| origin_allowed(origin, Some(host), &listed);
        assert!(allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(allowed("https://chat.example.com", "chat.example.com"));
        assert!(allowed("https://chat.example.com", "chat.example.com:443"));
        assert!(
            allowed("http://localhost:8080", "localhost"),
            "port stripped by a proxy"
        );
        assert!(allowed("http://[::1]:8080", "[::1]:8080"));
        assert!(allowed("https://app.example.com", "chat.example.com"));
        assert!(!allowed("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!allowed("https://evil.example", "chat.example.com"));
        assert!(!allowed(
            "https://chat.example.com.evil.example",
            "chat.example.com"
        ));
        assert!(!allowed("null", "chat.example.com"));
        assert!(!allowed("file://", "chat.example.com"));
        assert!(!allowed(
            "https://user@chat.example.com",
            "chat.example.com"
        ));
        assert!(!origin_allowed("https://chat.example.com", None, &[]));
    }
}
