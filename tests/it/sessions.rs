//! Sessions that last exactly as long as they should: one conformance list over the cookie, memory and Redis stores;
//! refresh (single flight, rotation, refusals); back-channel logout; two replicas sharing Redis; Redis outages.

use std::sync::Arc;

use http::StatusCode;
use idgate::{
    clock::Clock,
    config::{Secret, Settings, StoreKind},
};
use serde_json::json;

use crate::{
    harness::{Browser, CLIENT_ID, TestGate},
    redis::Redis,
};

fn store(kind: StoreKind) -> impl FnOnce(&mut Settings) {
    move |s| s.session.store = kind
}

/// The same cases for every store (Sentinel and Cluster too: redis_ha.rs).
pub(crate) async fn conformance(kind: StoreKind) {
    let name = format!("{kind:?}");
    let server_side = kind != StoreKind::Cookie;
    let gate = TestGate::builder().settings(store(kind)).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 600);
    let b = gate.login_as("alice").await;
    let cookie = b.cookie("idgate").unwrap();
    if server_side {
        assert_eq!(cookie.len(), 43, "{name}: the cookie holds only a random 256-bit id");
    }
    // Works until exp, not after.
    gate.clock.advance(599);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "{name}");
    gate.clock.advance(1);
    let probe = Browser::new().api();
    probe.set_cookie("idgate", &cookie);
    assert_eq!(probe.get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED, "{name}: ends at exp");
    gate.clock.advance(-600);
    // A forged or altered id is no session.
    let forged = Browser::new();
    forged.set_cookie("idgate", &"A".repeat(43));
    assert_eq!(
        forged.api().get(&format!("{}/", gate.base)).await.status,
        StatusCode::UNAUTHORIZED,
        "{name}: forged id"
    );
    // Sign-out ends it, and a copy of the cookie is dead too: deleted server-side, or (cookie store) remembered as
    // signed out by this process until its exp, its refresh token revoked at the issuer.
    let copy = Browser::new();
    copy.set_cookie("idgate", &cookie);
    assert_eq!(
        copy.get(&format!("{}/", gate.base)).await.status,
        StatusCode::OK,
        "{name}: a copy works before sign-out"
    );
    sign_out(&gate, &b).await;
    assert!(b.cookie("idgate").is_none());
    let after = copy.api().get(&format!("{}/", gate.base)).await.status;
    assert_eq!(after, StatusCode::UNAUTHORIZED, "{name}: a copy of a signed-out session's cookie is refused");
    gate.shutdown().await;
}

pub(crate) async fn sign_out(gate: &TestGate, b: &Browser) {
    let page = b.get(&format!("{}/oauth2/sign_out", gate.base)).await;
    let token = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let out = b
        .post_form(&format!("{}/oauth2/sign_out", gate.base), &format!("csrf={}", crate::harness::urlencode(&token)))
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
}

#[tokio::test]
async fn store_conformance_cookie() {
    conformance(StoreKind::Cookie).await;
}

#[tokio::test]
async fn store_conformance_memory() {
    conformance(StoreKind::Memory).await;
}

#[tokio::test]
async fn store_conformance_redis() {
    let redis = Redis::start().await;
    conformance(StoreKind::Redis { url: Secret::new(redis.url()) }).await;
}

fn offline(s: &mut Settings) {
    s.oidc.scopes.push("offline_access".into());
}

