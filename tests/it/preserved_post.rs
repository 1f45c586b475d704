//! Form posts that survive a re-login (issue 16): the whole round trip against the development issuer with a
//! recording upstream, and every refusal — each asserting why, and that the upstream never saw the body.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use idgate::config::StoreKind;

use crate::harness::{Browser, Resp, TestGate};

/// What the upstream received: method, target, content type, body.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    method: String,
    uri: String,
    content_type: String,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn recording_upstream() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let kept = Arc::clone(&log);
    let addr = crate::harness::spawn_upstream(move |req: Request<hyper::body::Incoming>| {
        let log = Arc::clone(&kept);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let content_type =
                parts.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let origin = parts.headers.get(header::ORIGIN).map(|v| v.to_str().unwrap().to_owned());
            let user = parts.headers.get("x-auth-request-user").map(|v| v.to_str().unwrap().to_owned());
            let cookie = parts.headers.get(header::COOKIE).map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(Received {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type,
                body: body.clone(),
            });
            let out = serde_json::json!({"received": body.len(), "origin": origin, "user": user, "cookie": cookie});
            http::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(out.to_string())))
                .unwrap()
        }
    })
    .await;
    (addr, log)
}

async fn gate(f: impl FnOnce(&mut idgate::config::Settings) + 'static) -> (TestGate, Log) {
    let (upstream, log) = recording_upstream().await;
    let gate = TestGate::builder().upstream(upstream).settings(f).spawn().await;
    (gate, log)
}

/// The POSTs the upstream received.
fn posts(log: &Log) -> Vec<Received> {
    log.lock().unwrap().iter().filter(|r| r.method == "POST").cloned().collect()
}

/// A form submission as Chromium sends it from a page of the gate's origin.
async fn submit(b: &Browser, base: &str, path: &str, content_type: &str, body: &[u8]) -> Resp {
    submit_to(b, base, base, path, content_type, body).await
}

/// [`submit`] from a page of `base`, sent to `at` (a replica behind the same origin).
async fn submit_to(b: &Browser, base: &str, at: &str, path: &str, content_type: &str, body: &[u8]) -> Resp {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    h.insert("sec-fetch-dest", HeaderValue::from_static("document"));
    h.insert(header::ORIGIN, HeaderValue::from_str(base).unwrap());
    b.send(Method::POST, &format!("{at}{path}"), h, Bytes::copy_from_slice(body)).await
}

/// A logged-in browser whose session then ends (the clock passes the ID token's `exp`).
async fn expired_browser(gate: &TestGate) -> Browser {
    let b = gate.login_as("alice").await;
    gate.clock.advance(3601);
    let r = b.get(&format!("{}/still-there", gate.base)).await;
    assert_eq!(r.status, StatusCode::FOUND, "the session has ended");
    b
}

/// The resume page's form: its action and the value of its one field.
fn resume_form(page: &Resp) -> (String, String) {
    let html = page.text();
    assert_eq!(page.status, StatusCode::OK, "resume page: {html}");
    let attr = |after: &str| html.split(after).nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
    (attr("action=\""), attr("name=\"idgate_resume\" value=\""))
}

/// Sends the resume form as the page's script does (a same-origin form navigation).
async fn send_resume(b: &Browser, base: &str, action: &str, value: &str) -> Resp {
    submit(b, base, action, "application/x-www-form-urlencoded", format!("idgate_resume={value}").as_bytes()).await
}

/// Submits `body` with an ended session, logs in again, and returns the resume page.
async fn kept_and_logged_in(gate: &TestGate, b: &Browser, path: &str, content_type: &str, body: &[u8]) -> Resp {
    let kept = submit(b, &gate.base, path, content_type, body).await;
    assert_eq!(kept.status, StatusCode::SEE_OTHER, "the post is kept and the browser sent to log in: {}", kept.text());
    assert!(kept.location().starts_with(gate.issuer.issuer()), "{}", kept.location());
    b.authorize_and_callback(&gate.base, kept.location(), "alice").await
}

