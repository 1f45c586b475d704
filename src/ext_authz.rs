//! Envoy's external authorization (`ext_authz`): the proxy in front asks whether a request may pass, and forwards it
//! itself. One decision ([`check`]) serves both of Envoy's shapes — gRPC (`envoy.service.auth.v3.Authorization/
//! Check`, [`grpc`]) and HTTP (`{prefix}/auth/<original path>`, [`http`]) — and it is the proxy sink's: the same
//! `authenticate` step and route decision ([`crate::pipeline::grant`], [`crate::pipeline::check_target`]), the same
//! denials built by [`crate::error::respond`] (login redirect for navigations, 401/403 JSON otherwise).
//!
//! What differs from the proxy path is only what idgate cannot do from here: it cannot rewrite the path Envoy
//! forwards, so a path that is not in normal form is denied (403) where the proxy would forward its normal form.

pub mod grpc;
pub mod http;

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};

use crate::{
    app::State,
    body::{self, Body},
    config::AuthMode,
    error::{self, Context},
    forward::Peer,
    pipeline::{self, Failure},
    route, telemetry,
};

/// Most headers one checked request may carry (hyper's and Envoy's own default limit is 100).
pub const MAX_HEADERS: usize = 100;

/// The request Envoy asks about, as it reached Envoy.
#[derive(Debug)]
pub struct Check<'a> {
    pub method: &'a Method,
    /// Path and query as the client sent them (Envoy forwards these bytes).
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// Who asks: the proxy in front (its address decides whether the path is believed).
    pub peer: &'a Peer,
}

/// The answer to a check.
#[derive(Debug)]
pub enum Verdict {
    /// Let the request through, with these changes.
    Allow(Allow),
    /// Answer the client with this response instead (a redirect, 401, 403, …).
    Deny(Response<Body>),
}

/// How the proxy in front must change an allowed request before forwarding it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Allow {
    /// Headers to set (overwriting any the client sent): the identity headers, and `Cookie` without idgate's.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers to remove: every spoofable identity header name not set above, and `Cookie` when only idgate's
    /// cookies were in it.
    pub remove: Vec<HeaderName>,
    /// `Set-Cookie` values for the client's answer (a renewed session).
    pub set_cookie: Vec<HeaderValue>,
}

/// Decides on one request, exactly as the proxy sink would.
pub async fn check(state: &State, c: Check<'_>) -> Verdict {
    let request_id = telemetry::request_id(c.headers);
    let bytes: usize = c.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if c.headers.len() > MAX_HEADERS || bytes > state.settings.server.max_header_bytes {
        tracing::info!(request_id = %request_id, headers = c.headers.len(), bytes, "ext_authz check: headers too large");
        return Verdict::Deny(too_large(state, &request_id));
    }
    let kind = route::kind(c.method, c.headers);
    let mut auth = None;
    let result = async {
        let (mode, rule) = pipeline::check_target(state, c.peer, c.target)?.unwrap_or((AuthMode::Login, None));
        auth = Some(mode);
        pipeline::grant(state, c.headers, mode, rule).await
    }
    .await;
    match result {
        Ok(grant) => Verdict::Allow(allow(state, c.headers, grant)),
        Err(Failure { err, clear }) => {
            let ctx = Context {
                kind,
                may_redirect: auth == Some(AuthMode::Login),
                return_to: c.target,
                prefix: state.routes.prefix(),
                clear,
                request_id: &request_id,
            };
            let mut resp = error::respond(&err, ctx);
            finish(state, &mut resp, &request_id);
            Verdict::Deny(resp)
        }
    }
}

/// The changes for an allowed request: what the proxy sink's strip and apply would do to it.
fn allow(state: &State, headers: &HeaderMap, grant: pipeline::Grant) -> Allow {
    let mut stripped = headers.clone();
    state.headers.strip(&mut stripped);
    let mut out = Allow { set_cookie: grant.cookies, ..Allow::default() };
    let remove = |name: HeaderName, out: &mut Allow| {
        if !grant.headers.contains_key(&name) && !out.remove.contains(&name) {
            out.remove.push(name);
        }
    };
    // What the client sent and the strip removed (any spelling it matched), then every name it would remove.
    for name in headers.keys().filter(|k| !stripped.contains_key(*k) && *k != header::COOKIE) {
        remove(name.clone(), &mut out);
    }
    for name in state.headers.stripped_names() {
        if let Ok(name) = HeaderName::try_from(name.as_str()) {
            remove(name, &mut out);
        }
    }
    match (headers.get(header::COOKIE), stripped.get(header::COOKIE)) {
        (Some(_), None) => out.remove.push(header::COOKIE),
        (Some(before), Some(after)) if before != after || headers.get_all(header::COOKIE).iter().count() > 1 => {
            out.set.push((header::COOKIE, after.clone()));
        }
        _ => {}
    }
    for (name, value) in &grant.headers {
        out.set.push((name.clone(), value.clone()));
    }
    // The check request's headers may come in any order (gRPC's map): answer in one order.
    out.remove.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    out
}

/// What every answer idgate makes itself carries, as on the public listener.
fn finish(state: &State, resp: &mut Response<Body>, request_id: &str) {
    error::harden(resp, state.settings.hsts());
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
}

/// `431`, as the public listener answers headers over its limits.
fn too_large(state: &State, request_id: &str) -> Response<Body> {
    let mut resp = Response::builder()
        .status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        .body(body::empty())
        .unwrap_or_else(body::internal_error);
    finish(state, &mut resp, request_id);
    resp
}
