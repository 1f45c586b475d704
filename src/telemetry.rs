//! Logging (tracing, JSON or text) and the request id. Metrics live in [`metrics`].

pub mod metrics;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, settings::LogSettings};

/// Installs the global subscriber once. `RUST_LOG`, when set, wins over the configured level. Safe to call twice
/// (the second call is ignored), so tests and the demo may both call it.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match log.format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
    };
}

/// A request id: the client's `X-Request-Id` when it is short and printable, otherwise a fresh random one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
    {
        return v.to_owned();
    }
    crate::random::token(12)
}
