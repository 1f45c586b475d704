//! OpenID Connect Back-Channel Logout 1.0: the issuer POSTs a `logout_token`; once it validates (signature, `iss`,
//! `aud`, `iat`, `events`, no `nonce`, a `jti` never seen before), every session of its `sid` — or of its `sub`
//! when it names no `sid` — ends in the server-side store. With the cookie store nothing can be ended: 501.

use http::{HeaderMap, Method, Response, StatusCode, header};

use super::{param, query_params};
use crate::{app::State, body::Body, error::json, oidc::TokenError, telemetry::metrics::Event};

/// `POST {prefix}/backchannel_logout` with `logout_token` in a form body.
pub async fn backchannel_logout(state: &State, method: &Method, headers: &HeaderMap, form: &[u8]) -> Response<Body> {
    let answer = |status: StatusCode, error: &str, why: &str| json(status, error, why);
    if method != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "POST a logout_token");
    }
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "expected a form body");
    }
    let Some(store) = state.sessions.store() else {
        tracing::warn!(
            "back-channel logout received, but cookie sessions cannot be ended server-side (use session.store = memory or redis)"
        );
        return answer(StatusCode::NOT_IMPLEMENTED, "unsupported", "sessions are kept in cookies here");
    };
    let Ok(fields) = query_params(Some(std::str::from_utf8(form).unwrap_or("")), &["logout_token"]) else {
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout_token given more than once");
    };
    let Some(token) = param(&fields, "logout_token") else {
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout_token missing");
    };
    let now = state.clock.now();
    let claims = match state.provider.validate_logout_token(token, now).await {
        Ok(c) => c,
        Err(TokenError::Rejected(r)) => {
            tracing::info!(reason = r.reason(), error = %r, "logout token rejected");
            return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token rejected");
        }
        Err(TokenError::Provider(e)) => {
            tracing::warn!(error = %e, "cannot validate a logout token: issuer unavailable");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "issuer keys unavailable");
        }
    };
    let jti = claims.get("jti").and_then(|j| j.as_str()).unwrap_or_default().to_owned();
    let mut fresh = false;
    state.logout_jtis.get_with(jti.clone(), || fresh = true);
    if !fresh {
        tracing::info!(jti = %jti, "logout token replayed");
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token replayed");
    }
    let sid = claims.get("sid").and_then(|v| v.as_str());
    let sub = claims.get("sub").and_then(|v| v.as_str());
    match store.delete_owned(sid, sub).await {
        Ok(n) => {
            state.metrics.event(Event::SignOut("backchannel"));
            tracing::info!(target: "idgate::audit", event = "backchannel_logout", sub = sub.unwrap_or(""), sid = sid.unwrap_or(""), jti = %jti, sessions = n, "sessions ended by the issuer");
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CACHE_CONTROL, "no-store")
                .body(crate::body::empty())
                .unwrap_or_else(crate::body::internal_error)
        }
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout could not reach the session store");
            answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "session store unavailable")
        }
    }
}
