//! Logging set-up.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// actix-http logs every malformed request at error level ("stream error: request parse
/// error") after answering it 400: any client could fill the error log at will. Its
/// connection dispatcher is silenced unless `RUST_LOG` names actix_http itself.
const QUIET_DISPATCHER: &str = "actix_http::h1::dispatcher=off";

/// Installs the global subscriber: `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = EnvFilter::new(filter_directives(&directives));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `RUST_LOG`'s directives (`info` when empty), with actix-http's dispatcher quietened
/// unless they mention actix_http.
fn filter_directives(rust_log: &str) -> String {
    let rust_log = match rust_log.trim() {
        "" => "info",
        given => given,
    };
    if rust_log.contains("actix_http") {
        rust_log.to_owned()
    } else {
        format!("{rust_log},{QUIET_DISPATCHER}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatcher_is_quiet_unless_named() {
        assert_eq!(filter_directives(""), "info,actix_http::h1::dispatcher=off");
        assert_eq!(
            filter_directives("courier=debug"),
            "courier=debug,actix_http::h1::dispatcher=off"
        );
        assert_eq!(filter_directives("actix_http=debug"), "actix_http=debug");
    }
}
