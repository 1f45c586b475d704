//! Issue 14: the signed identity assertion. The upstream verifies it from the published JWK set with stock libraries
//! (jsonwebtoken here; PyJWT and `jose` through the copyable verifiers in deploy/verify/, which these tests run —
//! scripts/deps.sh installs both, and the tests fail rather than skip without them).

use std::sync::Arc;

use tokio::process::Command;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use idgate::{
    clock::Clock,
    config::{AuthMode, assertion::LoadedKey},
    signing::SigningKey,
};
use serde_json::Value;

use crate::harness::{Browser, TestGate, route};

const EC_PEM: &str = include_str!("../../src/signing/testdata/ec-sec1.pem");
const RSA_PEM: &str = include_str!("../../src/signing/testdata/rsa-pkcs1.pem");

fn key(pem: &str) -> LoadedKey {
    LoadedKey(Arc::new(SigningKey::from_pem(pem.as_bytes(), None).unwrap()))
}

async fn gate(f: impl FnOnce(&mut idgate::config::Settings) + 'static) -> TestGate {
    TestGate::builder()
        .settings(|s| {
            s.assertion.enabled = true;
            s.assertion.key = Some(key(EC_PEM));
            s.routes = vec![route("/public", AuthMode::Public), {
                let mut r = route("/billing", AuthMode::Login);
                r.audience = Some("billing-service".into());
                r
            }];
            f(s);
        })
        .spawn()
        .await
}

