//! The only place that orders the steps of a proxied or identity-bearing request:
//! session::open → policy::authorize → identity::strip + apply → one sink (forward, forward-auth answer, userinfo).

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::{
    app::State,
    body::{self, Body},
    config::AuthMode,
    error::RequestError,
    forward::Peer,
    id_token::Claims,
    login::refresh::{self, Renewal},
    route::{self, Route},
    session::{Session, SessionError},
};

/// A failed step, with any `Set-Cookie` that must go out with the error (clearing a dead session).
#[derive(Debug)]
pub struct Failure {
    pub err: RequestError,
    pub clear: Vec<HeaderValue>,
}

impl<E: Into<RequestError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { err: e.into(), clear: Vec::new() }
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// A proxied path: public routes skip the session but not the stripping.
pub async fn proxy(
    state: &State,
    req: Request<Incoming>,
    peer: Peer,
    auth: AuthMode,
    rule: Option<usize>,
) -> Result<Response<Body>> {
    let mut req = state.forwarder.begin(req)?; // hop-by-hop headers go first: nothing after may remove ours
    refuse_id_token_bearer(state, req.headers())?;
    if auth == AuthMode::Public {
        state.headers.strip(req.headers_mut());
        return Ok(state.forwarder.send(req, peer).await?);
    }
    let (session, cookies) = open(state, req.headers()).await?;
    let permit = state.rules.authorize(rule, session.claims())?;
    let headers = req.headers_mut();
    state.headers.strip(headers);
    state.headers.apply(headers, session.claims(), &permit, session.identity_memo());
    if let Some(at) = session.access_token()
        && let Ok(v) = HeaderValue::from_str(at)
    {
        headers.insert("x-forwarded-access-token", v);
    }
    let started = tokio::time::Instant::now();
    let resp = state.forwarder.send(req, peer).await;
    state.metrics.upstream_latency(started.elapsed());
    if let Err(e) = &resp {
        state.metrics.event(crate::telemetry::metrics::Event::UpstreamError(e.kind()));
    }
    Ok(with_cookies(resp?, cookies))
}

/// Forward-auth (`{prefix}/auth`) for nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz`: 200 with the
/// identity headers, 401 without a session, 403 when the route's rule denies. The original URI is believed only
/// from trusted proxies.
pub async fn forward_auth(state: &State, headers: &HeaderMap, peer: Peer) -> Result<Response<Body>> {
    let original = state
        .forwarder
        .is_trusted(peer.ip)
        .then(|| headers.get("x-forwarded-uri").or_else(|| headers.get("x-original-uri")))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("/");
    let path = route::normalize(original)?;
    let Route::Proxy { auth, rule } = state.routes.rule_for(&path) else {
        return Err(RequestError::BadRequest("forward-auth target is an idgate endpoint").into());
    };
    if auth == AuthMode::Public {
        return Ok(empty(StatusCode::OK));
    }
    refuse_id_token_bearer(state, headers)?;
    let (session, cookies) = open(state, headers).await?;
    let permit = state.rules.authorize(rule, session.claims())?;
    let mut resp = empty(StatusCode::OK);
    state.headers.apply(resp.headers_mut(), session.claims(), &permit, session.identity_memo());
    Ok(with_cookies(resp, cookies))
}

/// `{prefix}/userinfo`: the session's claims as JSON, never a token.
pub async fn userinfo(state: &State, headers: &HeaderMap) -> Result<Response<Body>> {
    let (session, cookies) = open(state, headers).await?;
    let text = serde_json::to_string(session.claims().as_map()).unwrap_or_else(|_| "{}".into());
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(text))
        .expect("static response parts are valid");
    Ok(with_cookies(resp, cookies))
}

/// Opens the session and renews it when due. Returns the session and any `Set-Cookie` values the renewal made.
async fn open(state: &State, headers: &HeaderMap) -> Result<(Session, Vec<HeaderValue>)> {
    let now = state.clock.now();
    let session = match state.sessions.open(headers, now).await {
        Ok(s) => s,
        Err(SessionError::Store(e)) => {
            state.metrics.event(crate::telemetry::metrics::Event::StoreError("open"));
            return Err(RequestError::Store(e).into());
        }
        Err(cause) => {
            let clear = if matches!(cause, SessionError::Missing) { Vec::new() } else { state.sessions.clear(headers) };
            return Err(Failure { err: RequestError::NoSession(cause), clear });
        }
    };
    match refresh::renew_if_due(state, headers, session, now).await {
        Renewal::Keep(s) => Ok((s, Vec::new())),
        Renewal::Renewed(s, cookies) => Ok((s, cookies)),
        Renewal::Ended(SessionError::Store(e)) => Err(RequestError::Store(e).into()),
        Renewal::Ended(cause) => {
            let clear = state.sessions.end(headers).await.unwrap_or_else(|_| state.sessions.clear(headers));
            Err(Failure { err: RequestError::NoSession(cause), clear })
        }
    }
}

fn with_cookies(mut resp: Response<Body>, cookies: Vec<HeaderValue>) -> Response<Body> {
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn empty(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(body::empty()).expect("static response parts are valid")
}

/// R14: an ID token is not an API credential. A bearer JWT whose claims say it is an ID token of this client (our
/// issuer, our client id in `aud`, and not typed as an access token) is refused before anything is forwarded.
fn refuse_id_token_bearer(state: &State, headers: &HeaderMap) -> Result<()> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| v[7..].trim()))
    else {
        return Ok(());
    };
    if looks_like_our_id_token(token, &state.provider.settings().issuer, &state.provider.settings().client_id) {
        return Err(RequestError::IdTokenAsBearer.into());
    }
    Ok(())
}

fn looks_like_our_id_token(token: &str, issuer: &str, client_id: &str) -> bool {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let decode =
        |s: &str| URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let (Some(header), Some(claims)) = (decode(h), decode(p)) else {
        return false;
    };
    let typ = header.get("typ").and_then(|t| t.as_str()).unwrap_or("").to_ascii_lowercase();
    if typ == "at+jwt" || typ == "application/at+jwt" {
        return false;
    }
    let Some(map) = claims.as_object() else { return false };
    let claims = Claims::new(map.clone());
    claims.get("iss").and_then(|v| v.as_str()) == Some(issuer) && claims.values("aud").iter().any(|a| a == client_id)
}
