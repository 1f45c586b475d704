//! Which provider a login goes to. `{prefix}/start?provider=NAME&rd=…` names one, which must be allowed for `rd`
//! (its route's `providers`, else the host's, else all); without `provider` the login goes straight to the one
//! allowed provider, or — when several are — a navigation gets a chooser page (one link per allowed provider) and
//! anything else a 401.

use http::{HeaderMap, Response, StatusCode};

use super::{LoginError, param, query_params, redirect};
use crate::{
    app::State,
    body::Body,
    error::{escape, html_page},
    providers::Allowed,
    route::{RequestKind, Route},
};

/// The chooser's look: one large link per provider. Inline style only (the page's CSP allows no other source).
const CHOOSER_STYLE: &str = "<style>.choices{list-style:none;padding:0;margin:1.5rem 0}\
    .choices a{display:block;margin:.6rem 0;padding:.8rem 1.1rem;border:1px solid #c9cfdb;border-radius:.6rem;\
    text-decoration:none;color:#1d2a44;font-weight:600;background:#fff}\
    .choices a:hover,.choices a:focus{background:#eef2fa;border-color:#8c9bbd}\
    body{color:#1d2a44;background:#f8f9fc}</style>";

/// `GET {prefix}/start`: picks the provider, then begins the login ([`super::start::start`]). `host` is the
/// request's host as the application sees it (with `[[providers]]`).
pub async fn start(
    state: &State,
    req: &HeaderMap,
    host: Option<&str>,
    kind: RequestKind,
    query: Option<&str>,
) -> Result<Response<Body>, LoginError> {
    let params = query_params(query, &["rd", "provider"])?;
    let interactive = param(&params, "interactive").is_some();
    let rd = redirect::safe(param(&params, "rd"));
    let allowed = allowed_for(state, &rd, host);
    let chosen = match param(&params, "provider") {
        Some(name) => {
            let i = state.providers.index(name).ok_or(LoginError::UnknownProvider)?;
            if !allowed.contains(i) {
                return Err(LoginError::ProviderNotAllowed);
            }
            i
        }
        None => match allowed.only() {
            Some(i) => i,
            None if kind == RequestKind::Navigation => return Ok(chooser(state, allowed, &rd)),
            None => return Err(LoginError::ChooseProvider),
        },
    };
    let result = super::start::start(state, req, chosen, Some(&rd), interactive).await;
    match state.providers.entry(chosen) {
        Some(entry) => result.map_err(|e| e.at(&state.providers, entry)),
        None => result,
    }
}

/// The providers allowed where `rd` leads: the route of its path, on this host.
fn allowed_for(state: &State, rd: &str, host: Option<&str>) -> Allowed {
    let path = rd.split(['?', '#']).next().unwrap_or("/");
    let rule = match state.routes.decide(path, true) {
        Ok((_, Route::Proxy { rule, .. })) => rule,
        _ => None,
    };
    state.providers.allowed(rule, host)
}

/// The chooser page: a link to `{prefix}/start?provider=NAME&rd=…` per allowed provider, every value escaped.
fn chooser(state: &State, allowed: Allowed, rd: &str) -> Response<Body> {
    let rd = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>();
    let links: String = allowed
        .iter()
        .filter_map(|i| state.providers.entry(i))
        .map(|e| {
            let name = url::form_urlencoded::byte_serialize(e.name.as_bytes()).collect::<String>();
            let href = format!("{}/start?provider={name}&rd={rd}", state.routes.prefix());
            format!("<li><a href=\"{}\">{}</a></li>", escape(&href), escape(&e.title))
        })
        .collect();
    let extra = format!("{CHOOSER_STYLE}<ul class=\"choices\">{links}</ul>");
    html_page(StatusCode::OK, "Sign in", "Choose how you sign in:", &extra)
}
