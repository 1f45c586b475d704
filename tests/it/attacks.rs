//! The attack regression suite: one test per class of the peers' security history (oauth2-proxy, mod_auth_openidc,
//! Pomerium, Envoy, Vouch, lua-resty-openidc), each table-driven through the real server. Classes covered
//! elsewhere, with the same weight: unknown-kid flood (`login::a_flood_of_unknown_kids_causes_at_most_one_fetch`),
//! duplicated callback parameters and state replay (`login::callback_refuses_…`), oversized headers and cookies
//! (`server::oversized_headers_…`), logout-token replay (`sessions::back_channel_logout_…`), forward-auth original
//! URI from untrusted peers (`identity::forward_auth_ignores_…`, CVE-2026-40575).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use idgate::config::AuthMode;
use serde_json::json;

use crate::harness::{Browser, TestGate, route, urlencode};

/// Open redirects (o2p GHSA-qqxw-m5fj-f7gv `/\`, GHSA-j7px-6hwj-hpjg `%09`, mao CVE-2021-32786 backslash,
/// CVE-2022-23527): every return target in the corpus ends at `/` after login and after sign-out.
#[tokio::test]
async fn open_redirect_corpus() {
    let gate = TestGate::builder().spawn().await;
    let corpus = [
        "//evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "/%5Cevil.com",
        "/%2F%2Fevil.com",
        "%2F%2Fevil.com",
        "/%09/evil.com",
        "/%0a/evil.com",
        "https://evil.com",
        "https:evil.com",
        "http:/\\evil.com",
        "//user@evil.com",
        "user@evil.com",
        "javascript:alert(1)",
        "java%0ascript:alert(1)",
        "/%2e%2e//evil.com",
        "///evil.com",
        " //evil.com",
        "\t//evil.com",
    ];
    for rd in corpus {
        let b = gate.browser();
        let start = b.get(&format!("{}/oauth2/start?rd={}", gate.base, urlencode(rd))).await;
        let cb = b.authorize_and_callback(&gate.base, start.location(), "victim").await;
        assert_eq!(cb.location(), "/", "login rd {rd:?}");
        let page = b.get(&format!("{}/oauth2/sign_out?rd={}", gate.base, urlencode(rd))).await;
        assert!(page.text().contains("sign_out?rd=%2F\""), "sign-out rd {rd:?}");
    }
    gate.shutdown().await;
}

/// Identity-header spoofing and smuggling (mao CVE-2017-6059/-6062, o2p CVE-2025-64484 underscores, Envoy PR
/// #43630): on every kind of request — protected, public, preflight, refused — nothing a client sent under an
/// identity name reaches the upstream.
#[tokio::test]
async fn header_smuggling_corpus() {
    let gate = TestGate::builder()
        .settings(|s| s.routes = vec![route("/public", AuthMode::Public), route("/api", AuthMode::Api)])
        .spawn()
        .await;
    let user = gate.login_as("alice").await;
    let spoofs = [
        "X-Auth-Request-User",
        "x-auth-request-user",
        "X_AUTH_REQUEST_USER",
        "x-auth_request-user",
        "X-Auth-Request-Email",
        "X-Auth-Request-Preferred-Username",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Access-Token",
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Forwarded-Access-Token",
        "X-Forwarded-Preferred-Username",
    ];
    let mut headers = HeaderMap::new();
    for (i, name) in spoofs.iter().enumerate() {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&format!("spoof{i}")).unwrap(),
        );
        headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("spoof-dup"));
    }
    let anonymous = Browser::new().api();
    for (who, method, path) in [
        (&user, Method::GET, "/app"),
        (&user, Method::POST, "/app"),
        (&user, Method::OPTIONS, "/app"),
        (&anonymous, Method::GET, "/public/x"),
        (&anonymous, Method::OPTIONS, "/public/x"),
        (&user, Method::GET, "/public/x"),
    ] {
        let r = who.send(method.clone(), &format!("{}{path}", gate.base), headers.clone(), Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}");
        assert!(!r.text().contains("spoof"), "{method} {path}: {}", r.text());
    }
    // Refused requests never reach the upstream at all.
    for path in ["/app", "/api/x"] {
        let r = anonymous.send(Method::GET, &format!("{}{path}", gate.base), headers.clone(), Bytes::new()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!r.text().contains("spoof"));
    }
    gate.shutdown().await;
}

/// Route matching on the path as the upstream will see it (o2p GHSA-7rh7-c77v-6434 query in skip-auth regex,
/// GHSA-pxq7-h93f-9jrg fragments, Envoy CVE-2021-29492 `%2F`/`%5C`/`//`, pom CVE-2023-33189).
#[tokio::test]
async fn path_confusion_corpus() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/public", AuthMode::Public)]).spawn().await;
    let anon = Browser::new().api();
    let protected = [
        "/private?/public",
        "/private?x=/public",
        "/private#/public",
        "/private%23/public",
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/.%2e/private",
        "/public%2F..%2Fprivate",
        "/public%2f..%2fprivate",
        "/public\\..\\private",
        "/public%5C..%5Cprivate",
        "//private",
        "/./private",
        "/publicprivate",
        "/public.evil",
        "/PUBLIC/x",
    ];
    for path in protected {
        let r = anon.get(&format!("{}{path}", gate.base)).await;
        assert!(matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST), "{path} got {}", r.status);
    }
    for path in ["/public/%252e%252e/private", "/public%252F..%252Fprivate", "/a%00b"] {
        assert_eq!(anon.get(&format!("{}{path}", gate.base)).await.status, StatusCode::BAD_REQUEST, "{path}");
    }
    for path in ["/public", "/public/", "/public/a/b?x=1", "/public//a", "/x/../public/a"] {
        assert_eq!(anon.get(&format!("{}{path}", gate.base)).await.status, StatusCode::OK, "{path}");
    }
    gate.shutdown().await;
}

/// Session fixation (o2p GHSA-f24x-5g9q-753f, mao 2026): a login always issues a new session, whatever cookie
/// (valid, foreign, garbage, chunked) the browser carried.
#[tokio::test]
async fn session_fixation() {
    let gate = TestGate::builder().settings(|s| s.session.store = idgate::config::StoreKind::Memory).spawn().await;
    let attacker = gate.login_as("attacker").await;
    let planted = attacker.cookie("idgate").unwrap();
    for plant in [planted.as_str(), "garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let victim = Browser::new();
        victim.set_cookie("idgate", plant);
        victim.set_cookie("idgate_0", "chunk");
        let start = victim.get(&format!("{}/oauth2/start", gate.base)).await;
        let cb = victim.authorize_and_callback(&gate.base, start.location(), "victim").await;
        assert_eq!(cb.status, StatusCode::FOUND);
        let new = victim.cookie("idgate").unwrap();
        assert_ne!(new, plant);
        assert!(victim.cookie("idgate_0").is_none(), "stale chunks are cleared");
        let page = victim.get(&format!("{}/", gate.base)).await;
        assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("dev|victim"));
    }
    // The attacker's own session was ended by the victim's login over it (server-side store).
    assert_eq!(attacker.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
}

