//! Form posts that survive a re-login. A browser whose session ended submits a form (`POST`, urlencoded or
//! multipart, at most `session.preserve_post_max_bytes`) to a `login` route: instead of losing it, idgate keeps the
//! request's target, content type and body sealed (AEAD, [`Purpose::PreservedPost`]) and bound to the new login
//! flow's `state`, and sends the browser to log in. The sealed post travels in cookies beside the flow cookie when
//! it fits in [`COOKIE_CHUNKS`] chunks, else in the server-side store (memory or Redis) until the callback takes it.
//!
//! After the callback, idgate answers a small page (CSP with a script nonce) whose form posts one field back to the
//! original URL: the sealed post, now bound to a one-time ticket whose cookie only this browser holds. When that
//! form arrives with a valid session, idgate checks the ticket (this browser's cookie, not used before, not
//! expired, the same URL) and forwards the *original* body and content type in its place. The upstream therefore
//! receives the bytes the browser first sent — multipart boundaries and files included, which no HTML form could
//! rebuild — exactly once, from a same-origin `POST` the browser itself makes (its own `Origin`, `Cookie` and
//! `Sec-Fetch-*`), at the URL the user sees afterwards.
//!
//! What is never kept: a post the browser did not send from this origin itself (`Sec-Fetch-Site` other than
//! `same-origin`, or without it an `Origin` other than ours: an attacker's page cannot make a victim's browser
//! submit something through the victim's next login), anything that is not a navigation, other content types
//! (JSON and the like answer 401 as before), and bodies over the limit (401 with a page saying so).

use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::{
    LoginError,
    flow::{FLOW_TTL_SECS, Flow},
    redirect, start,
};
use crate::{
    app::State,
    body::{self, Body},
    config::Settings,
    forward::Inbound,
    session::{
        cookie::{self, Attributes, CHUNK_BYTES},
        seal::{KeyRing, Purpose},
        store::{Key, StoreError},
    },
    telemetry::metrics::Event,
};

/// The one field of the resume form: `<ticket>.<sealed post>`.
pub const FIELD: &str = "idgate_resume";
/// How long after the callback the resume form may arrive.
pub const RESUME_TTL_SECS: i64 = 120;
/// A sealed post of at most this many cookie chunks travels in cookies; a larger one needs the server-side store.
pub const COOKIE_CHUNKS: usize = 2;
/// Room the resume form needs beyond the body: the target (≤ 2 KiB), content type, ticket and framing, base64.
const RESUME_OVERHEAD: usize = 4096;

/// Why a post was not kept, or could not be sent on. `Display` is safe to log (no body, no ticket).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("form post of {len:?} bytes is over session.preserve_post_max_bytes ({max})")]
    TooLarge { len: Option<u64>, max: usize },
    #[error("form post of {len} bytes does not fit in cookies and no server-side session store is configured")]
    NoRoom { len: usize },
    #[error("form post of {len} bytes does not fit in session.preserve_post_store_bytes now")]
    StoreFull { len: usize },
    #[error("resume form not sent by a page of this origin")]
    CrossOrigin,
    #[error("form post body could not be read")]
    Unreadable,
    #[error("preserved form post does not open (tampered, or sealed with an unknown key)")]
    Tampered,
    #[error("preserved form post sent from a browser without its ticket cookie")]
    OtherBrowser,
    #[error("preserved form post already sent once")]
    Replayed,
    #[error("preserved form post expired")]
    Expired,
    #[error("preserved form post sent to another URL than it was made for")]
    WrongTarget,
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PostError {
    /// Label for logs and pages.
    pub fn reason(&self) -> &'static str {
        match self {
            PostError::TooLarge { .. } => "post_too_large",
            PostError::NoRoom { .. } => "post_no_room",
            PostError::StoreFull { .. } => "post_store_full",
            PostError::CrossOrigin => "post_cross_origin",
            PostError::Unreadable => "post_unreadable",
            PostError::Tampered => "post_tampered",
            PostError::OtherBrowser => "post_other_browser",
            PostError::Replayed => "post_replayed",
            PostError::Expired => "post_expired",
            PostError::WrongTarget => "post_wrong_target",
            PostError::Login(e) => e.reason(),
            PostError::Store(_) => "session_store_unavailable",
        }
    }
}

