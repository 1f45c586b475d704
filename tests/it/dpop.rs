//! DPoP (RFC 9449) against the development issuer, which checks every proof as a real issuer does (the signature
//! with the embedded key, `typ`, `htm`, `htu`, `iat`, `jti` replay, the nonce, `ath`) and binds access and refresh
//! tokens to the proof key.

use http::{Method, StatusCode};
use idgate::clock::Clock;
use idgate::{
    config::Settings,
    dev_issuer::{DpopKnobs, NonceMode},
    id_token::jwe::GeneratedKey,
    oidc::dpop::{Dpop, DpopKey, DpopMode, DpopSettings},
};

use crate::harness::{Browser, CLIENT_ID, CLIENT_SECRET, Resp, TestGate};

fn offline(s: &mut Settings) {
    s.oidc.scopes.push("offline_access".into());
}

fn dpop_on(s: &mut Settings) {
    offline(s);
    s.oidc.dpop.mode = DpopMode::On;
}

/// A gate whose issuer has these DPoP knobs, with 300 s ID tokens (a refresh is due after 240 s).
async fn spawn(settings: impl FnOnce(&mut Settings) + 'static, knobs: impl FnOnce(&mut DpopKnobs)) -> TestGate {
    let gate = TestGate::builder().settings(settings).spawn().await;
    gate.issuer.configure(|k| {
        k.id_token_lifetime_secs = 300;
        knobs(&mut k.dpop);
    });
    gate
}

/// Walks a login that is expected to fail at the callback; returns the callback's answer.
async fn failed_login(gate: &TestGate) -> Resp {
    let cb = gate.browser().login_to_callback(&gate.base, "/", "mallory").await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
    cb
}

fn replayed(gate: &TestGate) -> bool {
    gate.issuer.refusals().iter().any(|r| r.contains("replayed"))
}

