//! The login against the development issuer, end to end, and every way it must refuse.

use std::sync::Arc;

use http::StatusCode;
use idgate::{clock::Clock, dev_issuer::DevAlg};
use serde_json::json;

use crate::harness::{Browser, TestGate, contains_jwt};

#[tokio::test]
async fn full_login_lands_on_the_upstream_with_identity_headers() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.browser();
    let page = b.login(&gate.base, "/app/page?x=1", "Alice").await;
    assert_eq!(page.status, StatusCode::OK);
    let echo = page.json();
    assert_eq!(echo["uri"], "/app/page?x=1", "returns to where the user was going");
    assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    assert_eq!(page.upstream_header("x-auth-request-email").as_deref(), Some("alice@example.com"));
    assert_eq!(page.upstream_header("x-auth-request-name").as_deref(), Some("Alice"));
    assert_eq!(page.upstream_header("x-auth-request-roles").as_deref(), Some("user"));
    assert!(page.upstream_header("cookie").is_none(), "idgate's cookies never reach the upstream");
    assert!(!contains_jwt(&page.text()), "no token reaches the upstream");
    // The session cookie is HttpOnly, SameSite=Lax, sealed (not a readable JWT).
    let session = b.cookie("idgate").expect("session cookie");
    assert!(!session.starts_with("eyJ"));
    // Reload without visiting the issuer.
    let before = gate.issuer.request_count("token");
    let again = b.get(&format!("{}/other", gate.base)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(gate.issuer.request_count("token"), before);
    gate.shutdown().await;
}

#[tokio::test]
async fn es256_issuer_works_and_session_cookie_attributes_are_strict() {
    let gate = TestGate::builder().alg(DevAlg::ES256).settings(|s| s.session.cookie_secure = true).spawn().await;
    let b = gate.browser();
    let cb = b.login_to_callback(&gate.base, "/", "bob").await;
    assert_eq!(cb.status, StatusCode::FOUND, "{}", cb.text());
    let cookie = cb.set_cookies().into_iter().find(|c| c.starts_with("idgate=")).expect("session cookie set");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let max_age: i64 = cookie.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&max_age), "Max-Age follows the token's exp: {max_age}");
    gate.shutdown().await;
}

#[tokio::test]
async fn authorization_request_carries_state_nonce_and_pkce() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start?rd=/x", gate.base)).await;
    assert_eq!(start.status, StatusCode::FOUND);
    let url = url::Url::parse(start.location()).unwrap();
    assert!(start.location().starts_with(gate.issuer.issuer()));
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], crate::harness::CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22);
    assert_eq!(q["scope"], "openid profile email");
    let flow = start.set_cookies().into_iter().find(|c| c.starts_with("idgate_flow_")).expect("flow cookie");
    assert!(flow.contains("Path=/oauth2") && flow.contains("Max-Age=600") && flow.contains("HttpOnly"), "{flow}");
    gate.shutdown().await;
}

#[tokio::test]
async fn api_requests_get_401_json_and_never_start_a_login() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.browser().api();
    let r = b.get(&format!("{}/api/data", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    let xhr = gate.browser().get_with(&format!("{}/page", gate.base), &[("x-requested-with", "XMLHttpRequest")]).await;
    assert_eq!(xhr.status, StatusCode::UNAUTHORIZED);
    // Chromium's own favicon request is not a navigation: no login, no flow cookie.
    let favicon = gate
        .browser()
        .get_with(
            &format!("{}/favicon.ico", gate.base),
            &[("sec-fetch-mode", "no-cors"), ("accept", "image/avif,image/webp,*/*")],
        )
        .await;
    assert_eq!(favicon.status, StatusCode::UNAUTHORIZED);
    assert!(favicon.set_cookies().is_empty());
    gate.shutdown().await;
}

#[tokio::test]
async fn several_tabs_log_in_at_once_and_flow_cookies_stay_bounded() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.browser();
    let start = |rd: &'static str| {
        let b = b.clone();
        let base = gate.base.clone();
        async move { b.get(&format!("{base}/oauth2/start?rd={rd}")).await }
    };
    let tab1 = start("/one").await;
    let tab2 = start("/two").await;
    // Tab 2 finishes first, then tab 1: both work.
    let cb2 = b.authorize_and_callback(&gate.base, tab2.location(), "carol").await;
    assert_eq!(cb2.location(), "/two");
    let cb1 = b.authorize_and_callback(&gate.base, tab1.location(), "carol").await;
    assert_eq!(cb1.location(), "/one");
    // Many starts: at most max_flows (3) flow cookies live.
    for _ in 0..6 {
        start("/x").await;
    }
    let flows = b.jar.lock().unwrap().keys().filter(|k| k.starts_with("idgate_flow_")).count();
    assert_eq!(flows, 3);
    gate.shutdown().await;
}

