//! What the upstream receives: exactly the configured identity headers, nothing forged, no token, no idgate cookie.

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use idgate::config::AuthMode;

use crate::harness::{Browser, TestGate, contains_jwt, route};

const SPOOFS: [(&str, &str); 8] = [
    ("X-Auth-Request-User", "admin"),
    ("x-auth-request-user", "admin2"),
    ("X_Auth_Request_User", "admin3"),
    ("X-AUTH-REQUEST-EMAIL", "ceo@example.com"),
    ("X-Auth-Request-Groups", "admins"),
    ("X-Forwarded-User", "root"),
    ("X-Forwarded-Access-Token", "forged"),
    ("x-auth-request-roles", "admin"),
];

fn spoofed() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in SPOOFS {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_static(v));
    }
    h
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/public", AuthMode::Public)]).spawn().await;
    let b = gate.login_as("alice").await;
    for (method, path, browser) in [
        (Method::GET, "/private", b.clone()),
        (Method::POST, "/private", b.api()),
        (Method::OPTIONS, "/public/x", Browser::new().api()),
        (Method::GET, "/public/x", Browser::new()),
    ] {
        let r = browser.send(method.clone(), &format!("{}{path}", gate.base), spoofed(), bytes::Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.text());
        let headers = r.json()["headers"].as_object().unwrap().clone();
        for (k, _) in SPOOFS {
            let lower = k.to_ascii_lowercase();
            let values = headers.get(&lower).map(|v| v.to_string()).unwrap_or_default();
            assert!(
                !values.contains("admin")
                    && !values.contains("root")
                    && !values.contains("forged")
                    && !values.contains("ceo"),
                "{method} {path}: {lower} = {values}"
            );
        }
        assert!(!headers.contains_key("x_auth_request_user"), "{method} {path}");
    }
    // On the protected route the real identity is there, once.
    let r = b.send(Method::GET, &format!("{}/private", gate.base), spoofed(), bytes::Bytes::new()).await;
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    assert_eq!(r.upstream_header("x-auth-request-roles").as_deref(), Some("user"));
    gate.shutdown().await;
}

#[tokio::test]
async fn app_cookies_pass_but_idgate_cookies_and_tokens_do_not() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.login_as("alice").await;
    b.set_cookie("app_session", "keep-me");
    b.set_cookie("idgate_flow_stale", "x");
    let r = b.get(&format!("{}/page?q=1", gate.base)).await;
    assert_eq!(r.upstream_header("cookie").as_deref(), Some("app_session=keep-me"));
    assert!(!contains_jwt(&r.text()), "{}", r.text());
    gate.shutdown().await;
}

#[tokio::test]
async fn an_id_token_as_bearer_is_refused_and_nothing_is_forwarded() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/public", AuthMode::Public)]).spawn().await;
    let now = idgate::clock::Clock::now(gate.clock.as_ref());
    let claims = gate.issuer.claims_for("alice", None);
    let mut claims = serde_json::Value::Object(claims);
    claims["exp"] = serde_json::json!(now + 600);
    let id_token = gate.issuer.sign(&claims);
    let b = gate.login_as("alice").await.api();
    for path in ["/api/x", "/public/x"] {
        let r = b.get_with(&format!("{}{path}", gate.base), &[("authorization", &format!("Bearer {id_token}"))]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.json()["error"], "invalid_token");
        assert!(r.text().contains("ID tokens are not API credentials"));
    }
    // An access token (typ at+jwt) or an opaque bearer passes through to the app.
    let at = gate
        .issuer
        .with_key(|k| k.sign_with_header(&serde_json::json!({"alg": "RS256", "kid": k.kid, "typ": "at+jwt"}), &claims));
    let r = b.get_with(&format!("{}/api/x", gate.base), &[("authorization", &format!("Bearer {at}"))]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = b.get_with(&format!("{}/api/x", gate.base), &[("authorization", "Bearer opaque-token")]).await;
    assert_eq!(r.upstream_header("authorization").as_deref(), Some("Bearer opaque-token"));
    gate.shutdown().await;
}

#[tokio::test]
async fn non_ascii_claims_travel_as_utf8_and_control_characters_never_do() {
    let gate = TestGate::builder().spawn().await;
    let name = "Zoë Ünïcødé 山田";
    let b = gate.login_as(name).await;
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.upstream_header("x-auth-request-name").as_deref(), Some(name));
    gate.issuer.configure(|k| {
        k.claims_hook = Some(std::sync::Arc::new(|c| {
            c.insert("name".into(), serde_json::json!("Eve\r\nX-Auth-Request-User: admin\u{0}"));
        }))
    });
    let b = gate.login_as("eve").await;
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.upstream_header("x-auth-request-name").as_deref(), Some("EveX-Auth-Request-User: admin"));
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|eve"));
    gate.shutdown().await;
}

