//! Issue 14: bearer access tokens on API routes (RFC 9068 JWTs from the development issuer's JWKS, opaque tokens
//! through its RFC 7662 introspection endpoint). Every refusal asserts its reason (the answer's and the metric's),
//! and the same issuer's ID token for the same user is still refused (R14).

use std::collections::BTreeMap;

use http::StatusCode;
use idgate::{clock::Clock, config::AuthMode, dev_issuer::keys::sign_hs256};
use serde_json::{Value, json};

use crate::harness::{Browser, TestGate, route};

const API: &str = "https://api.example.com";

async fn gate(f: impl FnOnce(&mut idgate::config::Settings) + 'static) -> TestGate {
    TestGate::builder()
        .settings(|s| {
            s.oidc.bearer.api_audiences = vec![API.into()];
            s.oidc.bearer.introspect = true;
            s.routes = vec![route("/api", AuthMode::Api), {
                let mut r = route("/api/admin", AuthMode::Api);
                r.scopes_all = vec!["admin".into()];
                r.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
                r
            }];
            f(s);
        })
        .spawn()
        .await
}

async fn call(gate: &TestGate, path: &str, token: &str) -> crate::harness::Resp {
    Browser::new()
        .api()
        .get_with(&format!("{}{path}", gate.base), &[("Authorization", &format!("Bearer {token}"))])
        .await
}

/// `idgate_bearer_total{result}` counts.
fn results(gate: &TestGate) -> BTreeMap<String, u64> {
    gate.state()
        .metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("idgate_bearer_total{result=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(r, n)| (r.to_owned(), n.parse().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_jwt_access_token_opens_an_api_route_and_its_claims_become_headers() {
    let gate = gate(|_| {}).await;
    let token = gate.issuer.access_token("alice", API, "read write", |_| {});
    let r = call(&gate, "/api/items", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    assert_eq!(r.upstream_header("authorization"), None, "the token is not forwarded without forward_access_token");
    assert_eq!(r.upstream_header("x-forwarded-access-token"), None);
    assert_eq!(results(&gate).get("accepted"), Some(&1));
    // The route's scopes and rules apply to the token's claims.
    let c = |c: &mut serde_json::Map<String, Value>| {
        c.insert("https://example.com/roles".into(), json!(["admin"]));
    };
    let r = call(&gate, "/api/admin/x", &gate.issuer.access_token("admin1", API, "read", c)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("scopes_all"), "{}", r.text());
    let r = call(&gate, "/api/admin/x", &gate.issuer.access_token("alice", API, "admin", |_| {})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "alice lacks the admin role");
    assert!(r.text().contains("any_of"), "{}", r.text());
    let r = call(&gate, "/api/admin/x", &gate.issuer.access_token("admin1", API, "read admin", c)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(results(&gate).get("scopes_all"), Some(&1));
    gate.shutdown().await;
}

#[tokio::test]
async fn every_bad_bearer_token_is_refused_with_its_reason() {
    let gate = gate(|_| {}).await;
    let iss = gate.issuer.clone();
    let good = iss.access_token("alice", API, "read", |_| {});
    let (h, p, _) = {
        let mut parts = good.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned(), ())
    };
    let none = {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        format!("{}.{p}.c2ln", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#))
    };
    let claims: Value = {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p).unwrap()).unwrap()
    };
    let confused = iss.with_key(|k| {
        sign_hs256(&json!({"alg": "HS256", "typ": "at+jwt", "kid": k.kid}), &claims, &k.public_key_bytes())
    });
    let wrong_typ = iss.with_key(|k| k.sign(&claims));
    let now = gate.clock.now();
    let other_issuer = idgate::dev_issuer::SigningKey::generate(idgate::dev_issuer::DevAlg::RS256);
    let cases: Vec<(&str, String)> = vec![
        ("alg_not_allowed", none),
        ("alg_not_allowed", confused),
        ("wrong_typ", wrong_typ),
        ("wrong_audience", iss.access_token("alice", "https://other-api.example.com", "read", |_| {})),
        (
            "wrong_audience",
            iss.access_token("alice", crate::harness::CLIENT_ID, "read", |c| {
                c.insert("typ".into(), json!("x"));
            }),
        ),
        (
            "expired",
            iss.access_token("alice", API, "read", |c| {
                c.insert("exp".into(), json!(now - 61));
            }),
        ),
        (
            "wrong_issuer",
            iss.access_token("alice", API, "read", |c| {
                c.insert("iss".into(), json!("https://evil.example.com"));
            }),
        ),
        // Another issuer's key altogether: not in the JWKS, even after the one re-fetch.
        (
            "unknown_key",
            other_issuer.sign_with_header(&json!({"alg": "RS256", "kid": "evil", "typ": "at+jwt"}), &claims),
        ),
        ("bad_signature", format!("{h}.{p}.{}", "A".repeat(342))),
        ("inactive", "opaque-token-the-issuer-never-issued".into()),
        (
            "inactive",
            iss.opaque_token("alice", API, "read", |c| {
                c.insert("exp".into(), json!(now - 1));
                c.insert("active".into(), json!(false));
            }),
        ),
        ("wrong_audience", iss.opaque_token("alice", "https://other-api.example.com", "read", |_| {})),
        ("malformed", format!("{good} second-token")),
    ];
    for (reason, token) in &cases {
        let before = results(&gate).get(*reason).copied().unwrap_or(0);
        let r = call(&gate, "/api/x", token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_token", "{reason}");
        assert!(r.text().contains(&format!("({reason})")), "{reason}: {}", r.text());
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer error=\"invalid_token\"") && challenge.contains(reason), "{challenge}");
        assert_eq!(results(&gate).get(*reason).copied().unwrap_or(0), before + 1, "{reason} counted");
    }
    assert!(!results(&gate).contains_key("accepted"), "nothing was accepted: {:?}", results(&gate));
    gate.shutdown().await;
}

