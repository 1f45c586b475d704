//! Logging (tracing, JSON or text; the per-request line in [`access_log`]) and the request id. Metrics live in
//! [`metrics`]; OpenTelemetry traces in [`span`] (what is recorded), [`otlp`] (how it is sent) and [`trace`] (the
//! W3C headers).

pub mod access_log;
pub mod metrics;
pub mod otlp;
pub mod span;
pub mod trace;

use std::sync::Arc;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, settings::LogSettings};

/// Installs the global subscriber once. `RUST_LOG`, when set, wins over the configured level. Safe to call twice
/// (the second call is ignored), so tests and the demo may both call it.
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match log.format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
    };
    // The request lines follow the same format, beside the subscriber installed here (not another one).
    if installed.is_ok() {
        access_log::init(log.format);
    }
}

/// Starts tracing when `[telemetry] otlp_endpoint` is set: spawns the exporter task (so this runs inside the Tokio
/// runtime) and returns the tracer requests record on. `None`, and nothing spawned, when tracing is off.
pub fn start_tracing(
    settings: &crate::config::telemetry::TelemetrySettings,
    session_secret: &crate::config::Secret,
    metrics: &Arc<metrics::Metrics>,
) -> Option<Arc<span::Tracer>> {
    let otlp = settings.otlp.as_ref()?;
    let (queue, queued) = span::queue(otlp.queue, otlp.batch);
    let http = crate::client::build(otlp.timeout);
    tokio::spawn(otlp::Exporter::new(queued, otlp.clone(), http, Arc::clone(metrics)).run());
    tracing::info!(endpoint = %otlp.endpoint, service_name = %otlp.service_name, "exporting traces over OTLP/HTTP");
    Some(Arc::new(span::Tracer::new(queue, session_secret, Arc::clone(metrics))))
}

/// A request id: the client's `X-Request-Id` when it is short and printable, otherwise a fresh one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
    {
        return v.to_owned();
    }
    fresh_request_id()
}

/// A fresh request id: a process-wide counter through keyed SipHash, 16 hex digits. Unique within the process (the
/// keyed hash of distinct counters), unguessable from outside, and without a trip to the system's random generator
/// per request (which cost a microsecond on the request path). Ids label log lines; they guard nothing.
fn fresh_request_id() -> String {
    use std::{
        hash::BuildHasher,
        sync::{
            LazyLock,
            atomic::{AtomicU64, Ordering},
        },
    };
    static KEY: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", KEY.hash_one(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_clients_when_printable_and_fresh_otherwise() {
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", http::HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", http::HeaderValue::from_static("has space"));
        let fresh: std::collections::HashSet<String> = (0..10_000).map(|_| request_id(&h)).collect();
        assert_eq!(fresh.len(), 10_000, "fresh ids do not repeat");
        assert!(fresh.iter().all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
