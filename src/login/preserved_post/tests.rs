use std::io::Write;

use super::*;

fn settings(max: Option<u64>) -> Settings {
    let extra = max.map(|m| format!("preserve_post_max_bytes = {m}\n")).unwrap_or_default();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:4180\"\n[admin]\nlisten = \"127.0.0.1:9180\"\n\
         [upstream]\nurl = \"http://127.0.0.1:8080\"\n\
         [oidc]\nissuer = \"https://issuer.example.com\"\nclient_id = \"app\"\nclient_secret = \"s\"\n\
         redirect_url = \"https://app.example.com/oauth2/callback\"\n\
         [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n{extra}"
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    crate::config::load(f.path(), &Default::default()).unwrap()
}

fn posts() -> PreservedPosts {
    PreservedPosts::new(&settings(None), "/oauth2")
}

/// A same-origin form navigation as Chromium sends it, less or plus the given headers.
fn chromium_post(drop: &[&str], add: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    let base = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", "11"),
        ("accept", "text/html,application/xhtml+xml"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-dest", "document"),
        ("origin", "https://app.example.com"),
    ];
    for (k, v) in base.iter().filter(|(k, _)| !drop.contains(k)).chain(add) {
        h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn the_default_limit_is_64_kib_and_zero_turns_it_off() {
    assert_eq!(posts().max_bytes(), 64 * 1024);
    let off = PreservedPosts::new(&settings(Some(0)), "/oauth2");
    assert_eq!(
        off.intake(&Method::POST, "/form", &chromium_post(&[], &[])),
        Intake::Ignore("session.preserve_post_max_bytes is 0")
    );
}

#[test]
fn only_a_same_origin_form_navigation_within_the_limit_is_kept() {
    let p = posts();
    let post = Method::POST;
    let multipart = "multipart/form-data; boundary=----WebKitFormBoundaryabc";
    let rows: Vec<(&str, Method, &str, HeaderMap, Intake)> = vec![
        ("chromium urlencoded", post.clone(), "/form?x=1", chromium_post(&[], &[]), Intake::Preserve),
        (
            "chromium multipart",
            post.clone(),
            "/form",
            chromium_post(&[], &[("content-type", multipart)]),
            Intake::Preserve,
        ),
        (
            "content type any case",
            post.clone(),
            "/form",
            chromium_post(&[], &[("content-type", "Application/X-WWW-Form-Urlencoded; charset=UTF-8")]),
            Intake::Preserve,
        ),
        ("GET", Method::GET, "/form", chromium_post(&[], &[]), Intake::Ignore("not a POST")),
        ("PUT", Method::PUT, "/form", chromium_post(&[], &[]), Intake::Ignore("not a POST")),
        (
            "JSON",
            post.clone(),
            "/form",
            chromium_post(&[], &[("content-type", "application/json")]),
            Intake::Ignore("not a form content type"),
        ),
        (
            "text/plain form",
            post.clone(),
            "/form",
            chromium_post(&[], &[("content-type", "text/plain")]),
            Intake::Ignore("not a form content type"),
        ),
        (
            "no content type",
            post.clone(),
            "/form",
            chromium_post(&["content-type"], &[]),
            Intake::Ignore("not a form content type"),
        ),
        (
            "multipart without boundary",
            post.clone(),
            "/form",
            chromium_post(&[], &[("content-type", "multipart/form-data")]),
            Intake::Ignore("not a form content type"),
        ),
        (
            "fetch()",
            post.clone(),
            "/form",
            chromium_post(&[], &[("sec-fetch-mode", "cors")]),
            Intake::Ignore("not a navigation"),
        ),
        (
            "XMLHttpRequest",
            post.clone(),
            "/form",
            chromium_post(&[], &[("x-requested-with", "XMLHttpRequest")]),
            Intake::Ignore("not a navigation"),
        ),
        (
            "no sec-fetch, no html",
            post.clone(),
            "/form",
            chromium_post(&["sec-fetch-mode", "accept"], &[]),
            Intake::Ignore("not a navigation"),
        ),
        (
            "cross-site page",
            post.clone(),
            "/form",
            chromium_post(&[], &[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "same-site page",
            post.clone(),
            "/form",
            chromium_post(&[], &[("sec-fetch-site", "same-site"), ("origin", "https://other.example.com")]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "typed in / bookmark",
            post.clone(),
            "/form",
            chromium_post(&[], &[("sec-fetch-site", "none")]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "same-origin but another Origin",
            post.clone(),
            "/form",
            chromium_post(&[], &[("origin", "https://evil.example")]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "old browser, our Origin",
            post.clone(),
            "/form",
            chromium_post(&["sec-fetch-site", "sec-fetch-mode"], &[]),
            Intake::Preserve,
        ),
        (
            "old browser, other Origin",
            post.clone(),
            "/form",
            chromium_post(&["sec-fetch-site", "sec-fetch-mode"], &[("origin", "https://evil.example")]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "old browser, null Origin",
            post.clone(),
            "/form",
            chromium_post(&["sec-fetch-site", "sec-fetch-mode"], &[("origin", "null")]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "old browser, no Origin",
            post.clone(),
            "/form",
            chromium_post(&["sec-fetch-site", "sec-fetch-mode", "origin"], &[]),
            Intake::Ignore("not sent by a page of this origin"),
        ),
        (
            "network-path target",
            post.clone(),
            "//evil.example/x",
            chromium_post(&[], &[]),
            Intake::Ignore("target is not a same-origin path"),
        ),
        (
            "absolute target",
            post.clone(),
            "https://evil.example/x",
            chromium_post(&[], &[]),
            Intake::Ignore("target is not a same-origin path"),
        ),
        (
            "backslash target",
            post.clone(),
            "/\\evil.example",
            chromium_post(&[], &[]),
            Intake::Ignore("target is not a same-origin path"),
        ),
        (
            "the resume form itself",
            post.clone(),
            "/form",
            chromium_post(&[], &[("cookie", "idgate_resume_abc=1")]),
            Intake::Ignore("a resume form itself"),
        ),
        ("at the limit", post.clone(), "/form", chromium_post(&[], &[("content-length", "65536")]), Intake::Preserve),
        (
            "over the limit",
            post.clone(),
            "/form",
            chromium_post(&[], &[("content-length", "65537")]),
            Intake::TooLarge(65537),
        ),
        ("chunked (length unknown)", post.clone(), "/form", chromium_post(&["content-length"], &[]), Intake::Preserve),
    ];
    for (name, method, target, headers, want) in rows {
        assert_eq!(p.intake(&method, target, &headers), want, "{name}");
    }
}

#[test]
fn a_post_round_trips_and_truncation_is_refused() {
    let post = Post {
        bound: "state".into(),
        browser: "browser".into(),
        target: "/form?a=1".into(),
        content_type: "multipart/form-data; boundary=x".into(),
        expires_at: 1_700_000_000,
        body: Bytes::from_static(b"--x\r\n\0\xff binary\r\n--x--\r\n"),
    };
    let bytes = post.encode();
    assert_eq!(Post::decode(&bytes), Some(post));
    for cut in 0..bytes.len() {
        assert_eq!(Post::decode(&bytes[..cut]), None, "cut at {cut}");
    }
}

#[test]
fn the_resume_field_is_exactly_one_ticket_and_seal() {
    let ticket = "abcdefghijklmnopqrstuv";
    let ok = format!("idgate_resume={ticket}.AAAA-_zz");
    assert_eq!(resume_field(ok.as_bytes()), Some((ticket, "AAAA-_zz")));
    for bad in [
        format!("idgate_resume={ticket}.AAAA&x=1"),
        format!("x=1&idgate_resume={ticket}.AAAA"),
        "idgate_resume=short.AAAA".to_owned(),
        format!("idgate_resume={ticket}."),
        format!("idgate_resume={ticket}"),
        format!("idgate_resume={ticket}.AA%3D"),
        "idgate_resumeX=1".to_owned(),
    ] {
        assert_eq!(resume_field(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn only_a_small_urlencoded_post_with_a_ticket_cookie_is_read_as_a_resume_form() {
    let p = posts();
    let with = |add: &[(&str, &str)]| chromium_post(&[], add);
    assert!(p.is_resume(&Method::POST, &with(&[("cookie", "a=b; idgate_resume_abc=1")])));
    assert!(!p.is_resume(&Method::POST, &with(&[])), "no ticket cookie: streamed as it is");
    assert!(!p.is_resume(&Method::GET, &with(&[("cookie", "idgate_resume_abc=1")])));
    let multipart = "multipart/form-data; boundary=x";
    assert!(!p.is_resume(&Method::POST, &with(&[("cookie", "idgate_resume_abc=1"), ("content-type", multipart)])));
    let huge = (p.resume_limit() + 1).to_string();
    assert!(!p.is_resume(&Method::POST, &with(&[("cookie", "idgate_resume_abc=1"), ("content-length", &huge)])));
    assert!(
        p.is_resume(&Method::POST, &chromium_post(&["content-length"], &[("cookie", "idgate_resume_abc=1")])),
        "no declared length (HTTP/2): read up to the limit"
    );
}

#[test]
fn a_64_kib_body_fits_the_resume_form_limit() {
    let p = posts();
    let post = Post {
        bound: "abcdefghijklmnopqrstuv".into(),
        browser: "abcdefghijklmnopqrstuv".into(),
        target: format!("/{}", "a".repeat(2047)),
        content_type: "multipart/form-data; boundary=----WebKitFormBoundaryabcdefghijklmnop".into(),
        expires_at: i64::MAX,
        body: Bytes::from(vec![0xffu8; p.max_bytes()]),
    };
    let field = format!("{FIELD}={}.{}", post.bound, p.ring.seal("aad", &post.encode()));
    assert!(field.len() <= p.resume_limit(), "{} > {}", field.len(), p.resume_limit());
}

#[test]
fn seals_are_bound_to_their_flow_or_ticket() {
    let p = posts();
    let plain = b"x";
    let sealed = p.ring.seal(&PreservedPosts::flow_aad("state-a"), plain);
    assert!(p.ring.open(&PreservedPosts::flow_aad("state-a"), &sealed).is_ok());
    assert!(p.ring.open(&PreservedPosts::flow_aad("state-b"), &sealed).is_err());
    assert!(p.ring.open(&PreservedPosts::resume_aad("state-a"), &sealed).is_err());
    assert_ne!(PreservedPosts::store_key("a"), PreservedPosts::store_key("b"));
}

#[test]
fn the_resume_limit_is_pinned_and_a_body_of_exactly_that_length_is_read() {
    let p = posts();
    // (64 KiB + 4 KiB overhead) as base64 (÷ 3 × 4), plus the framing and the field's name.
    assert_eq!(p.resume_limit(), (65_536 + 4096) / 3 * 4 + 64 + FIELD.len());
    assert_eq!(p.resume_limit(), 92_917);
    let at = p.resume_limit().to_string();
    assert!(
        p.is_resume(&Method::POST, &chromium_post(&[], &[("cookie", "idgate_resume_abc=1"), ("content-length", &at)]))
    );
}

#[test]
fn the_browser_cookie_must_have_the_shape_of_one_and_is_host_only_when_it_can_be() {
    let p = posts();
    assert_eq!(p.browser_name, "__Host-idgate_pb");
    let value = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {}={v}", p.browser_name)).unwrap());
        p.browser_value(&h).map(str::to_owned)
    };
    assert_eq!(value("abcdefghij-_KLMNOPQR12").as_deref(), Some("abcdefghij-_KLMNOPQR12"));
    for bad in ["abcdefghij-_KLMNOPQR1", "abcdefghij-_KLMNOPQR123", "abcdefghij.KLMNOPQR12", "abcdefghij-_KLMN%PQR12"] {
        assert_eq!(value(bad), None, "{bad}");
    }
    let plain = PreservedPosts::new(&settings_with("https://issuer.example.com", "cookie_secure = false\n"), "/");
    assert_eq!(plain.browser_name, "idgate_pb");
    let domain =
        PreservedPosts::new(&settings_with("https://issuer.example.com", "cookie_domain = \"example.com\"\n"), "/");
    assert_eq!(domain.browser_name, "idgate_pb");
}

#[test]
fn the_store_budget_is_held_until_each_flow_expires() {
    let p = PreservedPosts::new(&settings_with("https://issuer.example.com", "preserve_post_store_bytes = 100\n"), "/");
    assert!(p.reserve(NOW, 60));
    assert!(p.reserve(NOW + 1, 40), "up to the budget exactly");
    assert!(!p.reserve(NOW + 1, 1), "one byte over");
    assert!(!p.reserve(NOW + FLOW_TTL_SECS - 1, 1), "the first post's room is held until its flow expires");
    assert!(p.reserve(NOW + FLOW_TTL_SECS, 60), "and free at that second");
    assert!(!p.reserve(NOW + FLOW_TTL_SECS, 1), "the second post's room is still held");
    assert!(p.reserve(NOW + FLOW_TTL_SECS + 1, 40));
    assert!(!p.reserve(NOW + FLOW_TTL_SECS + 1, 1));
}

const NOW: i64 = 1_800_000_000;
/// The browser cookie's value of the browser that sends the post.
const BROWSER: &str = "bbbbbbbbbbbbbbbbbbbbbb";

fn settings_with(issuer: &str, session: &str) -> Settings {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:4180\"\n[admin]\nlisten = \"127.0.0.1:9180\"\n\
         [upstream]\nurl = \"http://127.0.0.1:8080\"\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"app\"\nclient_secret = \"s\"\n\
         redirect_url = \"https://app.example.com/oauth2/callback\"\n\
         [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n{session}"
    );
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    crate::config::load(f.path(), &Default::default()).unwrap()
}

/// A gate's state (no issuer loaded) whose clock stands at `NOW`.
fn state_with(issuer: &str, session: &str) -> (std::sync::Arc<State>, std::sync::Arc<crate::clock::TestClock>) {
    let clock = std::sync::Arc::new(crate::clock::TestClock::default());
    clock.set(NOW);
    let state = State::new(settings_with(issuer, session), clock.clone()).unwrap();
    (state, clock)
}

fn sample(flow: &Flow, len: usize) -> Post {
    Post {
        bound: flow.state.clone(),
        browser: BROWSER.into(),
        target: "/form?x=1".into(),
        content_type: "multipart/form-data; boundary=x".into(),
        expires_at: flow.created + FLOW_TTL_SECS,
        body: Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    }
}

/// The `Cookie` header a browser sends after `set` (deleted cookies left out), with `extra` pairs.
fn jar(set: &[HeaderValue], extra: &[(&str, &str)]) -> HeaderMap {
    let mut pairs: Vec<String> = set
        .iter()
        .filter_map(|v| {
            let (n, v) = v.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap();
            (!v.is_empty()).then(|| format!("{n}={v}"))
        })
        .collect();
    pairs.extend(extra.iter().map(|(n, v)| format!("{n}={v}")));
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
    h
}

/// The names `set` sets, a deleted one marked so.
fn names(set: &[HeaderValue]) -> Vec<String> {
    set.iter()
        .map(|v| {
            let v = v.to_str().unwrap();
            let name = v.split('=').next().unwrap();
            if v.contains("Max-Age=0") { format!("{name} (deleted)") } else { name.to_owned() }
        })
        .collect()
}

fn set_cookies(r: &Response<Body>) -> Vec<HeaderValue> {
    r.headers().get_all(header::SET_COOKIE).iter().cloned().collect()
}

async fn text(b: Body) -> String {
    String::from_utf8(body::collect_limited(b, 1 << 20).await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn a_kept_post_comes_back_from_its_cookies_to_its_browser_and_flow_only() {
    let (state, _) = state_with("https://issuer.example.com", "");
    let p = &state.posts;
    let flow = start::new_flow(&state, Some("/form?x=1"), false);
    let post = sample(&flow, 11);
    let before = jar(&[], &[("idgate_post_older", "x"), ("other", "y")]);
    let set = keep(&state, &before, &flow, &post).await.unwrap();
    let name = format!("idgate_post_{}", flow.state);
    assert_eq!(names(&set), [name.clone(), "idgate_post_older (deleted)".into()], "one post in cookies at a time");
    let back = jar(&set, &[(&p.browser_name, BROWSER)]);
    assert_eq!(take(&state, &back, &flow, NOW).await.as_ref(), Some(&post));
    assert_eq!(take(&state, &back, &flow, post.expires_at).await.as_ref(), Some(&post), "its last second");
    assert_eq!(take(&state, &back, &flow, post.expires_at + 1).await, None, "expired");
    let other = jar(&set, &[(&p.browser_name, "cccccccccccccccccccccc")]);
    assert_eq!(take(&state, &other, &flow, NOW).await, None, "another browser (cookie tossing)");
    assert_eq!(take(&state, &jar(&set, &[]), &flow, NOW).await, None, "no browser cookie");
    let another_flow = start::new_flow(&state, Some("/form"), false);
    assert_eq!(take(&state, &back, &another_flow, NOW).await, None, "another flow's cookie name");
    // A post bound to another flow, found under this flow's cookie, is not this flow's.
    let stray = Post { bound: another_flow.state.clone(), ..sample(&flow, 11) };
    let set = keep(&state, &HeaderMap::new(), &flow, &stray).await.unwrap();
    assert_eq!(take(&state, &jar(&set, &[(&p.browser_name, BROWSER)]), &flow, NOW).await, None);

    // Sealed in more than one chunk but at most two: still cookies. More: no room without a store.
    let mid = sample(&flow, 4000);
    let set = keep(&state, &HeaderMap::new(), &flow, &mid).await.unwrap();
    assert_eq!(names(&set), [format!("{name}_0"), format!("{name}_1")]);
    assert_eq!(take(&state, &jar(&set, &[(&p.browser_name, BROWSER)]), &flow, NOW).await, Some(mid));
    let big = sample(&flow, 6000);
    let err = keep(&state, &HeaderMap::new(), &flow, &big).await.unwrap_err();
    assert!(matches!(err, PostError::NoRoom { len: 6000 }), "{err}");
}

#[tokio::test]
async fn a_post_too_large_for_cookies_waits_in_the_store_within_its_budget() {
    let (state, _) =
        state_with("https://issuer.example.com", "store = \"memory\"\npreserve_post_store_bytes = 15000\n");
    let browser = jar(&[], &[(&state.posts.browser_name, BROWSER)]);
    let flow = start::new_flow(&state, Some("/form"), false);
    let post = sample(&flow, 10_000);
    assert_eq!(keep(&state, &HeaderMap::new(), &flow, &post).await.unwrap(), Vec::<HeaderValue>::new());
    assert_eq!(take(&state, &browser, &flow, NOW).await, Some(post));
    assert_eq!(take(&state, &browser, &flow, NOW).await, None, "taken once");
    let second = start::new_flow(&state, Some("/form"), false);
    let err = keep(&state, &HeaderMap::new(), &second, &sample(&second, 10_000)).await.unwrap_err();
    assert!(matches!(err, PostError::StoreFull { len: 10_000 }), "the first post still holds its room: {err}");
    // A small post still travels in cookies.
    assert_eq!(keep(&state, &HeaderMap::new(), &second, &sample(&second, 11)).await.unwrap().len(), 1);
}

/// A resume form's request to `target` with `field` as the body and `cookie`, sent by a page of `site`.
fn resume_request(target: &str, field: &str, cookie: &str, site: &str) -> crate::forward::Inbound {
    let req = Request::builder()
        .method(Method::POST)
        .uri(target)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .header("sec-fetch-site", site)
        .header("origin", "https://app.example.com")
        .body(body::full(field.to_owned()))
        .unwrap();
    crate::forward::Inbound::for_tests(req)
}

#[tokio::test]
async fn the_resume_form_sends_the_original_body_once_from_its_browser_to_its_url() {
    let (state, _) = state_with("https://issuer.example.com", "");
    let p = &state.posts;
    let flow = start::new_flow(&state, Some("/form?x=1"), false);
    let post = sample(&flow, 11);
    let kept = keep(&state, &HeaderMap::new(), &flow, &post).await.unwrap();
    let callback = jar(&kept, &[(&p.browser_name, BROWSER)]);
    let session = HeaderValue::from_static("idgate=s; Path=/");
    // One page per test below (each has its own ticket): `(field, ticket cookie)`.
    let page = async || {
        let r = resume_page(&state, &callback, &flow, vec![session.clone()]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()["referrer-policy"], "strict-origin");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        let set = set_cookies(&r);
        let html = text(r.into_body()).await;
        let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap();
        assert!(html.contains(&format!("<script nonce=\"{nonce}\">")), "{html}");
        assert!(html.contains("action=\"/form?x=1\""), "{html}");
        let field = html.split("name=\"idgate_resume\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let ticket = field.split('.').next().unwrap().to_owned();
        let ticket_cookie = format!("idgate_resume_{ticket}");
        assert_eq!(
            names(&set),
            [
                "idgate".into(),
                format!("idgate_flow_{} (deleted)", flow.state),
                format!("idgate_post_{} (deleted)", flow.state),
                ticket_cookie.clone()
            ]
        );
        assert!(set[3].to_str().unwrap().contains("; Path=/; Max-Age=120"), "{:?}", set[3]);
        (format!("{FIELD}={field}"), jar(&set[3..], &[])[header::COOKIE].to_str().unwrap().to_owned(), ticket_cookie)
    };
    let ok = |r: &Result<Option<HeaderValue>, PostError>| r.as_ref().map_err(|e| e.reason()).map(|_| ()).err();

    let (field, cookie, _) = page().await;
    let mut req = resume_request("/form?x=1", &field, &cookie, "cross-site");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_cross_origin"));
    let tampered = format!("{}A", &field[..field.len() - 1]);
    let tampered = if tampered == field { format!("{}B", &field[..field.len() - 1]) } else { tampered };
    let mut req = resume_request("/form?x=1", &tampered, &cookie, "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_tampered"));
    let mut req = resume_request("/form?x=1", &field, "a=b", "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_other_browser"), "no ticket cookie");
    // A seal is bound to its ticket: under another page's ticket (and that ticket's cookie) it does not open.
    let (other_field, other_cookie, _) = page().await;
    let other_ticket = other_field.split_once('=').unwrap().1.split('.').next().unwrap();
    let swapped = format!("{FIELD}={other_ticket}.{}", field.split_once('.').unwrap().1);
    let mut req = resume_request("/form?x=1", &swapped, &other_cookie, "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_tampered"));
    let wrong = format!("{}=cccccccccccccccccccccc", cookie.split('=').next().unwrap());
    let mut req = resume_request("/form?x=1", &field, &wrong, "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_other_browser"), "another ticket value");
    let mut req = resume_request("/form?x=2", &field, &cookie, "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_wrong_target"));
    let mut req = resume_request("/form?x=1", &field, &cookie, "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW + RESUME_TTL_SECS + 1).await), Some("post_expired"));
    // At its last second: the original body and content type take the field's place, the ticket cookie goes.
    let mut req = resume_request("/form?x=1", &field, &cookie, "same-origin");
    let clear = resume(&state, &mut req, NOW + RESUME_TTL_SECS).await.unwrap().unwrap();
    assert!(clear.to_str().unwrap().starts_with(&format!("{}=; Path=/; Max-Age=0", cookie.split('=').next().unwrap())));
    assert_eq!(req.headers()[header::CONTENT_TYPE], "multipart/form-data; boundary=x");
    assert_eq!(req.headers()[header::CONTENT_LENGTH], "11");
    assert_eq!(body::collect_limited(req.into_request().into_body(), 1 << 20).await.unwrap(), post.body);
    let mut req = resume_request("/form?x=1", &field, &cookie, "same-origin");
    assert_eq!(ok(&resume(&state, &mut req, NOW).await), Some("post_replayed"), "once");
    // Another body is put back as it was.
    let (_, cookie, _) = page().await;
    let mut req = resume_request("/form?x=1", "a=1&b=2", &cookie, "same-origin");
    assert!(resume(&state, &mut req, NOW).await.unwrap().is_none());
    assert_eq!(text(req.into_request().into_body()).await, "a=1&b=2");
    // A lost post: a page saying so, the session still set.
    let r = resume_page(&state, &jar(&kept, &[]), &flow, vec![session.clone()]).await;
    assert_eq!((r.status(), names(&set_cookies(&r))[0].as_str()), (StatusCode::OK, "idgate"));
    assert!(text(r.into_body()).await.contains("could not be restored"));
    assert!(state.metrics.render().contains("idgate_preserved_posts_total{result=\"lost\"} 1"));
}

#[tokio::test]
async fn a_preserved_post_survives_the_redirect_and_a_silent_login_restart() {
    use crate::{
        clock::Clock,
        config::TokenAuthMethod,
        dev_issuer::{DevAlg, DevClient, DevIssuer},
    };
    let clock = std::sync::Arc::new(crate::clock::TestClock::default());
    clock.set(NOW);
    let client = DevClient {
        client_id: "app".into(),
        client_secret: "s".into(),
        redirect_uris: vec!["https://app.example.com/oauth2/callback".into()],
        token_auth_method: TokenAuthMethod::ClientSecretBasic,
        post_logout_redirect_uris: vec![],
        jwks: None,
        jwks_uri: None,
    };
    let dyn_clock: std::sync::Arc<dyn Clock> = clock.clone();
    let issuer = DevIssuer::start("127.0.0.1:0".parse().unwrap(), DevAlg::RS256, client, dyn_clock).await.unwrap();
    let state = State::new(settings_with(issuer.issuer(), ""), clock.clone()).unwrap();
    state.provider.load().await.unwrap();
    let browser = format!("{}={BROWSER}", state.posts.browser_name);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/form?x=1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &browser)
        .body(body::full("a=1&b=2"))
        .unwrap();
    let r = preserve(&state, req, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let state_of = |r: &Response<Body>| {
        let location = url::Url::parse(r.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned()
    };
    let first = state_of(&r);
    let set = set_cookies(&r);
    let mut got = names(&set);
    got.sort();
    let mut want = [format!("idgate_flow_{first}"), format!("idgate_post_{first}"), "__Host-idgate_pb".into()];
    want.sort();
    assert_eq!(got, want);
    assert!(set.iter().any(|c| c.to_str().unwrap().starts_with(&format!("{browser}; Path=/; Max-Age=600"))));
    let back = jar(&set, &[]);
    let flow = state.flows.find(&back, &first).unwrap();
    assert!(flow.post);
    let kept = Post {
        bound: first.clone(),
        browser: BROWSER.into(),
        target: "/form?x=1".into(),
        content_type: "application/x-www-form-urlencoded".into(),
        expires_at: NOW + FLOW_TTL_SECS,
        body: Bytes::from_static(b"a=1&b=2"),
    };
    assert_eq!(take(&state, &back, &flow, NOW).await.as_ref(), Some(&kept));
    // A silent login came back needing the user, 100 s later: a new flow carries the post on.
    clock.advance(100);
    let r = restart(&state, &back, &flow).await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let second = state_of(&r);
    let set = set_cookies(&r);
    let got = names(&set);
    for want in [
        format!("idgate_flow_{first} (deleted)"),
        format!("idgate_post_{first} (deleted)"),
        format!("idgate_flow_{second}"),
        format!("idgate_post_{second}"),
    ] {
        assert!(got.contains(&want), "{want} in {got:?}");
    }
    let back = jar(&set, &[(&state.posts.browser_name, BROWSER)]);
    let flow = state.flows.find(&back, &second).unwrap();
    let moved = Post { bound: second.clone(), expires_at: NOW + 100 + FLOW_TTL_SECS, ..kept };
    assert_eq!(take(&state, &back, &flow, NOW + 100).await, Some(moved));
    issuer.stop();
}

#[test]
fn a_used_tickets_mark_outlives_the_ticket_by_a_tickets_life() {
    assert_eq!(mark_ttl(NOW + 120, NOW), 240, "just issued");
    assert_eq!(mark_ttl(NOW + 120, NOW + 100), 140, "used late");
    assert_eq!(mark_ttl(NOW + 120, NOW + 120), 120, "used at its last second");
    assert_eq!(mark_ttl(NOW + 120, NOW + 500), 120, "a clock ahead of the issuer's never makes it negative");
}
