//! The only place that orders the steps of a proxied or identity-bearing request:
//! session::open → policy::authorize → identity::strip + apply → one sink (forward, forward-auth answer, userinfo).

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use crate::{
    app::State,
    body::{self, Body},
    config::AuthMode,
    error::RequestError,
    forward::{Inbound, Peer},
    id_token::Claims,
    login::{
        preserved_post::{self, Intake, PostError},
        refresh::{self, Renewal},
    },
    policy::Permit,
    providers::Allowed,
    route::{BadPath, Route},
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

/// What [`authenticate`] found: a public route needs nobody; anything else has a session, or a bearer access token,
/// that satisfied its rule.
enum Access {
    Public,
    User(User),
    Bearer(TokenUser),
}

/// A bearer access token that passed its route's rule: its claims and the token (forwarded only with
/// `oidc.forward_access_token`).
struct TokenUser {
    claims: Claims,
    permit: Permit,
    token: String,
}

/// A session that passed its route's rule, with any `Set-Cookie` values its renewal made.
struct User {
    session: Session,
    permit: Permit,
    cookies: Vec<HeaderValue>,
    /// The session's provider (registry index): allowed for this route and host.
    provider: usize,
}

/// The one authentication step of every sink (proxy, forward-auth, userinfo), in one order: an ID token presented
/// as a credential is refused (whatever the route), a public route needs nothing more, otherwise the session is
/// opened, its provider must be allowed for this route on this `host`, it is renewed when due, and the route's rule
/// decides.
async fn authenticate(
    state: &State,
    headers: &HeaderMap,
    auth: AuthMode,
    rule: Option<usize>,
    host: Option<&str>,
) -> Result<Access> {
    refuse_id_token_bearer(state, headers).inspect_err(|_| {
        if state.bearer.is_some() {
            state.metrics.event(crate::telemetry::metrics::Event::Bearer("id_token"));
        }
    })?;
    if auth == AuthMode::Public {
        return Ok(Access::Public);
    }
    let allowed = state.providers.allowed(rule, host);
    // Bearer access tokens: on API routes, and on login routes when no session cookie is sent.
    if let Some(bearer) = state.bearer.as_deref()
        && (auth == AuthMode::Api || !has_session_cookie(state, headers))
    {
        let count = |r: &'static str| state.metrics.event(crate::telemetry::metrics::Event::Bearer(r));
        if let Some(token) = crate::bearer::presented(headers).inspect_err(|r| count(r.reason()))? {
            let claims = bearer
                .authenticate(bearer_issuer(state, &allowed), token, state.clock.now())
                .await
                .inspect_err(|r| count(r.reason()))?;
            let permit = state.rules.authorize_bearer(rule, &claims).inspect_err(|d| count(d.requirement))?;
            count("accepted");
            crate::telemetry::span::set_user(claims.sub());
            return Ok(Access::Bearer(TokenUser { claims, permit, token: token.to_owned() }));
        }
    }
    let (session, cookies, provider) = open(state, headers, allowed).await?;
    crate::telemetry::span::set_user(session.claims().sub());
    let permit = state.rules.authorize(rule, session.claims())?;
    Ok(Access::User(User { session, permit, cookies, provider }))
}

/// The issuer whose access tokens a request may present: the one provider allowed for it, else the first
/// (`[oidc]`'s). A token of any other issuer is then refused (its `iss` differs).
fn bearer_issuer<'a>(state: &'a State, allowed: &Allowed) -> &'a crate::oidc::Provider {
    allowed.only().and_then(|i| state.providers.entry(i)).map_or(&state.provider, |e| e.provider())
}

