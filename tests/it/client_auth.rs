//! Issue 13 against the development issuer: `private_key_jwt` (the assertion verified with the key idgate publishes at
//! `{prefix}/jwks`, its claims, replay of its `jti`), and pushed authorization requests (RFC 9126), each refusal with
//! its reason.

use std::{collections::HashSet, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use idgate::{
    config::{Settings, TokenAuthMethod},
    dev_issuer::DevClient,
    oidc::client_auth::{ASSERTION_TYPE, AssertionAudience, ClientKey},
    signing::{SigningAlg, SigningKey},
};
use serde_json::{Value, json};

use crate::harness::{Browser, CLIENT_ID, TestGate, urlencode};

/// Settings for `private_key_jwt` with `key`.
fn keyed(s: &mut Settings, key: &Arc<SigningKey>) {
    s.oidc.token_auth_method = TokenAuthMethod::PrivateKeyJwt;
    s.oidc.client_secret = None;
    s.oidc.client_key = Some(ClientKey(Arc::clone(key)));
}

/// The client registered with idgate's own `{prefix}/jwks` as its `jwks_uri`.
fn by_jwks_uri(c: &mut DevClient) {
    c.jwks_uri = Some(c.redirect_uris[0].replace("/oauth2/callback", "/oauth2/jwks"));
}

fn part(jwt: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// A gate using `private_key_jwt` with a fresh P-256 key, registered by `jwks_uri`, with refresh tokens.
async fn keyed_gate() -> (TestGate, Arc<SigningKey>) {
    let key = Arc::new(SigningKey::generate_p256().unwrap());
    let k = Arc::clone(&key);
    let gate = TestGate::builder()
        .settings(move |s| {
            keyed(s, &k);
            s.oidc.scopes.push("offline_access".into());
        })
        .registration(by_jwks_uri)
        .spawn()
        .await;
    (gate, key)
}

#[tokio::test]
async fn private_key_jwt_logs_in_refreshes_and_signs_out_with_the_published_key() {
    let (gate, key) = keyed_gate().await;
    // The key the issuer fetches is the one idgate publishes.
    let jwks = Browser::new().api().get(&format!("{}/oauth2/jwks", gate.base)).await.json();
    let published: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(published, [key.kid()]);
    assert_eq!(jwks["keys"][0]["use"], "sig");
    assert!(jwks["keys"][0].get("d").is_none());

    let b = gate.login_as("alice").await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    gate.clock.advance(3590);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "refreshed");
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    crate::sessions::sign_out(&gate, &b).await;
    assert_eq!(gate.issuer.request_count("revoke"), 1);
    assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());

    // One assertion per request (code, refresh, revocation), each fresh and shaped as RFC 7523 and FAPI 2.0 say.
    let assertions = gate.issuer.client_assertions();
    assert_eq!(assertions.len(), 3);
    let mut jtis = HashSet::new();
    for a in &assertions {
        let (header, claims) = (part(a, 0), part(a, 1));
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], key.kid());
        assert_eq!(header["typ"], "JWT");
        assert_eq!(claims["iss"], CLIENT_ID);
        assert_eq!(claims["sub"], CLIENT_ID);
        assert_eq!(claims["aud"], gate.issuer.issuer(), "the issuer identifier");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
        assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()), "jti reused");
    }
    gate.shutdown().await;
}

#[tokio::test]
async fn an_rsa_ps256_key_registered_inline_logs_in() {
    let key = Arc::new(SigningKey::generate_rsa(Some(SigningAlg::Ps256)).unwrap());
    let (k, jwk) = (Arc::clone(&key), key.public_jwk());
    let gate = TestGate::builder()
        .settings(move |s| keyed(s, &k))
        .registration(move |c| c.jwks = Some(json!({ "keys": [jwk] })))
        .spawn()
        .await;
    gate.login_as("alice").await;
    assert_eq!(part(&gate.issuer.client_assertions()[0], 0)["alg"], "PS256");
    assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());
    gate.shutdown().await;
}