/// Token-validation bypasses (Envoy CVE-2022-29226, lro `alg: none`, mao GHSA-wcvh-g65p-v576 audience binding, mao
/// absurd `exp`): each forged token, returned by the issuer's token endpoint, is refused and makes no session.
#[tokio::test]
async fn token_validation_bypasses() {
    type Hook = Arc<dyn Fn(String) -> String + Send + Sync>;
    let gate = TestGate::builder().spawn().await;
    let public_key = gate.issuer.with_key(|k| k.public_key_bytes());
    let kid = gate.issuer.with_key(|k| k.kid.clone());
    let payload = |t: &str| t.split('.').nth(1).unwrap().to_owned();
    let reclaim = move |t: &str, f: &dyn Fn(&mut serde_json::Value)| {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let mut c: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        f(&mut c);
        c
    };
    let none: Hook = Arc::new(move |t: String| format!("{}.{}.", idgate_b64(&json!({"alg": "none"})), payload(&t)));
    let k2 = kid.clone();
    let confusion: Hook = Arc::new(move |t: String| {
        idgate::dev_issuer::keys::sign_hs256(&json!({"alg": "HS256", "kid": k2}), &reclaim(&t, &|_| {}), &public_key)
    });
    let strip_sig: Hook = Arc::new(|t: String| {
        let mut p: Vec<&str> = t.split('.').collect();
        p[2] = "";
        p.join(".")
    });
    let swap_payload: Hook = Arc::new(|t: String| {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let p: Vec<&str> = t.split('.').collect();
        let mut c: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[1]).unwrap()).unwrap();
        c["sub"] = json!("dev|admin");
        format!("{}.{}.{}", p[0], URL_SAFE_NO_PAD.encode(c.to_string()), p[2])
    });
    let jwe: Hook = Arc::new(|t: String| format!("{t}.x.y"));
    for (what, hook) in [
        ("alg none", none),
        ("HS256 keyed with the public key", confusion),
        ("no signature", strip_sig),
        ("altered payload", swap_payload),
        ("five parts", jwe),
    ] {
        gate.issuer.configure(|k| k.token_hook = Some(hook.clone()));
        let b = gate.browser();
        let cb = b.login_to_callback(&gate.base, "/", "mallory").await;
        assert_eq!(cb.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(b.cookie("idgate").is_none(), "{what}");
    }
    gate.issuer.configure(|k| k.token_hook = None);
    type Claims = Arc<dyn Fn(&mut serde_json::Map<String, serde_json::Value>) + Send + Sync>;
    let cases: Vec<(&str, Claims)> = vec![
        (
            "missing exp",
            Arc::new(|c| {
                c.remove("exp");
            }),
        ),
        (
            "missing iat",
            Arc::new(|c| {
                c.remove("iat");
            }),
        ),
        (
            "missing aud",
            Arc::new(|c| {
                c.remove("aud");
            }),
        ),
        (
            "missing iss",
            Arc::new(|c| {
                c.remove("iss");
            }),
        ),
        (
            "aud for another app",
            Arc::new(|c| {
                c.insert("aud".into(), json!("another-app"));
            }),
        ),
        (
            "exp 1e300",
            Arc::new(|c| {
                c.insert("exp".into(), json!(1e300));
            }),
        ),
        (
            "exp as a string",
            Arc::new(|c| {
                c.insert("exp".into(), json!("9999999999"));
            }),
        ),
    ];
    for (what, hook) in cases {
        gate.issuer.configure(|k| k.claims_hook = Some(hook.clone()));
        let b = gate.browser();
        assert_eq!(b.login_to_callback(&gate.base, "/", "mallory").await.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    gate.shutdown().await;
}

fn idgate_b64(v: &serde_json::Value) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Cookie DoS (mao CVE-2024-24814 huge `_chunks` count, CVE-2023-28625 crafted Cookie): thousands of chunk cookies,
/// absurd names and garbage values are an anonymous request, never a 5xx.
#[tokio::test]
async fn chunk_count_and_crafted_cookie_dos() {
    let gate = TestGate::builder().settings(|s| s.server.max_header_bytes = 1 << 20).spawn().await;
    let many: Vec<String> = (0..5000).map(|i| format!("idgate_{i}=AAAA")).collect();
    for cookie in [
        many.join("; "),
        "idgate_chunks=999999999; idgate_0=x".to_owned(),
        format!("idgate={}", "A".repeat(200_000)),
        "idgate=; idgate==; ==; ;;; idgate".to_owned(),
        "idgate_99999999999999999999=x".to_owned(),
    ] {
        let r = Browser::new().api().get_with(&format!("{}/", gate.base), &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", &cookie[..cookie.len().min(40)]);
    }
    gate.shutdown().await;
}

/// Stale claims (pom CVE-2021-41230): after a refresh, the upstream sees the refreshed token's claims.
#[tokio::test]
async fn stale_claims_after_refresh() {
    let gate = TestGate::builder().settings(|s| s.oidc.scopes.push("offline_access".into())).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let b = gate.login_as("ruth").await;
    assert_eq!(
        b.get(&format!("{}/", gate.base)).await.upstream_header("x-auth-request-roles").as_deref(),
        Some("user")
    );
    gate.issuer.configure(|k| {
        k.claims_hook = Some(Arc::new(|c| {
            c.insert("https://example.com/roles".into(), json!(["user", "auditor"]));
        }))
    });
    gate.clock.advance(280);
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(
        r.upstream_header("x-auth-request-roles").as_deref(),
        Some("user,auditor"),
        "fresh claims after refresh"
    );
    gate.shutdown().await;
}

/// Protected content must not leak on other methods (mao GHSA-59jp-rwph-878r, POST): without a session no method
/// reaches the upstream.
#[tokio::test]
async fn no_method_reaches_the_upstream_without_a_session() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let upstream = crate::harness::spawn_upstream(move |_req| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { http::Response::new(Full::new(Bytes::from_static(b"secret"))) }
    })
    .await;
    let gate = TestGate::builder().upstream(upstream).spawn().await;
    for method in [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS]
    {
        let r = Browser::new()
            .send(method.clone(), &format!("{}/secret", gate.base), HeaderMap::new(), Bytes::from_static(b"x=1"))
            .await;
        assert!(r.status == StatusCode::FOUND || r.status == StatusCode::UNAUTHORIZED, "{method}: {}", r.status);
        assert!(!r.text().contains("secret"));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the upstream was never contacted");
    gate.shutdown().await;
}

// === lead: issue 12 §1–§3 — the path rule, forward-auth's original URI, ID tokens in any Authorization ===

/// Route rules mean what the application will do (issue 12 §1): the reproductions are refused with their reason,
/// case variants of a protective prefix stay protected, and the upstream receives the normal form idgate decided
/// on — never the bytes as sent.
#[tokio::test]
async fn the_upstream_receives_the_path_idgate_decided_on() {
    let gate = TestGate::builder()
        .settings(|s| {
            let mut admin = route("/admin", AuthMode::Login);
            admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
            s.routes = vec![route("/public", AuthMode::Public), admin];
        })
        .spawn()
        .await;
    let anon = Browser::new().api();
    for (path, why) in [
        ("/admin/..%2fpublic/x", "encoded slash (%2F)"),
        ("/admin/..%5Cpublic/x", "encoded backslash (%5C)"),
        ("/public/..;/admin/x", "path parameter (;) in path"),
        ("/public;x=1/../admin/x", "path parameter (;) in path"),
        ("/public/%2e%2e/admin/x", "dot segment hidden by percent-encoding"),
        ("/public/%25%32%65%25%32%65/admin", "double-encoded path"),
        ("/public/%c0%ae%c0%ae/admin", "escapes do not decode to UTF-8"),
    ] {
        let r = anon.get(&format!("{}{path}", gate.base)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.json()["message"].as_str().unwrap().contains(why), "{path}: {}", r.text());
    }
    // What is forwarded is the normal form: an app resolving nothing itself still sees the decided path.
    for (sent, seen) in [
        ("/public/./x", "/public/x"),
        ("/public//x?q=/../admin", "/public/x?q=/../admin"),
        ("/%70ublic/%7Ex", "/public/~x"),
        ("/admin/../public/x", "/public/x"),
    ] {
        let r = anon.get(&format!("{}{sent}", gate.base)).await;
        assert_eq!(r.status, StatusCode::OK, "{sent}");
        assert_eq!(r.json()["uri"], seen, "{sent}");
    }
    let bob = gate.login_as("bob").await.api();
    for path in ["/ADMIN/x", "/Admin", "/admin.json", "/%61dmin/x", "/x/../ADMIN/x"] {
        let r = bob.get(&format!("{}{path}", gate.base)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(r.json()["error"], "forbidden", "{path}");
    }
    // Public prefixes never widen: another case is the default rule (a session), not public.
    assert_eq!(anon.get(&format!("{}/PUBLIC/x", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    let ann = gate.login_as("admin-ann").await.api();
    assert_eq!(ann.get(&format!("{}/ADMIN/x", gate.base)).await.json()["uri"], "/ADMIN/x");
    gate.shutdown().await;
}

/// Forward-auth must know the original URI or refuse (issue 12 §2; ingress-nginx sends `X-Original-URL`): a
/// trusted proxy that names none, or names it twice in disagreeing headers, is denied with the reason; it is
/// never evaluated as `/`.
#[tokio::test]
async fn forward_auth_without_a_sure_original_uri_is_denied() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            s.routes = vec![route("/public", AuthMode::Public), route("/admin", AuthMode::Api)];
        })
        .spawn()
        .await;
    let auth = format!("{}/oauth2/auth", gate.base);
    let user = gate.login_as("carl").await.api();
    for (headers, why) in [
        (vec![], "no X-Forwarded-Uri, X-Original-URI or X-Original-URL header"),
        (vec![("x-forwarded-uri", "/public/x"), ("x-original-url", "http://app/admin/x")], "disagree"),
        (vec![("x-forwarded-uri", "/public/x"), ("x-forwarded-uri", "/admin/x")], "more than once"),
        (vec![("x-original-url", "/admin/x")], "not an absolute URL"),
        (vec![("x-original-url", "http://app/public/../admin/x")], "not in normal form"),
        (vec![("x-original-uri", "/public/..;/admin/x")], "refused by the path rule"),
        // Go's file server reads `#` as a path character and resolves the dots after it (found by a break-it pass).
        (vec![("x-forwarded-uri", "/public/x#/../../admin/x")], "contains '#'"),
        (vec![("x-original-url", "http://app/public/x#/../admin/x")], "contains '#'"),
        (vec![("x-original-uri", "/public/x?#/../../admin")], "contains '#'"),
        (vec![("x-original-uri", "/public#/../admin/x")], "contains '#'"),
        (vec![("x-original-url", "http://app/public/x#/..%2f..%2fadmin/x")], "contains '#'"),
        (vec![("x-forwarded-uri", "/public/x"), ("x-original-uri", "/public/x?y")], "disagree"),
    ] {
        let r = user.get_with(&auth, &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(r.json()["message"].as_str().unwrap().contains(why), "{headers:?}: {}", r.text());
        assert!(r.headers.get("x-auth-request-user").is_none());
    }
    let r = user.get_with(&auth, &[("x-original-url", "https://app.example.com/admin/x?y=1")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-auth-request-user"], "dev|carl");
    gate.shutdown().await;
}

/// R14 in every spelling (issue 12 §3): the ID token is refused whatever the scheme's case, the whitespace, a
/// second `Authorization` header or a credential list — on proxied, public, forward-auth and userinfo paths alike.
#[tokio::test]
async fn an_id_token_in_any_authorization_spelling_is_refused_on_every_path() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            s.routes = vec![route("/public", AuthMode::Public)];
        })
        .spawn()
        .await;
    let now = idgate::clock::Clock::now(gate.clock.as_ref());
    let mut claims = serde_json::Value::Object(gate.issuer.claims_for("alice", None));
    claims["exp"] = json!(now + 600);
    let id_token = gate.issuer.sign(&claims);
    let b = gate.login_as("alice").await.api();
    // Python splits on `\xa0` and `\x85` too; lenient base64 decoders read `+/` and padding like `-_`.
    let standard_alphabet = id_token.replace('-', "+").replace('_', "/");
    let mut spellings: Vec<Vec<u8>> = [
        format!("Bearer\t{id_token}"),
        format!("bearer   {id_token}"),
        format!("BEARER {id_token} "),
        format!("Basic dXNlcjpwYXNz, Bearer {id_token}"),
        format!("Token {id_token}"),
        format!("Bearer junk.{id_token}"),
        format!("Bearer {standard_alphabet}"),
        // The token as a Basic password (second break-it pass): APIs that take a token that way accept it.
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("x:{id_token}"))
        ),
        id_token.clone(),
    ]
    .map(String::into_bytes)
    .to_vec();
    for odd in [0xa0u8, 0x85] {
        let mut v = b"Bearer ".to_vec();
        v.push(odd);
        v.extend_from_slice(id_token.as_bytes());
        spellings.push(v);
    }
    for (path, extra) in [
        ("/app", None),
        ("/public/x", None),
        ("/oauth2/userinfo", None),
        ("/oauth2/auth", Some(("x-forwarded-uri", "/public/x"))),
    ] {
        for spelling in &spellings {
            let mut h = HeaderMap::new();
            h.insert("accept", HeaderValue::from_static("application/json"));
            h.append("authorization", HeaderValue::from_static("Bearer opaque-first"));
            h.append("authorization", HeaderValue::from_bytes(spelling).unwrap());
            if let Some((k, v)) = extra {
                h.insert(k, HeaderValue::from_static(v));
            }
            let r = b.send(Method::GET, &format!("{}{path}", gate.base), h, Bytes::new()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {:?}", String::from_utf8_lossy(&spelling[..12]));
            assert_eq!(r.json()["error"], "invalid_token", "{path}");
        }
    }
    gate.shutdown().await;
}

/// `%2F` where a route allows it (issue 12 §1, "unless a route explicitly allows it"): kept encoded for the
/// upstream, and only when reading it as `/` leads to the same route.
#[tokio::test]
async fn encoded_slashes_pass_only_where_a_route_allows_them() {
    let gate = TestGate::builder()
        .settings(|s| {
            let mut files = route("/files", AuthMode::Public);
            files.allow_encoded_slashes = true;
            s.routes = vec![files, route("/files/private", AuthMode::Login)];
        })
        .spawn()
        .await;
    let anon = Browser::new().api();
    let r = anon.get(&format!("{}/files/dir%2fname.txt", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/files/dir%2Fname.txt");
    for (path, why) in [
        ("/files/private%2Fx", "encoded slash (%2F)"),
        ("/files/a%2F..%2Fprivate%2Fx", "dot segment between encoded slashes"),
        ("/other/a%2Fb", "encoded slash (%2F)"),
    ] {
        let r = anon.get(&format!("{}{path}", gate.base)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.json()["message"].as_str().unwrap().contains(why), "{path}: {}", r.text());
    }
    gate.shutdown().await;
}

// === diff: issue 12 §1 — readings the differential suite (tests/it/differential.rs) found past the path rule ===
// (its `#` in forward-auth finding is a row of `forward_auth_without_a_sure_original_uri_is_denied` above)

/// Case-insensitive routers that fold Unicode (Go's strings.ToLower in Caddy's path matcher) read U+0130 (İ) as
/// `i` and U+212A (Kelvin sign) as `k`: such a path must not fall to the default rule past a protective prefix.
#[tokio::test]
async fn unicode_case_mappings_of_a_protective_prefix_stay_protected() {
    let gate = TestGate::builder()
        .settings(|s| {
            let admin_only = |prefix| {
                let mut r = route(prefix, AuthMode::Login);
                r.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
                r
            };
            s.routes = vec![admin_only("/admin"), admin_only("/kiosk")];
        })
        .spawn()
        .await;
    let bob = gate.login_as("bob").await.api();
    for path in ["/adm%C4%B0n/x", "/ADM%C4%B0N/x", "/%E2%84%AAiosk/x", "/KIOS%E2%84%AA/x", "/x/../adm%c4%b0n"] {
        let r = bob.get(&format!("{}{path}", gate.base)).await;
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::BAD_REQUEST,
            "{path}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["uri"].is_null(), "{path} reached the upstream: {}", r.text());
    }
    gate.shutdown().await;
}

// === review: issue 12 §6 — reload, header-bound settings, security headers, the development issuer ===

/// Issue 12: a SIGHUP reload compared sections by their redacted `Debug` text, so a changed `client_secret` was
/// silently ignored. Values are compared typed, and every changed key that needs a restart is named.
#[tokio::test]
async fn reload_names_each_changed_key_that_needs_a_restart() {
    let gate = TestGate::builder().spawn().await;
    let running = gate.running.as_ref().unwrap();
    let mut s = gate.state().settings.clone();
    assert!(running.reload(s.clone()).is_empty(), "an unchanged reload needs nothing");
    s.oidc.client_secret = Some(idgate::config::Secret::new("rotated-client-secret"));
    assert_eq!(running.reload(s.clone()), ["oidc.client_secret"]);
    assert_eq!(
        gate.state().settings.oidc.client_secret.as_ref().map(|c| c.expose().to_owned()).as_deref(),
        Some(crate::harness::CLIENT_SECRET),
        "the running secret stays until a restart"
    );
    s.server.trusted_proxies = vec!["10.1.2.3/32".parse().unwrap()];
    s.session.memory_capacity = 7;
    s.log.level = "debug".into();
    s.routes = vec![route("/open", AuthMode::Public)];
    assert_eq!(
        running.reload(s),
        ["server.trusted_proxies", "oidc.client_secret", "session.memory_capacity", "log.level"],
        "routes apply; the rest is named"
    );
    assert_eq!(gate.state().settings.routes.len(), 1);
    gate.login_as("rita").await;
    gate.shutdown().await;
}

/// Issue 12: `session.cookie_domain` and `server.prefix` with a newline made `Set-Cookie` (an `expect`) and the
/// login redirect panic at request time. Loading refuses such values (`config::tests::header_bound_values_…`);
/// settings built in code that skip the load still get answers — an inert cookie, a 500 — never a panic.
#[tokio::test]
async fn header_unsafe_settings_never_panic_a_request() {
    let gate =
        TestGate::builder().settings(|s| s.session.cookie_domain = Some("example.com\nx-evil: 1".into())).spawn().await;
    let r = gate.browser().get(&format!("{}/oauth2/start", gate.base)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.set_cookies(), ["idgate_invalid_cookie=; Max-Age=0"], "the unsafe cookie is not sent");
    assert!(r.headers.get("x-evil").is_none());
    gate.shutdown().await;
    let gate = TestGate::builder().settings(|s| s.server.prefix = "/oauth2\nx-evil: 1".into()).spawn().await;
    let r = gate.browser().get(&format!("{}/page", gate.base)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "the redirect cannot be built: {r:?}");
    assert!(r.headers.get("x-evil").is_none() && r.headers.get(http::header::LOCATION).is_none());
    gate.shutdown().await;
}

/// Issue 12: idgate's own answers carry `X-Content-Type-Options: nosniff` (JSON included) and, when TLS or
/// `cookie_secure` is on, `Strict-Transport-Security`; the upstream's answers pass unchanged.
#[tokio::test]
async fn own_answers_carry_nosniff_and_hsts_upstream_answers_pass_unchanged() {
    let header = |r: &crate::harness::Resp, name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let gate = TestGate::builder()
        .settings(|s| {
            s.session.cookie_secure = true;
            s.routes = vec![route("/api", AuthMode::Api)];
        })
        .spawn()
        .await;
    let b = gate.login_as("hana").await;
    let anonymous = Browser::new();
    let answers = [
        ("401 JSON", anonymous.api().get(&format!("{}/api/x", gate.base)).await),
        ("login redirect", anonymous.get(&format!("{}/page", gate.base)).await),
        ("start", anonymous.get(&format!("{}/oauth2/start", gate.base)).await),
        ("400 bad path", anonymous.api().get(&format!("{}/a%2Fb", gate.base)).await),
        ("userinfo JSON", b.api().get(&format!("{}/oauth2/userinfo", gate.base)).await),
        ("sign-out page", b.get(&format!("{}/oauth2/sign_out", gate.base)).await),
    ];
    for (what, r) in &answers {
        assert_eq!(header(r, "x-content-type-options").as_deref(), Some("nosniff"), "{what}: {r:?}");
        assert_eq!(header(r, "strict-transport-security").as_deref(), Some("max-age=31536000"), "{what}: {r:?}");
    }
    assert_eq!(answers[0].1.json()["error"], "unauthenticated");
    assert_eq!(answers[4].1.json()["sub"], "dev|hana");
    let proxied = b.get(&format!("{}/page", gate.base)).await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert!(header(&proxied, "strict-transport-security").is_none(), "the upstream's answer is its own");
    assert!(header(&proxied, "x-content-type-options").is_none());
    gate.shutdown().await;
    // Neither TLS nor Secure cookies (a plain-HTTP development setup): no HSTS, still nosniff.
    let gate = TestGate::builder().spawn().await;
    let r = Browser::new().api().get(&format!("{}/oauth2/userinfo", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "x-content-type-options").as_deref(), Some("nosniff"));
    assert!(header(&r, "strict-transport-security").is_none(), "{r:?}");
    gate.shutdown().await;
}

/// Issue 12: the development issuer's `end_session` redirected to anything starting with `http://127.0.0.1`
/// (`http://127.0.0.1.evil.example/`); it now compares with the registered post-logout URL exactly.
#[tokio::test]
async fn development_issuer_end_session_compares_redirects_exactly() {
    let registered = "http://127.0.0.1:9/bye";
    let gate = TestGate::builder()
        .settings(move |s| s.oidc.post_logout_redirect_url = Some(registered.parse().unwrap()))
        .spawn()
        .await;
    let end =
        |target: &str| format!("{}/end_session?post_logout_redirect_uri={}", gate.issuer.issuer(), urlencode(target));
    let refused = [
        "http://127.0.0.1.evil.example/",
        "http://127.0.0.1:9/byeX",
        "http://127.0.0.1:9/bye/",
        "http://127.0.0.1:9/bye?next=//evil.example",
        "http://127.0.0.1:9/BYE",
        "http://localhost:9/bye",
        "https://127.0.0.1:9/bye",
    ];
    for target in refused {
        let r = Browser::new().get(&end(target)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{target}");
        assert!(r.location().is_empty(), "{target}: {}", r.location());
        assert!(r.text().contains("post_logout_redirect_uri is not registered"), "{target}: {}", r.text());
    }
    assert_eq!(gate.issuer.refusals().len(), refused.len());
    let ok = Browser::new().get(&end(registered)).await;
    assert_eq!((ok.status, ok.location()), (StatusCode::FOUND, registered));
    gate.shutdown().await;
}

// === sess: sessions and logout (issue 12 §5) ===

/// Log lines written while it lives, on this test's thread: `#[tokio::test]` runs the gate, its replicas and the
/// issuer on the test's current-thread runtime, so every line they log is seen here (and no other test's).
pub(crate) struct Logs {
    buf: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture() -> Logs {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(Arc::clone(&w)))
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        Logs { buf, _guard: tracing::subscriber::set_default(subscriber) }
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

fn offline_300(s: &mut idgate::config::Settings) {
    s.oidc.scopes.push("offline_access".into());
}

/// A browser holding only a copy of `cookie` (a thief), sending API requests.
fn holding(cookie: &str) -> Browser {
    let b = Browser::new().api();
    b.set_cookie("idgate", cookie);
    b
}

/// A cookie-store session copied before sign-out and replayed after it (issue 12 §5: it was still refreshed 15 s
/// later, past its exp). The replica that saw the sign-out refuses the copy at once; another replica, which never
/// heard of the sign-out, lets it through only until the refresh is due — and the refresh fails, the refresh token
/// having been revoked at the issuer (RFC 7009) — so the copy never outlives the `exp` it had.
#[tokio::test]
async fn a_cookie_session_copied_before_sign_out_is_refused_and_never_refreshed() {
    let logs = Logs::capture();
    let gate = TestGate::builder().settings(offline_300).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let other = gate.replica(|_| {}).await;
    let other_base = format!("http://{}", other.public_addr);
    let b = gate.login_as("sam").await;
    let copy = b.cookie("idgate").unwrap();
    crate::sessions::sign_out(&gate, &b).await;
    assert_eq!(gate.issuer.request_count("revoke"), 1, "sign-out revokes the refresh token at the issuer");
    assert_eq!(logs.count("refresh_token_revoked=true"), 1, "{}", logs.text());
    // The replica that signed it out: refused, now and when a refresh would be due.
    let r = holding(&copy).get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(logs.count("session signed out"), 1, "refused as signed out: {}", logs.text());
    // Another replica: the cookie is self-contained and opens there until the refresh is due...
    assert_eq!(holding(&copy).get(&format!("{other_base}/")).await.status, StatusCode::OK);
    let tokens = gate.issuer.request_count("token");
    gate.clock.advance(280);
    let r = holding(&copy).get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gate.issuer.request_count("token"), tokens, "no refresh is even tried where it was signed out");
    // ...where the refresh of the revoked token is refused and ends it, 20 s before its exp.
    let r = holding(&copy).get(&format!("{other_base}/")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(gate.issuer.request_count("token"), tokens + 1);
    assert_eq!(logs.count("refresh ended the session"), 1, "{}", logs.text());
    assert!(logs.text().contains("refresh token refused: invalid_grant"), "{}", logs.text());
    other.shutdown().await;
    gate.shutdown().await;
}

/// RFC 9207 (issue 12 §5): an authorization response without `iss` is refused while discovery advertises
/// `authorization_response_iss_parameter_supported`, and accepted from an issuer that does not.
#[tokio::test]
async fn a_callback_without_iss_is_refused_when_the_issuer_advertises_rfc_9207() {
    let logs = Logs::capture();
    let gate = TestGate::builder().spawn().await;
    gate.issuer.configure(|k| k.omit_iss = true);
    let b = gate.browser();
    let cb = b.login_to_callback(&gate.base, "/", "tom").await;
    assert!(!cb.headers.get("location").is_some_and(|l| l.to_str().unwrap().contains("iss=")));
    assert_eq!(cb.status, StatusCode::BAD_REQUEST, "{}", cb.text());
    assert!(b.cookie("idgate").is_none(), "no session");
    assert_eq!(logs.count("reason=\"missing_iss\""), 1, "{}", logs.text());
    // An issuer that does not advertise RFC 9207 need not send iss.
    gate.issuer.configure(|k| k.advertise_iss = false);
    gate.state().provider.load().await.unwrap();
    let cb = gate.browser().login_to_callback(&gate.base, "/", "tom").await;
    assert_eq!(cb.status, StatusCode::FOUND, "{}", cb.text());
    gate.shutdown().await;
}

/// A logout token replayed to another replica (issue 12 §5: it ended the user's *new* session there): its `jti`
/// is kept in Redis, so every replica refuses it.
#[tokio::test]
async fn a_logout_token_replayed_to_another_replica_ends_nothing() {
    let redis = crate::redis::Redis::start().await;
    logout_token_replayed_to_another_replica(redis.url()).await;
}

/// The replayed logout token against the Redis at `url` (any topology: redis_ha.rs runs it on Sentinel and Cluster).
pub(crate) async fn logout_token_replayed_to_another_replica(url: String) {
    let logs = Logs::capture();
    let url = idgate::config::Secret::new(url);
    let gate =
        TestGate::builder().settings(move |s| s.session.store = idgate::config::StoreKind::Redis { url }).spawn().await;
    let other = gate.replica(|_| {}).await;
    let other_base = format!("http://{}", other.public_addr);
    let first = gate.login_as("una").await;
    let token = crate::sessions::logout_token(&gate, |c| {
        c.insert("sub".into(), json!("dev|una"));
    });
    assert_eq!(crate::sessions::post_logout(&gate.base, &token).await.status, StatusCode::OK);
    assert_eq!(first.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    // The user logs in again (in the same second, so only the jti tells the replay apart).
    let second = gate.login_as("una").await;
    let r = crate::sessions::post_logout(&other_base, &token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("logout token replayed"), "{}", r.text());
    assert_eq!(logs.count("already used at another replica"), 1, "{}", logs.text());
    assert_eq!(second.get(&format!("{other_base}/")).await.status, StatusCode::OK, "the new session lives");
    other.shutdown().await;
    gate.shutdown().await;
}

/// Old logout tokens (issue 12 §5): one issued more than five minutes ago is refused whatever its `exp`, and one
/// issued before a session's login does not end that session — in the memory and the Redis store.
#[tokio::test]
async fn old_logout_tokens_end_no_session_made_after_them() {
    let redis = crate::redis::Redis::start().await;
    old_logout_tokens(vec![
        idgate::config::StoreKind::Memory,
        idgate::config::StoreKind::Redis { url: idgate::config::Secret::new(redis.url()) },
    ])
    .await;
}

/// Old logout tokens against each store of `kinds` (redis_ha.rs runs it on Sentinel and Cluster).
pub(crate) async fn old_logout_tokens(kinds: Vec<idgate::config::StoreKind>) {
    let logs = Logs::capture();
    let n = kinds.len();
    for kind in kinds {
        let name = format!("{kind:?}");
        let gate = TestGate::builder().settings(move |s| s.session.store = kind).spawn().await;
        let b = gate.login_as("val").await;
        let login_at = idgate::clock::Clock::now(gate.clock.as_ref());
        let alive = |b: Browser| {
            let url = format!("{}/", gate.base);
            async move { b.api().get(&url).await.status == StatusCode::OK }
        };
        let by_sub = |iat: i64| {
            crate::sessions::logout_token(&gate, |c| {
                c.insert("sub".into(), json!("dev|val"));
                c.insert("iat".into(), json!(iat));
                c.insert("exp".into(), json!(iat + 3600));
            })
        };
        // Ten minutes old, a far exp: refused.
        let r = crate::sessions::post_logout(&gate.base, &by_sub(login_at - 600)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(r.text().contains("logout token too old"), "{name}: {}", r.text());
        assert!(alive(b.clone()).await, "{name}");
        // Fresh enough, but issued 30 s before the login: the session is newer than the logout.
        let before = logs.count("those sessions kept");
        let r = crate::sessions::post_logout(&gate.base, &by_sub(login_at - 30)).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        assert_eq!(logs.count("those sessions kept"), before + 1, "{name}: {}", logs.text());
        assert!(alive(b.clone()).await, "{name}: a logout issued before the login ends nothing");
        // Issued after the login: it ends.
        gate.clock.advance(5);
        let r = crate::sessions::post_logout(&gate.base, &by_sub(login_at + 5)).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert!(!alive(b).await, "{name}: a logout issued after the login ends it");
        gate.shutdown().await;
    }
    assert_eq!(logs.count("reason=\"too_old\""), n, "{}", logs.text());
}

/// The Redis refresh lock (issue 12 §5: it was released with a plain DEL): a holder whose lease lapsed can neither
/// release nor renew the lock its successor took.
#[tokio::test]
async fn a_lapsed_refresh_lock_holder_cannot_release_or_renew_its_successors_lock() {
    let redis = crate::redis::Redis::start().await;
    lapsed_lock_holder(redis.url()).await;
}

/// The lapsed lock holder against the Redis at `url` (any topology: redis_ha.rs runs it on Sentinel and Cluster).
pub(crate) async fn lapsed_lock_holder(url: String) {
    use idgate::session::store::{Store, redis::RedisStore};
    let store = Store::Redis(RedisStore::new(&url).unwrap());
    let first = store.try_lock("flight", 100).await.unwrap().expect("free at first");
    assert!(store.try_lock("flight", 100).await.unwrap().is_none(), "held");
    let mut second = None;
    for _ in 0..100 {
        second = store.try_lock("flight", 60_000).await.unwrap();
        if second.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let second = second.expect("the first lease lapses");
    assert!(!store.renew(&first, 60_000).await.unwrap(), "the lapsed holder cannot renew the successor's lock");
    assert!(!store.unlock(&first).await, "the lapsed holder's late release is refused");
    assert!(store.try_lock("flight", 60_000).await.unwrap().is_none(), "and the successor still holds the lock");
    assert!(store.renew(&second, 60_000).await.unwrap(), "the holder renews");
    assert!(store.unlock(&second).await, "and releases");
    assert!(store.try_lock("flight", 100).await.unwrap().is_some(), "free again");
}

/// A refresh slower than the lock's lease (issue 12 §5: a peer loses users to this): the holder renews its lease,
/// so the other replica waits and then uses the renewed session instead of redeeming the rotated refresh token a
/// second time (which the issuer refuses, ending the session).
#[tokio::test]
async fn a_refresh_slower_than_the_lock_lease_keeps_the_lock_and_the_session() {
    let redis = crate::redis::Redis::start().await;
    refresh_slower_than_the_lock_lease(redis.url()).await;
}

/// The slow refresh against the Redis at `url` (any topology: redis_ha.rs runs it on Sentinel and Cluster).
pub(crate) async fn refresh_slower_than_the_lock_lease(url: String) {
    let logs = Logs::capture();
    let url = idgate::config::Secret::new(url);
    let gate = TestGate::builder()
        .settings(move |s| {
            offline_300(s);
            s.oidc.http_timeout = std::time::Duration::from_secs(20);
            s.session.store = idgate::config::StoreKind::Redis { url };
        })
        .spawn()
        .await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let other = gate.replica(|_| {}).await;
    let other_base = format!("http://{}", other.public_addr);
    let b = gate.login_as("wes").await;
    gate.clock.advance(260);
    let lease = std::time::Duration::from_millis(idgate::login::refresh::LOCK_LEASE_MS);
    gate.issuer.configure(|k| k.token_delay = lease + std::time::Duration::from_millis(1500));
    let tokens = gate.issuer.request_count("token");
    let here = {
        let (b, url) = (b.clone(), format!("{}/", gate.base));
        tokio::spawn(async move { b.get(&url).await.status })
    };
    // The other replica asks once the first refresh is at the issuer (and holds the lock).
    for _ in 0..500 {
        if gate.issuer.request_count("token") > tokens {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let there = b.get(&format!("{other_base}/")).await.status;
    assert_eq!(here.await.unwrap(), StatusCode::OK);
    assert_eq!(there, StatusCode::OK, "{}", logs.text());
    assert_eq!(gate.issuer.request_count("token"), tokens + 1, "one refresh across both replicas");
    assert_eq!(logs.count("refresh ended the session"), 0, "{}", logs.text());
    assert_eq!(logs.count("refresh lock lost"), 0, "{}", logs.text());
    other.shutdown().await;
    gate.shutdown().await;
}

// === hop: hop-by-hop headers, upgrades, client-sent routing and user headers, connection floods (issue 12 §3, §4) ===

/// Sends `request` on a new connection and returns what came back within `wait` (until the head, or until closed).
async fn hop_raw(addr: std::net::SocketAddr, request: &[u8], wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let _ = tokio::time::timeout(wait, async {
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `Connection: x-auth-request-email` once made idgate drop its own identity header: the client's `Connection`
/// list is applied before idgate writes identity and forwarding headers, and never names Host or a forwarding
/// header.
#[tokio::test]
async fn hop_connection_cannot_remove_identity_or_forwarding_headers() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/public", AuthMode::Public)]).spawn().await;
    let user = gate.login_as("alice").await;
    let named = "x-auth-request-email, X-Auth-Request-User, x-forwarded-for, x-forwarded-proto, host, x-client-hop";
    let headers = [("connection", named), ("x-client-hop", "1"), ("x-auth-request-email", "spoof@evil.com")];
    let r = user.get_with(&format!("{}/app", gate.base), &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-auth-request-email").as_deref(), Some("alice@example.com"), "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    assert!(r.upstream_header("host").is_some_and(|h| h.starts_with("127.0.0.1:")));
    assert!(r.upstream_header("x-client-hop").is_none(), "a header Connection names is still removed");
    assert!(r.upstream_header("connection").is_none_or(|c| !c.contains("x-auth")));
    let anon = Browser::new().api().get_with(&format!("{}/public/x", gate.base), &headers).await;
    assert_eq!(anon.status, StatusCode::OK);
    assert!(anon.upstream_header("x-auth-request-email").is_none(), "{}", anon.text());
    assert_eq!(anon.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    gate.shutdown().await;
}

/// The upstream's `Connection` list removes its own hop-by-hop headers only, never what idgate adds to the response:
/// the renewed session's `Set-Cookie` and `X-Request-Id` arrive.
#[tokio::test]
async fn hop_upstream_connection_cannot_remove_idgate_response_headers() {
    let upstream = crate::harness::spawn_upstream(|_req| async {
        http::Response::builder()
            .header("connection", "set-cookie, x-request-id, x-upstream-hop")
            .header("set-cookie", "app=1")
            .header("x-request-id", "from-upstream")
            .header("x-upstream-hop", "1")
            .body(Full::new(Bytes::from_static(b"page")))
            .unwrap()
    })
    .await;
    let gate =
        TestGate::builder().settings(|s| s.oidc.scopes.push("offline_access".into())).upstream(upstream).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let b = gate.login_as("ruth").await;
    let before = b.cookie("idgate").unwrap();
    gate.clock.advance(280);
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookies = r.set_cookies();
    assert!(cookies.iter().any(|c| c.starts_with("idgate=")), "the renewed session's cookie: {cookies:?}");
    assert_ne!(b.cookie("idgate").unwrap(), before);
    assert!(!cookies.iter().any(|c| c.starts_with("app=")), "the upstream's own, named by its Connection, is gone");
    let id = r.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(!id.is_empty() && id != "from-upstream", "idgate's X-Request-Id: {id:?}");
    assert!(!r.headers.contains_key("x-upstream-hop"));
    gate.shutdown().await;
}

/// Any `Upgrade` was tunnelled, anonymously on public routes. Only `upstream.allowed_upgrades` (WebSocket) is: `h2c`
/// and anything else get 400 naming the protocol and never reach the upstream; an upstream switching to a protocol
/// that is not allowed gets 502 and no tunnel.
#[tokio::test]
async fn hop_only_allowed_upgrades_are_tunnelled() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    // Agrees to any upgrade; switches /ws-h2c to h2c whatever was asked.
    let upstream = crate::harness::spawn_upstream(move |req: http::Request<hyper::body::Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let asked = req.headers().get("upgrade").cloned();
        let to = if req.uri().path() == "/ws-h2c" { Some(HeaderValue::from_static("h2c")) } else { asked };
        async move {
            match to {
                Some(proto) => http::Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", proto)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
                None => http::Response::new(Full::new(Bytes::from_static(b"plain"))),
            }
        }
    })
    .await;
    let gate = TestGate::builder()
        .settings(|s| s.routes = vec![route("/", AuthMode::Public)])
        .upstream(upstream)
        .spawn()
        .await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let wait = std::time::Duration::from_secs(5);
    for (offer, named) in [
        ("h2c", "h2c"),
        ("H2C", "H2C"),
        ("foo/1", "foo/1"),
        ("websocket, h2c", "h2c"),
        ("", "?"),
        ("TLS/1.0", "TLS/1.0"),
    ] {
        let req = format!(
            "GET /x HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {offer}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nAccept: application/json\r\n\r\n"
        );
        let got = hop_raw(addr, req.as_bytes(), wait).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{offer:?}: {got}");
        let r = Browser::new()
            .api()
            .get_with(&format!("{}/x", gate.base), &[("connection", "upgrade"), ("upgrade", offer)])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{offer:?}");
        assert_eq!(r.json()["error"], "upgrade_refused", "{offer:?}");
        assert!(r.json()["message"].as_str().unwrap().contains(&format!("\"{named}\"")), "{offer:?}: {}", r.text());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no refused upgrade reached the upstream");
    // Allowed, in any case: switched.
    let ok = hop_raw(addr, b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n\r\n", wait)
        .await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    // Upgrade without `Connection: upgrade` is no upgrade: a plain request, the Upgrade header removed.
    let plain = Browser::new().api().get_with(&format!("{}/x", gate.base), &[("upgrade", "h2c")]).await;
    assert_eq!((plain.status, plain.text().as_str()), (StatusCode::OK, "plain"));
    // The upstream switching to h2c for a WebSocket request is refused.
    let req = b"GET /ws-h2c HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let bad = hop_raw(addr, req, wait).await;
    assert!(bad.starts_with("HTTP/1.1 502"), "{bad}");
    gate.shutdown().await;
}

/// `h2c` can never be allowed; a strip list entry must be a header name idgate can do without.
#[test]
fn hop_h2c_and_bad_strip_names_are_refused_at_load() {
    let base = "[upstream]\nurl = \"http://127.0.0.1:8080\"\n[oidc]\nissuer = \"https://i.example.com\"\nclient_id = \"c\"\nredirect_url = \"https://a.example.com/oauth2/callback\"\n[session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
    let load = |extra: &str| {
        let text = base.replace("[oidc]", &format!("{extra}\n[oidc]"));
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        idgate::config::load(f.path(), &Default::default())
    };
    let s = load("").unwrap();
    assert_eq!(s.upstream.allowed_upgrades, ["websocket"]);
    assert!(s.upstream.strip_headers.is_empty());
    for (extra, key, why) in [
        ("allowed_upgrades = [\"websocket\", \"h2c\"]", "upstream.allowed_upgrades", "h2c"),
        ("allowed_upgrades = [\"H2C\"]", "upstream.allowed_upgrades", "h2c"),
        ("allowed_upgrades = [\"web socket\"]", "upstream.allowed_upgrades", "not a protocol name"),
        ("strip_headers = [\"host\"]", "upstream.strip_headers[0]", "cannot be forwarded"),
        ("strip_headers = [\"x-ok\", \"bad header\"]", "upstream.strip_headers[1]", "not a valid HTTP header name"),
    ] {
        let e = load(extra).unwrap_err();
        let p = e.problems.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("{extra}: {e}"));
        assert!(p.why.contains(why), "{extra}: {}", p.why);
    }
    let s = load("allowed_upgrades = []\nstrip_headers = [\"X-Tenant\"]").unwrap();
    assert!(s.upstream.allowed_upgrades.is_empty());
    assert_eq!(s.upstream.strip_headers[0].as_str(), "x-tenant");
}

/// Routing overrides (`X-Original-URL`, `X-Rewrite-URL`: IIS, Symfony) and `REMOTE_USER`-style and oauth2-proxy user
/// headers never reach the upstream from a client, in any spelling, on public and protected routes; nor do names
/// added with `upstream.strip_headers`.
#[tokio::test]
async fn hop_routing_and_remote_user_headers_are_stripped() {
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/public", AuthMode::Public)];
            s.upstream.strip_headers = vec![HeaderName::from_static("x-tenant-admin")];
        })
        .spawn()
        .await;
    let user = gate.login_as("alice").await;
    let spoofs = [
        "X-Original-URL",
        "x_original_url",
        "X-Rewrite-URL",
        "X-Original-URI",
        "X-Forwarded-Path",
        "X-Envoy-Original-Path",
        "Remote-User",
        "remote_user",
        "X-Remote-User",
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X_Forwarded_Preferred_Username",
        "X-Tenant-Admin",
        "x_tenant_admin",
    ];
    let mut headers = HeaderMap::new();
    for name in spoofs {
        headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("/admin?spoof"));
    }
    headers.insert("x-app-header", HeaderValue::from_static("kept"));
    let anonymous = Browser::new().api();
    for (who, path) in [(&user, "/app"), (&anonymous, "/public/x"), (&user, "/public/x")] {
        let r = who.send(Method::GET, &format!("{}{path}", gate.base), headers.clone(), Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!r.text().contains("spoof"), "{path}: {}", r.text());
        assert_eq!(r.upstream_header("x-app-header").as_deref(), Some("kept"));
    }
    gate.shutdown().await;
}

/// Silent connections lived for the idle timeout (the protocol detection before HTTP/1's own header timer waited
/// unbounded): the header deadline runs from accept, for plain TCP and for an HTTP/2 preface without a request.
#[tokio::test]
async fn hop_silent_connections_are_closed_at_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.header_read_timeout = std::time::Duration::from_secs(1);
            s.server.idle_timeout = std::time::Duration::from_secs(30);
        })
        .spawn()
        .await;
    let running = gate.running.as_ref().unwrap();
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    for (addr, opening) in [
        (running.public_addr, Vec::new()),
        (running.public_addr, h2_preface),
        (running.public_addr, b"G".to_vec()),
        (running.admin_addr, Vec::new()),
    ] {
        let started = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&opening).await.unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(4), s.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "{addr} {opening:?}: still open after 4 s");
        assert!(started.elapsed() >= std::time::Duration::from_millis(900), "{opening:?}: closed early");
    }
    // A request within the deadline is served, and its connection then lives by the idle timeout.
    let got =
        hop_raw(running.public_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::time::Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    gate.shutdown().await;
}

/// 64 silent connections made the admin listener (liveness probes) unanswerable. Under 200 silent connections to
/// each listener, and a client opening more to the admin one all the while, `/healthz` answers within a second.
#[tokio::test]
async fn hop_admin_answers_under_a_flood_of_silent_connections() {
    let gate = TestGate::builder().settings(|s| s.routes = vec![route("/", AuthMode::Public)]).spawn().await;
    let running = gate.running.as_ref().unwrap();
    let (public, admin) = (running.public_addr, running.admin_addr);
    let mut held = Vec::new();
    for addr in [admin, public] {
        for _ in 0..200 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
    }
    let flooding = tokio::spawn(async move {
        let mut more = Vec::new();
        for _ in 0..2000 {
            if let Ok(s) = tokio::net::TcpStream::connect(admin).await {
                more.push(s);
            }
            tokio::task::yield_now().await;
        }
        more
    });
    let probe = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n";
    for i in 0..10 {
        let started = std::time::Instant::now();
        let got = hop_raw(admin, probe, std::time::Duration::from_secs(1)).await;
        assert!(got.starts_with("HTTP/1.1 200"), "probe {i} after {:?}: {got:?}", started.elapsed());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    let more = flooding.await.unwrap();
    // The public listener serves too, its silent connections notwithstanding.
    let got = hop_raw(public, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::time::Duration::from_secs(1)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    drop((held, more));
    gate.shutdown().await;
}

/// An idle HTTP/2 connection lived forever: the server's keep-alive ping every 30 s, answered by the client's stack,
/// moved bytes and reset the idle timeout. Without pings it closes at the idle timeout (31 s here, just above the old
/// ping interval: this test waits about half a minute).
#[tokio::test]
async fn hop_idle_http2_connections_close_at_the_idle_timeout() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let idle = std::time::Duration::from_secs(31);
    let gate = TestGate::builder()
        .settings(move |s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.idle_timeout = idle;
        })
        .spawn()
        .await;
    let stream = tokio::net::TcpStream::connect(gate.running.as_ref().unwrap().public_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let done = tokio::spawn(conn);
    let req = http::Request::get(format!("{}/x", gate.base)).body(http_body_util::Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(idle + std::time::Duration::from_secs(9), done).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection still open {:?} after its last request", started.elapsed());
    assert!(started.elapsed() >= idle - std::time::Duration::from_secs(1));
    gate.shutdown().await;
}

/// A WebSocket tunnel left the connection count and the idle timeout behind once spliced: one anonymous client could
/// hold any number of them, forever. A tunnel keeps its connection's slot and closes when idle.
#[tokio::test]
async fn hop_websocket_tunnels_count_against_the_cap_and_close_when_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = crate::harness::spawn_upstream(|mut req: http::Request<hyper::body::Incoming>| async move {
        if !req.headers().contains_key("upgrade") {
            return http::Response::new(Full::new(Bytes::from_static(b"ok")));
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let mut buf = [0u8; 256];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        http::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let gate = TestGate::builder()
        .settings(|s| {
            s.routes = vec![route("/", AuthMode::Public)];
            s.server.max_connections = 1;
            s.server.idle_timeout = std::time::Duration::from_secs(2);
        })
        .upstream(upstream)
        .spawn()
        .await;
    let addr = gate.running.as_ref().unwrap().public_addr;
    let mut ws = tokio::net::TcpStream::connect(addr).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = ws.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    ws.write_all(b"ping").await.unwrap();
    let n = ws.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping", "tunnelled");
    // The tunnel holds the only slot: another client waits.
    let other = hop_raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::time::Duration::from_millis(500)).await;
    assert!(other.is_empty(), "served beside a tunnel holding the only slot: {other}");
    // Idle for the idle timeout: the tunnel closes, and the slot is free again.
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(6), ws.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "an idle tunnel still open after {:?}", started.elapsed());
    let other = hop_raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::time::Duration::from_secs(2)).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    gate.shutdown().await;
}

// === lead: second break-it pass — an ending that a refresh in flight must not undo ===

/// A back-channel logout that lands while a refresh is at the token endpoint: the refresh finishing afterwards
/// must not write the session back (it did, for memory and Redis stores alike).
#[tokio::test]
async fn a_refresh_in_flight_does_not_revive_a_logged_out_session() {
    let redis = crate::redis::Redis::start().await;
    let redis_url = idgate::config::Secret::new(redis.url());
    refresh_in_flight_does_not_revive(vec![
        idgate::config::StoreKind::Memory,
        idgate::config::StoreKind::Redis { url: redis_url },
    ])
    .await;
}

/// The refresh-in-flight case for each store of `kinds` (redis_ha.rs runs it on Sentinel and Cluster).
pub(crate) async fn refresh_in_flight_does_not_revive(kinds: Vec<idgate::config::StoreKind>) {
    for store in kinds {
        let label = format!("{store:?}");
        let gate = TestGate::builder()
            .settings(move |s| {
                offline_300(s);
                s.session.store = store;
            })
            .spawn()
            .await;
        gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
        let b = gate.login_as("vic").await.api();
        gate.clock.advance(260);
        gate.issuer.configure(|k| k.token_delay = std::time::Duration::from_millis(1500));
        let tokens = gate.issuer.request_count("token");
        let refreshing = {
            let (b, url) = (b.clone(), format!("{}/", gate.base));
            tokio::spawn(async move { b.get(&url).await.status })
        };
        crate::harness::eventually("the refresh reaches the token endpoint", std::time::Duration::from_secs(5), || {
            let at_issuer = gate.issuer.request_count("token") > tokens;
            async move { at_issuer.then_some(()) }
        })
        .await;
        let token = crate::sessions::logout_token(&gate, |c| {
            c.insert("sub".into(), json!("dev|vic"));
        });
        assert_eq!(crate::sessions::post_logout(&gate.base, &token).await.status, StatusCode::OK, "{label}");
        let during = refreshing.await.unwrap();
        assert_eq!(during, StatusCode::UNAUTHORIZED, "{label}: the refresh finished after the logout");
        let after = b.get(&format!("{}/", gate.base)).await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{label}: the session stays ended");
        gate.shutdown().await;
    }
}

/// A copy of a cookie session that refreshed before its owner signed out (second break-it pass): it carries the same
/// login with a later `exp` and an unrevoked rotated refresh token, and must be refused by the replica that signed
/// the login out even after the original session's `exp` (how long the login is kept is checked by
/// `session::signed_out`'s unit test: the list expires in real time, not on the test clock).
#[tokio::test]
async fn a_copy_refreshed_before_sign_out_is_refused_after_the_original_exp() {
    let gate = TestGate::builder().settings(offline_300).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let victim = gate.login_as("ivy").await;
    let thief = holding(&victim.cookie("idgate").unwrap());
    gate.clock.advance(260);
    let refreshed = thief.get(&format!("{}/", gate.base)).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_ne!(thief.cookie("idgate"), victim.cookie("idgate"), "the thief's copy was refreshed");
    crate::sessions::sign_out(&gate, &victim).await;
    gate.clock.advance(60);
    let r = thief.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "past the original exp, the refreshed copy is still signed out");
    gate.shutdown().await;
}

// === break-post: form posts that survive a re-login, attacked ===

/// A form navigation as a browser sends it from a page of `origin` (`site` is its `Sec-Fetch-Site`); a client that
/// is no browser forges the same headers at will.
async fn post_form_navigation(
    b: &Browser,
    base: &str,
    path: &str,
    origin: &str,
    site: &str,
    body: &str,
) -> crate::harness::Resp {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    h.insert("sec-fetch-dest", HeaderValue::from_static("document"));
    h.insert("sec-fetch-site", HeaderValue::from_str(site).unwrap());
    h.insert(http::header::ORIGIN, HeaderValue::from_str(origin).unwrap());
    b.send(Method::POST, &format!("{base}{path}"), h, Bytes::from(body.to_owned())).await
}

/// An upstream counting the POSTs it received, answering with their user header and body.
async fn post_counting_upstream() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use http_body_util::BodyExt;
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let kept = Arc::clone(&seen);
    let addr = crate::harness::spawn_upstream(move |req: http::Request<hyper::body::Incoming>| {
        let seen = Arc::clone(&kept);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let user = parts.headers.get("x-auth-request-user").map(|v| v.to_str().unwrap().to_owned());
            if parts.method == Method::POST {
                seen.lock().unwrap().push((user.clone().unwrap_or_default(), String::from_utf8_lossy(&body).into()));
            }
            http::Response::new(Full::new(Bytes::from(json!({"user": user}).to_string())))
        }
    })
    .await;
    (addr, seen)
}

/// Login CSRF by cookie tossing (a sibling host of the same site, or a network attacker answering for
/// `http://` of this host, can add cookies that are not `__Host-`): Mallory, with no browser, makes idgate keep
/// *his* body (forged same-origin headers), adds the flow and post cookies he got to the victim's browser and sends
/// it to the issuer URL. The victim logs in as herself, and the resume page used to post Mallory's body to the
/// application as her — from idgate's own origin, past any Origin or SameSite check the application makes. The
/// kept post is now bound to a `__Host-` cookie of the browser that sent it, which no other host can set.
#[tokio::test]
async fn post_a_tossed_flow_cannot_send_an_attackers_body_as_the_victim() {
    let (upstream, seen) = post_counting_upstream().await;
    let gate = TestGate::builder()
        .upstream(upstream)
        .settings(|s| {
            s.session.cookie_secure = true;
            s.session.store = idgate::config::StoreKind::Memory;
        })
        .spawn()
        .await;
    // In cookies (small body) and in the server-side store (over the cookie budget: only the flow cookie travels).
    for body in ["to=mallory&amount=1000".to_owned(), format!("to=mallory&amount=1000&pad={}", "x".repeat(9000))] {
        let mallory = Browser::new();
        let kept = post_form_navigation(&mallory, &gate.base, "/transfer", &gate.base, "same-origin", &body).await;
        assert_eq!(kept.status, StatusCode::SEE_OTHER, "{}", kept.text());
        let victim = Browser::new();
        for (name, value) in mallory.jar.lock().unwrap().iter() {
            assert!(name.starts_with("idgate_") || name.starts_with("__Host-"), "{name}");
            if !name.starts_with("__Host-") {
                victim.set_cookie(name, value);
            }
        }
        let page = victim.authorize_and_callback(&gate.base, kept.location(), "alice").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        assert!(!page.text().contains("idgate_resume"), "no resume form for a tossed post: {}", page.text());
        assert!(page.text().contains("could not be restored"), "{}", page.text());
        assert!(victim.cookie("idgate").is_some(), "the victim's own login still succeeds");
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the upstream: {:?}", seen.lock().unwrap());
    gate.shutdown().await;
}

/// The resume form sent from a sibling host of the same site: `SameSite=Lax` lets the victim's session cookie
/// through, and a tossed ticket cookie (Mallory's own, from his own login) made idgate swap in Mallory's kept body
/// under the victim's identity. The resume form comes from idgate's page only: same-origin, or it is refused.
#[tokio::test]
async fn post_a_resume_form_from_another_origin_is_refused() {
    let (upstream, seen) = post_counting_upstream().await;
    let gate = TestGate::builder().upstream(upstream).spawn().await;
    // Mallory keeps a post through his own login and takes the resume field and its ticket cookie.
    let mallory = gate.login_as("mallory").await;
    gate.clock.advance(3601);
    let kept = post_form_navigation(&mallory, &gate.base, "/transfer", &gate.base, "same-origin", "to=mallory").await;
    assert_eq!(kept.status, StatusCode::SEE_OTHER, "{}", kept.text());
    let page = mallory.authorize_and_callback(&gate.base, kept.location(), "mallory").await;
    let html = page.text();
    let value = html.split("name=\"idgate_resume\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let ticket = mallory
        .jar
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("idgate_resume_"))
        .map(|(k, v)| (k.clone(), v.clone()));
    let (ticket_name, ticket_value) = ticket.expect("a ticket cookie");
    // The victim, logged in; Mallory's ticket cookie tossed into her browser; the form posted by a sibling's page.
    let victim = gate.login_as("alice").await;
    victim.set_cookie(&ticket_name, &ticket_value);
    let body = format!("idgate_resume={value}");
    for (origin, site) in [("http://evil.localhost", "same-site"), ("https://evil.example", "cross-site")] {
        let r = post_form_navigation(&victim, &gate.base, "/transfer", origin, site, &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin}: {}", r.text());
        assert!(r.text().contains("post_cross_origin"), "{}", r.text());
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the upstream: {:?}", seen.lock().unwrap());
    // Mallory's own resume, from idgate's page, still works (the refusals did not use the ticket up).
    let own = post_form_navigation(&mallory, &gate.base, "/transfer", &gate.base, "same-origin", &body).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    assert_eq!(seen.lock().unwrap().as_slice(), [("dev|mallory".to_owned(), "to=mallory".to_owned())]);
    gate.shutdown().await;
}

/// Anyone, with no login, could make idgate hold kept posts: each forged same-origin form post of up to 64 KiB over
/// the cookie budget went to the server-side store for 10 minutes, without bound — 100 000 of them (the memory
/// store's capacity) are 6.5 GB in memory or in Redis, and they pushed the sessions out of the memory store. The
/// bytes a process keeps in the store at once are now bounded (`session.preserve_post_store_bytes`); beyond that a
/// post is not kept (`401` with the page saying so) until older ones expire.
#[tokio::test]
async fn post_the_server_side_store_of_kept_posts_is_bounded() {
    let (upstream, seen) = post_counting_upstream().await;
    let gate = TestGate::builder()
        .upstream(upstream)
        .settings(|s| {
            s.session.store = idgate::config::StoreKind::Memory;
            s.session.preserve_post_store_bytes = 100_000;
        })
        .spawn()
        .await;
    let mallory = Browser::new();
    let body = format!("pad={}", "x".repeat(9_000));
    let mut kept = 0;
    let refused = loop {
        let r = post_form_navigation(&mallory, &gate.base, "/a", &gate.base, "same-origin", &body).await;
        if r.status != StatusCode::SEE_OTHER {
            break r;
        }
        kept += 1;
        assert!(kept <= 10, "more than 100 000 bytes kept");
    };
    assert_eq!(kept, 10, "9 KB posts (9 119 bytes sealed) until the 100 000 bytes are used");
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
    assert!(refused.text().contains("post_store_full"), "{}", refused.text());
    assert!(refused.text().contains("cannot be kept right now"), "{}", refused.text());
    // Small posts travel in cookies and need no room in the store.
    let small = post_form_navigation(&mallory, &gate.base, "/a", &gate.base, "same-origin", "a=1").await;
    assert_eq!(small.status, StatusCode::SEE_OTHER, "{}", small.text());
    // After the flows' 10 minutes the room is free again.
    gate.clock.advance(601);
    let again = post_form_navigation(&mallory, &gate.base, "/a", &gate.base, "same-origin", &body).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.text());
    assert!(seen.lock().unwrap().is_empty());
    gate.shutdown().await;
}

// === break-par: issuer-supplied text at the back channel and in `idgate check`, key material in config errors (issue 13 review) ===

/// A compromised issuer answering the token endpoint with an error code that holds a newline forged a whole log
/// line: the code went raw into `ProviderError::Refused`'s `Display`, which the text log prints as it is (PAR's
/// error codes were already cut to their own characters; the token endpoint's, used by `private_key_jwt` logins and
/// refreshes, were not).
#[tokio::test]
async fn an_issuer_error_code_cannot_forge_a_log_line() {
    let logs = Logs::capture();
    let gate = TestGate::builder()
        .knobs(|k| k.token_error = Some((400, "invalid_grant\nFORGED idgate::audit: login succeeded sub=admin")))
        .spawn()
        .await;
    let cb = gate.browser().login_to_callback(&gate.base, "/", "eve").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
    let text = logs.text();
    assert!(text.contains("refused with HTTP 400: invalid_grantFORGED"), "the code is kept, cut: {text}");
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "a forged line: {text}");
    gate.shutdown().await;
}

/// `idgate check` printed the issuer's own strings (auth methods, algorithms, the PAR endpoint) raw to the
/// operator's terminal: a discovery document could carry ANSI/OSC escapes (rewrite the line as `ok`, hide text,
/// set the clipboard). Control and bidi characters are now shown escaped.
#[test]
fn issuer_strings_in_check_lines_carry_no_terminal_escapes() {
    let mut s = crate::harness::settings("http://127.0.0.1:1", "http://i.invalid", "127.0.0.1:1".parse().unwrap());
    s.oidc.par = true;
    let m: idgate::oidc::Metadata = serde_json::from_value(json!({
        "issuer": "i", "authorization_endpoint": "a", "token_endpoint": "t", "jwks_uri": "j",
        "token_endpoint_auth_methods_supported": ["\u{1b}]52;c;cm0gLXJmIH4K\u{7}private_key_jwt"],
        "id_token_encryption_alg_values_supported": ["\u{1b}[2K\rok    RSA-OAEP"],
        "pushed_authorization_request_endpoint": "https://op/par\u{1b}[8m\u{202e}",
        "dpop_signing_alg_values_supported": ["ES256\u{9b}31m"],
    }))
    .unwrap();
    let lines = idgate::check::capabilities::findings(&s.oidc, &m, "https://gate/oauth2/jwks");
    assert_eq!(lines.len(), 4);
    for f in &lines {
        assert!(!f.text.chars().any(|c| c.is_control() || c == '\u{202e}'), "{:?}", f.text);
    }
    let all: String = lines.iter().map(|f| f.text.as_str()).collect();
    for shown in ["\\u{1b}]52", "\\u{1b}[2K\\rok", "par\\u{1b}[8m\\u{202e}", "ES256\\u{9b}31m"] {
        assert!(all.contains(shown), "{shown} in {all}");
    }
}

/// Key material in configuration errors: PEM text given where a key file's path belongs (an environment override
/// `IDGATE_OIDC__CLIENT_KEY_FILE` fed straight from a secret, instead of a mounted file) was echoed whole in the
/// "cannot read" error — the private key printed to the console and whatever collects it.
#[test]
fn a_private_key_given_instead_of_its_path_is_never_echoed_in_config_errors() {
    use std::io::Write;
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(
        br#"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://issuer.example.com"
client_id = "my-app"
redirect_url = "https://app.example.com/oauth2/callback"
[session]
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
"#,
    )
    .unwrap();
    let pem = idgate::id_token::jwe::GeneratedKey::p256().private_pem;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for (key, extra) in [
        ("IDGATE_OIDC__CLIENT_KEY_FILE", ("IDGATE_OIDC__TOKEN_AUTH_METHOD", "private_key_jwt")),
        ("IDGATE_OIDC__ID_TOKEN_DECRYPTION_KEY_FILE", ("IDGATE_OIDC__CLIENT_SECRET", "s3cret")),
        ("IDGATE_OIDC__CLIENT_SECRET_FILE", ("IDGATE_OIDC__TOKEN_AUTH_METHOD", "client_secret_basic")),
    ] {
        let env: std::collections::HashMap<String, String> =
            [(key.to_owned(), pem.clone()), (extra.0.to_owned(), extra.1.to_owned())].into();
        let err = idgate::config::load(file.path(), &env).unwrap_err().to_string();
        assert!(err.contains("not shown: the value looks like key text"), "{key}: {err}");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!err.contains(line), "{key}: key material in {err}");
        }
        assert!(!err.contains(&body[..20]), "{key}: {err}");
    }
}