/// What to do with a request that found no session on a `login` route.
#[derive(Debug, PartialEq, Eq)]
pub enum Intake {
    /// Not a post idgate keeps: today's answer (401). The reason is logged.
    Ignore(&'static str),
    /// A form navigation idgate would keep, but its `Content-Length` is over the limit.
    TooLarge(u64),
    /// Keep it.
    Preserve,
}

/// The request's target, content type and body, as kept.
#[derive(Debug, PartialEq, Eq)]
struct Post {
    /// What the seal is bound to besides its associated data: the flow's state, then the ticket cookie's value.
    bound: String,
    /// The value of the browser cookie ([`PreservedPosts::browser_name`]) of the browser that sent the post.
    browser: String,
    target: String,
    content_type: String,
    expires_at: i64,
    body: Bytes,
}

impl Post {
    /// Length-prefixed fields: no escaping, any body bytes.
    fn encode(&self) -> Vec<u8> {
        let expires = self.expires_at.to_string();
        let fields: [&[u8]; 6] = [
            self.bound.as_bytes(),
            self.browser.as_bytes(),
            self.target.as_bytes(),
            self.content_type.as_bytes(),
            expires.as_bytes(),
            &self.body,
        ];
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Post> {
        let mut next = || -> Option<&[u8]> {
            let (len, rest) = bytes.split_first_chunk::<4>()?;
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return None;
            }
            let (field, rest) = rest.split_at(len);
            bytes = rest;
            Some(field)
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let bound = text(next()?)?;
        let browser = text(next()?)?;
        let target = text(next()?)?;
        let content_type = text(next()?)?;
        let expires_at = std::str::from_utf8(next()?).ok()?.parse().ok()?;
        let body = Bytes::copy_from_slice(next()?);
        Some(Post { bound, browser, target, content_type, expires_at, body })
    }
}

/// Keeps and resumes form posts; built once from the settings.
#[derive(Debug)]
pub struct PreservedPosts {
    ring: KeyRing,
    /// `NAME_post_<state>` (chunked `_0`, `_1`): the sealed post beside its flow cookie.
    post_prefix: String,
    /// `NAME_resume_<ticket>`: the ticket cookie of a resume form.
    resume_prefix: String,
    flow_path: String,
    attrs: Attributes,
    max_bytes: usize,
    /// Our origins (`scheme://host[:port]` of `oidc.redirect_url`, or of every `[[providers]]` entry's), for
    /// browsers that send no `Sec-Fetch-Site`.
    origins: Vec<String>,
    /// The browser cookie: a random value the kept post is bound to, so that only the browser that sent the post
    /// gets it back after the callback. `__Host-` when the cookies are `Secure` and host-only: then no other host
    /// (a sibling of the same site, or a network attacker answering for `http://` of this one) can set it, as it
    /// can set flow and post cookies (cookie tossing) — which made a login CSRF send an attacker's body.
    browser_name: String,
    /// Most bytes of kept posts in the server-side store at once (`session.preserve_post_store_bytes`).
    store_budget: usize,
    /// What this process put in the store and when it expires: anyone can send a form post.
    in_store: std::sync::Mutex<Room>,
}

/// The store room kept posts of this process use: `(expires_at, bytes)` in the order they were put.
#[derive(Debug, Default)]
struct Room {
    total: usize,
    entries: std::collections::VecDeque<(i64, usize)>,
}

impl PreservedPosts {
    /// Derives the key and names from the settings; `flow_path` is the flow cookies' path.
    pub fn new(settings: &Settings, flow_path: &str) -> Self {
        let s = &settings.session;
        Self {
            ring: KeyRing::new(&s.secret, &s.previous_secrets, Purpose::PreservedPost),
            post_prefix: format!("{}_post_", s.cookie_name),
            resume_prefix: format!("{}_resume_", s.cookie_name),
            flow_path: flow_path.to_owned(),
            attrs: Attributes { secure: s.cookie_secure, domain: s.cookie_domain.clone() },
            max_bytes: s.preserve_post_max_bytes,
            origins: std::iter::once(&settings.oidc)
                .chain(settings.providers.iter().map(|p| &p.oidc))
                .map(|o| o.redirect_url.origin().ascii_serialization())
                .collect(),
            browser_name: if s.cookie_secure && s.cookie_domain.is_none() {
                format!("__Host-{}_pb", s.cookie_name)
            } else {
                format!("{}_pb", s.cookie_name)
            },
            store_budget: s.preserve_post_store_bytes,
            in_store: std::sync::Mutex::default(),
        }
    }