/// The assertion the upstream received for `path`.
async fn assertion_at(gate: &TestGate, b: &Browser, path: &str) -> String {
    let r = b.get(&format!("{}{path}", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.upstream_header("x-idgate-assertion").unwrap_or_else(|| panic!("no assertion upstream: {}", r.text()))
}

fn host(gate: &TestGate) -> String {
    gate.base.trim_start_matches("http://").to_owned()
}

fn part(jwt: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// Verifies `jwt` with jsonwebtoken from the JWK set `jwks` (by `kid`), as an application would.
fn verify(jwks: &Value, jwt: &str, issuer: &str, aud: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(jwt)?;
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("the kid is published");
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[issuer]);
    // The test clock is not the system clock: exp is compared by the tests themselves.
    v.validate_exp = false;
    v.required_spec_claims = ["exp", "iat", "iss", "aud", "sub"].map(String::from).into();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    Ok(jsonwebtoken::decode::<Value>(jwt, &key, &v)?.claims)
}

async fn jwks(gate: &TestGate) -> Value {
    let r = Browser::new().api().get(&format!("{}/oauth2/jwks", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["cache-control"], "public, max-age=300");
    r.json()
}

#[tokio::test]
async fn the_upstream_verifies_the_assertion_from_the_published_jwks() {
    let gate = gate(|_| {}).await;
    let b = gate.login_as("alice").await;
    let jwt = assertion_at(&gate, &b, "/app").await;
    let claims = verify(&jwks(&gate).await, &jwt, &gate.base, &host(&gate)).unwrap();
    assert_eq!(claims["sub"], "dev|alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["idp_iss"], gate.issuer.issuer());
    assert_eq!(part(&jwt, 0)["alg"], "ES256");
    for absent in ["nonce", "at_hash", "https://example.com/roles", "id_token", "access_token", "refresh_token"] {
        assert!(claims.get(absent).is_none(), "{absent} is not copied");
    }
    // No token of the session is inside, in any form.
    let session = gate.state().sessions.open(&cookie_headers(&b), gate.clock.now()).await.unwrap();
    let id_token = session.id_token_hint();
    assert!(!jwt.contains(id_token.split('.').nth(2).unwrap()), "the ID token's signature is not copied");
    assert!(!claims.to_string().contains(session.login().id()), "sid is a hash, never the login id");
    assert_eq!(claims["sid"], idgate::assertion::session_hash(session.login().id()));
    // The same on the admin listener.
    let admin = Browser::new().api().get(&format!("{}/jwks", gate.admin)).await;
    assert_eq!(admin.json(), jwks(&gate).await);
    // Another audience on the route that names one; the same session keeps its sid.
    let billing = assertion_at(&gate, &b, "/billing/x").await;
    let bc = verify(&jwks(&gate).await, &billing, &gate.base, "billing-service").unwrap();
    assert_eq!(bc["sid"], claims["sid"]);
    assert!(verify(&jwks(&gate).await, &billing, &gate.base, &host(&gate)).is_err(), "not for the host's audience");
    // Public routes have nobody to assert.
    let public = b.get(&format!("{}/public/x", gate.base)).await;
    assert_eq!(public.upstream_header("x-idgate-assertion"), None);
    gate.shutdown().await;
}

fn cookie_headers(b: &Browser) -> http::HeaderMap {
    let jar = b.jar.lock().unwrap();
    let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, cookie.parse().unwrap());
    h
}

#[tokio::test]
async fn one_assertion_is_signed_per_session_and_audience_and_reused() {
    let gate = gate(|_| {}).await;
    let b = gate.login_as("alice").await;
    let first = assertion_at(&gate, &b, "/a").await;
    for path in ["/b", "/c?x=1"] {
        assert_eq!(assertion_at(&gate, &b, path).await, first, "reused");
    }
    let other = gate.login_as("bob").await;
    assert_ne!(assertion_at(&gate, &other, "/a").await, first);
    // 30 s before its exp (iat + 300) a new one is signed.
    gate.clock.advance(271);
    let later = assertion_at(&gate, &b, "/a").await;
    assert_ne!(later, first);
    assert_eq!(part(&later, 1)["sid"], part(&first, 1)["sid"], "the same session");
    let metrics = gate.state().metrics.render();
    // Signed: alice's login landing, bob's, alice's after the margin; hits: alice's three, bob's one.
    assert!(metrics.contains("idgate_assertions_signed_total 3"), "{metrics}");
    assert!(metrics.contains("idgate_assertion_cache_hits_total 4"), "{metrics}");
    gate.shutdown().await;
}

#[tokio::test]
async fn a_client_sent_assertion_is_always_stripped() {
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    // With the assertion on: replaced on protected routes, removed on public ones, in every spelling.
    let gate = gate(|s| s.assertion.header = http::HeaderName::from_static("x-app-identity")).await;
    let b = gate.login_as("alice").await;
    let spoof = [("X-App-Identity", forged), ("x_app_identity", forged), ("X-Idgate-Assertion", forged)];
    let r = b.get_with(&format!("{}/app", gate.base), &spoof).await;
    let got = r.upstream_header("x-app-identity").unwrap();
    assert_ne!(got, forged);
    assert_eq!(part(&got, 1)["sub"], "dev|alice");
    assert_eq!(r.upstream_header("x_app_identity"), None);
    assert_eq!(r.upstream_header("x-idgate-assertion"), None, "the default name is stripped too");
    let public = Browser::new().get_with(&format!("{}/public/x", gate.base), &spoof).await;
    assert_eq!(public.status, StatusCode::OK);
    for name in ["x-app-identity", "x_app_identity", "x-idgate-assertion"] {
        assert_eq!(public.upstream_header(name), None, "{name}");
    }
    gate.shutdown().await;
    // With the assertion off, the default header is stripped all the same.
    let off = TestGate::builder().spawn().await;
    let b = off.login_as("alice").await;
    let r = b.get_with(&format!("{}/app", off.base), &[("X-Idgate-Assertion", forged)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-idgate-assertion"), None);
    off.shutdown().await;
}

#[tokio::test]
async fn the_assertion_never_outlives_the_session() {
    let gate = gate(|_| {}).await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 100);
    let b = gate.login_as("alice").await;
    let jwt = assertion_at(&gate, &b, "/app").await;
    let c = part(&jwt, 1);
    let session_exp = gate.clock.now() + 100;
    assert_eq!(c["exp"].as_i64().unwrap(), session_exp, "capped at the session's end, not iat + 300");
    // Past its end the session is gone, and with it any assertion.
    gate.clock.advance(101);
    let r = b.api().get(&format!("{}/app", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("x-idgate-assertion").is_none());
    gate.shutdown().await;
}

#[tokio::test]
async fn after_a_key_rotation_old_assertions_still_verify() {
    let gate = gate(|_| {}).await;
    let b = gate.login_as("alice").await;
    let old = assertion_at(&gate, &b, "/app").await;
    // The next deployment signs with a new key and publishes the old one as a previous key.
    let replica = gate
        .replica(|s| {
            s.assertion.key = Some(key(RSA_PEM));
            s.assertion.previous_keys = vec![key(EC_PEM)];
        })
        .await;
    let base = format!("http://{}", replica.public_addr);
    let published = Browser::new().api().get(&format!("{base}/oauth2/jwks")).await.json();
    assert_eq!(published["keys"].as_array().unwrap().len(), 2, "{published}");
    assert!(verify(&published, &old, &gate.base, &host(&gate)).is_ok(), "the old assertion verifies");
    let r = b.get(&format!("{base}/app")).await;
    let new = r.upstream_header("x-idgate-assertion").unwrap();
    assert_eq!(part(&new, 0)["alg"], "RS256");
    assert_ne!(part(&new, 0)["kid"], part(&old, 0)["kid"]);
    let host = base.trim_start_matches("http://");
    assert!(verify(&published, &new, &gate.base, host).is_ok());
    // Without the previous key, the old assertion no longer verifies (the negative of the rotation story).
    let later = gate.replica(|s| s.assertion.key = Some(key(RSA_PEM))).await;
    let only_new = Browser::new().api().get(&format!("http://{}/oauth2/jwks", later.public_addr)).await.json();
    assert_eq!(only_new["keys"].as_array().unwrap().len(), 1);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(only_new).unwrap();
    assert!(set.find(part(&old, 0)["kid"].as_str().unwrap()).is_none());
    replica.shutdown().await;
    later.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn forward_auth_answers_carry_the_assertion_for_the_forwarded_host() {
    let gate = gate(|s| s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let b = gate.login_as("alice").await;
    let r = b
        .api()
        .get_with(
            &format!("{}/oauth2/auth", gate.base),
            &[("X-Forwarded-Uri", "/app"), ("X-Forwarded-Host", "app.example.com")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let jwt = r.headers["x-idgate-assertion"].to_str().unwrap();
    let claims = verify(&jwks(&gate).await, jwt, &gate.base, "app.example.com").unwrap();
    assert_eq!(claims["sub"], "dev|alice");
    let billing = b.api().get_with(&format!("{}/oauth2/auth", gate.base), &[("X-Forwarded-Uri", "/billing/pay")]).await;
    assert_eq!(part(billing.headers["x-idgate-assertion"].to_str().unwrap(), 1)["aud"], "billing-service");
    gate.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_host_from_an_untrusted_client_does_not_pick_the_audience() {
    let gate = gate(|_| {}).await;
    let b = gate.login_as("alice").await;
    let r = b.get_with(&format!("{}/app", gate.base), &[("X-Forwarded-Host", "victim.example.com")]).await;
    let jwt = r.upstream_header("x-idgate-assertion").unwrap();
    assert_eq!(part(&jwt, 1)["aud"], host(&gate), "the Host the client connected with, not its claim");
    gate.shutdown().await;
}

/// Runs a copyable verifier: `(exit ok, stdout, stderr)`.
async fn run_verifier(
    program: &str,
    script: &str,
    gate: &TestGate,
    audience: &str,
    jwt: &str,
) -> (bool, String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/verify");
    let out = Command::new(program)
        .current_dir(&dir)
        .arg(dir.join(script))
        .args(["--jwks", &format!("{}/oauth2/jwks", gate.base), "--issuer", &gate.base, "--audience", audience])
        .arg(jwt)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} {script}: {e} (scripts/deps.sh installs it)"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn the_python_and_node_verifiers_accept_the_assertion_and_refuse_bad_ones() {
    // An RSA key for this one, so both algorithms meet a stock library.
    for (alg, pem) in [("ES256", EC_PEM), ("RS256", RSA_PEM)] {
        let gate = gate(move |s| s.assertion.key = Some(key(pem))).await;
        let b = gate.login_as("alice").await;
        let jwt = assertion_at(&gate, &b, "/app").await;
        assert_eq!(part(&jwt, 0)["alg"], alg);
        // The signature's last character changed: a different signature (both decoders read all its bits).
        let mut tampered = jwt.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'Q' } else { 'A' });
        for (program, script) in [("/usr/bin/python3", "verify.py"), ("node", "verify.mjs")] {
            let (ok, stdout, stderr) = run_verifier(program, script, &gate, &host(&gate), &jwt).await;
            assert!(ok, "{script} {alg}: {stderr}");
            let claims: Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(claims["sub"], "dev|alice", "{script}");
            let (ok, _, stderr) = run_verifier(program, script, &gate, "another.example.com", &jwt).await;
            assert!(!ok && stderr.to_lowercase().contains("aud"), "{script} {alg}: another audience: {stderr}");
            let (ok, _, stderr) = run_verifier(program, script, &gate, &host(&gate), &tampered).await;
            assert!(!ok && stderr.to_lowercase().contains("signature"), "{script} {alg}: tampered: {stderr}");
        }
        gate.shutdown().await;
    }
}
