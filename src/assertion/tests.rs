use std::time::Duration;

use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;

fn claims() -> Claims {
    Claims::new(
        json!({
            "iss": "https://issuer.example.com", "aud": "client", "sub": "u1", "iat": NOW - 10, "exp": NOW + 3600,
            "nonce": "n-123", "at_hash": "h", "email": "a@example.com", "email_verified": true, "name": "Alice",
            "https://example.com/roles": ["admin"],
        })
        .as_object()
        .unwrap()
        .clone(),
    )
}

fn signer(f: impl FnOnce(&mut AssertionSettings)) -> (Assertions, Arc<SigningKey>, Arc<Metrics>) {
    let mut a = AssertionSettings { enabled: true, ..AssertionSettings::default() };
    f(&mut a);
    let key = Arc::new(SigningKey::generate_p256().unwrap());
    let metrics = Arc::new(Metrics::default());
    (Assertions::build(&a, Arc::clone(&key), "https://app.example.com".into(), Arc::clone(&metrics)), key, metrics)
}

/// Verifies with jsonwebtoken from the public JWK alone, checking `aud` and `iss` as an application would.
fn verify(jwt: &HeaderValue, key: &SigningKey, aud: &str) -> Value {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&["https://app.example.com"]);
    v.validate_exp = false;
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    jsonwebtoken::decode::<Value>(jwt.to_str().unwrap(), &decoding, &v).unwrap().claims
}

fn who<'a>(c: &'a Claims, exp: i64) -> Subject<'a> {
    Subject { claims: c, login_id: "login-abc", expires_at: exp }
}

#[test]
fn the_assertion_carries_the_required_and_configured_claims_only() {
    let (s, key, _) = signer(|_| {});
    let c = claims();
    let jwt = s.value(who(&c, NOW + 3600), "app.example.com", NOW).unwrap();
    let got = verify(&jwt, &key, "app.example.com");
    let mut names: Vec<&str> = got.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["aud", "email", "email_verified", "exp", "iat", "idp_iss", "iss", "jti", "name", "sid", "sub"],
        "no nonce, hash, roles or token"
    );
    assert_eq!(got["idp_iss"], "https://issuer.example.com");
    assert_eq!((got["iat"].as_i64(), got["exp"].as_i64()), (Some(NOW), Some(NOW + 300)));
    assert_eq!(got["sid"], session_hash("login-abc"));
    assert!(!jwt.to_str().unwrap().contains("login-abc"));
    assert!(got["jti"].as_str().unwrap().len() >= 16);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.to_str().unwrap().split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("ES256"), Some(key.kid())));
}

#[test]
fn the_assertion_never_outlives_the_session() {
    let (s, key, _) = signer(|_| {});
    let c = claims();
    let jwt = s.value(who(&c, NOW + 100), "app", NOW).unwrap();
    assert_eq!(verify(&jwt, &key, "app")["exp"], NOW + 100, "capped at the session's end, not iat + 300");
    assert!(s.value(who(&c, NOW), "app", NOW).is_none(), "an ended session gets none");
    assert!(s.value(who(&c, NOW - 1), "other", NOW).is_none());
}

#[test]
fn one_assertion_per_session_and_audience_is_reused_until_the_margin() {
    let (s, _, metrics) = signer(|_| {});
    let c = claims();
    let first = s.value(who(&c, NOW + 3600), "a", NOW).unwrap();
    assert_eq!(s.value(who(&c, NOW + 3600), "a", NOW + 10).unwrap(), first, "reused");
    assert_ne!(s.value(who(&c, NOW + 3600), "b", NOW + 10).unwrap(), first, "another audience, another assertion");
    let other_login = Subject { login_id: "login-xyz", ..who(&c, NOW + 3600) };
    assert_ne!(s.value(other_login, "a", NOW + 10).unwrap(), first, "another session, another assertion");
    // exp = NOW + 300: reused until 30 s before it, then signed again.
    assert_eq!(s.value(who(&c, NOW + 3600), "a", NOW + 269).unwrap(), first);
    assert_ne!(s.value(who(&c, NOW + 3600), "a", NOW + 270).unwrap(), first, "within the margin: a new one");
    let text = metrics.render();
    assert!(text.contains("idgate_assertions_signed_total 4"), "{text}");
    assert!(text.contains("idgate_assertion_cache_hits_total 2"), "{text}");
}

#[test]
fn a_renewed_session_gets_a_new_assertion() {
    let (s, key, _) = signer(|a| a.lifetime = Duration::from_secs(3600));
    let c = claims();
    let before = s.value(who(&c, NOW + 600), "a", NOW).unwrap();
    assert_eq!(verify(&before, &key, "a")["exp"], NOW + 600);
    let after = s.value(who(&c, NOW + 7200), "a", NOW + 1).unwrap();
    assert_eq!(verify(&after, &key, "a")["exp"], NOW + 1 + 3600, "the renewed session's end, not the cached one");
}

#[test]
fn configured_claims_and_audiences() {
    let (s, key, _) = signer(|a| {
        a.claims = vec!["sub".into(), "https://example.com/roles".into(), "missing".into()];
        a.audience = Some("configured".into());
    });
    let c = claims();
    let got = verify(&s.value(who(&c, NOW + 3600), "x", NOW).unwrap(), &key, "x");
    assert_eq!(got["https://example.com/roles"], json!(["admin"]));
    assert!(got.get("email").is_none() && got.get("missing").is_none() && got.get("idp_iss").is_none());
    assert_eq!(s.audience(Some("route"), Some("host")), Some("route"));
    assert_eq!(s.audience(None, Some("host")), Some("configured"));
    let (plain, _, _) = signer(|_| {});
    assert_eq!(plain.audience(None, Some("host")), Some("host"));
    assert_eq!(plain.audience(None, None), None);
}

#[test]
fn the_application_host_believes_x_forwarded_host_from_trusted_proxies_only() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("App.Example.com:8443"));
    h.insert("x-forwarded-host", HeaderValue::from_static("public.example.com, inner"));
    assert_eq!(app_host(&h, None, true).as_deref(), Some("public.example.com"));
    assert_eq!(app_host(&h, None, false).as_deref(), Some("app.example.com:8443"));
    let none = HeaderMap::new();
    assert_eq!(app_host(&none, Some("h2.example.com"), false).as_deref(), Some("h2.example.com"));
    assert_eq!(app_host(&none, None, true), None);
}

#[test]
fn the_issuer_header_and_sid_are_exact_and_debug_shows_no_key_material() {
    let (s, key, _) = signer(|_| {});
    assert_eq!(s.issuer(), "https://app.example.com");
    assert_eq!(s.header().as_str(), "x-idgate-assertion");
    assert_eq!(
        format!("{s:?}"),
        format!(
            "Assertions {{ header: \"x-idgate-assertion\", key: SigningKey {{ alg: \"ES256\", kid: {:?} }}, .. }}",
            key.kid()
        )
    );
    // sid = base64url(SHA-256("idgate-assertion-sid:" + login id)): pinned, so that a change is a decision.
    assert_eq!(session_hash("login-abc"), "4-pvkWZr5GiZBLJcTO0gPlcva33vt-WmQOo_azcLM3M");
    assert_ne!(session_hash("login-abd"), session_hash("login-abc"));
}