#[tokio::test]
async fn callback_refuses_missing_unknown_replayed_and_duplicated_state() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.browser();
    let base = &gate.base;
    let mut seen = gate.login_results();
    let r = b.get(&format!("{base}/oauth2/callback?code=abc")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "missing state");
    assert_eq!(gate.login_results_since(&mut seen), ["missing_parameter"]);
    let r = b.get(&format!("{base}/oauth2/callback?code=abc&state=AAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown state");
    assert_eq!(gate.login_results_since(&mut seen), ["unknown_state"]);
    assert!(r.text().contains("Try again"), "a readable page with a retry link");

    let start = b.get(&format!("{base}/oauth2/start?rd=/")).await;
    let form_url = start.location().to_owned();
    let submitted = b.post_form(&form_url, "username=dave").await;
    let callback_url = Browser::resolve(base, submitted.location());
    let url = url::Url::parse(&callback_url).unwrap();
    let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let dup = b.get(&format!("{callback_url}&state={state}")).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST, "duplicated state");
    let dup_code = b.get(&format!("{callback_url}&code=other")).await;
    assert_eq!(dup_code.status, StatusCode::BAD_REQUEST, "duplicated code");
    assert_eq!(gate.login_results_since(&mut seen), ["duplicate_parameter", "duplicate_parameter"]);
    // Keep the flow cookie to replay it with the same callback.
    let flow_cookie = b
        .jar
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("idgate_flow_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let ok = b.get(&callback_url).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.text());
    let attacker = Browser::new();
    attacker.set_cookie(&flow_cookie.0, &flow_cookie.1);
    let replay = attacker.get(&callback_url).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "replayed callback with its flow cookie");
    assert_eq!(gate.login_results_since(&mut seen), ["replayed", "success"]);
    assert!(attacker.cookie("idgate").is_none());
    gate.shutdown().await;
}

#[tokio::test]
async fn issuer_errors_and_wrong_iss_parameter_are_readable_refusals() {
    let gate = TestGate::builder().spawn().await;
    let mut seen = gate.login_results();
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start", gate.base)).await;
    let state =
        url::Url::parse(start.location()).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let r = b
        .get(&format!("{}/oauth2/callback?error=access_denied&error_description=%3Cscript%3E&state={state}", gate.base))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("access_denied") && r.text().contains("Try again"));
    assert!(!r.text().contains("<script>"), "nothing from the request is rendered unescaped");
    assert_eq!(gate.login_results_since(&mut seen), ["idp_error"]);
    let submitted = b.post_form(start.location(), "username=erin").await;
    let evil_iss = submitted
        .location()
        .replace(&crate::harness::urlencode(gate.issuer.issuer()), "https%3A%2F%2Fevil.example.com");
    let r = b.get(&Browser::resolve(&gate.base, &evil_iss)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "RFC 9207 iss mismatch: {}", r.text());
    assert_eq!(gate.login_results_since(&mut seen), ["issuer_mismatch"]);
    assert!(b.cookie("idgate").is_none());
    gate.shutdown().await;
}

