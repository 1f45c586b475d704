//! The callback: the state must match a flow cookie of this browser (consumed once), the code is redeemed with the
//! PKCE verifier, the ID token is validated (nonce included), and a new session replaces any old one.

use aws_lc_rs::digest::{SHA256, digest};
use http::{HeaderMap, Response, StatusCode, header};

use super::{LoginError, flow::FLOW_TTL_SECS, flow::Flows, param, query_params};
use crate::{
    app::State,
    body::{self, Body},
    config::Secret,
    session::{NewSession, SessionError},
    telemetry::metrics::Event,
};

/// `GET` on the redirect URL's path.
pub async fn callback(state: &State, req: &HeaderMap, query: Option<&str>) -> Result<Response<Body>, LoginError> {
    let params = query_params(query, &["state", "code", "iss", "error"])?;
    let flow_state = param(&params, "state").filter(|s| Flows::is_state(s));
    if let Some(error) = param(&params, "error") {
        // A silent attempt (prompt=none) that needs the user: start over interactively, to the same place.
        if let Some(flow) = flow_state.and_then(|s| state.flows.find(req, s)).filter(|f| f.silent)
            && matches!(
                error,
                "login_required" | "interaction_required" | "consent_required" | "account_selection_required"
            )
        {
            if flow.post {
                return super::preserved_post::restart(state, req, &flow).await.map_err(|e| match e {
                    super::preserved_post::PostError::Login(e) => e,
                    super::preserved_post::PostError::Store(e) => LoginError::Store(e),
                    _ => LoginError::UnknownState,
                });
            }
            let rd = url::form_urlencoded::byte_serialize(flow.return_to.as_bytes()).collect::<String>();
            let mut location = format!("{}/start?interactive=1&rd={rd}", state.routes.prefix());
            if let Some(name) = &flow.provider {
                location.push_str("&provider=");
                location.extend(url::form_urlencoded::byte_serialize(name.as_bytes()));
            }
            return Ok(Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .header(header::CACHE_CONTROL, "no-store")
                .header(header::SET_COOKIE, state.flows.end(&flow.state))
                .body(body::empty())
                .unwrap_or_else(body::internal_error));
        }
        return Err(LoginError::IdpError {
            error: error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect(),
            description: param(&params, "error_description").map(|d| d.chars().take(200).collect()),
        });
    }
    let flow_state = flow_state.ok_or(LoginError::MissingParameter("state"))?;
    let flow = state.flows.find(req, flow_state).ok_or(LoginError::UnknownState)?;
    let now = state.clock.now();
    if now - flow.created > FLOW_TTL_SECS {
        return Err(LoginError::FlowExpired);
    }
    // One use per state, even if the flow cookie is replayed with it.
    let mut first_use = false;
    state.used_states.get_with(flow.state.clone(), || {
        first_use = true;
    });
    if !first_use {
        return Err(LoginError::Replayed);
    }
    // The provider is the one this login went to, as its flow recorded: never taken from the answer (mix-up).
    let chosen = state.providers.recorded(flow.provider.as_deref()).ok_or(LoginError::UnknownState)?;
    let entry = state.providers.entry(chosen).ok_or(LoginError::UnknownState)?;
    redeem(state, req, &params, &flow, chosen, now).await.map_err(|e| e.at(&state.providers, entry))
}