#[tokio::test]
async fn refresh_before_exp_is_shared_by_concurrent_requests_and_survives_rotation() {
    let gate = TestGate::builder().settings(offline).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let start = gate.browser().get(&format!("{}/oauth2/start", gate.base)).await;
    assert!(start.location().contains("prompt=consent"), "offline_access asks for consent");
    let b = gate.login_as("bob").await;
    let old = b.cookie("idgate").unwrap();
    let tokens = gate.issuer.request_count("token");
    gate.clock.advance(250);
    // Twenty concurrent requests of one session, all carrying the old cookie: one refresh.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let b = b.clone();
        let url = format!("{}/", gate.base);
        tasks.push(tokio::spawn(async move { b.get(&url).await }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.set_cookies().iter().any(|c| c.starts_with("idgate=")), "each response carries the renewed session");
    }
    assert_eq!(gate.issuer.request_count("token"), tokens + 1, "one refresh for all");
    // The old cookie (its refresh token already rotated away) still works while the flight is remembered.
    let late = Browser::new();
    late.set_cookie("idgate", &old);
    assert_eq!(late.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    // The renewed session lives past the old exp.
    gate.clock.advance(100);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    gate.shutdown().await;
}

#[tokio::test]
async fn refusals_during_refresh_end_the_session_cleanly() {
    type Setup = Box<dyn Fn(&TestGate)>;
    let cases: Vec<(&str, Setup)> = vec![
        (
            "invalid_grant",
            Box::new(|g: &TestGate| g.issuer.configure(|k| k.token_error = Some((400, "invalid_grant")))),
        ),
        (
            "mis-signed ID token",
            Box::new(|g: &TestGate| {
                g.issuer.configure(|k| {
                    k.token_hook = Some(Arc::new(|t: String| {
                        let mut p: Vec<String> = t.split('.').map(str::to_owned).collect();
                        p[2] = p[2].chars().rev().collect();
                        p.join(".")
                    }))
                })
            }),
        ),
        (
            "another subject",
            Box::new(|g: &TestGate| {
                g.issuer.configure(|k| {
                    k.claims_hook = Some(Arc::new(|c| {
                        c.insert("sub".into(), json!("dev|mallory"));
                    }))
                })
            }),
        ),
        (
            "another nonce",
            Box::new(|g: &TestGate| {
                g.issuer.configure(|k| {
                    k.claims_hook = Some(Arc::new(|c| {
                        c.insert("nonce".into(), json!("other"));
                    }))
                })
            }),
        ),
    ];
    for (what, setup) in cases {
        let gate = TestGate::builder().settings(offline).spawn().await;
        gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
        let b = gate.login_as("carl").await;
        setup(&gate);
        gate.clock.advance(280);
        let r = b.get(&format!("{}/page", gate.base)).await;
        assert_eq!(r.status, StatusCode::FOUND, "{what}: back to login");
        assert!(r.location().starts_with("/oauth2/start"), "{what}");
        assert!(b.cookie("idgate").is_none(), "{what}: cookie cleared");
        gate.shutdown().await;
    }
}

#[tokio::test]
async fn an_unavailable_issuer_keeps_the_session_until_exp() {
    let gate = TestGate::builder().settings(offline).spawn().await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let b = gate.login_as("dora").await;
    gate.issuer.configure(|k| k.down = true);
    gate.clock.advance(280);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    gate.clock.advance(20);
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
}

#[tokio::test]
async fn silent_reauth_tries_prompt_none_then_falls_back() {
    let gate = TestGate::builder().settings(|s| s.session.silent_reauth = true).spawn().await;
    let b = gate.browser();
    let start = b.get(&format!("{}/oauth2/start?rd=/deep", gate.base)).await;
    let url = url::Url::parse(start.location()).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["prompt"], "none");
    // The issuer has no session: login_required comes back to the callback.
    let cb = b.get(&format!("{}/oauth2/callback?error=login_required&state={}", gate.base, q["state"])).await;
    assert_eq!(cb.status, StatusCode::FOUND);
    assert_eq!(cb.location(), "/oauth2/start?interactive=1&rd=%2Fdeep");
    let again = b.get(&Browser::resolve(&gate.base, cb.location())).await;
    assert!(!again.location().contains("prompt=none"), "the second attempt is interactive");
    let done = b.authorize_and_callback(&gate.base, again.location(), "eli").await;
    assert_eq!(done.location(), "/deep");
    gate.shutdown().await;
}