/// Each broken token, produced by the issuer itself, ends in a refusal page and no session.
#[tokio::test]
async fn broken_id_tokens_are_refused() {
    type Hook = Arc<dyn Fn(&mut serde_json::Map<String, serde_json::Value>) + Send + Sync>;
    let gate = TestGate::builder().spawn().await;
    let cases: Vec<(&str, Hook)> = vec![
        (
            "wrong_audience",
            Arc::new(|c| {
                c.insert("aud".into(), json!("someone-else"));
            }),
        ),
        (
            "wrong_issuer",
            Arc::new(|c| {
                c.insert("iss".into(), json!("https://evil.example.com"));
            }),
        ),
        (
            "nonce_mismatch",
            Arc::new(|c| {
                c.insert("nonce".into(), json!("forged"));
            }),
        ),
        (
            "missing_claim",
            Arc::new(|c| {
                c.remove("nonce");
            }),
        ),
        (
            "expired",
            Arc::new(|c| {
                c.insert("exp".into(), json!(1_000_000));
            }),
        ),
        (
            "issued_in_future",
            Arc::new(|c| {
                let iat = c["iat"].as_i64().unwrap();
                c.insert("iat".into(), json!(iat + 3600));
            }),
        ),
        (
            "not_yet_valid",
            Arc::new(|c| {
                let iat = c["iat"].as_i64().unwrap();
                c.insert("nbf".into(), json!(iat + 3600));
            }),
        ),
        (
            "absurd_time",
            Arc::new(|c| {
                c.insert("exp".into(), json!(1e300));
            }),
        ),
        (
            "wrong_azp",
            Arc::new(|c| {
                c.insert("aud".into(), json!([crate::harness::CLIENT_ID, "api"]));
            }),
        ),
    ];
    let mut seen = gate.login_results();
    // Each case is named by the reason it must be refused for.
    for (what, hook) in cases {
        gate.issuer.configure(|k| k.claims_hook = Some(hook.clone()));
        let b = gate.browser();
        let cb = b.login_to_callback(&gate.base, "/", "mallory").await;
        assert_eq!(cb.status, StatusCode::UNAUTHORIZED, "{what}: {}", cb.text());
        assert_eq!(gate.login_results_since(&mut seen), [what]);
        assert!(cb.text().contains("Try again"), "{what}");
        assert!(b.cookie("idgate").is_none(), "{what}: no session");
    }
    gate.issuer.configure(|k| k.claims_hook = None);
    let rejections = gate.state().metrics.render();
    assert!(rejections.contains("idgate_id_token_rejections_total{reason=\"wrong_audience\"} 1"), "{rejections}");
    // A bad signature.
    gate.issuer.configure(|k| {
        k.token_hook = Some(Arc::new(|t: String| {
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            parts[2] = parts[2].chars().rev().collect();
            parts.join(".")
        }))
    });
    let cb = gate.browser().login_to_callback(&gate.base, "/", "mallory").await;
    assert_eq!(cb.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gate.login_results_since(&mut seen), ["bad_signature"]);
    gate.issuer.configure(|k| k.token_hook = None);
    gate.shutdown().await;
}

#[tokio::test]
async fn an_issuer_signing_with_a_disallowed_alg_is_refused() {
    let gate = TestGate::builder().alg(DevAlg::PS256).spawn().await;
    let cb = gate.browser().login_to_callback(&gate.base, "/", "pat").await;
    assert_eq!(cb.status, StatusCode::UNAUTHORIZED, "PS256 is not allowed by default");
    assert_eq!(gate.login_results_since(&mut Default::default()), ["alg_not_allowed"]);
    gate.shutdown().await;
    let gate = TestGate::builder()
        .alg(DevAlg::PS256)
        .settings(|s| s.oidc.allowed_algs.push(jsonwebtoken::Algorithm::PS256))
        .spawn()
        .await;
    let cb = gate.browser().login_to_callback(&gate.base, "/", "pat").await;
    assert_eq!(cb.status, StatusCode::FOUND, "PS256 once allowed: {}", cb.text());
    gate.shutdown().await;
}