#[tokio::test]
async fn the_issuer_refusing_our_assertion_is_a_readable_error() {
    // Registered with another key: the issuer cannot verify ours.
    let key = Arc::new(SigningKey::generate_p256().unwrap());
    let other = SigningKey::generate_p256().unwrap().public_jwk();
    let k = Arc::clone(&key);
    let gate = TestGate::builder()
        .settings(move |s| keyed(s, &k))
        .registration(move |c| c.jwks = Some(json!({ "keys": [other] })))
        .spawn()
        .await;
    let mut seen = gate.login_results();
    let cb = gate.browser().login_to_callback(&gate.base, "/", "alice").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
    assert!(cb.text().contains("did not accept the client credentials of this site (invalid_client)"), "{}", cb.text());
    assert!(!crate::harness::contains_jwt(&cb.text()), "no assertion on the page");
    assert_eq!(gate.login_results_since(&mut seen), ["client_auth_refused"]);
    assert_eq!(gate.issuer.refusals(), ["no registered client key for the assertion's kid"]);
    gate.shutdown().await;

    // An issuer that accepts only its token endpoint URL as `aud`: refused with the default, accepted once
    // configured.
    for (audience, refused) in [(AssertionAudience::Issuer, true), (AssertionAudience::TokenEndpoint, false)] {
        let k = Arc::clone(&key);
        let jwk = key.public_jwk();
        let gate = TestGate::builder()
            .settings(move |s| {
                keyed(s, &k);
                s.oidc.client_assertion_audience = audience;
            })
            .registration(move |c| c.jwks = Some(json!({ "keys": [jwk] })))
            .spawn()
            .await;
        let token_endpoint = format!("{}/token", gate.issuer.issuer());
        gate.issuer.configure(|k| k.assertion_audiences = Some(vec![token_endpoint]));
        let cb = gate.browser().login_to_callback(&gate.base, "/", "alice").await;
        if refused {
            assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
            assert_eq!(gate.issuer.refusals(), ["the client assertion's aud is not accepted"]);
        } else {
            assert_eq!(cb.status, StatusCode::FOUND, "{}", cb.text());
            assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());
        }
        gate.shutdown().await;
    }
}

/// The development issuer refuses a `jti` it has seen, so logins that keep working prove idgate never reuses one;
/// and it refuses assertions living longer than 60 s.
#[tokio::test]
async fn a_replayed_or_long_lived_assertion_is_refused_by_the_issuer() {
    let (gate, key) = keyed_gate().await;
    for user in ["alice", "bob", "carol"] {
        gate.login_as(user).await;
    }
    assert!(gate.issuer.refusals().is_empty(), "three logins, three fresh jtis: {:?}", gate.issuer.refusals());
    let token = format!("{}/token", gate.issuer.issuer());
    let post = |assertion: String| {
        let token = token.clone();
        async move {
            let form = format!(
                "grant_type=refresh_token&refresh_token=x&client_assertion_type={}&client_assertion={}",
                urlencode(ASSERTION_TYPE),
                urlencode(&assertion)
            );
            Browser::new().api().post_form(&token, &form).await
        }
    };
    let replayed = gate.issuer.client_assertions().pop().unwrap();
    let r = post(replayed).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    assert_eq!(gate.issuer.refusals(), ["the client assertion's jti was already used (replay)"]);

    let now = idgate::clock::Clock::now(&*gate.clock);
    let claims = |exp: i64, jti: &str| json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": gate.issuer.issuer(), "iat": now, "exp": exp, "jti": jti});
    let long = key.sign_jwt(Some("JWT"), &claims(now + 120, "long")).unwrap();
    assert_eq!(post(long).await.status, StatusCode::UNAUTHORIZED);
    let fresh = key.sign_jwt(Some("JWT"), &claims(now + 60, "fresh")).unwrap();
    // Accepted as client authentication; the grant itself is then refused.
    assert_eq!(post(fresh).await.json()["error"], "invalid_grant");
    assert_eq!(
        gate.issuer.refusals()[1..],
        ["the client assertion lives longer than 60 s", "unknown or already used refresh token"]
    );
    gate.shutdown().await;
}