    /// Takes `len` bytes of store room until `now + FLOW_TTL_SECS`; false when the budget has not that much left.
    fn reserve(&self, now: i64, len: usize) -> bool {
        let mut room = self.in_store.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(expires, bytes)) = room.entries.front()
            && expires <= now
        {
            room.entries.pop_front();
            room.total -= bytes;
        }
        if room.total + len > self.store_budget {
            return false;
        }
        room.total += len;
        room.entries.push_back((now + FLOW_TTL_SECS, len));
        true
    }

    /// The browser cookie's value the request carries, when it has the shape of one.
    fn browser_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        cookie::get(headers, &self.browser_name)
            .filter(|v| v.len() == 22 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    }

    /// True when the browser says a page of this origin made the request (a page's script cannot set these
    /// headers): `Sec-Fetch-Site: same-origin` (and any `Origin` ours), or without it an `Origin` equal to ours.
    fn sent_by_us(&self, headers: &HeaderMap) -> bool {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match (h("sec-fetch-site"), h("origin")) {
            (Some(site), origin) => {
                site.eq_ignore_ascii_case("same-origin") && origin.is_none_or(|o| self.origins.iter().any(|x| x == o))
            }
            (None, Some(origin)) => self.origins.iter().any(|x| x == origin),
            (None, None) => false,
        }
    }

    /// The most body bytes kept.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Decides, from the request head alone, whether a request without a session is a form post to keep.
    pub fn intake(&self, method: &Method, target: &str, headers: &HeaderMap) -> Intake {
        if method != Method::POST {
            return Intake::Ignore("not a POST");
        }
        if self.max_bytes == 0 {
            return Intake::Ignore("session.preserve_post_max_bytes is 0");
        }
        if !is_form(headers) {
            return Intake::Ignore("not a form content type");
        }
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let navigation = match h("sec-fetch-mode") {
            Some(mode) => mode.eq_ignore_ascii_case("navigate"),
            None => h("accept").is_some_and(|a| a.contains("text/html")),
        };
        if !navigation || h("x-requested-with").is_some() {
            return Intake::Ignore("not a navigation");
        }
        if !self.sent_by_us(headers) {
            return Intake::Ignore("not sent by a page of this origin");
        }
        if redirect::safe(Some(target)) != target {
            return Intake::Ignore("target is not a same-origin path");
        }
        if self.resume_ticket_cookies(headers).next().is_some() {
            return Intake::Ignore("a resume form itself");
        }
        match content_length(headers) {
            Some(len) if len > self.max_bytes as u64 => Intake::TooLarge(len),
            _ => Intake::Preserve,
        }
    }

    fn resume_ticket_cookies<'h>(&self, headers: &'h HeaderMap) -> impl Iterator<Item = &'h str> {
        cookie::iter(headers).filter_map(|(n, _)| n.strip_prefix(self.resume_prefix.as_str()))
    }

    fn flow_aad(state: &str) -> String {
        format!("idgate post {state}")
    }

    fn resume_aad(ticket: &str) -> String {
        format!("idgate resume {ticket}")
    }

    fn store_key(state: &str) -> Key {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, format!("idgate preserved post\0{state}").as_bytes()).as_ref());
        key
    }

    /// A request head [`Self::resume`] must look at: an urlencoded post carrying a ticket cookie, whose body is no
    /// larger than a resume form can be (a length the head does not declare is read up to that limit).
    pub fn is_resume(&self, method: &Method, headers: &HeaderMap) -> bool {
        method == Method::POST
            && self.resume_ticket_cookies(headers).next().is_some()
            && mime_essence(headers).as_deref() == Some("application/x-www-form-urlencoded")
            && content_length(headers).is_none_or(|len| len <= self.resume_limit() as u64)
    }

    fn resume_limit(&self) -> usize {
        (self.max_bytes + RESUME_OVERHEAD) / 3 * 4 + 64 + FIELD.len()
    }
}

