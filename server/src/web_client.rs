//! The browser client: `server/web/` embedded in the binary and served at `/` and
//! `/assets/…`, so `cargo run` and a browser are all a newcomer needs.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;

/// The client's files, read at compile time (in debug builds too: `debug-embed`).
#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::routes::resource("/", "GET").route(web::get().to(index)))
        .service(crate::routes::resource("/assets/{path:.*}", "GET").route(web::get().to(asset)));
}

/// # GET /
async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "index.html")
}

/// # GET /assets/{path}
async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let path = path.into_inner();
    if path == "index.html" {
        return Err(ApiError::not_found("no such file"));
    }
    serve(&req, &path)
}

fn serve(req: &HttpRequest, path: &str) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(path).ok_or_else(|| ApiError::not_found("no such file"))?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let unchanged = if_none_match(req, &etag);
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    // Names carry no version, so every use revalidates; an unchanged file costs a 304.
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            content_security_policy(req),
        ));
    if unchanged {
        return Ok(response.finish());
    }
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime == "application/javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    Ok(response
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(file.data.into_owned()))
}

fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.trim_start_matches("W/") == etag
        })
}

/// Stricter than the API's policy: no inline code or styles at all, and sockets to this
/// host only. `'self'` covers same-host WebSockets in current browsers; the host is
/// named as well for older ones.
fn content_security_policy(req: &HttpRequest) -> HeaderValue {
    let host = req.connection_info().host().to_owned();
    // The Host header is the client's word: only a plain host[:port] goes into the policy.
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    let sockets = if plain {
        format!(" ws://{host} wss://{host}")
    } else {
        String::new()
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         media-src 'self' blob: mediastream:; connect-src 'self'{sockets}; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         frame-ancestors 'none'",
    ))
}
