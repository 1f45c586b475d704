//! Encrypted ID tokens (R8) end to end against the development issuer: login and refresh with each mode, the
//! session keeping the nested JWS, and the refusals (reason asserted through the rejection metric).

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use idgate::{
    config::Settings,
    dev_issuer::IdTokenEncryption,
    id_token::jwe::{ContentEnc, DecryptionKeys, GeneratedKey, KeyAlg},
};
use serde_json::{Value, json};

use crate::harness::{Browser, TestGate};

/// A fresh key pair of the kind `alg` needs: idgate gets the private half (PEM, as from
/// `oidc.id_token_decryption_key_file`), the issuer the public half with the client's registered alg/enc.
fn pair(alg: KeyAlg, enc: ContentEnc) -> (DecryptionKeys, IdTokenEncryption) {
    let g =
        if matches!(alg, KeyAlg::RsaOaep | KeyAlg::RsaOaep256) { GeneratedKey::rsa() } else { GeneratedKey::p256() };
    let keys = DecryptionKeys::from_file_contents(g.private_pem.as_bytes()).unwrap();
    (keys, IdTokenEncryption { key: g.public, kid: None, alg, enc })
}

async fn encrypting_gate(alg: KeyAlg, enc: ContentEnc, required: bool, more: fn(&mut Settings)) -> TestGate {
    let (keys, registration) = pair(alg, enc);
    let gate = TestGate::builder()
        .settings(move |s| {
            s.oidc.id_token_decryption.keys = Some(Arc::new(keys));
            s.oidc.id_token_decryption.required = required;
            s.oidc.post_logout_redirect_url = Some("http://127.0.0.1:9/bye".parse().unwrap());
            more(s);
        })
        .spawn()
        .await;
    gate.issuer.configure(|k| k.id_token_encryption = Some(registration));
    gate
}

fn rejections(gate: &TestGate, reason: &str) -> String {
    let m = gate.state().metrics.render();
    assert!(m.contains(&format!("idgate_id_token_rejections_total{{reason=\"{reason}\"}} 1")), "{reason}: {m}");
    m
}

