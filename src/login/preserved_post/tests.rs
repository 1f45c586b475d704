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