#[tokio::test]
async fn the_session_ends_at_exp_and_dead_cookies_are_cleared() {
    let gate = TestGate::builder().spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let b = gate.login_as("frank").await;
    gate.clock.advance(299);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    gate.clock.advance(1);
    let r = b.get(&format!("{}/page", gate.base)).await;
    assert_eq!(r.status, StatusCode::FOUND, "expired: back to login");
    assert_eq!(r.location(), "/oauth2/start?rd=%2Fpage");
    assert!(b.cookie("idgate").is_none(), "the expired cookie is cleared");
    gate.shutdown().await;
}

#[tokio::test]
async fn tampered_or_foreign_cookies_are_anonymous_not_errors() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.login_as("grace").await;
    let mut v = b.cookie("idgate").unwrap().into_bytes();
    let i = v.len() / 2;
    v[i] = if v[i] == b'A' { b'B' } else { b'A' };
    b.set_cookie("idgate", std::str::from_utf8(&v).unwrap());
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.set_cookies().iter().any(|c| c.starts_with("idgate=;") && c.contains("Max-Age=0")),
        "tampered cookie cleared"
    );
    let api = gate.browser().api();
    api.set_cookie("idgate", "garbage");
    assert_eq!(api.get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
}

#[tokio::test]
async fn login_replaces_a_planted_session_no_fixation() {
    let gate = TestGate::builder().spawn().await;
    let attacker = gate.login_as("attacker").await;
    let planted = attacker.cookie("idgate").unwrap();
    let victim = gate.browser();
    victim.set_cookie("idgate", &planted);
    // The victim starts a login on purpose (e.g. from a link) and ends with their own session.
    let start = victim.get(&format!("{}/oauth2/start?rd=/", gate.base)).await;
    let cb = victim.authorize_and_callback(&gate.base, start.location(), "victim").await;
    assert_eq!(cb.status, StatusCode::FOUND);
    assert_ne!(victim.cookie("idgate").unwrap(), planted);
    let page = victim.get(&format!("{}/", gate.base)).await;
    assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("dev|victim"));
    gate.shutdown().await;
}

#[tokio::test]
async fn unsafe_return_targets_become_slash() {
    let gate = TestGate::builder().spawn().await;
    for rd in ["//evil.com", "/%5Cevil.com", "https://evil.com/", "/%09/evil.com", "javascript:alert(1)"] {
        let b = gate.browser();
        let start = b.get(&format!("{}/oauth2/start?rd={}", gate.base, crate::harness::urlencode(rd))).await;
        let cb = b.authorize_and_callback(&gate.base, start.location(), "henry").await;
        assert_eq!(cb.location(), "/", "rd {rd:?}");
    }
    gate.shutdown().await;
}