/// Keeps the post `req` (already judged [`Intake::Preserve`]) and answers the redirect to the issuer: the one
/// provider allowed for it, `provider` (its recorded name with `[[providers]]`, `None` with `[oidc]`).
pub async fn preserve(state: &State, req: Request<Body>, provider: Option<&str>) -> Result<Response<Body>, PostError> {
    let posts = &state.posts;
    let (parts, incoming) = req.into_parts();
    let max = posts.max_bytes;
    let body = body::collect_limited(incoming, max).await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            PostError::TooLarge { len: None, max }
        } else {
            PostError::Unreadable
        }
    })?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut flow: Flow = start::new_flow(state, Some(&target), false);
    flow.post = true;
    // A browser keeps its value while it has one (other tabs' posts are bound to it); HttpOnly, and random.
    let browser = posts.browser_value(&parts.headers).map_or_else(|| crate::random::token(16), str::to_owned);
    flow.provider = provider.map(str::to_owned);
    let post = Post {
        bound: flow.state.clone(),
        browser: browser.clone(),
        target,
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        expires_at: flow.created + FLOW_TTL_SECS,
        body,
    };
    let len = post.body.len();
    let mut cookies = keep(state, &parts.headers, &flow, &post).await?;
    cookies.push(posts.attrs.set(&posts.browser_name, &browser, "/", FLOW_TTL_SECS));
    tracing::info!(bytes = len, in_cookies = !cookies.is_empty(), "form post kept over a re-login");
    state.metrics.event(Event::PreservedPost("kept"));
    Ok(start::to_issuer(state, &parts.headers, &flow, StatusCode::SEE_OTHER, cookies).await?)
}

/// Seals `post` for `flow` into cookies (returned) or the store (then no cookies). A browser holds one post in
/// cookies at a time: keeping another deletes the older one's cookies, so the callback's request head stays small
/// however many tabs log in at once (their logins still succeed, saying the form is lost).
async fn keep(state: &State, req: &HeaderMap, flow: &Flow, post: &Post) -> Result<Vec<HeaderValue>, PostError> {
    let posts = &state.posts;
    let aad = PreservedPosts::flow_aad(&flow.state);
    let sealed = posts.ring.seal(&aad, &post.encode());
    if sealed.len() <= COOKIE_CHUNKS * CHUNK_BYTES {
        let name = format!("{}{}", posts.post_prefix, flow.state);
        let set = posts.attrs.set_chunked(&HeaderMap::new(), &name, &sealed, &posts.flow_path, FLOW_TTL_SECS);
        let mut out = set.ok_or(PostError::NoRoom { len: post.body.len() })?;
        let older: Vec<&str> = cookie::iter(req)
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(posts.post_prefix.as_str()) && !n.starts_with(name.as_str()))
            .collect();
        out.extend(older.into_iter().map(|n| posts.attrs.clear(n, &posts.flow_path)));
        return Ok(out);
    }
    let Some(store) = state.sessions.store() else {
        return Err(PostError::NoRoom { len: post.body.len() });
    };
    let raw = posts.ring.seal_raw(&aad, &post.encode());
    if !posts.reserve(state.clock.now(), raw.len()) {
        return Err(PostError::StoreFull { len: post.body.len() });
    }
    store.put_blob(&PreservedPosts::store_key(&flow.state), raw, FLOW_TTL_SECS as u64).await?;
    Ok(Vec::new())
}

/// Takes the post kept for `flow` out of its cookies or the store. `None` when it is gone or does not open.
async fn take(state: &State, req: &HeaderMap, flow: &Flow, now: i64) -> Option<Post> {
    let posts = &state.posts;
    let aad = PreservedPosts::flow_aad(&flow.state);
    let name = format!("{}{}", posts.post_prefix, flow.state);
    let plain = match cookie::get_chunked(req, &name) {
        Some(v) => posts.ring.open(&aad, &v).ok(),
        None => match state.sessions.store()?.take_blob(&PreservedPosts::store_key(&flow.state)).await {
            Ok(Some(raw)) => posts.ring.open_raw(&aad, &raw).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "session store failed; the kept form post is lost");
                None
            }
        },
    };
    let post = Post::decode(&plain?)?;
    // Sent by this browser: a flow and post cookie another host added to it (cookie tossing) do not carry a post.
    let same_browser = posts.browser_value(req).is_some_and(|v| {
        aws_lc_rs::constant_time::verify_slices_are_equal(v.as_bytes(), post.browser.as_bytes()).is_ok()
    });
    if !same_browser {
        tracing::warn!("a kept form post came back to a browser that did not send it (cookie tossing?); dropped");
        return None;
    }
    (post.bound == flow.state && post.expires_at >= now).then_some(post)
}