#[tokio::test]
async fn route_rules_by_normalised_path() {
    let gate = TestGate::builder()
        .settings(|s| {
            let mut admin = route("/admin", AuthMode::Login);
            admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
            let mut staff = route("/staff", AuthMode::Login);
            staff.email_domains = vec!["example.com".into()];
            s.routes = vec![route("/public", AuthMode::Public), admin, staff, route("/api", AuthMode::Api)];
        })
        .spawn()
        .await;
    let anon = Browser::new();
    assert_eq!(anon.get(&format!("{}/public/page", gate.base)).await.status, StatusCode::OK);
    for tricky in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public%2F..%2Fprivate",
        "/public\\..\\private",
        "//private",
        "/private?/public",
        "/publicity",
    ] {
        let r = anon.get(&format!("{}{tricky}", gate.base)).await;
        assert_ne!(r.status, StatusCode::OK, "{tricky} must not be public");
    }
    let r = anon.get(&format!("{}/public%252F..%252Fprivate", gate.base)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "double encoding");
    assert_eq!(
        anon.get(&format!("{}/api/x", gate.base)).await.status,
        StatusCode::UNAUTHORIZED,
        "api routes never redirect"
    );
    let user = gate.login_as("bob").await;
    let denied = user.get(&format!("{}/admin/panel", gate.base)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.text().contains("/admin") && !denied.text().contains("dev|bob"));
    assert_eq!(user.api().get(&format!("{}/ADMIN/panel", gate.base)).await.json()["error"], "forbidden");
    assert_eq!(user.api().get(&format!("{}/admin/%2e%2e/admin/x", gate.base)).await.json()["error"], "bad_request");
    assert_eq!(user.get(&format!("{}/staff", gate.base)).await.status, StatusCode::OK);
    let admin = gate.login_as("admin-ann").await;
    assert_eq!(admin.get(&format!("{}/admin/panel", gate.base)).await.status, StatusCode::OK);
    gate.shutdown().await;
}

#[tokio::test]
async fn userinfo_shows_claims_never_tokens() {
    let gate = TestGate::builder().settings(|s| s.oidc.forward_access_token = true).spawn().await;
    let b = gate.login_as("olga").await;
    let r = b.api().get(&format!("{}/oauth2/userinfo", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["sub"], "dev|olga");
    assert_eq!(j["https://example.com/roles"][0], "user");
    assert!(!contains_jwt(&r.text()));
    assert_eq!(
        Browser::new().api().get(&format!("{}/oauth2/userinfo", gate.base)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // forward_access_token sends the access token, and only that.
    let page = b.get(&format!("{}/", gate.base)).await;
    assert!(page.upstream_header("x-forwarded-access-token").is_some_and(|t| !t.starts_with("eyJ")));
    gate.shutdown().await;
}

#[tokio::test]
async fn forward_auth_answers_with_identity_headers() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            let mut admin = route("/admin", AuthMode::Login);
            admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
            s.routes = vec![route("/public", AuthMode::Public), admin];
        })
        .spawn()
        .await;
    let auth = format!("{}/oauth2/auth", gate.base);
    let uri = |p: &'static str| [("x-forwarded-uri", p)];
    assert_eq!(Browser::new().get_with(&auth, &uri("/x")).await.status, StatusCode::UNAUTHORIZED);
    let b = gate.login_as("paul").await;
    let r = b.get_with(&auth, &uri("/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-auth-request-user"], "dev|paul");
    assert_eq!(b.get_with(&auth, &uri("/admin/x")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get_with(&auth, &uri("/ADMIN/x")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get_with(&auth, &[("x-original-uri", "/admin/x?a=b")]).await.status, StatusCode::FORBIDDEN);
    let url = [("x-original-url", "https://app.example.com/admin/x"), ("x-original-method", "GET")];
    assert_eq!(b.get_with(&auth, &url).await.status, StatusCode::FORBIDDEN);
    let ann = gate.login_as("admin-ann").await;
    assert_eq!(ann.get_with(&auth, &url).await.status, StatusCode::OK);
    assert_eq!(Browser::new().get_with(&auth, &uri("/public/x")).await.status, StatusCode::OK);
    // Not in normal form: the proxy in front forwards these bytes as they are, so idgate cannot vouch for them.
    for p in ["/public/../admin", "/public//x", "/public/%2e%2e/admin", "/public/..;/admin/x", "/public%2Fx"] {
        let r = Browser::new().api().get_with(&auth, &[("x-original-uri", p)]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{p}");
        assert_eq!(r.json()["error"], "forbidden", "{p}");
    }
    gate.shutdown().await;
}

#[tokio::test]
async fn forward_auth_ignores_the_original_uri_from_untrusted_peers() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/public", AuthMode::Public)]).spawn().await;
    let auth = format!("{}/oauth2/auth", gate.base);
    let r = Browser::new().get_with(&auth, &[("x-forwarded-uri", "/public/x")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a spoofed X-Forwarded-Uri does not make a path public");
    gate.shutdown().await;
}

#[tokio::test]
async fn userinfo_claims_enrich_the_session_only_for_the_same_subject() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.oidc.userinfo_claims = true;
            s.headers.push((http::HeaderName::from_static("x-groups"), "groups".into()));
        })
        .spawn()
        .await;
    gate.issuer.configure(|k| {
        k.userinfo_hook = Some(std::sync::Arc::new(|c| {
            c.insert("groups".into(), serde_json::json!(["staff", "eu"]));
            c.insert("name".into(), serde_json::json!("Not The Token's Name"));
        }))
    });
    let b = gate.login_as("rita").await;
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.upstream_header("x-groups").as_deref(), Some("staff,eu"));
    assert_eq!(r.upstream_header("x-auth-request-name").as_deref(), Some("rita"), "the token's own claims win");
    gate.issuer.configure(|k| {
        k.userinfo_hook = Some(std::sync::Arc::new(|c| {
            c.insert("sub".into(), serde_json::json!("dev|someone-else"));
        }))
    });
    let cb = gate.browser().login_to_callback(&gate.base, "/", "rita").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "userinfo for another sub is refused: {}", cb.text());
    gate.shutdown().await;
}