#[tokio::test]
async fn login_binds_the_tokens_to_the_key_and_refresh_and_userinfo_prove_it() {
    let gate = spawn(
        |s| {
            dpop_on(s);
            s.oidc.userinfo_claims = true;
        },
        |d| {
            d.required = true;
            d.nonce = NonceMode::Required;
        },
    )
    .await;
    let b = gate.login_as("alice").await;
    // The first proof has no nonce: refused once with use_dpop_nonce, then accepted with it. Userinfo (same origin)
    // got the nonce right away and its proof carried `ath`.
    assert_eq!(gate.issuer.request_count("token"), 2);
    assert_eq!(gate.issuer.request_count("userinfo"), 1);
    assert_eq!(gate.issuer.refusals(), ["DPoP proof without the nonce the issuer requires"]);
    // The refresh token is bound to the key: the refresh carries a proof of it.
    gate.clock.advance(280);
    let r = b.get(&format!("{}/after-refresh", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|alice"));
    assert_eq!(gate.issuer.request_count("token"), 3, "the latest nonce was kept: no second nonce round");
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    assert!(!replayed(&gate), "every proof had a new jti");
    gate.shutdown().await;
}

#[tokio::test]
async fn a_server_demanding_a_new_nonce_every_time_gets_one_retry_then_an_error_page() {
    let gate = spawn(dpop_on, |d| d.nonce = NonceMode::EveryRequest).await;
    let cb = failed_login(&gate).await;
    assert_eq!(gate.issuer.request_count("token"), 2, "one retry, no loop");
    assert!(cb.text().contains("asked for a new DPoP nonce again after one retry"), "{}", cb.text());
    assert_eq!(gate.login_results().get("dpop"), Some(&1));
    gate.shutdown().await;
}

#[tokio::test]
async fn a_refresh_from_a_replica_without_the_key_ends_the_session() {
    // No key file: each process generates its own key.
    let gate = spawn(dpop_on, |d| d.required = true).await;
    let replica = gate.replica(|_| {}).await;
    let b = gate.login_as("bob").await;
    gate.clock.advance(280);
    let r = b.get(&format!("http://{}/page", replica.public_addr)).await;
    assert_eq!(r.status, StatusCode::FOUND, "the session ended: {}", r.text());
    assert!(r.location().starts_with("/oauth2/start"), "back to login: {}", r.location());
    assert!(b.cookie("idgate").is_none(), "cookie cleared");
    assert!(gate.issuer.refusals().contains(&"the refresh token is bound to another DPoP key"));
    assert!(replica.state().metrics.render().contains("idgate_refreshes_total{result=\"refused\"} 1"));
    // Logging in again works, on either replica.
    let again = Browser::new().login(&format!("http://{}", replica.public_addr), "/", "bob").await;
    assert_eq!(again.status, StatusCode::OK);
    replica.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn replicas_sharing_the_key_file_refresh_each_others_sessions_and_bind_the_code() {
    let key = DpopKey::from_pem(GeneratedKey::p256().private_pem.as_bytes()).unwrap();
    let jkt = key.jkt().to_owned();
    let gate = spawn(
        move |s| {
            dpop_on(s);
            s.oidc.dpop.key = Some(key);
        },
        |d| d.required = true,
    )
    .await;
    let replica = gate.replica(|_| {}).await;
    // With a configured key the authorization request names it (RFC 9449 §10).
    let start = gate.browser().get(&format!("{}/oauth2/start", gate.base)).await;
    assert!(start.location().contains(&format!("dpop_jkt={jkt}")), "{}", start.location());
    let b = gate.login_as("carol").await;
    gate.clock.advance(280);
    let r = b.get(&format!("http://{}/page", replica.public_addr)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());
    replica.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn a_code_bound_by_dpop_jkt_is_refused_with_another_key() {
    let key = DpopKey::from_pem(GeneratedKey::p256().private_pem.as_bytes()).unwrap();
    let gate = spawn(
        move |s| {
            dpop_on(s);
            s.oidc.dpop.key = Some(key);
        },
        |_| {},
    )
    .await;
    // A replica holding another key gets the callback of a login started on the first.
    let other = DpopKey::from_pem(GeneratedKey::p256().private_pem.as_bytes()).unwrap();
    let replica = gate.replica(move |s| s.oidc.dpop.key = Some(other)).await;
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start", gate.base)).await;
    assert_eq!(b.get(start.location()).await.status, StatusCode::OK);
    let submitted = b.post_form(start.location(), "username=dan").await;
    let at_replica = submitted.location().replace(&gate.base, &format!("http://{}", replica.public_addr));
    let cb = b.get(&at_replica).await;
    assert_eq!(cb.status, StatusCode::BAD_GATEWAY, "{}", cb.text());
    assert!(
        gate.issuer.refusals().contains(&"the DPoP proof's key is not the dpop_jkt of the authorization request"),
        "{:?}",
        gate.issuer.refusals()
    );
    replica.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn unset_dpop_turns_on_when_the_issuer_demands_it() {
    let gate = spawn(offline, |d| d.required = true).await;
    assert!(!gate.state().provider.dpop().active());
    let b = gate.login_as("erin").await;
    assert_eq!(gate.issuer.request_count("token"), 2, "refused without a proof, then sent with one");
    assert_eq!(gate.issuer.refusals(), ["no DPoP proof, but the client is registered for DPoP-bound tokens"]);
    assert!(gate.state().provider.dpop().active(), "DPoP stays on");
    gate.clock.advance(280);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "the bound refresh token works");
    assert_eq!(gate.issuer.request_count("token"), 3, "the refresh went with a proof at once");
    gate.shutdown().await;
}

#[tokio::test]
async fn a_dpop_demand_is_an_error_page_when_dpop_is_off_or_tokens_are_forwarded() {
    for (what, f, why) in [
        (
            "dpop = false",
            Box::new(|s: &mut Settings| s.oidc.dpop.mode = DpopMode::Off) as Box<dyn FnOnce(&mut Settings)>,
            "oidc.dpop = false",
        ),
        (
            "forwarding",
            Box::new(|s: &mut Settings| s.oidc.forward_access_token = true),
            "oidc.forward_access_token = true",
        ),
    ] {
        let gate = spawn(f, |d| d.required = true).await;
        let cb = failed_login(&gate).await;
        assert!(cb.text().contains("the issuer requires DPoP for this client"), "{what}: {}", cb.text());
        assert!(cb.text().contains(why), "{what}: {}", cb.text());
        assert_eq!(gate.issuer.request_count("token"), 1, "{what}: not retried");
        assert_eq!(gate.login_results().get("dpop"), Some(&1), "{what}");
        gate.shutdown().await;
    }
}

#[tokio::test]
async fn a_token_type_that_does_not_match_the_proof_is_an_error_page() {
    // A proof answered with a Bearer token: the issuer ignored DPoP.
    let gate = spawn(dpop_on, |d| d.token_type = Some("Bearer")).await;
    let cb = failed_login(&gate).await;
    assert!(cb.text().contains("token_type &quot;Bearer&quot; to a request with a DPoP proof"), "{}", cb.text());
    assert_eq!(gate.login_results().get("dpop"), Some(&1));
    gate.shutdown().await;
    // A DPoP token to a request without a proof: bound to a key idgate does not hold.
    let gate = spawn(|s| s.oidc.dpop.mode = DpopMode::Off, |d| d.token_type = Some("DPoP")).await;
    let cb = failed_login(&gate).await;
    assert!(cb.text().contains("token_type &quot;DPoP&quot; to a request without a DPoP proof"), "{}", cb.text());
    gate.shutdown().await;
}

/// A proof made by idgate's own builder, sent to the development issuer's token endpoint with the client's
/// credentials (an unknown code: a proof that passes is then refused as `invalid_grant`).
async fn send_proof(gate: &TestGate, proof: &str) -> (StatusCode, String) {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let headers = [("authorization", format!("Basic {basic}")), ("dpop", proof.to_owned())];
    let mut h = http::HeaderMap::new();
    for (k, v) in &headers {
        h.insert(*k, v.parse().unwrap());
    }
    h.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
    let body = "grant_type=authorization_code&code=unknown&redirect_uri=x&code_verifier=v";
    let r = Browser::new().api().send(Method::POST, &format!("{}/token", gate.issuer.issuer()), h, body.into()).await;
    (r.status, r.json()["error"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn the_development_issuer_checks_every_proof_rule() {
    let gate = spawn(|_| {}, |_| {}).await;
    let d = Dpop::new(&DpopSettings { mode: DpopMode::On, key: None }, false);
    let token = format!("{}/token", gate.issuer.issuer());
    let now = gate.clock.now();
    let good = d.proof(None, &Method::POST, &format!("{token}?ignored=1"), None, now).unwrap();
    assert_eq!(
        send_proof(&gate, &good).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into()),
        "a good proof passes"
    );
    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        (good.clone(), "DPoP proof replayed: its jti was seen before"),
        (d.proof(None, &Method::GET, &token, None, now).unwrap(), "DPoP proof htm differs from the request method"),
        (
            d.proof(None, &Method::POST, &format!("{}/other", gate.issuer.issuer()), None, now).unwrap(),
            "DPoP proof htu differs from the request URL",
        ),
        (
            d.proof(None, &Method::POST, &token, None, now - 120).unwrap(),
            "DPoP proof iat is not within a minute of the issuer's clock",
        ),
        (forged, "DPoP proof signature does not verify with its jwk"),
        ("e30.e30.sig".to_owned(), "DPoP proof typ is not dpop+jwt"),
    ];
    for (proof, why) in cases {
        assert_eq!(send_proof(&gate, &proof).await, (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into()), "{why}");
        assert_eq!(gate.issuer.refusals().last().copied(), Some(why));
    }
    gate.shutdown().await;
}

#[tokio::test]
async fn repeated_logins_and_refreshes_never_reuse_a_proof() {
    let gate = spawn(dpop_on, |d| d.required = true).await;
    for user in ["fay", "gus", "hal"] {
        let b = gate.login_as(user).await;
        gate.clock.advance(250);
        assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    }
    assert_eq!(gate.issuer.request_count("token"), 6);
    assert!(gate.issuer.refusals().is_empty(), "{:?}", gate.issuer.refusals());
    gate.shutdown().await;
}

#[tokio::test]
async fn a_nonce_loop_during_refresh_keeps_the_session_until_its_exp() {
    let gate = spawn(dpop_on, |d| d.nonce = NonceMode::Required).await;
    let b = gate.login_as("ida").await;
    gate.issuer.configure(|k| k.dpop.nonce = NonceMode::EveryRequest);
    let tokens = gate.issuer.request_count("token");
    gate.clock.advance(280);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "kept: the issuer is unusable");
    assert_eq!(gate.issuer.request_count("token"), tokens + 2, "one nonce retry, no loop");
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"unavailable\"} 1"));
    gate.clock.advance(20);
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED, "until its exp");
    gate.shutdown().await;
}