/// A proxied path: public routes skip the session but not the stripping.
pub async fn proxy(
    state: &State,
    req: Request<Body>,
    peer: Peer,
    auth: AuthMode,
    rule: Option<usize>,
) -> Result<Response<Body>> {
    let host = crate::app::request_host(state, &req, &peer);
    let mut req = state.forwarder.begin(req)?; // hop-by-hop headers go first: nothing after may remove ours
    crate::telemetry::trace::propagate(req.headers_mut(), state.forwarder.is_trusted(peer.ip));
    let access = match authenticate(state, req.headers(), auth, rule, host.as_deref()).await {
        Err(Failure { err: RequestError::NoSession(cause), clear }) if auth == AuthMode::Login => {
            // Boxed, as every cold branch of a request: the logged-in request's future stays small (see `app`).
            let allowed = state.providers.allowed(rule, host.as_deref());
            return Box::pin(keep_post(state, req, cause, clear, allowed)).await;
        }
        other => other?,
    };
    let user = match access {
        Access::Public => {
            state.headers.strip(req.headers_mut());
            return Ok(send(state, req, peer).await?);
        }
        Access::Bearer(TokenUser { claims, permit, token }) => {
            let headers = req.headers_mut();
            state.headers.strip(headers);
            state.headers.apply(headers, &claims, &permit, &crate::identity::Memo::new());
            if state.settings.oidc.forward_access_token {
                if let Ok(v) = HeaderValue::from_str(&token) {
                    headers.insert("x-forwarded-access-token", v);
                }
            } else {
                // The token is the client's credential for idgate, not the application's.
                headers.remove(header::AUTHORIZATION);
            }
            return Ok(send(state, req, peer).await?);
        }
        Access::User(user) => user,
    };
    let User { session, permit, mut cookies, provider } = user;
    if state.posts.is_resume(req.method(), req.headers()) {
        match preserved_post::resume(state, &mut req, state.clock.now()).await {
            Ok(clear) => cookies.extend(clear),
            Err(e) => return Err(refused_post(state, e, Vec::new())),
        }
    }
    let assertion = assertion_for(state, req.headers(), req.authority(), &peer, rule, &session);
    let headers = req.headers_mut();
    state.headers.strip(headers);
    state.headers.apply(headers, session.claims(), &permit, session.identity_memo());
    state.providers.apply_issuer_header(headers, provider);
    if let Some((name, value)) = assertion {
        headers.insert(name, value);
    }
    if let Some(at) = session.access_token()
        && let Ok(v) = HeaderValue::from_str(at)
    {
        headers.insert("x-forwarded-access-token", v);
    }
    let started = tokio::time::Instant::now();
    let resp = send(state, req, peer).await;
    state.metrics.upstream_latency(started.elapsed());
    if let Err(e) = &resp {
        state.metrics.event(crate::telemetry::metrics::Event::UpstreamError(e.kind()));
    }
    Ok(with_cookies(resp?, cookies))
}

/// The proxy hop, its time to the upstream's answer head on the request span (`idgate.upstream.duration_ms`).
async fn send(
    state: &State,
    req: Inbound,
    peer: Peer,
) -> std::result::Result<Response<Body>, crate::forward::UpstreamError> {
    let timer = crate::telemetry::span::timer();
    let resp = state.forwarder.send(req, peer).await;
    if let Some(started) = timer {
        crate::telemetry::span::set("idgate.upstream.duration_ms", || started.elapsed().as_secs_f64() * 1e3);
    }
    resp
}

/// A request without a session on a `login` route: a form post the browser made here is kept over the re-login
/// (`login::preserved_post`); anything else fails with `cause` as before.
async fn keep_post(
    state: &State,
    req: Inbound,
    cause: SessionError,
    clear: Vec<HeaderValue>,
    allowed: Allowed,
) -> Result<Response<Body>> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match state.posts.intake(req.method(), target, req.headers()) {
        Intake::Ignore(why) => {
            if req.method() == http::Method::POST {
                tracing::debug!(cause = why, "post without a session not kept");
            }
            Err(Failure { err: RequestError::NoSession(cause), clear })
        }
        Intake::TooLarge(len) => {
            Err(refused_post(state, PostError::TooLarge { len: Some(len), max: state.posts.max_bytes() }, clear))
        }
        // Several providers allowed here: the browser must choose first (the chooser page), so the post is not kept.
        Intake::Preserve if allowed.only().is_none() => Err(Failure { err: RequestError::NoSession(cause), clear }),
        Intake::Preserve => match preserved_post::preserve(
            state,
            req.into_request(),
            allowed.only().and_then(|i| state.providers.record(i)),
        )
        .await
        {
            Ok(resp) => Ok(with_cookies(resp, clear)),
            Err(e) => Err(refused_post(state, e, clear)),
        },
    }
}

/// A kept form post refused, counted by its reason.
fn refused_post(state: &State, e: PostError, clear: Vec<HeaderValue>) -> Failure {
    state.metrics.event(crate::telemetry::metrics::Event::PreservedPost(e.reason()));
    Failure { err: e.into(), clear }
}

