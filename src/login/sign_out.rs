//! Sign-out. `GET` shows a confirmation form; only its `POST`, carrying a token sealed for this browser's session,
//! signs out — so a third-party page cannot log users out with an image tag. Every idgate cookie is cleared, then
//! the browser goes to the issuer's `end_session_endpoint` (with `id_token_hint`) when it publishes one, otherwise
//! to `rd`.
//!
//! The session's refresh token is revoked at the issuer first (RFC 7009, when discovery names a
//! `revocation_endpoint`), so no copy of the session can be refreshed anywhere; a cookie session is also remembered
//! as signed out by this process until its `exp` (see [`crate::session::signed_out`]).

use http::{HeaderMap, Method, Response, StatusCode, header};

use super::{LoginError, callback::session_ref, param, query_params, redirect};
use crate::{
    app::State,
    body::{self, Body},
    error::html_page,
    random,
    telemetry::metrics::Event,
};

const CSRF_NAME: &str = "idgate-sign-out";
const CSRF_TTL_SECS: i64 = 600;

/// `GET|POST {prefix}/sign_out?rd=PATH`. `form` is the POST body (form-urlencoded).
pub async fn sign_out(
    state: &State,
    method: &Method,
    req: &HeaderMap,
    query: Option<&str>,
    form: &[u8],
) -> Result<Response<Body>, LoginError> {
    let session = state.sessions.open(req, state.clock.now()).await.ok();
    let binding = session.as_ref().map(|s| session_ref(s.id_token_hint())).unwrap_or_else(|| "-".into());
    let params = query_params(query, &["rd"])?;
    let rd = redirect::safe(param(&params, "rd"));
    let now = state.clock.now();
    if method != Method::POST {
        let token = state.flows.ring.seal(CSRF_NAME, format!("{now}:{binding}").as_bytes());
        let form = format!(
            "<form method=\"post\" action=\"{}/sign_out?rd={}\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <button type=\"submit\">Sign out</button></form>",
            state.routes.prefix(),
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        return Ok(html_page(StatusCode::OK, "Sign out", "Do you want to sign out?", &form));
    }
    let fields = query_params(Some(std::str::from_utf8(form).unwrap_or("")), &["csrf"])?;
    let token_ok = param(&fields, "csrf")
        .and_then(|t| state.flows.ring.open(CSRF_NAME, t).ok())
        .and_then(|plain| String::from_utf8(plain).ok())
        .and_then(|text| {
            let (issued, bound) = text.split_once(':')?;
            let issued: i64 = issued.parse().ok()?;
            (bound == binding && now - issued <= CSRF_TTL_SECS && issued <= now + 60).then_some(())
        })
        .is_some();
    if !token_ok {
        return Err(LoginError::BadCsrf);
    }
    let mut location = rd.clone();
    // The session's own provider ends it at the issuer (RP-initiated logout, revocation).
    let provider = session
        .as_ref()
        .and_then(|s| state.providers.recorded(s.provider()))
        .and_then(|i| state.providers.entry(i))
        .map(|e| std::sync::Arc::clone(e.provider()));
    if let (Some(s), Some(p)) = (&session, &provider)
        && let Ok(m) = p.metadata()
        && let Some(end) = m.end_session_endpoint.as_deref().and_then(|e| url::Url::parse(e).ok())
    {
        let mut end = end;
        {
            let mut q = end.query_pairs_mut();
            q.append_pair("id_token_hint", s.id_token_hint());
            q.append_pair("client_id", &p.settings().client_id);
            if let Some(post) = &p.settings().post_logout_redirect_url {
                q.append_pair("post_logout_redirect_uri", post.as_str());
            }
            q.append_pair("state", &random::token(16));
        }
        location = end.into();
    }
    if let Some(s) = &session {
        let revoked = match &provider {
            Some(p) => revoke(p, s).await,
            None => false,
        };
        state.sessions.sign_out(s, now);
        provider.as_ref().map_or(&*state.metrics, |p| p.metrics()).event(Event::SignOut("rp_initiated"));
        tracing::info!(target: "idgate::audit", event = "logout", sub = s.claims().sub(), session = %binding, refresh_token_revoked = revoked, "signed out");
    }
    let mut resp = Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store");
    let cleared = state.sessions.end(req).await?;
    for c in cleared.into_iter().chain(state.flows.end_all(req)) {
        resp = resp.header(header::SET_COOKIE, c);
    }
    Ok(resp.body(body::empty()).unwrap_or_else(body::internal_error))
}

/// Revokes the session's refresh token at the issuer. Returns whether it is known to be revoked. A failure does not
/// stop the sign-out; it is logged, since a copy of a cookie session could then still be refreshed elsewhere.
async fn revoke(provider: &crate::oidc::Provider, session: &crate::session::Session) -> bool {
    let Some(rt) = session.refresh_token() else { return false };
    match provider.revoke_refresh_token(rt).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!("the issuer has no revocation_endpoint: the refresh token stays valid at the issuer");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not revoke the refresh token at sign-out");
            false
        }
    }
}