#[tokio::test]
async fn key_rotation_is_followed_with_one_jwks_fetch() {
    let gate = TestGate::builder().spawn().await;
    gate.login_as("ivan").await;
    let fetches = gate.issuer.request_count("jwks");
    gate.issuer.rotate_key(DevAlg::ES256, false);
    gate.login_as("ivan").await;
    assert_eq!(gate.issuer.request_count("jwks"), fetches + 1, "one fetch for the new kid");
    gate.login_as("judy").await;
    assert_eq!(gate.issuer.request_count("jwks"), fetches + 1, "the new key is cached");
    gate.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch() {
    let gate = TestGate::builder().spawn().await;
    let fetches = gate.issuer.request_count("jwks");
    let other = idgate::dev_issuer::SigningKey::generate(DevAlg::RS256);
    let now = gate.clock.now();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let state = gate.state();
        let claims = json!({"iss": gate.issuer.issuer(), "aud": crate::harness::CLIENT_ID, "sub": "x", "iat": now, "exp": now + 60});
        let token = other.sign_with_header(&json!({"alg": "RS256", "kid": format!("unknown-{i}")}), &claims);
        tasks.push(tokio::spawn(async move { state.provider.validate_id_token(&token, None, now).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert!(
        gate.issuer.request_count("jwks") <= fetches + 1,
        "{} fetches",
        gate.issuer.request_count("jwks") - fetches
    );
    gate.shutdown().await;
}

#[tokio::test]
async fn issuer_outage_keeps_sessions_and_gives_new_logins_a_clear_503() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.login_as("kate").await;
    let newcomer = gate.browser();
    let start = newcomer.get(&format!("{}/oauth2/start", gate.base)).await;
    let submitted = newcomer.post_form(start.location(), "username=newcomer").await;
    gate.issuer.configure(|k| k.down = true);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "existing session unaffected");
    let cb = newcomer.get(&Browser::resolve(&gate.base, submitted.location())).await;
    assert_eq!(cb.status, StatusCode::SERVICE_UNAVAILABLE, "{}", cb.text());
    assert!(cb.text().contains("Try again"));
    assert!(cb.text().contains("The identity provider is not available"), "{}", cb.text());
    assert!(newcomer.cookie("idgate").is_none());
    gate.issuer.configure(|k| k.down = false);
    gate.issuer.configure(|k| k.token_error = Some((400, "invalid_grant")));
    let refused = gate.browser().login_to_callback(&gate.base, "/", "leo").await;
    gate.issuer.configure(|k| k.token_error = None);
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.text());
    gate.login_as("leo").await;
    gate.shutdown().await;
}

#[tokio::test]
async fn sign_out_needs_the_confirmation_form_then_ends_everything() {
    let gate = TestGate::builder()
        .settings(|s| s.oidc.post_logout_redirect_url = Some("http://127.0.0.1:9/bye".parse().unwrap()))
        .spawn()
        .await;
    let b = gate.login_as("mia").await;
    // A cross-site POST without the form's token is refused.
    let forged = b.post_form(&format!("{}/oauth2/sign_out", gate.base), "").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(b.cookie("idgate").is_some());
    // An <img src=/oauth2/sign_out> only gets the confirmation page.
    let page = b.get(&format!("{}/oauth2/sign_out?rd=/bye", gate.base)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(b.cookie("idgate").is_some());
    let token = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // Another browser's form token does not sign this one out.
    let other = gate.login_as("nora").await;
    let other_page = other.get(&format!("{}/oauth2/sign_out", gate.base)).await;
    let other_token =
        other_page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let cross = b
        .post_form(
            &format!("{}/oauth2/sign_out", gate.base),
            &format!("csrf={}", crate::harness::urlencode(&other_token)),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let out = b
        .post_form(
            &format!("{}/oauth2/sign_out?rd=/bye", gate.base),
            &format!("csrf={}", crate::harness::urlencode(&token)),
        )
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert!(b.cookie("idgate").is_none(), "session cookie cleared");
    let end = url::Url::parse(out.location()).unwrap();
    assert!(out.location().starts_with(&format!("{}/end_session", gate.issuer.issuer())));
    let q: std::collections::HashMap<String, String> = end.query_pairs().into_owned().collect();
    assert!(q["id_token_hint"].starts_with("eyJ"));
    assert_eq!(q["client_id"], crate::harness::CLIENT_ID);
    assert_eq!(q["post_logout_redirect_uri"], "http://127.0.0.1:9/bye");
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
}

/// The development issuer accepts only the registered client authentication method (as real issuers do), so each
/// method is proven to be the one idgate sends: a gate configured for the other method is refused.
#[tokio::test]
async fn client_secret_post_authenticates_at_the_token_endpoint() {
    use idgate::config::TokenAuthMethod::{ClientSecretBasic, ClientSecretPost};
    let gate = TestGate::builder().settings(|s| s.oidc.token_auth_method = ClientSecretPost).spawn().await;
    gate.login_as("sam").await;
    assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());
    gate.shutdown().await;
    for (sends, registered, why) in [
        (
            ClientSecretBasic,
            ClientSecretPost,
            "an Authorization header, but the client is registered for client_secret_post",
        ),
        (
            ClientSecretPost,
            ClientSecretBasic,
            "client_secret in the form, but the client is registered for client_secret_basic",
        ),
    ] {
        let gate = TestGate::builder()
            .settings(move |s| s.oidc.token_auth_method = sends)
            .registration(move |c| c.token_auth_method = registered)
            .spawn()
            .await;
        let cb = gate.browser().login_to_callback(&gate.base, "/", "sam").await;
        assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{sends:?} against {registered:?}: {}", cb.text());
        // invalid_client is the site's misconfiguration, said so (issue 13), not an outage.
        assert!(cb.text().contains("did not accept the client credentials of this site"), "{}", cb.text());
        assert_eq!(gate.issuer.refusals(), [why]);
        gate.shutdown().await;
    }
    let gate = TestGate::builder()
        .settings(|s| s.oidc.client_secret = Some(idgate::config::Secret::new("wrong")))
        .spawn()
        .await;
    let cb = gate.browser().login_to_callback(&gate.base, "/", "sam").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "a wrong client secret is a clear refusal: {}", cb.text());
    assert_eq!(gate.issuer.refusals(), ["unknown client or wrong client secret"]);
    gate.shutdown().await;
}

#[tokio::test]
async fn a_stolen_code_redeemed_in_another_browser_is_refused() {
    let gate = TestGate::builder().spawn().await;
    let victim = gate.browser();
    let start = victim.get(&format!("{}/oauth2/start", gate.base)).await;
    let submitted = victim.post_form(start.location(), "username=victim").await;
    let code =
        url::Url::parse(submitted.location()).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    // The attacker starts their own login and swaps in the victim's code: PKCE binds the code to the victim's flow.
    let attacker = gate.browser();
    let own = attacker.get(&format!("{}/oauth2/start", gate.base)).await;
    let state =
        url::Url::parse(own.location()).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let iss = crate::harness::urlencode(gate.issuer.issuer());
    let r = attacker.get(&format!("{}/oauth2/callback?code={code}&state={state}&iss={iss}", gate.base)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(gate.issuer.refusals(), ["code_verifier does not match the code_challenge (PKCE)"]);
    assert!(attacker.cookie("idgate").is_none());
    gate.shutdown().await;
}

#[tokio::test]
async fn a_login_that_takes_longer_than_ten_minutes_is_refused() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start", gate.base)).await;
    let submitted = b.post_form(start.location(), "username=slow").await;
    gate.clock.advance(601);
    let mut seen = gate.login_results();
    let cb = b.get(&Browser::resolve(&gate.base, submitted.location())).await;
    assert_eq!(cb.status, StatusCode::BAD_REQUEST, "{}", cb.text());
    assert_eq!(gate.login_results_since(&mut seen), ["flow_expired"]);
    assert!(b.cookie("idgate").is_none());
    gate.shutdown().await;
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let gate = TestGate::builder().spawn().await;
    // The configured issuer differs from discovery's `issuer` by a trailing slash only: never loaded.
    let mut oidc = gate.state().settings.oidc.clone();
    oidc.issuer = format!("{}/", gate.issuer.issuer());
    let metrics = Arc::new(idgate::telemetry::metrics::Metrics::default());
    let provider = idgate::oidc::Provider::new(oidc, idgate::client::build(std::time::Duration::from_secs(2)), metrics);
    let err = provider.load().await.unwrap_err();
    assert!(matches!(err, idgate::oidc::ProviderError::IssuerMismatch { .. }), "{err}");
    assert!(!provider.is_ready());
    gate.shutdown().await;
}
