//! The admin listener — never the public one: `/healthz` (alive), `/readyz` (issuer loaded and session store
//! reachable), `/metrics`, and `/jwks` (idgate's own public keys, as on the public listener).

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};

use crate::{
    app::State,
    body::{self, Body},
};

/// Answers one admin request.
pub async fn handle(state: Arc<State>, req: Request<Body>) -> Response<Body> {
    if req.uri().path() == "/jwks" {
        return state.own_keys.response();
    }
    let (status, content_type, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let store = match state.sessions.store() {
                Some(s) => s.ping().await.err(),
                None => None,
            };
            if !state.providers.all_ready() {
                let why = if state.providers.is_multi() {
                    format!("not ready: discovery and keys not loaded for {}\n", state.providers.not_ready().join(", "))
                } else {
                    "not ready: issuer discovery and keys not loaded\n".to_owned()
                };
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", why)
            } else if let Some(e) = store {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {e}\n"))
            } else {
                (StatusCode::OK, "text/plain", "ready\n".to_owned())
            }
        }
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(text))
        .unwrap_or_else(body::internal_error)
}