/// The `id_token_hint` the sign-out sends: the session's ID token.
async fn id_token_hint(gate: &TestGate, b: &Browser) -> String {
    let page = b.get(&format!("{}/oauth2/sign_out", gate.base)).await;
    let csrf = page.text().split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let out = b
        .post_form(&format!("{}/oauth2/sign_out", gate.base), &format!("csrf={}", crate::harness::urlencode(&csrf)))
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    let end = url::Url::parse(out.location()).unwrap();
    end.query_pairs().find(|(k, _)| k == "id_token_hint").unwrap().1.into_owned()
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn login_with_each_encryption_mode_keeps_the_nested_jws() {
    let modes = [
        (KeyAlg::RsaOaep256, ContentEnc::A256Gcm),
        (KeyAlg::EcdhEs, ContentEnc::A128CbcHs256),
        (KeyAlg::RsaOaep, ContentEnc::A128CbcHs256),
        (KeyAlg::EcdhEsA128Kw, ContentEnc::A128Gcm),
        (KeyAlg::EcdhEsA256Kw, ContentEnc::A256CbcHs512),
    ];
    for (alg, enc) in modes {
        let what = format!("{} + {}", alg.name(), enc.name());
        let gate = encrypting_gate(alg, enc, true, |_| {}).await;
        let b = gate.browser();
        let page = b.login(&gate.base, "/app", "Alice").await;
        assert_eq!(page.status, StatusCode::OK, "{what}: {}", page.text());
        assert_eq!(page.upstream_header("x-auth-request-email").as_deref(), Some("alice@example.com"), "{what}");
        // The session keeps the signed token, not the JWE: three parts, a signature algorithm in the header.
        let hint = id_token_hint(&gate, &b).await;
        assert_eq!(hint.split('.').count(), 3, "{what}: the hint is the nested JWS");
        assert_eq!(header_of(&hint)["alg"], "RS256", "{what}");
        gate.shutdown().await;
    }
}

#[tokio::test]
async fn required_encryption_refuses_a_plain_jws_and_optional_accepts_it() {
    let gate = encrypting_gate(KeyAlg::EcdhEs, ContentEnc::A128CbcHs256, true, |_| {}).await;
    gate.issuer.configure(|k| k.id_token_encryption = None);
    let b = gate.browser();
    let cb = b.login_to_callback(&gate.base, "/", "mallory").await;
    assert_eq!(cb.status, StatusCode::UNAUTHORIZED, "{}", cb.text());
    assert!(b.cookie("idgate").is_none(), "no session");
    rejections(&gate, "not_encrypted");
    gate.shutdown().await;
    // Not required: both forms are accepted (an issuer switching to encryption breaks nobody).
    let gate = encrypting_gate(KeyAlg::EcdhEs, ContentEnc::A128CbcHs256, false, |_| {}).await;
    assert_eq!(gate.browser().login_to_callback(&gate.base, "/", "a").await.status, StatusCode::FOUND);
    gate.issuer.configure(|k| k.id_token_encryption = None);
    assert_eq!(gate.browser().login_to_callback(&gate.base, "/", "b").await.status, StatusCode::FOUND);
    gate.shutdown().await;
}

#[tokio::test]
async fn broken_encrypted_id_tokens_are_refused_with_their_reason() {
    type Hook = Arc<dyn Fn(String) -> String + Send + Sync>;
    let reheader = |h: Value| -> Hook {
        Arc::new(move |t: String| format!("{}.{}", URL_SAFE_NO_PAD.encode(h.to_string()), t.split_once('.').unwrap().1))
    };
    let forge: Hook = Arc::new(|t: String| {
        let mut p: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut tag = URL_SAFE_NO_PAD.decode(&p[4]).unwrap();
        tag[0] ^= 1;
        p[4] = URL_SAFE_NO_PAD.encode(tag);
        p.join(".")
    });
    let cases: Vec<(&str, Hook)> = vec![
        ("jwe_decryption_failed", forge),
        ("jwe_alg_refused", reheader(json!({"alg": "RSA1_5", "enc": "A128CBC-HS256"}))),
        ("jwe_alg_refused", reheader(json!({"alg": "dir", "enc": "A128CBC-HS256"}))),
        ("jwe_zip_refused", reheader(json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "zip": "DEF"}))),
        ("jwe_enc_not_allowed", reheader(json!({"alg": "RSA-OAEP-256", "enc": "A192GCM"}))),
    ];
    let gate = encrypting_gate(KeyAlg::RsaOaep256, ContentEnc::A256Gcm, true, |_| {}).await;
    let mut seen = std::collections::HashMap::new();
    for (reason, hook) in cases {
        gate.issuer.configure(|k| k.token_hook = Some(hook.clone()));
        let b = gate.browser();
        let cb = b.login_to_callback(&gate.base, "/", "mallory").await;
        assert_eq!(cb.status, StatusCode::UNAUTHORIZED, "{reason}: {}", cb.text());
        assert!(b.cookie("idgate").is_none(), "{reason}: no session");
        *seen.entry(reason).or_insert(0) += 1;
        let m = gate.state().metrics.render();
        let line = format!("idgate_id_token_rejections_total{{reason=\"{reason}\"}} {}", seen[reason]);
        assert!(m.contains(&line), "{line}: {m}");
    }
    gate.issuer.configure(|k| k.token_hook = None);
    // Encrypted to a key idgate does not hold.
    let (_, stranger) = pair(KeyAlg::RsaOaep256, ContentEnc::A256Gcm);
    gate.issuer.configure(|k| k.id_token_encryption = Some(stranger));
    assert_eq!(gate.browser().login_to_callback(&gate.base, "/", "m").await.status, StatusCode::UNAUTHORIZED);
    let m = gate.state().metrics.render();
    assert!(m.contains("idgate_id_token_rejections_total{reason=\"jwe_decryption_failed\"} 2"), "{m}");
    gate.shutdown().await;
}