fn par(s: &mut Settings) {
    s.oidc.par = true;
}

/// Query parameter names of a URL, in order.
fn query_names(url: &str) -> Vec<String> {
    url::Url::parse(url).unwrap().query_pairs().map(|(k, _)| k.into_owned()).collect()
}

#[tokio::test]
async fn par_pushes_the_parameters_and_the_browser_carries_only_the_request_uri() {
    let gate = TestGate::builder().settings(par).spawn().await;
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start?rd=/app", gate.base)).await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    assert!(start.location().starts_with(&format!("{}/authorize?", gate.issuer.issuer())));
    assert_eq!(query_names(start.location()), ["client_id", "request_uri"]);
    assert!(!start.location().contains("state="), "state, nonce and PKCE stay off the browser's URL");
    let cb = b.authorize_and_callback(&gate.base, start.location(), "alice").await;
    assert_eq!(cb.status, StatusCode::FOUND, "{}", cb.text());
    assert_eq!(cb.location(), "/app");
    assert_eq!(
        b.get(&format!("{}/app", gate.base)).await.upstream_header("x-auth-request-user").as_deref(),
        Some("dev|alice")
    );
    assert_eq!(gate.issuer.request_count("par"), 1);
    // The request_uri is used once.
    let again = b.post_form(start.location(), "username=alice").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(gate.issuer.refusals(), ["unknown or already used request_uri"]);
    gate.shutdown().await;
}

#[tokio::test]
async fn par_with_private_key_jwt_authenticates_the_push() {
    let key = Arc::new(SigningKey::generate_p256().unwrap());
    let k = Arc::clone(&key);
    let gate = TestGate::builder()
        .settings(move |s| {
            keyed(s, &k);
            par(s);
        })
        .registration(by_jwks_uri)
        .spawn()
        .await;
    gate.login_as("alice").await;
    assert_eq!(gate.issuer.request_count("par"), 1);
    assert_eq!(gate.issuer.client_assertions().len(), 2, "one at the PAR endpoint, one at the token endpoint");
    assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());
    gate.shutdown().await;
}