/// `Set-Cookie` values deleting the post cookies of `state` the request carried.
fn clear_post_cookies(state: &State, req: &HeaderMap, flow_state: &str) -> Vec<HeaderValue> {
    let posts = &state.posts;
    posts.attrs.clear_chunked(req, &format!("{}{}", posts.post_prefix, flow_state), &posts.flow_path)
}

/// A silent login (`prompt=none`) came back needing the user: a new interactive flow carries the post on.
pub async fn restart(state: &State, req: &HeaderMap, old: &Flow) -> Result<Response<Body>, PostError> {
    let now = state.clock.now();
    let mut cookies = vec![state.flows.end(&old.state)];
    cookies.extend(clear_post_cookies(state, req, &old.state));
    let mut flow = start::new_flow(state, Some(&old.return_to), true);
    flow.provider = old.provider.clone();
    match take(state, req, old, now).await {
        Some(mut post) => {
            flow.post = true;
            post.bound = flow.state.clone();
            post.expires_at = flow.created + FLOW_TTL_SECS;
            cookies.extend(keep(state, req, &flow, &post).await?);
        }
        None => tracing::info!("the kept form post did not survive the silent login; logging in without it"),
    }
    Ok(start::to_issuer(state, req, &flow, StatusCode::FOUND, cookies).await?)
}

/// The callback's answer for a flow that kept a post: the resume page (or, when the post is gone, a page saying
/// so), with the new session's `cookies`.
pub async fn resume_page(state: &State, req: &HeaderMap, flow: &Flow, cookies: Vec<HeaderValue>) -> Response<Body> {
    let posts = &state.posts;
    let now = state.clock.now();
    let mut set = cookies;
    set.push(state.flows.end(&flow.state));
    set.extend(clear_post_cookies(state, req, &flow.state));
    let page = match take(state, req, flow, now).await {
        Some(mut post) => {
            // The ticket names the cookie and is in the page; the cookie's value, which the page never holds, is
            // what the sealed post is bound to: only this browser can send the form.
            let (ticket, key) = (crate::random::token(16), crate::random::token(16));
            post.bound = key.clone();
            post.expires_at = now + RESUME_TTL_SECS;
            let sealed = posts.ring.seal(&PreservedPosts::resume_aad(&ticket), &post.encode());
            let name = format!("{}{}", posts.resume_prefix, ticket);
            set.push(posts.attrs.set(&name, &key, "/", RESUME_TTL_SECS));
            page(&post.target, &format!("{ticket}.{sealed}"))
        }
        None => {
            tracing::warn!("the kept form post is gone (tampered, expired or lost); the user must send it again");
            state.metrics.event(Event::PreservedPost("lost"));
            let link = format!("<p><a href=\"{}\">Continue</a></p>", crate::error::escape(&flow.return_to));
            crate::error::html_page(
                StatusCode::OK,
                "Signed in",
                "You are signed in, but the form you sent before could not be restored. Please send it again.",
                &link,
            )
        }
    };
    let mut page = page;
    for c in set {
        page.headers_mut().append(header::SET_COOKIE, c);
    }
    page
}

/// The auto-submitting page: one hidden field, posted to `target` by a script allowed by its nonce alone (a button
/// without scripts). `Referrer-Policy: strict-origin` keeps the callback's URL (with its code) out of the
/// `Referer` while the browser still sends our `Origin`.
fn page(target: &str, value: &str) -> Response<Body> {
    let nonce = crate::random::token(16);
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sending your form</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style>\
         </head><body><h1>Signed in</h1>\
         <form id=\"resume\" method=\"post\" action=\"{action}\" enctype=\"application/x-www-form-urlencoded\">\
         <input type=\"hidden\" name=\"{FIELD}\" value=\"{value}\">\
         <p>Sending the form you submitted before you were asked to sign in…</p>\
         <noscript><button type=\"submit\">Send it</button></noscript></form>\
         <script nonce=\"{nonce}\">document.getElementById('resume').submit();</script></body></html>",
        action = crate::error::escape(target),
        value = crate::error::escape(value),
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("referrer-policy", "strict-origin")
        .header("content-security-policy", csp)
        .body(body::full(html))
        .unwrap_or_else(body::internal_error)
}