pub(crate) fn logout_token(gate: &TestGate, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let now = gate.clock.now();
    let mut c = json!({
        "iss": gate.issuer.issuer(), "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": idgate::random::token(12),
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    f(c.as_object_mut().unwrap());
    gate.issuer.with_key(|k| k.sign_with_header(&json!({"alg": "RS256", "kid": k.kid, "typ": "logout+jwt"}), &c))
}

pub(crate) async fn post_logout(gate_base: &str, token: &str) -> crate::harness::Resp {
    Browser::new()
        .api()
        .post_form(&format!("{gate_base}/oauth2/backchannel_logout"), &format!("logout_token={token}"))
        .await
}

#[tokio::test]
async fn back_channel_logout_ends_the_issuer_session() {
    let gate = TestGate::builder().settings(store(StoreKind::Memory)).spawn().await;
    let b = gate.login_as("fay").await;
    let other = gate.login_as("fay").await;
    let sid = b.api().get(&format!("{}/oauth2/userinfo", gate.base)).await.json()["sid"].as_str().unwrap().to_owned();
    // Refusals first: each leaves the session alive.
    let bad: Vec<(&str, String)> = vec![
        (
            "nonce",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.insert("nonce".into(), json!("n"));
            }),
        ),
        (
            "no events",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.remove("events");
            }),
        ),
        (
            "wrong event",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.insert("events".into(), json!({"urn:other": {}}));
            }),
        ),
        (
            "wrong aud",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.insert("aud".into(), json!("other"));
            }),
        ),
        (
            "no jti",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.remove("jti");
            }),
        ),
        ("no sid nor sub", logout_token(&gate, |_| {})),
        (
            "no iat",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.remove("iat");
            }),
        ),
        (
            "expired",
            logout_token(&gate, |c| {
                c.insert("sid".into(), json!(sid));
                c.insert("exp".into(), json!(1_000));
            }),
        ),
    ];
    for (what, token) in bad {
        let r = post_logout(&gate.base, &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "{what}: session alive");
    }
    let forged = idgate::dev_issuer::SigningKey::generate(idgate::dev_issuer::DevAlg::RS256);
    let now = gate.clock.now();
    let unsigned = forged
        .sign(&json!({"iss": gate.issuer.issuer(), "aud": CLIENT_ID, "iat": now, "jti": "x", "sid": sid,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}));
    assert_eq!(post_logout(&gate.base, &unsigned).await.status, StatusCode::BAD_REQUEST, "signed by a stranger");
    // The real thing: only that issuer session ends.
    let good = logout_token(&gate, |c| {
        c.insert("sid".into(), json!(sid));
    });
    let r = post_logout(&gate.base, &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        other.get(&format!("{}/", gate.base)).await.status,
        StatusCode::OK,
        "another login of the same user stays"
    );
    assert_eq!(post_logout(&gate.base, &good).await.status, StatusCode::BAD_REQUEST, "replayed jti");
    // By subject: every session of the user.
    let by_sub = logout_token(&gate, |c| {
        c.insert("sub".into(), json!("dev|fay"));
    });
    assert_eq!(post_logout(&gate.base, &by_sub).await.status, StatusCode::OK);
    assert_eq!(other.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
}

#[tokio::test]
async fn back_channel_logout_with_cookie_sessions_says_it_cannot() {
    let gate = TestGate::builder().spawn().await;
    let token = logout_token(&gate, |c| {
        c.insert("sub".into(), json!("dev|x"));
    });
    assert_eq!(post_logout(&gate.base, &token).await.status, StatusCode::NOT_IMPLEMENTED);
    gate.shutdown().await;
}

#[tokio::test]
async fn two_replicas_share_sessions_through_redis() {
    let redis = Redis::start().await;
    two_replicas_share_sessions(redis.url()).await;
}

