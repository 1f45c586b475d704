//! Envoy's HTTP `ext_authz` shape: Envoy sends the original request's method and headers to
//! `{prefix}/auth/<original path and query>` (its `path_prefix` set to `{prefix}/auth`). Only a caller in
//! `server.trusted_proxies` is believed. An allowed request gets `200` (never `202`, which Envoy reads as a
//! denial) with the headers to set, `x-envoy-auth-headers-to-remove` and any `Set-Cookie`; a denied one gets the
//! answer the proxy path would give, which Envoy passes to the client.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use super::{Check, Verdict};
use crate::{
    app::State,
    body::{self, Body},
    error::{self, Context, RequestError},
    forward::Peer,
    route, telemetry,
};

/// The header in which Envoy's HTTP service reads the names to remove from the upstream request.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// The original target in a request to `{prefix}/auth/<original path>`: `/<original path>[?query]` as received
/// (not normalised: the path Envoy forwards is these bytes). `None` for every other request.
pub fn original_target<'a>(prefix: &str, uri: &'a Uri) -> Option<&'a str> {
    let rest = uri.path_and_query()?.as_str().strip_prefix(prefix)?.strip_prefix("/auth")?;
    rest.starts_with('/').then_some(rest)
}

/// Answers one Envoy HTTP check for `target`.
pub async fn check(state: &State, method: &Method, headers: &HeaderMap, peer: &Peer, target: &str) -> Response<Body> {
    if !state.forwarder.is_trusted(peer.ip) {
        let request_id = telemetry::request_id(headers);
        let err = RequestError::ForwardAuthTarget(
            "the caller of the ext_authz path shape is not in server.trusted_proxies, so its path is not believed",
        );
        let ctx = Context {
            kind: route::kind(method, headers),
            may_redirect: false,
            return_to: "/",
            prefix: state.routes.prefix(),
            clear: Vec::new(),
            request_id: &request_id,
        };
        let mut resp = error::respond(&err, ctx);
        super::finish(state, &mut resp, &request_id);
        return resp;
    }
    match super::check(state, Check { method, target, headers, peer }).await {
        Verdict::Deny(resp) => resp,
        Verdict::Allow(allow) => {
            let mut resp =
                Response::builder().status(StatusCode::OK).body(body::empty()).unwrap_or_else(body::internal_error);
            let h = resp.headers_mut();
            for (name, value) in allow.set {
                h.append(name, value);
            }
            let names: Vec<&str> = allow.remove.iter().map(|n| n.as_str()).collect();
            if let Ok(v) = HeaderValue::from_str(&names.join(", "))
                && !names.is_empty()
            {
                h.insert(HEADERS_TO_REMOVE, v);
            }
            for c in allow.set_cookie {
                h.append(header::SET_COOKIE, c);
            }
            super::finish(state, &mut resp, &telemetry::request_id(headers));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_prefix_shape_has_an_original_target() {
        let t = |s: &str| original_target("/oauth2", &s.parse::<Uri>().unwrap()).map(str::to_owned);
        assert_eq!(t("/oauth2/auth/app/x?q=1").as_deref(), Some("/app/x?q=1"));
        assert_eq!(t("/oauth2/auth/").as_deref(), Some("/"));
        assert_eq!(t("/oauth2/auth/../admin").as_deref(), Some("/../admin"), "kept raw, refused later");
        assert_eq!(t("/oauth2/auth"), None, "the classic forward-auth endpoint");
        assert_eq!(t("/oauth2/auth?x=/y"), None);
        assert_eq!(t("/oauth2/authx/y"), None);
        assert_eq!(t("/app/oauth2/auth/x"), None);
    }
}