#[tokio::test]
async fn the_same_users_id_token_from_the_same_issuer_is_refused_as_a_bearer() {
    let gate = gate(|_| {}).await;
    let b = gate.login_as("alice").await;
    let jar: String = b.jar.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, jar.parse().unwrap());
    let session = gate.state().sessions.open(&h, gate.clock.now()).await.unwrap();
    let id_token = session.id_token_hint().to_owned();
    // Even with the client id among the API audiences (a misconfiguration), an ID token is no access token.
    for path in ["/api/x", "/app"] {
        let r = call(&gate, path, &id_token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.text().contains("ID tokens are not API credentials"), "{}", r.text());
    }
    assert_eq!(results(&gate).get("id_token"), Some(&2));
    let lax = self::gate(|s| {
        s.oidc.bearer.api_audiences.push(crate::harness::CLIENT_ID.into());
        s.oidc.bearer.typ_required = false;
    })
    .await;
    let r = call(&lax, "/api/x", &id_token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_token");
    lax.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn opaque_tokens_are_introspected_once_and_an_outage_is_503() {
    let gate = gate(|_| {}).await;
    let token = gate.issuer.opaque_token("alice", API, "read", |_| {});
    for _ in 0..3 {
        let r = call(&gate, "/api/x", &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    }
    assert_eq!(gate.issuer.request_count("introspect"), 1, "cached until its exp");
    // Past the token's exp (and the leeway) the cached answer is not believed; the issuer is asked again.
    gate.clock.advance(661);
    let r = call(&gate, "/api/x", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("(expired)"), "{}", r.text());
    assert_eq!(gate.issuer.request_count("introspect"), 2);
    // The introspection endpoint down: 503, never a 200.
    gate.issuer.configure(|k| k.introspection_down = true);
    let fresh = gate.issuer.opaque_token("bob", API, "read", |_| {});
    let r = call(&gate, "/api/x", &fresh).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(results(&gate).get("introspection_unavailable"), Some(&1));
    gate.shutdown().await;
    // Without oidc.introspect_opaque_tokens an opaque token is refused, not guessed at.
    let off = self::gate(|s| s.oidc.bearer.introspect = false).await;
    let r = call(&off, "/api/x", &off.issuer.opaque_token("alice", API, "read", |_| {})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("(opaque_not_introspected)"), "{}", r.text());
    assert_eq!(off.issuer.request_count("introspect"), 0);
    off.shutdown().await;
}

#[tokio::test]
async fn login_routes_take_a_bearer_only_without_a_session_and_forwarding_is_opt_in() {
    let gate = gate(|s| s.oidc.forward_access_token = true).await;
    let token = gate.issuer.access_token("carol", API, "read", |_| {});
    let r = call(&gate, "/app", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|carol"));
    assert_eq!(r.upstream_header("x-forwarded-access-token").as_deref(), Some(token.as_str()));
    // With a session cookie, a login route uses the session (the bearer is the application's business).
    let b = gate.login_as("alice").await;
    let r = b.get_with(&format!("{}/app", gate.base), &[("Authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    // An API route prefers the explicit credential.
    let r = b.api().get_with(&format!("{}/api/x", gate.base), &[("Authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|carol"));
    gate.shutdown().await;
    // Bearer access off (no oidc.api_audiences): a token opens nothing.
    let off = TestGate::builder().settings(|s| s.routes = vec![route("/api", AuthMode::Api)]).spawn().await;
    let r = call(&off, "/api/x", &off.issuer.access_token("carol", API, "read", |_| {})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    off.shutdown().await;
}