/// Sessions, sign-out and back-channel logout shared by two replicas through the Redis at `url` (any topology).
pub(crate) async fn two_replicas_share_sessions(url: String) {
    let gate = TestGate::builder().settings(store(StoreKind::Redis { url: Secret::new(url.clone()) })).spawn().await;
    let replica = gate.replica(|_| {}).await;
    let b_url = format!("http://{}", replica.public_addr);
    let b = gate.login_as("gus").await;
    let r = b.get(&format!("{b_url}/")).await;
    assert_eq!(r.status, StatusCode::OK, "a session made on one replica works on the other");
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|gus"));
    // Sign-out on the replica ends it on both.
    let page = b.get(&format!("{b_url}/oauth2/sign_out")).await;
    let token = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let copy = Browser::new();
    copy.set_cookie("idgate", &b.cookie("idgate").unwrap());
    b.post_form(&format!("{b_url}/oauth2/sign_out"), &format!("csrf={}", crate::harness::urlencode(&token))).await;
    assert_eq!(copy.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    // Back-channel logout received by one replica ends the session everywhere.
    let c = gate.login_as("gus").await;
    let sid = c.api().get(&format!("{b_url}/oauth2/userinfo")).await.json()["sid"].as_str().unwrap().to_owned();
    let token = logout_token(&gate, |t| {
        t.insert("sid".into(), json!(sid));
    });
    assert_eq!(post_logout(&b_url, &token).await.status, StatusCode::OK);
    assert_eq!(c.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    replica.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn refresh_is_single_flight_across_replicas() {
    let redis = Redis::start().await;
    refresh_single_flight_across_replicas(redis.url()).await;
}

/// One refresh for ten concurrent requests over two replicas sharing the Redis at `url` (any topology).
pub(crate) async fn refresh_single_flight_across_replicas(url: String) {
    let gate = TestGate::builder()
        .settings(move |s| {
            offline(s);
            s.session.store = StoreKind::Redis { url: Secret::new(url) };
        })
        .spawn()
        .await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let replica = gate.replica(|_| {}).await;
    let urls = [gate.base.clone(), format!("http://{}", replica.public_addr)];
    let b = gate.login_as("hal").await;
    let tokens = gate.issuer.request_count("token");
    gate.clock.advance(260);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let b = b.clone();
        let url = format!("{}/", urls[i % 2]);
        tasks.push(tokio::spawn(async move { b.get(&url).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(gate.issuer.request_count("token"), tokens + 1, "one refresh across both replicas");
    replica.shutdown().await;
    gate.shutdown().await;
}

#[tokio::test]
async fn redis_outage_fails_closed_and_recovers() {
    let mut redis = Redis::start().await;
    let gate = TestGate::builder().settings(store(StoreKind::Redis { url: Secret::new(redis.url()) })).spawn().await;
    let b = gate.login_as("ivy").await;
    let admin = Browser::new().api();
    assert_eq!(admin.get(&format!("{}/readyz", gate.admin)).await.status, StatusCode::OK);
    redis.stop();
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().contains("Sessions are unavailable"));
    let ready = admin.get(&format!("{}/readyz", gate.admin)).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text());
    redis.restart().await;
    // The data went with the old server: the session is gone, and a new login works again.
    crate::harness::eventually("ready again once Redis is back", std::time::Duration::from_secs(5), || async {
        (admin.get(&format!("{}/readyz", gate.admin)).await.status == StatusCode::OK).then_some(())
    })
    .await;
    gate.login_as("ivy").await;
    gate.shutdown().await;
}

#[tokio::test]
async fn secret_rotation_by_reload_keeps_old_sessions() {
    let gate = TestGate::builder().spawn().await;
    let b = gate.login_as("jo").await;
    let running = gate.running.as_ref().unwrap();
    let mut settings = gate.state().settings.clone();
    let old = settings.session.secret.clone();
    settings.session.secret = idgate::config::Secret::new("rotated-secret-rotated-secret-rotated");
    settings.session.previous_secrets = vec![old.clone()];
    assert!(running.reload(settings.clone()).is_empty());
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "sealed with the previous secret");
    let c = gate.login_as("jo").await;
    // Drop the old secret: the old cookie no longer opens, the new one does.
    settings.session.previous_secrets.clear();
    running.reload(settings);
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.get(&format!("{}/", gate.base)).await.status, StatusCode::OK);
    gate.shutdown().await;
}
