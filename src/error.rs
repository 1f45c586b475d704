//! The one place that turns a failed request into a response. Decides by who is at fault — the client (302 to
//! login, 401, 400, 403), the issuer (502/503), the upstream (502/504) — logs one line, and never puts internal
//! text, tokens or claim values in a body.

use http::{HeaderValue, Response, StatusCode, header};

use crate::{
    body::{self, Body},
    forward::{UpgradeRefused, UpstreamError},
    login::{LoginError, preserved_post::PostError},
    oidc::{ProviderError, TokenError},
    policy::Denied,
    route::{BadPath, RequestKind},
    session::SessionError,
};

/// Everything that can end a request early.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Ambiguous HTTP/1 framing or host (`framing`): answered, then the connection is closed.
    #[error(transparent)]
    Framing(#[from] crate::framing::FramingError),
    #[error(transparent)]
    BadPath(#[from] BadPath),
    #[error("no valid session: {0}")]
    NoSession(SessionError),
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error("an ID token was presented as a bearer credential")]
    IdTokenAsBearer,
    /// Forward-auth cannot know for sure which request it is asked about.
    #[error("forward-auth denied: {0}")]
    ForwardAuthTarget(&'static str),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    UpgradeRefused(#[from] UpgradeRefused),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error(transparent)]
    Store(#[from] crate::session::store::StoreError),
    /// The session's provider is not allowed for this route or host (`[[providers]]`).
    #[error(transparent)]
    WrongProvider(#[from] crate::providers::Mismatch),
    /// A bearer access token was refused.
    #[error(transparent)]
    Bearer(#[from] crate::bearer::Refusal),
    /// A form post kept over a re-login (`login::preserved_post`) was not kept, or could not be sent on.
    #[error(transparent)]
    PreservedPost(#[from] PostError),
}

/// What `respond` needs to know about the request.
#[derive(Debug)]
pub struct Context<'a> {
    pub kind: RequestKind,
    /// A browser without a session may be sent to log in (route `auth = "login"`).
    pub may_redirect: bool,
    /// Path and query to come back to after login.
    pub return_to: &'a str,
    pub prefix: &'a str,
    /// `Set-Cookie` values to send with the answer (clearing a dead session).
    pub clear: Vec<HeaderValue>,
    pub request_id: &'a str,
}

/// Builds the response for `err` and logs it once.
pub fn respond(err: &RequestError, ctx: Context<'_>) -> Response<Body> {
    let retry = format!("{}/start?rd=/", ctx.prefix);
    let id = ctx.request_id;
    let mut resp = match err {
        RequestError::Framing(e) => {
            tracing::info!(request_id = id, error = %e, "ambiguous request framing");
            let msg = format!("The request is ambiguous: {e}.");
            let mut resp = answer(&ctx, e.status(), "bad_framing", &msg, None);
            // Where this request ends is not sure: nothing after it on the connection is read as a request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        RequestError::BadPath(e) => {
            tracing::info!(request_id = id, error = %e, "bad request path");
            let msg = format!("The request path is not acceptable: {}.", e.0);
            answer(&ctx, StatusCode::BAD_REQUEST, "bad_request", &msg, None)
        }
        RequestError::BadRequest(why) => {
            tracing::info!(request_id = id, error = why, "bad request");
            answer(&ctx, StatusCode::BAD_REQUEST, "bad_request", "The request is not acceptable.", None)
        }
        RequestError::UpgradeRefused(e) => {
            tracing::info!(request_id = id, protocol = %e.protocol, "upgrade refused: not in upstream.allowed_upgrades");
            let msg = format!("Upgrading this connection to {:?} is not allowed.", e.protocol);
            answer(&ctx, StatusCode::BAD_REQUEST, "upgrade_refused", &msg, None)
        }
        RequestError::NoSession(cause) => {
            tracing::debug!(request_id = id, cause = %cause, "no session");
            if ctx.may_redirect && ctx.kind == RequestKind::Navigation {
                let rd = url::form_urlencoded::byte_serialize(ctx.return_to.as_bytes()).collect::<String>();
                redirect(&format!("{}/start?rd={rd}", ctx.prefix))
            } else {
                json(StatusCode::UNAUTHORIZED, "unauthenticated", "A valid session is required.")
            }
        }
        RequestError::Forbidden(d) => {
            tracing::info!(request_id = id, route = %d.route, requirement = d.requirement, "access denied");
            let msg = format!("Access to {} requires {}.", d.route, d.requirement);
            answer(&ctx, StatusCode::FORBIDDEN, "forbidden", &msg, None)
        }
        RequestError::IdTokenAsBearer => {
            tracing::info!(request_id = id, "refused an ID token presented as a bearer credential");
            json(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "ID tokens are not API credentials; present an access token.",
            )
        }
        RequestError::ForwardAuthTarget(why) => {
            tracing::warn!(request_id = id, cause = why, "forward-auth denied: the original request is not known");
            json(StatusCode::FORBIDDEN, "forbidden", &format!("The original request could not be verified: {why}."))
        }
        RequestError::Upstream(UpstreamError::ClientBody(e)) => {
            tracing::info!(request_id = id, error = %e, "request body unreadable");
            let mut resp =
                answer(&ctx, StatusCode::BAD_REQUEST, "bad_request_body", "The request body could not be read.", None);
            // The body's framing broke: what follows on the connection is not a request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        RequestError::Upstream(e) => {
            tracing::warn!(request_id = id, error = %e, "upstream failed");
            let status = match e {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                // ClientBody is answered above; a new kind must choose its status here.
                UpstreamError::Connect(_) | UpstreamError::Protocol(_) | UpstreamError::ClientBody(_) => {
                    StatusCode::BAD_GATEWAY
                }
            };
            answer(&ctx, status, "upstream_unavailable", "The application is not answering. Try again shortly.", None)
        }
        RequestError::Store(e) => {
            tracing::error!(request_id = id, error = %e, "session store unavailable");
            answer(
                &ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "Sessions are unavailable right now. Try again shortly.",
                None,
            )
        }
        RequestError::Login(e) => login_error(e, &ctx, &retry),
        RequestError::WrongProvider(m) => {
            tracing::info!(request_id = id, cause = %m, "session refused: its provider is not allowed here");
            if ctx.may_redirect && ctx.kind == RequestKind::Navigation {
                // A login with a provider allowed here replaces the session.
                let rd = url::form_urlencoded::byte_serialize(ctx.return_to.as_bytes()).collect::<String>();
                redirect(&format!("{}/start?rd={rd}", ctx.prefix))
            } else {
                json(StatusCode::FORBIDDEN, "wrong_provider", "This session's identity provider is not accepted here.")
            }
        }
        RequestError::Bearer(r) => bearer_refused(r, id),
        RequestError::PreservedPost(e) => preserved_post_error(e, &ctx, &retry),
    };
    for c in ctx.clear {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// RFC 6750 §3: 401 with `WWW-Authenticate: Bearer error="invalid_token"` and the reason (a static label); an
/// introspection endpoint that does not answer is the issuer's fault: 503, never a 200.
fn bearer_refused(r: &crate::bearer::Refusal, id: &str) -> Response<Body> {
    if let crate::bearer::Refusal::Unavailable(e) = r {
        tracing::warn!(request_id = id, error = %e, "bearer token not checked: the issuer is unavailable");
        return json(StatusCode::SERVICE_UNAVAILABLE, "issuer_unavailable", "The identity provider is not available.");
    }
    let reason = r.reason();
    tracing::info!(request_id = id, reason, error = %r, "bearer token refused");
    let mut resp =
        json(StatusCode::UNAUTHORIZED, "invalid_token", &format!("The access token was not accepted ({reason})."));
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn login_error(e: &LoginError, ctx: &Context<'_>, retry: &str) -> Response<Body> {
    let id = ctx.request_id;
    let again = Some(retry);
    match e {
        LoginError::DuplicateParameter(_) | LoginError::MissingParameter(_) => {
            tracing::info!(request_id = id, reason = e.reason(), error = %e, "login refused");
            answer(ctx, StatusCode::BAD_REQUEST, e.reason(), "The login request is malformed.", again)
        }
        LoginError::UnknownState
        | LoginError::Replayed
        | LoginError::FlowExpired
        | LoginError::IssuerMismatch
        | LoginError::IssuerMissing => {
            tracing::info!(request_id = id, reason = e.reason(), error = %e, "login refused");
            answer(
                ctx,
                StatusCode::BAD_REQUEST,
                e.reason(),
                "This login could not be completed. Please start again.",
                again,
            )
        }
        LoginError::IdpError { error, .. } => {
            tracing::info!(request_id = id, reason = e.reason(), idp_error = %error, "issuer returned an error");
            let msg = format!("The identity provider did not log you in ({error}).");
            answer(ctx, StatusCode::BAD_REQUEST, "idp_error", &msg, again)
        }
        LoginError::UnknownProvider | LoginError::ProviderNotAllowed => {
            tracing::info!(request_id = id, reason = e.reason(), error = %e, "login refused");
            let msg = "This sign-in option is not available here.";
            answer(ctx, StatusCode::BAD_REQUEST, e.reason(), msg, again)
        }
        LoginError::ChooseProvider => {
            tracing::debug!(request_id = id, "login start without a provider where several are allowed");
            let msg = "Several identity providers are available here: start the login with ?provider=NAME.";
            answer(ctx, StatusCode::UNAUTHORIZED, e.reason(), msg, again)
        }
        LoginError::BadCsrf => {
            tracing::info!(request_id = id, reason = e.reason(), "sign-out refused");
            answer(ctx, StatusCode::FORBIDDEN, "bad_csrf", "Sign-out must be confirmed from the sign-out page.", None)
        }
        LoginError::Token(TokenError::Rejected(r)) => {
            tracing::warn!(request_id = id, reason = r.reason(), error = %r, "ID token rejected");
            answer(
                ctx,
                StatusCode::UNAUTHORIZED,
                "invalid_id_token",
                "The identity provider's token was not accepted.",
                again,
            )
        }
        LoginError::AtProvider { title, source, .. } => match source.as_ref() {
            LoginError::Token(TokenError::Provider(p)) => {
                tracing::warn!(request_id = id, provider = %title, error = %p, "issuer unavailable");
                let msg = format!("{title} is not available. Try again shortly.");
                answer(ctx, issuer_status(p), "issuer_unavailable", &msg, again)
            }
            other => login_error(other, ctx, retry),
        },
        LoginError::Token(TokenError::Provider(ProviderError::Dpop(d))) => {
            tracing::warn!(request_id = id, reason = e.reason(), error = %d, "DPoP failed at the issuer");
            let msg = format!("The identity provider and this site could not agree on DPoP: {d}.");
            answer(ctx, StatusCode::BAD_GATEWAY, "dpop_failed", &msg, again)
        }
        LoginError::Pushed(p) => pushed_error(p, ctx, retry),
        LoginError::Token(TokenError::Provider(ProviderError::Refused { status, error, .. }))
            if error == "invalid_client" =>
        {
            tracing::error!(
                request_id = id,
                status,
                "the issuer refused idgate's client authentication (invalid_client): check oidc.client_id, \
                 oidc.token_auth_method and the client secret or key registered at the issuer"
            );
            answer(
                ctx,
                StatusCode::BAD_GATEWAY,
                "client_auth_refused",
                "The identity provider did not accept the client credentials of this site (invalid_client). An \
                 administrator must fix the client registration.",
                again,
            )
        }
        LoginError::Token(TokenError::Provider(p)) => {
            tracing::warn!(request_id = id, error = %p, "issuer unavailable");
            let status = match p {
                // A refusal (invalid_grant, invalid_client) is a broken exchange; a 5xx answer is an outage.
                ProviderError::Refused { status, .. } if *status < 500 => StatusCode::BAD_GATEWAY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            answer(
                ctx,
                status,
                "issuer_unavailable",
                "The identity provider is not available. Try again shortly.",
                again,
            )
        }
        LoginError::UserinfoMismatch => {
            tracing::warn!(request_id = id, "userinfo endpoint answered for another subject; login refused");
            answer(
                ctx,
                StatusCode::BAD_GATEWAY,
                "userinfo_mismatch",
                "The identity provider's profile did not match.",
                again,
            )
        }
        LoginError::NoIdToken => {
            tracing::warn!(
                request_id = id,
                "token endpoint answered without an id_token (is the openid scope allowed?)"
            );
            answer(ctx, StatusCode::BAD_GATEWAY, "no_id_token", "The identity provider returned no ID token.", again)
        }
        LoginError::Store(e) => {
            tracing::error!(request_id = id, error = %e, "session store unavailable during login");
            answer(
                ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "Sessions are unavailable right now. Try again shortly.",
                again,
            )
        }
        LoginError::SessionTooLarge => {
            tracing::error!(
                request_id = id,
                "session too large for cookies; use session.store = \"memory\" or \"redis\""
            );
            answer(
                ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "session_too_large",
                "The session is too large to keep.",
                None,
            )
        }
    }
}

/// The status for an issuer that failed: a refusal (invalid_grant, invalid_client) is a broken exchange (502); a 5xx
/// answer or no answer is an outage (503).
fn issuer_status(p: &ProviderError) -> StatusCode {
    match p {
        ProviderError::Refused { status, .. } if *status < 500 => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A kept form post's failures. Only form navigations get here: the answer is a page.
fn preserved_post_error(e: &PostError, ctx: &Context<'_>, retry: &str) -> Response<Body> {
    let id = ctx.request_id;
    let reason = e.reason();
    let page = |status: StatusCode, message: &str, extra: &str| {
        let extra = format!("{extra}<p><small>{}</small></p>", escape(reason));
        html_page(status, status.canonical_reason().unwrap_or("Error"), message, &extra)
    };
    match e {
        PostError::TooLarge { .. } | PostError::NoRoom { .. } | PostError::StoreFull { .. } => {
            tracing::info!(request_id = id, reason, error = %e, "form post not kept over the re-login");
            let rd = url::form_urlencoded::byte_serialize(ctx.return_to.as_bytes()).collect::<String>();
            let link = format!(
                "<p><a href=\"{}\" target=\"_blank\" rel=\"noopener\">Sign in in a new tab</a>, then come back \
                 here and send the form again.</p>",
                escape(&format!("{}/start?rd={rd}", ctx.prefix))
            );
            let message = match e {
                PostError::StoreFull { .. } => {
                    "Your session has ended, and this form cannot be kept right now while you sign in again."
                }
                _ => "Your session has ended, and this form is too large to keep while you sign in again.",
            };
            page(StatusCode::UNAUTHORIZED, message, &link)
        }
        PostError::Unreadable => {
            tracing::info!(request_id = id, reason, "form post body unreadable");
            page(StatusCode::BAD_REQUEST, "The form could not be read.", "")
        }
        PostError::Tampered | PostError::WrongTarget => {
            tracing::warn!(request_id = id, reason, error = %e, "kept form post refused");
            page(StatusCode::BAD_REQUEST, "The form you sent before signing in could not be restored.", "")
        }
        PostError::Expired => {
            tracing::info!(request_id = id, reason, "kept form post expired");
            page(StatusCode::BAD_REQUEST, "The form you sent before signing in waited too long. Send it again.", "")
        }
        PostError::OtherBrowser => {
            tracing::warn!(request_id = id, reason, "kept form post sent from another browser");
            page(StatusCode::FORBIDDEN, "This form can only be sent from the browser that started it.", "")
        }
        PostError::CrossOrigin => {
            tracing::warn!(request_id = id, reason, "resume form sent by a page of another origin");
            page(StatusCode::FORBIDDEN, "This form can only be sent from the page shown after signing in.", "")
        }
        PostError::Replayed => {
            tracing::warn!(request_id = id, reason, "kept form post sent again");
            page(StatusCode::CONFLICT, "This form was already sent once.", "")
        }
        PostError::Login(e) => {
            login_error(e, &Context { kind: RequestKind::Navigation, clear: Vec::new(), ..*ctx }, retry)
        }
        PostError::Store(e) => {
            tracing::error!(request_id = id, error = %e, "session store unavailable");
            page(StatusCode::SERVICE_UNAVAILABLE, "Sessions are unavailable right now. Try again shortly.", "")
        }
    }
}

/// A failed pushed authorization request (RFC 9126): an outage is a 503, a refusal or an unusable answer a 502; the
/// page names the issuer's error code, never its description.
fn pushed_error(e: &crate::oidc::par::ParError, ctx: &Context<'_>, retry: &str) -> Response<Body> {
    use crate::oidc::par::ParError;
    tracing::warn!(request_id = ctx.request_id, reason = e.reason(), error = %e, "pushed authorization request failed");
    let again = Some(retry);
    let (status, msg) = match e {
        ParError::Provider(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "The identity provider is not available. Try again shortly.".to_owned())
        }
        ParError::Refused { error, .. } => {
            (StatusCode::BAD_GATEWAY, format!("The identity provider refused the login request ({error})."))
        }
        ParError::BadAnswer(_) | ParError::NoEndpoint => {
            (StatusCode::BAD_GATEWAY, "The identity provider's answer to the login request was not usable.".to_owned())
        }
    };
    answer(ctx, status, e.reason(), &msg, again)
}

/// An HTML page for navigations, JSON otherwise.
fn answer(ctx: &Context<'_>, status: StatusCode, code: &str, message: &str, retry: Option<&str>) -> Response<Body> {
    match ctx.kind {
        RequestKind::Navigation => {
            let link = retry.map(|r| format!("<p><a href=\"{}\">Try again</a></p>", escape(r))).unwrap_or_default();
            html_page(status, status.canonical_reason().unwrap_or("Error"), message, &link)
        }
        RequestKind::Api => json(status, code, message),
    }
}

/// `Strict-Transport-Security` on idgate's own answers: a year, this host only (a deployment that wants
/// `includeSubDomains` or preload sets it at its TLS terminator).
pub const HSTS: &str = "max-age=31536000";

/// The headers every answer idgate makes itself carries (the upstream's answers pass unchanged): `nosniff`, so no
/// JSON or text answer is ever sniffed into HTML, and HSTS when `hsts` (TLS on, or `session.cookie_secure`).
pub fn harden(resp: &mut Response<Body>, hsts: bool) {
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
}

/// A `302 Found` to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::empty())
        .unwrap_or_else(body::internal_error)
}

/// A JSON error body `{"error": code, "message": message}`.
pub fn json(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let text = serde_json::json!({ "error": code, "message": message }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body::full(text))
        .unwrap_or_else(body::internal_error)
}

/// A small HTML page. `title` and `message` are escaped; `extra_html` is trusted markup built by idgate. No script
/// runs and no other site may frame it; forms are not limited to this origin, because the sign-out form's answer
/// redirects to the issuer and browsers apply `form-action` to redirects too.
pub fn html_page(status: StatusCode, title: &str, message: &str, extra_html: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style></head>\
         <body><h1>{t}</h1><p>{m}</p>{extra_html}</body></html>",
        t = escape(title),
        m = escape(message),
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
        .body(body::full(page))
        .unwrap_or_else(body::internal_error)
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