/// Forward-auth (`{prefix}/auth`) for nginx `auth_request`, Traefik `forwardAuth`, ingress-nginx: 200 with the
/// identity headers, 401 without a session, 403 when the route's rule denies or the original URI is unknown or
/// ambiguous. The original URI is believed only from trusted proxies.
pub async fn forward_auth(state: &State, headers: &HeaderMap, peer: Peer) -> Result<Response<Body>> {
    // No route rules: every path has the default rule, so the URI does not matter.
    let (auth, rule) = forward_auth_target(state, headers, &peer)?.unwrap_or((AuthMode::Login, None));
    let host = state.providers.host(headers, None, state.forwarder.is_trusted(peer.ip));
    let mut resp = empty(StatusCode::OK);
    // The proxy in front forwards the request itself: it replaces `Cookie` with this, so idgate's sealed session
    // never reaches the application (empty: no cookie is left).
    let app_cookies = state.headers.app_cookies(headers).unwrap_or(HeaderValue::from_static(""));
    resp.headers_mut().insert(APP_COOKIE_HEADER, app_cookies);
    let cookies = match authenticate(state, headers, auth, rule, host.as_deref()).await? {
        Access::Public => Vec::new(),
        Access::Bearer(TokenUser { claims, permit, .. }) => {
            state.headers.apply(resp.headers_mut(), &claims, &permit, &crate::identity::Memo::new());
            Vec::new()
        }
        Access::User(User { session, permit, cookies, provider }) => {
            state.headers.apply(resp.headers_mut(), session.claims(), &permit, session.identity_memo());
            state.providers.apply_issuer_header(resp.headers_mut(), provider);
            // The proxy in front copies it onto the request it forwards, as the claim headers.
            if let Some((name, value)) = assertion_for(state, headers, None, &peer, rule, &session) {
                resp.headers_mut().insert(name, value);
            }
            cookies
        }
    };
    Ok(with_cookies(resp, cookies))
}

/// The identity assertion (`[assertion]`) for `session`, signed for the route's `audience`, else
/// `assertion.audience`, else the host the application sees (`X-Forwarded-Host` from trusted proxies only). `None`
/// when the assertion is off. `request` is read before any identity header is written.
fn assertion_for(
    state: &State,
    request: &HeaderMap,
    authority: Option<&str>,
    peer: &Peer,
    rule: Option<usize>,
    session: &Session,
) -> Option<(http::HeaderName, HeaderValue)> {
    use crate::assertion::{Subject, app_host};
    let signer = state.assertions.as_deref()?;
    let route = rule.and_then(|i| state.settings.routes.get(i)).and_then(|r| r.audience.as_deref());
    let host = match route {
        Some(_) => None,
        None => app_host(request, authority, state.forwarder.is_trusted(peer.ip)),
    };
    let audience = signer.audience(route, host.as_deref())?;
    let who = Subject { claims: session.claims(), login_id: session.login().id(), expires_at: session.expires_at() };
    let value = signer.value(who, audience, state.clock.now())?;
    Some((signer.header().clone(), value))
}

/// The forward-auth answer's header with the request's cookies less idgate's.
const APP_COOKIE_HEADER: &str = "x-idgate-cookie";

/// Headers a proxy in front names the original request's URI in: Traefik, the nginx snippet, ingress-nginx.
const ORIGINAL_URI_HEADERS: [&str; 3] = ["x-forwarded-uri", "x-original-uri", "x-original-url"];

/// The route (auth mode and rule) of the request a forward-auth call asks about, or `None` when no route rules exist
/// (then the path cannot change the decision). Denied when it cannot be known for sure: a peer outside
/// `server.trusted_proxies`, no original-URI header, headers that disagree, a `#`, or a URI the proxy in front
/// would forward in another reading than idgate's (idgate cannot rewrite it there: it must already be normal).
fn forward_auth_target(state: &State, headers: &HeaderMap, peer: &Peer) -> Result<Option<(AuthMode, Option<usize>)>> {
    if !state.routes.has_rules() {
        return Ok(None);
    }
    let deny = |why: &'static str| Err(Failure::from(RequestError::ForwardAuthTarget(why)));
    if !state.forwarder.is_trusted(peer.ip) {
        return deny("the forward-auth caller is not in server.trusted_proxies, so its original URI is not believed");
    }
    let mut found: Option<String> = None;
    for name in ORIGINAL_URI_HEADERS {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return deny("an original-URI header appears more than once");
        }
        let Ok(text) = value.to_str() else { return deny("an original-URI header is not ASCII") };
        // The path as sent, not as a URL parser would resolve it: the proxy forwards these very bytes.
        let target = if name == "x-original-url" {
            match text.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])) {
                Some(target) => target,
                None => return deny("X-Original-URL is not an absolute URL"),
            }
        } else {
            text
        };
        // A request target never holds a `#`; some applications (Go's file server) read it as a path character
        // and resolve the dots after it, so a URI with one cannot be vouched for.
        if target.contains('#') {
            return deny("the original URI contains '#'");
        }
        match &found {
            Some(t) if t != target => return deny("the original-URI headers disagree"),
            _ => found = Some(target.to_owned()),
        }
    }
    let Some(target) = found else {
        return deny("no X-Forwarded-Uri, X-Original-URI or X-Original-URL header from the proxy");
    };
    target_route(state, &target).map(Some)
}