/// `idgate_preserved_posts_total{result=…}` as counted so far.
fn counted(gate: &TestGate, result: &str) -> u64 {
    let text = gate.state().metrics.render();
    let prefix = format!("idgate_preserved_posts_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.trim().parse().unwrap())
}

fn reason(r: &Resp) -> String {
    r.text().split("<small>").nth(1).and_then(|s| s.split("</small>").next()).unwrap_or("").to_owned()
}

const FORM: &str = "title=Z%C3%B6%C3%AB+%26+%E5%B1%B1%E7%94%B0&amount=100%25&note=a+b%2Bc";

#[tokio::test]
async fn an_urlencoded_post_survives_the_re_login_and_reaches_the_upstream_once() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let page =
        kept_and_logged_in(&gate, &b, "/orders/new?step=2", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    // The page: the target is the original URL, a script allowed by its nonce alone, no body in any URL.
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap();
    assert!(page.text().contains(&format!("<script nonce=\"{nonce}\">")), "{}", page.text());
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline'; script"), "{csp}");
    assert_eq!(page.headers.get("referrer-policy").unwrap(), "strict-origin");
    assert_eq!(page.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert!(b.cookie("idgate").is_some(), "the new session is set with the page");
    assert!(!page.text().contains("Z%C3%B6") && !page.text().contains("amount"), "the body is sealed");
    let (action, value) = resume_form(&page);
    assert_eq!(action, "/orders/new?step=2");
    assert!(posts(&log).is_empty(), "nothing reached the upstream before the resume form");

    let done = send_resume(&b, &gate.base, &action, &value).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.json()["user"], "dev|alice", "sent on with the new session's identity");
    assert_eq!(done.json()["origin"], gate.base.as_str(), "the browser's own same-origin Origin");
    assert!(done.json()["cookie"].is_null(), "idgate's cookies (the ticket among them) stay with idgate");
    let got = posts(&log);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri, "/orders/new?step=2");
    assert_eq!(got[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(got[0].body, FORM.as_bytes(), "the original bytes");
    assert!(
        done.set_cookies().iter().any(|c| c.starts_with("idgate_resume_") && c.contains("Max-Age=0")),
        "the ticket cookie is deleted: {:?}",
        done.set_cookies()
    );
    assert_eq!((counted(&gate, "kept"), counted(&gate, "resumed")), (1, 1));
    gate.shutdown().await;
}

#[tokio::test]
async fn a_multipart_post_with_a_binary_file_reaches_the_upstream_byte_for_byte() {
    let (gate, log) = gate(|s| s.session.store = StoreKind::Memory).await;
    let b = expired_browser(&gate).await;
    let boundary = "----WebKitFormBoundaryQ2xr7dWbTgM0dXyZ";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nRapport für 山田\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"scan.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    // Every byte value, CR LF and a fake boundary inside the file: no HTML form could rebuild this.
    body.extend((0..=255u8).cycle().take(20_000));
    body.extend_from_slice(format!("\r\n--{boundary}x\r\n\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let page = kept_and_logged_in(&gate, &b, "/upload", &content_type, &body).await;
    let (action, value) = resume_form(&page);
    assert!(b.jar.lock().unwrap().keys().all(|k| !k.starts_with("idgate_post_")), "20 KB went to the store");
    let done = send_resume(&b, &gate.base, &action, &value).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let got = posts(&log);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].uri.as_str(), got[0].content_type.as_str()), ("/upload", content_type.as_str()));
    assert!(got[0].body == body, "the multipart body arrives byte for byte");
    gate.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_cookie_budget_is_kept_in_redis_and_sent_once_across_replicas() {
    let redis = crate::redis::Redis::start().await;
    let url = redis.url();
    let (gate, log) = gate(move |s| s.session.store = StoreKind::Redis { url: idgate::config::Secret::new(url) }).await;
    let b = expired_browser(&gate).await;
    let body = format!("text={}", "x".repeat(30_000));
    let page = kept_and_logged_in(&gate, &b, "/notes", "application/x-www-form-urlencoded", body.as_bytes()).await;
    let (action, value) = resume_form(&page);
    let ticket_cookie = b
        .jar
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("idgate_resume_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let done = send_resume(&b, &gate.base, &action, &value).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(posts(&log).len(), 1);
    assert_eq!(posts(&log)[0].body, body.as_bytes());
    // Another replica, which never saw this ticket used, learns it from Redis.
    let replica = gate.replica(|_| {}).await;
    b.set_cookie(&ticket_cookie.0, &ticket_cookie.1);
    let at = format!("http://{}", replica.public_addr);
    let field = format!("idgate_resume={value}");
    let there = submit_to(&b, &gate.base, &at, &action, "application/x-www-form-urlencoded", field.as_bytes()).await;
    assert_eq!((there.status, reason(&there)), (StatusCode::CONFLICT, "post_replayed".to_owned()), "{}", there.text());
    assert_eq!(posts(&log).len(), 1);
    replica.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn a_second_resume_is_refused_even_with_the_ticket_cookie_put_back() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let kept = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    let form = b.get(kept.location()).await;
    assert_eq!(form.status, StatusCode::OK);
    let back = b.post_form(kept.location(), "username=alice").await;
    let callback = Browser::resolve(&gate.base, back.location());
    let page = b.get(&callback).await;
    // A second callback for the same login does nothing: no second resume form.
    let second = b.get(&callback).await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST, "{}", second.text());
    assert!(!second.text().contains("idgate_resume"));
    let ticket_cookie = b
        .jar
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("idgate_resume_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let (action, value) = resume_form(&page);
    assert_eq!(send_resume(&b, &gate.base, &action, &value).await.status, StatusCode::OK);
    assert!(b.cookie(&ticket_cookie.0).is_none(), "the ticket cookie went with the first resume");
    b.set_cookie(&ticket_cookie.0, &ticket_cookie.1);
    let again = send_resume(&b, &gate.base, &action, &value).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(reason(&again), "post_replayed");
    assert_eq!(counted(&gate, "post_replayed"), 1);
    assert_eq!(posts(&log).len(), 1, "the upstream got the body once");
    gate.shutdown().await;
}

#[tokio::test]
async fn another_browser_cannot_send_the_resume_form() {
    let (gate, log) = gate(|_| {}).await;
    let victim = expired_browser(&gate).await;
    let page = kept_and_logged_in(&gate, &victim, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    let (action, value) = resume_form(&page);
    let ticket = value.split('.').next().unwrap().to_owned();
    let other = gate.login_as("mallory").await;
    // Without a ticket cookie the field is just an opaque, sealed value to the application.
    let plain = send_resume(&other, &gate.base, &action, &value).await;
    assert_eq!(plain.status, StatusCode::OK);
    // With a forged ticket cookie (the name is in the page; the value is not).
    other.set_cookie(&format!("idgate_resume_{ticket}"), "1");
    let forged = send_resume(&other, &gate.base, &action, &value).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text());
    assert_eq!(reason(&forged), "post_other_browser");
    assert!(posts(&log).iter().all(|r| r.body != FORM.as_bytes()), "the original body never reached the upstream");
    // The victim's own browser still can, once.
    assert_eq!(send_resume(&victim, &gate.base, &action, &value).await.status, StatusCode::OK);
    assert_eq!(posts(&log).iter().filter(|r| r.body == FORM.as_bytes()).count(), 1);
    gate.shutdown().await;
}

#[tokio::test]
async fn a_tampered_or_moved_resume_form_is_refused() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let page = kept_and_logged_in(&gate, &b, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    let (action, value) = resume_form(&page);
    let mut bytes = value.clone().into_bytes();
    let last = bytes.len() - 5;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let r = send_resume(&b, &gate.base, &action, &tampered).await;
    assert_eq!((r.status, reason(&r)), (StatusCode::BAD_REQUEST, "post_tampered".to_owned()), "{}", r.text());
    let moved = send_resume(&b, &gate.base, "/admin/delete", &value).await;
    assert_eq!((moved.status, reason(&moved)), (StatusCode::BAD_REQUEST, "post_wrong_target".to_owned()));
    assert!(posts(&log).iter().all(|r| r.body != FORM.as_bytes()));
    gate.shutdown().await;
}

#[tokio::test]
async fn a_tampered_post_cookie_logs_in_and_says_the_form_is_lost() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let kept = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    assert_eq!(kept.status, StatusCode::SEE_OTHER);
    let (name, value) = b
        .jar
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("idgate_post_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let mut flipped = value.into_bytes();
    flipped[40] = if flipped[40] == b'A' { b'B' } else { b'A' };
    b.set_cookie(&name, std::str::from_utf8(&flipped).unwrap());
    let page = b.authorize_and_callback(&gate.base, kept.location(), "alice").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("could not be restored"), "{}", page.text());
    assert!(!page.text().contains("idgate_resume"), "no resume form");
    assert!(b.cookie("idgate").is_some(), "logged in all the same");
    assert!(posts(&log).is_empty());
    assert_eq!(counted(&gate, "lost"), 1);
    gate.shutdown().await;
}

#[tokio::test]
async fn an_expired_flow_or_resume_sends_nothing() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    // The login takes longer than a flow lives: the callback refuses it (as any login), the post goes with it.
    let kept = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    gate.clock.advance(601);
    let late = b.authorize_and_callback(&gate.base, kept.location(), "alice").await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST, "{}", late.text());
    assert!(late.text().contains("could not be completed"));
    // The resume form waits longer than its ticket lives.
    let b = expired_browser(&gate).await;
    let page = kept_and_logged_in(&gate, &b, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    let (action, value) = resume_form(&page);
    gate.clock.advance(idgate::login::preserved_post::RESUME_TTL_SECS + 1);
    let r = send_resume(&b, &gate.base, &action, &value).await;
    assert_eq!((r.status, reason(&r)), (StatusCode::BAD_REQUEST, "post_expired".to_owned()), "{}", r.text());
    assert!(posts(&log).is_empty());
    gate.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_todays_401_with_a_page_that_says_so() {
    let (gate, log) = gate(|s| s.session.store = StoreKind::Memory).await;
    let b = expired_browser(&gate).await;
    let body = format!("a={}", "x".repeat(64 * 1024 - 1));
    let r = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", body.as_bytes()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(reason(&r), "post_too_large");
    assert!(r.text().contains("too large to keep") && r.text().contains("/oauth2/start?rd=%2Fform"), "{}", r.text());
    assert!(r.set_cookies().iter().all(|c| !c.starts_with("idgate_flow_")), "no login started");
    assert_eq!(counted(&gate, "post_too_large"), 1);
    // Exactly at the limit is kept.
    let at = format!("a={}", "x".repeat(64 * 1024 - 2));
    let ok = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", at.as_bytes()).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert!(posts(&log).is_empty());
    gate.shutdown().await;
}

#[tokio::test]
async fn with_the_cookie_store_a_body_too_big_for_cookies_gets_the_too_large_page() {
    let (gate, _log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let body = format!("a={}", "x".repeat(20_000));
    let r = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", body.as_bytes()).await;
    assert_eq!((r.status, reason(&r)), (StatusCode::UNAUTHORIZED, "post_no_room".to_owned()), "{}", r.text());
    gate.shutdown().await;
}

#[tokio::test]
async fn posts_that_are_not_same_origin_form_navigations_get_todays_401() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let url = format!("{}/api/orders", gate.base);
    let json = |extra: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in extra {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    };
    // JSON, even as a navigation-looking request.
    let r = b
        .send(
            Method::POST,
            &url,
            json(&[
                ("content-type", "application/json"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-site", "same-origin"),
            ]),
            Bytes::from_static(b"{\"a\":1}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    // A form an attacker's page makes the victim's browser submit: cross-site, never kept.
    let r = b
        .send(
            Method::POST,
            &url,
            json(&[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ]),
            Bytes::from_static(b"transfer=all"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    assert!(r.set_cookies().iter().all(|c| !c.starts_with("idgate_flow_") && !c.starts_with("idgate_post_")));
    // fetch() with a form body.
    let r = b
        .send(
            Method::POST,
            &url,
            json(&[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-mode", "cors"),
                ("sec-fetch-site", "same-origin"),
            ]),
            Bytes::from_static(b"a=1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // An API route never keeps anything.
    gate.shutdown().await;
    assert!(log.lock().unwrap().iter().all(|r| r.method != "POST"));
    let (gate, api_log) = gate_with_api_route().await;
    let b = expired_browser(&gate).await;
    let r = submit(&b, &gate.base, "/api/orders", "application/x-www-form-urlencoded", b"a=1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    assert!(r.set_cookies().iter().all(|c| !c.starts_with("idgate_flow_") && !c.starts_with("idgate_post_")));
    // Nothing was kept to send later: a login now resumes no post.
    let landed = b.login_to_callback(&gate.base, "/", "alice").await;
    assert_eq!(landed.status, StatusCode::FOUND, "a plain login, no resume page: {}", landed.text());
    assert!(!landed.text().contains("idgate_resume"));
    assert!(api_log.lock().unwrap().iter().all(|r| r.method != "POST"), "the API route's post was never sent");
    gate.shutdown().await;
}

async fn gate_with_api_route() -> (TestGate, Log) {
    gate(|s| s.routes = vec![crate::harness::route("/api", idgate::config::AuthMode::Api)]).await
}

#[tokio::test]
async fn a_silent_login_that_needs_the_user_carries_the_post_to_the_interactive_one() {
    let (gate, log) = gate(|s| s.session.silent_reauth = true).await;
    let b = expired_browser(&gate).await;
    let kept = submit(&b, &gate.base, "/form", "application/x-www-form-urlencoded", FORM.as_bytes()).await;
    assert!(kept.location().contains("prompt=none"), "{}", kept.location());
    let state = url::Url::parse(kept.location())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    // The issuer answers prompt=none with login_required.
    let again = b.get(&format!("{}/oauth2/callback?error=login_required&state={state}", gate.base)).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.text());
    assert!(again.location().starts_with(gate.issuer.issuer()) && !again.location().contains("prompt=none"));
    let page = b.authorize_and_callback(&gate.base, again.location(), "alice").await;
    let (action, value) = resume_form(&page);
    assert_eq!(send_resume(&b, &gate.base, &action, &value).await.status, StatusCode::OK);
    assert_eq!(posts(&log).len(), 1);
    assert_eq!(posts(&log)[0].body, FORM.as_bytes());
    gate.shutdown().await;
}

#[tokio::test]
async fn a_browser_holds_one_post_in_cookies_at_a_time() {
    let (gate, log) = gate(|_| {}).await;
    let b = expired_browser(&gate).await;
    let first = submit(&b, &gate.base, "/a", "application/x-www-form-urlencoded", b"tab=1").await;
    let second = submit(&b, &gate.base, "/b", "application/x-www-form-urlencoded", b"tab=2").await;
    assert_eq!((first.status, second.status), (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER));
    let held: Vec<String> = b.jar.lock().unwrap().keys().filter(|k| k.starts_with("idgate_post_")).cloned().collect();
    assert_eq!(held.len(), 1, "the newer post replaced the older one's cookie: {held:?}");
    // The older tab's login succeeds and says so; the newer one's form is sent on.
    let lost = b.authorize_and_callback(&gate.base, first.location(), "alice").await;
    assert!(lost.text().contains("could not be restored"), "{}", lost.text());
    let page = b.authorize_and_callback(&gate.base, second.location(), "alice").await;
    let (action, value) = resume_form(&page);
    assert_eq!(send_resume(&b, &gate.base, &action, &value).await.status, StatusCode::OK);
    let got = posts(&log);
    assert_eq!((got.len(), got[0].uri.as_str(), &got[0].body[..]), (1, "/b", &b"tab=2"[..]));
    gate.shutdown().await;
}