#[tokio::test]
async fn the_nested_jws_passes_every_validation_rule() {
    // A decrypted token with a wrong audience is refused like a plain one: decryption proves nothing.
    let gate = encrypting_gate(KeyAlg::EcdhEs, ContentEnc::A128CbcHs256, true, |_| {}).await;
    gate.issuer.configure(|k| {
        k.claims_hook = Some(Arc::new(|c| {
            c.insert("aud".into(), json!("someone-else"));
        }))
    });
    assert_eq!(gate.browser().login_to_callback(&gate.base, "/", "m").await.status, StatusCode::UNAUTHORIZED);
    rejections(&gate, "wrong_audience");
    gate.shutdown().await;
    // The inner token's alg must be on oidc.allowed_algs.
    let gate = encrypting_gate(KeyAlg::EcdhEs, ContentEnc::A128CbcHs256, true, |s| {
        s.oidc.allowed_algs = vec![jsonwebtoken::Algorithm::ES256]
    })
    .await;
    assert_eq!(gate.browser().login_to_callback(&gate.base, "/", "m").await.status, StatusCode::UNAUTHORIZED);
    rejections(&gate, "alg_not_allowed");
    gate.shutdown().await;
}

#[tokio::test]
async fn refresh_decrypts_too_and_a_plain_jws_then_ends_the_session() {
    let offline = |s: &mut Settings| s.oidc.scopes.push("offline_access".into());
    let gate = encrypting_gate(KeyAlg::RsaOaep256, ContentEnc::A256Gcm, true, offline).await;
    gate.issuer.configure(|k| k.id_token_lifetime_secs = 300);
    let b = gate.login_as("bob").await;
    gate.clock.advance(250);
    let r = b.get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookies().iter().any(|c| c.starts_with("idgate=")), "renewed");
    assert!(gate.state().metrics.render().contains("idgate_refreshes_total{result=\"success\"} 1"));
    assert_eq!(id_token_hint(&gate, &b).await.split('.').count(), 3, "the renewed session keeps the JWS");
    // Next refresh answers with a plain JWS: refused, the session ends.
    let b = gate.login_as("carol").await;
    gate.issuer.configure(|k| k.id_token_encryption = None);
    gate.clock.advance(250);
    let r = b.api().get(&format!("{}/", gate.base)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let m = rejections(&gate, "not_encrypted");
    assert!(m.contains("idgate_refreshes_total{result=\"rejected\"} 1"), "{m}");
    gate.shutdown().await;
}