/// The route of an original request target (path and query) named by a trusted proxy, which must already be in
/// normal form: idgate cannot rewrite what the proxy in front forwards.
fn target_route(state: &State, target: &str) -> Result<(AuthMode, Option<usize>)> {
    let deny = |why: &'static str| Err(Failure::from(RequestError::ForwardAuthTarget(why)));
    if target.contains('#') {
        return deny("the original URI contains '#'");
    }
    let path = target.split('?').next().unwrap_or("");
    match state.routes.decide(path, false) {
        Ok((normal, Route::Proxy { auth, rule })) if normal == path => Ok((auth, rule)),
        Ok(_) => deny("the original URI is not in normal form (dot segments, duplicate slashes or escapes)"),
        Err(BadPath(why)) => {
            tracing::info!(cause = why, "forward-auth original URI refused by the path rule");
            deny("the original URI is refused by the path rule")
        }
    }
}

/// The route of the request an external check (Envoy `ext_authz`, over gRPC or as `{prefix}/auth/<path>`) asks
/// about, by forward-auth's rules: `None` without route rules (the path cannot change the decision); with them,
/// denied for a caller outside `server.trusted_proxies` and for a target not in normal form.
pub fn check_target(state: &State, peer: &Peer, target: &str) -> Result<Option<(AuthMode, Option<usize>)>> {
    if !state.routes.has_rules() {
        return Ok(None);
    }
    if !state.forwarder.is_trusted(peer.ip) {
        return Err(RequestError::ForwardAuthTarget(
            "the ext_authz caller is not in server.trusted_proxies, so its original path is not believed",
        )
        .into());
    }
    target_route(state, target).map(Some)
}

/// What an external check grants a request the proxy in front will forward itself.
#[derive(Debug, Default)]
pub struct Grant {
    /// The headers the proxy sink would write on the upstream request: the identity headers, and the access token
    /// when `oidc.forward_access_token` is on. Empty for a public route.
    pub headers: HeaderMap,
    /// `Set-Cookie` values of a renewed session, for the client's answer.
    pub cookies: Vec<HeaderValue>,
}

/// The ext_authz sink (Envoy, gRPC or HTTP): the proxy sink's decision and headers, without forwarding. `host`: the
/// request's host as the application sees it (it picks the provider with `[[providers]]`).
pub async fn grant(
    state: &State,
    headers: &HeaderMap,
    auth: AuthMode,
    rule: Option<usize>,
    host: Option<&str>,
) -> Result<Grant> {
    let User { session, permit, cookies, provider } = match authenticate(state, headers, auth, rule, host).await? {
        Access::Public => return Ok(Grant::default()),
        Access::Bearer(TokenUser { claims, permit, token }) => {
            let mut out = HeaderMap::new();
            state.headers.apply(&mut out, &claims, &permit, &crate::identity::Memo::new());
            if state.settings.oidc.forward_access_token
                && let Ok(v) = HeaderValue::from_str(&token)
            {
                out.insert("x-forwarded-access-token", v);
            }
            return Ok(Grant { headers: out, cookies: Vec::new() });
        }
        Access::User(user) => user,
    };
    let mut out = HeaderMap::new();
    state.headers.apply(&mut out, session.claims(), &permit, session.identity_memo());
    state.providers.apply_issuer_header(&mut out, provider);
    if let Some(at) = session.access_token()
        && let Ok(v) = HeaderValue::from_str(at)
    {
        out.insert("x-forwarded-access-token", v);
    }
    Ok(Grant { headers: out, cookies })
}