/// A resume form arrived with a valid session ([`PreservedPosts::is_resume`] said so): when its body is the
/// resume field, checks the ticket and puts the original body and content type in its place, returning the
/// `Set-Cookie` that deletes the ticket cookie; any other body is put back as it was (`None`).
/// How long the shared store keeps a used ticket's mark: until the ticket expires, plus a ticket's whole life again
/// for replicas whose clocks run behind this one's (a replica accepts the ticket until `expires_at` on its own clock).
fn mark_ttl(expires_at: i64, now: i64) -> u64 {
    u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0) + RESUME_TTL_SECS as u64
}

pub async fn resume(state: &State, req: &mut Inbound, now: i64) -> Result<Option<HeaderValue>, PostError> {
    let posts = &state.posts;
    let body = body::collect_limited(req.take_body(), posts.resume_limit()).await.map_err(|_| PostError::Unreadable)?;
    let Some((ticket, sealed)) = resume_field(&body) else {
        req.set_body(body::full(body));
        return Ok(None);
    };
    // Only idgate's page sends the field: a page of another origin (a sibling host of the same site, whose post
    // carries the `SameSite=Lax` session, and which can toss a ticket cookie of its own) is refused.
    if !posts.sent_by_us(req.headers()) {
        return Err(PostError::CrossOrigin);
    }
    let plain = posts.ring.open(&PreservedPosts::resume_aad(ticket), sealed).map_err(|_| PostError::Tampered)?;
    let post = Post::decode(&plain).ok_or(PostError::Tampered)?;
    let cookie_name = format!("{}{}", posts.resume_prefix, ticket);
    let key = cookie::get(req.headers(), &cookie_name).ok_or(PostError::OtherBrowser)?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(key.as_bytes(), post.bound.as_bytes()).is_err() {
        return Err(PostError::OtherBrowser);
    }
    if now > post.expires_at {
        return Err(PostError::Expired);
    }
    if req.uri().path_and_query().map(|p| p.as_str()) != Some(post.target.as_str()) {
        return Err(PostError::WrongTarget);
    }
    // Once: in this process, and across replicas when a shared store exists.
    let mut first = false;
    state.used_states.get_with(format!("resume:{ticket}"), || first = true);
    if let Some(store) = state.sessions.store()
        && first
    {
        first = store.first_use(&format!("resume:{ticket}"), mark_ttl(post.expires_at, now)).await?;
    }
    if !first {
        return Err(PostError::Replayed);
    }
    let headers = req.headers_mut();
    let content_type = HeaderValue::from_str(&post.content_type).map_err(|_| PostError::Tampered)?;
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(post.body.len()));
    tracing::info!(bytes = post.body.len(), "kept form post sent on after the re-login");
    state.metrics.event(Event::PreservedPost("resumed"));
    req.set_body(body::full(post.body));
    Ok(Some(posts.attrs.clear(&cookie_name, "/")))
}

/// `(ticket, sealed)` when `body` is exactly `idgate_resume=<ticket>.<sealed>` (both base64url: the form encodes
/// them unchanged).
fn resume_field(body: &[u8]) -> Option<(&str, &str)> {
    let rest = std::str::from_utf8(body).ok()?.strip_prefix(FIELD)?.strip_prefix('=')?;
    let (ticket, sealed) = rest.split_once('.')?;
    let b64 = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (b64(ticket) && b64(sealed) && ticket.len() == 22).then_some((ticket, sealed))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The content type without parameters, lowercased.
fn mime_essence(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// The two form encodings a browser navigation sends (multipart with its boundary).
fn is_form(headers: &HeaderMap) -> bool {
    match mime_essence(headers).as_deref() {
        Some("application/x-www-form-urlencoded") => true,
        Some("multipart/form-data") => headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("boundary=")),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