#[tokio::test]
async fn an_encrypted_back_channel_logout_token_is_decrypted_and_a_forged_one_refused() {
    let (keys, registration) = pair(KeyAlg::EcdhEs, ContentEnc::A128CbcHs256);
    let to = registration.key.clone();
    let gate = TestGate::builder()
        .settings(move |s| {
            s.session.store = idgate::config::StoreKind::Memory;
            s.oidc.id_token_decryption.keys = Some(Arc::new(keys));
            s.oidc.id_token_decryption.required = true;
        })
        .spawn()
        .await;
    gate.issuer.configure(|k| k.id_token_encryption = Some(registration));
    let b = gate.login_as("fay").await;
    let sid = b.api().get(&format!("{}/oauth2/userinfo", gate.base)).await.json()["sid"].as_str().unwrap().to_owned();
    let now = idgate::clock::Clock::now(gate.clock.as_ref());
    let claims = json!({
        "iss": gate.issuer.issuer(), "aud": crate::harness::CLIENT_ID, "iat": now, "exp": now + 120,
        "jti": idgate::random::token(12), "sid": sid, "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    let signed = gate
        .issuer
        .with_key(|k| k.sign_with_header(&json!({"alg": "RS256", "kid": k.kid, "typ": "logout+jwt"}), &claims));
    let encrypted =
        idgate::id_token::jwe::encrypt(signed.as_bytes(), &to, None, KeyAlg::EcdhEs, ContentEnc::A256Gcm).unwrap();
    let post = |token: String| {
        let base = gate.base.clone();
        async move {
            Browser::new()
                .api()
                .post_form(&format!("{base}/oauth2/backchannel_logout"), &format!("logout_token={token}"))
                .await
        }
    };
    let mut forged: Vec<String> = encrypted.split('.').map(str::to_owned).collect();
    forged[3] = forged[3].chars().rev().collect();
    assert_eq!(post(forged.join(".")).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(b.get(&format!("{}/", gate.base)).await.status, StatusCode::OK, "a forged JWE ends nothing");
    let r = post(encrypted).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(b.api().get(&format!("{}/", gate.base)).await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
}

#[test]
fn a_changed_decryption_key_needs_a_restart() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let old = crate::harness::settings("http://127.0.0.1:1", "http://127.0.0.1:2", up);
    let mut new = crate::harness::settings("http://127.0.0.1:1", "http://127.0.0.1:2", up);
    assert!(idgate::app::needs_restart(&old, &new).is_empty());
    new.oidc.id_token_decryption.keys = Some(Arc::new(pair(KeyAlg::EcdhEs, ContentEnc::A128Gcm).0));
    new.oidc.id_token_decryption.required = true;
    new.oidc.id_token_decryption.allowed.algs = vec![KeyAlg::EcdhEs];
    assert_eq!(
        idgate::app::needs_restart(&old, &new),
        ["oidc.id_token_decryption_key_file", "oidc.require_encrypted_id_token", "oidc.id_token_encryption_algs"]
    );
}

/// `{prefix}/jwks` publishes the decryption key's public half (also on the admin listener): an issuer that encrypts
/// to the key it fetched there, under the `kid` published, produces tokens idgate decrypts.
#[tokio::test]
async fn the_published_jwks_is_the_key_an_issuer_encrypts_to() {
    let g = GeneratedKey::rsa();
    let keys = DecryptionKeys::from_file_contents(g.private_pem.as_bytes()).unwrap();
    let gate = TestGate::builder()
        .settings(move |s| {
            s.oidc.id_token_decryption.keys = Some(Arc::new(keys));
            s.oidc.id_token_decryption.required = true;
        })
        .spawn()
        .await;
    let b = gate.browser();
    let public = b.get(&format!("{}/oauth2/jwks", gate.base)).await;
    assert_eq!(public.status, StatusCode::OK);
    assert_eq!(public.headers["cache-control"], "public, max-age=300");
    let admin = b.get(&format!("{}/jwks", gate.admin)).await;
    assert_eq!(admin.text(), public.text(), "the admin listener serves the same document");
    let doc: Value = serde_json::from_str(&public.text()).unwrap();
    let [jwk] = doc["keys"].as_array().unwrap().as_slice() else { panic!("one key: {doc}") };
    assert_eq!((jwk["use"].as_str(), jwk["kty"].as_str()), (Some("enc"), Some("RSA")));
    assert_eq!(jwk["n"], g.public_jwk["n"], "the public half of the configured key");
    assert!(jwk.get("d").is_none());
    let key = idgate::id_token::jwe::EncryptionKey::from_jwk(jwk).unwrap();
    let kid = jwk["kid"].as_str().map(str::to_owned);
    gate.issuer.configure(move |k| {
        k.id_token_encryption = Some(IdTokenEncryption { key, kid, alg: KeyAlg::RsaOaep256, enc: ContentEnc::A256Gcm })
    });
    let page = b.login(&gate.base, "/app", "Alice").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.upstream_header("x-auth-request-email").as_deref(), Some("alice@example.com"));
}