/// The rest of the callback, at the flow's provider `chosen`: the answer's `iss`, the code, the ID token, userinfo,
/// and the new session.
async fn redeem(
    state: &State,
    req: &HeaderMap,
    params: &[(String, String)],
    flow: &super::flow::Flow,
    chosen: usize,
    now: i64,
) -> Result<Response<Body>, LoginError> {
    let entry = state.providers.entry(chosen).ok_or(LoginError::UnknownState)?;
    let provider = entry.provider();
    let metadata = provider.metadata()?;
    check_iss(param(params, "iss"), &metadata)?;
    let code = param(params, "code").ok_or(LoginError::MissingParameter("code"))?;
    let tokens = provider.redeem(code, flow.verifier.expose()).await?;
    let id_token = tokens.id_token.as_ref().map(Secret::expose).ok_or(LoginError::NoIdToken)?;
    // The JWS (decrypted when the issuer encrypts ID tokens) is what the session keeps.
    let (claims, id_token) = provider.validate_id_token(id_token, Some(&flow.nonce), now).await?;
    let id_token = id_token.as_str();
    crate::telemetry::span::set_user(claims.sub());
    let oidc = provider.settings();
    let access_token = tokens.access_token.as_ref().map(Secret::expose);
    let userinfo = match (oidc.userinfo_claims, access_token) {
        (true, Some(at)) => {
            let mut info = provider.userinfo(at, tokens.dpop_bound).await?;
            // R15: the profile must be the same user's (OpenID Connect Core §5.3.2).
            if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub()) {
                return Err(LoginError::UserinfoMismatch);
            }
            info.remove("sub");
            Some(info)
        }
        _ => None,
    };
    let new = NewSession {
        id_token,
        claims: &claims,
        refresh_token: tokens.refresh_token.as_ref().map(Secret::expose),
        access_token: if oidc.forward_access_token { access_token } else { None },
        nonce: Some(&flow.nonce),
        userinfo: userinfo.as_ref(),
        provider: state.providers.record(chosen),
    };
    let cookies = state.sessions.save(req, &new, now).await.map_err(|e| match e {
        SessionError::Store(e) => LoginError::Store(e),
        _ => LoginError::SessionTooLarge,
    })?;
    provider.metrics().event(Event::Login("success"));
    tracing::info!(
        target: "idgate::audit",
        event = "login",
        sub = claims.sub(),
        iss = %metadata.issuer,
        provider = %entry.name,
        session = %session_ref(id_token),
        expires_at = claims.exp(),
        "login succeeded"
    );
    if flow.post {
        return Ok(super::preserved_post::resume_page(state, req, flow, cookies).await);
    }
    let mut resp = Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, &flow.return_to)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::SET_COOKIE, state.flows.end(&flow.state));
    for c in cookies {
        resp = resp.header(header::SET_COOKIE, c);
    }
    Ok(resp.body(body::empty()).unwrap_or_else(body::internal_error))
}

/// RFC 9207: an `iss` parameter must name the issuer; and it must be there when discovery says the issuer sends
/// it (`authorization_response_iss_parameter_supported`), or a response made by another issuer could pass for one.
fn check_iss(iss: Option<&str>, metadata: &crate::oidc::Metadata) -> Result<(), LoginError> {
    match iss {
        Some(iss) if iss != metadata.issuer => Err(LoginError::IssuerMismatch),
        None if metadata.authorization_response_iss_parameter_supported => Err(LoginError::IssuerMissing),
        _ => Ok(()),
    }
}

/// A short, stable reference to a session for logs: a hash prefix of its ID token, never the token.
pub fn session_ref(id_token: &str) -> String {
    digest(&SHA256, id_token.as_bytes()).as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(advertised: bool) -> crate::oidc::Metadata {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://op.example.com", "authorization_endpoint": "https://op.example.com/a",
            "token_endpoint": "https://op.example.com/t", "jwks_uri": "https://op.example.com/k",
            "authorization_response_iss_parameter_supported": advertised,
        }))
        .unwrap()
    }

    #[test]
    fn iss_is_required_when_advertised_and_must_match_when_present() {
        let (yes, no) = (metadata(true), metadata(false));
        assert!(matches!(check_iss(None, &yes), Err(LoginError::IssuerMissing)));
        assert!(check_iss(None, &no).is_ok(), "not advertised: an absent iss is accepted");
        for m in [&yes, &no] {
            assert!(check_iss(Some("https://op.example.com"), m).is_ok());
            assert!(matches!(check_iss(Some("https://evil.example.com"), m), Err(LoginError::IssuerMismatch)));
        }
        let absent: crate::oidc::Metadata = serde_json::from_value(serde_json::json!({
            "issuer": "i", "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "k"
        }))
        .unwrap();
        assert!(check_iss(None, &absent).is_ok(), "discovery silent on RFC 9207: not required");
    }
}
