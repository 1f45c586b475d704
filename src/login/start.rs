//! Starting a login: a fresh state, nonce and PKCE (S256) verifier, sealed into a flow cookie; a 302 to the
//! issuer's authorization endpoint.

use aws_lc_rs::digest::{SHA256, digest};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::{LoginError, flow::Flow, redirect};
use crate::{
    app::State,
    body::{self, Body},
    random,
};

/// `GET {prefix}/start?rd=PATH`: begins a login that returns to `rd` (same-origin paths only). With
/// `session.silent_reauth`, the first attempt asks the issuer with `prompt=none`; `interactive` skips that.
pub async fn start(
    state: &State,
    req: &HeaderMap,
    rd: Option<&str>,
    interactive: bool,
) -> Result<Response<Body>, LoginError> {
    let flow = new_flow(state, rd, interactive);
    to_issuer(state, req, &flow, StatusCode::FOUND, Vec::new()).await
}

/// A fresh login flow returning to `rd` (made safe).
pub fn new_flow(state: &State, rd: Option<&str>, interactive: bool) -> Flow {
    Flow {
        state: random::token(16),
        nonce: random::token(16),
        verifier: crate::config::Secret::new(random::token(32)),
        return_to: redirect::safe(rd),
        created: state.clock.now(),
        silent: state.settings.session.silent_reauth && !interactive,
        post: false,
    }
}

/// The redirect (`status`: 302, or 303 after a POST) that sends the browser to the issuer for `flow`, setting its
/// flow cookie and the `extra` cookies.
pub async fn to_issuer(
    state: &State,
    req: &HeaderMap,
    flow: &Flow,
    status: StatusCode,
    extra: Vec<HeaderValue>,
) -> Result<Response<Body>, LoginError> {
    let metadata = state.provider.metadata()?;
    state.provider.check_reachable().await?;
    let oidc = state.provider.settings();
    let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, flow.verifier.expose().as_bytes()));
    let mut url = url::Url::parse(&metadata.authorization_endpoint)
        .map_err(|e| crate::oidc::ProviderError::BadDocument { what: "discovery", why: e.to_string() })?;
    let scope = oidc.scopes.join(" ");
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &oidc.client_id),
        ("redirect_uri", oidc.redirect_url.as_str()),
        ("scope", &scope),
        ("state", &flow.state),
        ("nonce", &flow.nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if flow.silent {
        params.push(("prompt", "none"));
    } else if oidc.scopes.iter().any(|s| s == "offline_access") {
        // Some issuers (oidc-provider among them) issue a refresh token only with explicit consent.
        params.push(("prompt", "consent"));
    }
    if state.provider.uses_par(&metadata) {
        // RFC 9126 §4: the browser carries only the client and the reference to the pushed request.
        let pushed = state.provider.push_authorization_request(&params).await?;
        url.query_pairs_mut().append_pair("client_id", &oidc.client_id).append_pair("request_uri", &pushed.request_uri);
    } else {
        url.query_pairs_mut().extend_pairs(&params);
    }
    let mut resp = Response::builder()
        .status(status)
        .header(header::LOCATION, url.as_str())
        .header(header::CACHE_CONTROL, "no-store");
    for c in state.flows.begin(req, flow).into_iter().chain(extra) {
        resp = resp.header(header::SET_COOKIE, c);
    }
    Ok(resp.body(body::empty()).unwrap_or_else(body::internal_error))
}