/// `{prefix}/userinfo`: the session's claims as JSON, never a token. `host`: as the application sees it.
pub async fn userinfo(state: &State, headers: &HeaderMap, host: Option<&str>) -> Result<Response<Body>> {
    let Access::User(User { session, cookies, .. }) = authenticate(state, headers, AuthMode::Api, None, host).await?
    else {
        return Err(RequestError::BadRequest("userinfo needs a session").into());
    };
    let text = serde_json::to_string(session.claims().as_map()).unwrap_or_else(|_| "{}".into());
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(text))
        .unwrap_or_else(body::internal_error);
    Ok(with_cookies(resp, cookies))
}

/// True when the request carries idgate's session cookie (`NAME`, or its first chunk `NAME_0`).
fn has_session_cookie(state: &State, headers: &HeaderMap) -> bool {
    let name = state.settings.session.cookie_name.as_str();
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).any(|pair| {
        let n = pair.split('=').next().unwrap_or("").trim();
        n == name || n.strip_prefix(name) == Some("_0")
    })
}

/// Opens the session, checks that its provider is `allowed`, and renews it when due. Returns the session, any
/// `Set-Cookie` values the renewal made, and the session's provider.
async fn open(state: &State, headers: &HeaderMap, allowed: Allowed) -> Result<(Session, Vec<HeaderValue>, usize)> {
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
    // A session counts only where its issuer is allowed (checked before any refresh at that issuer).
    let provider = state.providers.check_session(session.provider(), allowed).map_err(RequestError::from)?;
    match refresh::renew_if_due(state, headers, session, now).await {
        Renewal::Keep(s) => Ok((s, Vec::new(), provider)),
        Renewal::Renewed(s, cookies) => Ok((s, cookies, provider)),
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
    Response::builder().status(status).body(body::empty()).unwrap_or_else(body::internal_error)
}

/// R14: an ID token is not an API credential. Every `Authorization` value is searched, whatever its scheme,
/// case, whitespace (ASCII or not: Python splits on `\xa0`), header count or credential list, and inside base64
/// (a Basic password): a JWT in it whose claims say it is an ID token of this client (our issuer, our client id in
/// `aud`, not typed as an access token) is refused before anything is forwarded.
fn refuse_id_token_bearer(state: &State, headers: &HeaderMap) -> Result<()> {
    let presented = headers.get_all(header::AUTHORIZATION).iter().any(|value| {
        state.providers.entries().iter().any(|e| {
            let settings = e.provider().settings();
            holds_our_id_token(value.as_bytes(), &settings.issuer, &settings.client_id, 2)
        })
    });
    if presented {
        return Err(RequestError::IdTokenAsBearer.into());
    }
    Ok(())
}

/// True when `bytes` hold an ID token of this client: a JWT among its runs of base64 and `.` characters, or — up to
/// `depth` levels — inside a run that is itself base64 (`Basic base64("user:" + token)`, as APIs that take a token
/// as the Basic password read it).
fn holds_our_id_token(bytes: &[u8], issuer: &str, client_id: &str, depth: u8) -> bool {
    use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
    let is_token_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-_+/=.".contains(b);
    bytes.split(|b| !is_token_byte(b)).filter_map(|run| std::str::from_utf8(run).ok()).any(|run| {
        if run.contains('.') {
            return looks_like_our_id_token(run, issuer, client_id);
        }
        // An ID token is hundreds of characters; a base64 run shorter than any could not wrap one.
        depth > 0 && run.len() >= 64 && {
            let standard: String = run.trim_end_matches('=').replace('-', "+").replace('_', "/");
            STANDARD_NO_PAD.decode(standard).is_ok_and(|inner| holds_our_id_token(&inner, issuer, client_id, depth - 1))
        }
    })
}

/// A JWT's header and payload anywhere among the dot-separated parts of `run`, decoded as leniently as lenient
/// decoders do (standard or URL-safe alphabet, padded or not), whose claims are an ID token of this client.
fn looks_like_our_id_token(run: &str, issuer: &str, client_id: &str) -> bool {
    let parts: Vec<&str> = run.split('.').collect();
    parts.len() >= 3 && parts.windows(2).any(|w| is_our_id_token(w[0], w[1], issuer, client_id))
}

fn is_our_id_token(h: &str, p: &str, issuer: &str, client_id: &str) -> bool {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let decode = |s: &str| {
        let s: String = s
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
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