#[tokio::test]
async fn an_issuer_requiring_par_gets_it_whatever_the_setting() {
    let gate = TestGate::builder().knobs(|k| k.require_par = true).spawn().await;
    assert!(!gate.state().settings.oidc.par);
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start", gate.base)).await;
    assert_eq!(query_names(start.location()), ["client_id", "request_uri"]);
    assert_eq!(b.authorize_and_callback(&gate.base, start.location(), "alice").await.status, StatusCode::FOUND);
    // What a login without PAR would have met.
    let plain = format!(
        "{}/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid&state=s&\
         code_challenge={}&code_challenge_method=S256",
        gate.issuer.issuer(),
        urlencode(&format!("{}/oauth2/callback", gate.base)),
        "a".repeat(43)
    );
    assert_eq!(b.get(&plain).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(gate.issuer.refusals(), ["pushed authorization requests are required (RFC 9126)"]);
    gate.shutdown().await;
}

#[tokio::test]
async fn par_failures_are_readable_login_pages_never_a_500() {
    type Knob = Box<dyn FnOnce(&mut idgate::dev_issuer::Knobs)>;
    let answer = |status: u16, body: &str| -> Knob {
        let body = body.to_owned();
        Box::new(move |k| k.par_answer = Some((status, body)))
    };
    let cases: Vec<(&str, Knob, StatusCode, &str, &str)> = vec![
        (
            "endpoint down",
            Box::new(|k| k.par_endpoint = Some("http://127.0.0.1:1/par".into())),
            StatusCode::SERVICE_UNAVAILABLE,
            "par_unavailable",
            "The identity provider is not available",
        ),
        (
            "error JSON",
            answer(400, r#"{"error":"invalid_request","error_description":"<script>alert(1)</script>"}"#),
            StatusCode::BAD_GATEWAY,
            "par_refused",
            "refused the login request (invalid_request)",
        ),
        ("server error", answer(500, "oops"), StatusCode::SERVICE_UNAVAILABLE, "par_unavailable", "not available"),
        (
            "absurd expires_in",
            answer(201, r#"{"request_uri":"urn:x","expires_in":99999999}"#),
            StatusCode::BAD_GATEWAY,
            "par_bad_answer",
            "was not usable",
        ),
        (
            "zero expires_in",
            answer(201, r#"{"request_uri":"urn:x","expires_in":0}"#),
            StatusCode::BAD_GATEWAY,
            "par_bad_answer",
            "was not usable",
        ),
        (
            "no request_uri",
            answer(201, r#"{"expires_in":60}"#),
            StatusCode::BAD_GATEWAY,
            "par_bad_answer",
            "was not usable",
        ),
    ];
    for (name, knob, status, reason, text) in cases {
        let gate = TestGate::builder().settings(par).knobs(knob).spawn().await;
        let page = gate.browser().get(&format!("{}/oauth2/start?rd=/", gate.base)).await;
        assert_eq!(page.status, status, "{name}: {}", page.text());
        assert!(page.text().contains(text), "{name}: {}", page.text());
        assert!(page.text().contains("Try again"), "{name}: a way forward");
        assert!(!page.text().contains("script"), "{name}: the issuer's description is not shown");
        let api = gate.browser().api().get(&format!("{}/oauth2/start?rd=/", gate.base)).await;
        assert_eq!(api.json()["error"], reason, "{name}");
        gate.shutdown().await;
    }
}

#[tokio::test]
async fn check_reports_client_auth_par_encryption_and_dpop_against_the_issuer() {
    let key = Arc::new(SigningKey::generate_p256().unwrap());
    let k = Arc::clone(&key);
    let gate = TestGate::builder()
        .settings(move |s| {
            keyed(s, &k);
            par(s);
        })
        .registration(by_jwks_uri)
        .spawn()
        .await;
    let mut settings = gate.state().settings.clone();
    let report = idgate::check::run(&settings).await;
    let text = report.lines.join("\n");
    assert!(report.ok, "{text}");
    let jwks = format!("{}/oauth2/jwks", gate.base);
    assert!(text.contains(&format!("ok    client auth: private_key_jwt (ES256, kid {})", key.kid())), "{text}");
    assert!(text.contains(&format!("register jwks_uri = {jwks}")), "{text}");
    assert!(text.contains(&format!("ok    PAR: on, parameters pushed to {}/par", gate.issuer.issuer())), "{text}");
    assert!(text.contains("note  encryption: the issuer can encrypt ID tokens"), "{text}");
    assert!(text.contains("note  DPoP: not offered by the issuer"), "{text}");
    // A required encryption no advertised algorithm fits: an ERROR line with the fix, and the check fails.
    let ec = idgate::id_token::jwe::GeneratedKey::p256().private_pem;
    let d = &mut settings.oidc.id_token_decryption;
    d.keys = Some(Arc::new(idgate::id_token::jwe::DecryptionKeys::from_file_contents(ec.as_bytes()).unwrap()));
    d.required = true;
    d.allowed.algs = vec![idgate::id_token::jwe::KeyAlg::RsaOaep256];
    let report = idgate::check::run(&settings).await;
    let text = report.lines.join("\n");
    assert!(!report.ok, "{text}");
    assert!(text.contains("ERROR encryption: the issuer encrypts with"), "{text}");
    gate.shutdown().await;
}
