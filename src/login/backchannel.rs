//! OpenID Connect Back-Channel Logout 1.0: the issuer POSTs a `logout_token`; once it validates (signature, `iss`,
//! `aud`, `iat` at most [`MAX_AGE_SECS`] old, `events`, no `nonce`, a `jti` never seen before by any replica
//! sharing the store), every session of its `sid` — or of its `sub` when it names no `sid` — whose login is not
//! newer than the token ends in the server-side store. With the cookie store nothing can be ended: 501.

use aws_lc_rs::digest::{SHA256, digest};
use http::{HeaderMap, Method, Response, StatusCode, header};

use super::{param, query_params};
use crate::{app::State, body::Body, error::json, id_token::Claims, oidc::TokenError, telemetry::metrics::Event};

/// A logout token issued longer ago than this (plus the leeway) is refused, whatever its `exp`: a replay of an old
/// token, captured or logged somewhere, ends nothing.
pub const MAX_AGE_SECS: i64 = 300;

/// How long a logout token with `claims` stays acceptable from `now`: its `jti` must be remembered that long. Fails
/// when it is already too old.
fn acceptable_for(claims: &Claims, now: i64, leeway: i64) -> Result<u64, &'static str> {
    let iat = claims.get("iat").and_then(|v| v.as_i64()).ok_or("no iat")?;
    let mut until = iat + MAX_AGE_SECS + leeway;
    if until < now {
        return Err("issued too long ago (iat)");
    }
    if let Some(exp) = claims.get("exp").and_then(|v| v.as_i64()) {
        until = until.min(exp + leeway);
    }
    Ok((until - now).max(1) as u64)
}

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
    // The token's `iss` picks the provider (several may share an issuer: the first whose checks pass, `aud`
    // among them); the token is then validated by that provider's keys and rules like any other.
    let iss = unverified_iss(token);
    let candidates: Vec<usize> = match &iss {
        Some(iss) => state.providers.by_issuer(iss).collect(),
        None => (0..state.providers.entries().len()).collect(),
    };
    let mut outcome = Err(TokenError::Rejected(crate::id_token::Rejection::WrongIssuer));
    let mut chosen = None;
    for i in candidates {
        let Some(entry) = state.providers.entry(i) else { continue };
        outcome = entry.provider().validate_logout_token(token, now).await;
        if outcome.is_ok() {
            chosen = Some(i);
            break;
        }
    }
    let (claims, chosen) = match outcome.map(|c| (c, chosen)) {
        Ok((c, Some(i))) => (c, i),
        Ok((_, None)) => return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token rejected"),
        Err(TokenError::Rejected(r)) => {
            tracing::info!(reason = r.reason(), error = %r, "logout token rejected");
            return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token rejected");
        }
        Err(TokenError::Provider(e)) => {
            tracing::warn!(error = %e, "cannot validate a logout token: issuer unavailable");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "issuer keys unavailable");
        }
    };
    let Some(entry) = state.providers.entry(chosen) else {
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token rejected");
    };
    let leeway = entry.provider().settings().leeway.as_secs() as i64;
    let remember_secs = match acceptable_for(&claims, now, leeway) {
        Ok(secs) => secs,
        Err(why) => {
            tracing::info!(reason = "too_old", error = why, max_age_secs = MAX_AGE_SECS, "logout token rejected");
            return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token too old");
        }
    };
    let jti = claims.get("jti").and_then(|j| j.as_str()).unwrap_or_default().to_owned();
    let mut fresh = false;
    state.logout_jtis.get_with(jti.clone(), || fresh = true);
    if !fresh {
        tracing::info!(jti = %jti, "logout token replayed");
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token replayed");
    }
    // Every replica sharing the store sees the same jtis.
    let once = format!("jti:{}", crate::session::store::hex(&jti_hash(&jti)));
    match store.first_use(&once, remember_secs).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(jti = %jti, "logout token replayed (already used at another replica)");
            return answer(StatusCode::BAD_REQUEST, "invalid_request", "logout token replayed");
        }
        Err(e) => {
            state.logout_jtis.invalidate(&jti);
            tracing::error!(error = %e, "back-channel logout could not reach the session store");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "session store unavailable");
        }
    }
    // Sessions are indexed within their provider: the same `sub` at another issuer is someone else.
    let scope = state.providers.record(chosen);
    let sid = claims.get("sid").and_then(|v| v.as_str());
    let sub = claims.get("sub").and_then(|v| v.as_str());
    let (sid_key, sub_key) =
        (sid.map(|v| crate::session::scoped(scope, v)), sub.map(|v| crate::session::scoped(scope, v)));
    let iat = claims.get("iat").and_then(|v| v.as_i64()).unwrap_or(i64::MIN);
    match store.delete_owned(sid_key.as_deref(), sub_key.as_deref(), iat).await {
        Ok(done) => {
            entry.provider().metrics().event(Event::SignOut("backchannel"));
            if done.kept_newer > 0 {
                tracing::info!(
                    jti = %jti,
                    kept = done.kept_newer,
                    "logout token older than the login of some sessions it names: those sessions kept"
                );
            }
            tracing::info!(target: "idgate::audit", event = "backchannel_logout", sub = sub.unwrap_or(""), sid = sid.unwrap_or(""), jti = %jti, sessions = done.ended, kept_newer = done.kept_newer, "sessions ended by the issuer");
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

/// The `iss` a logout token claims, read before validation only to pick the provider that validates it (a JWE's
/// protected header has none: then the one provider with `[oidc]`, or every provider, is tried).
fn unverified_iss(token: &str) -> Option<String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn jti_hash(jti: &str) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.copy_from_slice(digest(&SHA256, jti.as_bytes()).as_ref());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: serde_json::Value) -> Claims {
        Claims::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn old_logout_tokens_are_refused_and_fresh_ones_remembered_while_acceptable() {
        let now = 1_800_000_000;
        assert_eq!(acceptable_for(&claims(serde_json::json!({"iat": now})), now, 60), Ok(360));
        assert_eq!(acceptable_for(&claims(serde_json::json!({"iat": now - 360})), now, 60), Ok(1), "at the edge");
        assert!(acceptable_for(&claims(serde_json::json!({"iat": now - 361})), now, 60).is_err(), "too old");
        assert!(
            acceptable_for(&claims(serde_json::json!({"iat": now - 3600, "exp": now + 3600})), now, 60).is_err(),
            "a far exp does not rescue an old iat"
        );
        assert_eq!(
            acceptable_for(&claims(serde_json::json!({"iat": now, "exp": now + 30})), now, 60),
            Ok(90),
            "an exp sooner than the age cap ends the window"
        );
        assert!(acceptable_for(&claims(serde_json::json!({})), now, 60).is_err());
    }
}
