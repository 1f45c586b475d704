use http::{HeaderMap, HeaderValue, header::COOKIE};
use serde_json::json;

use super::*;
use crate::{
    config::Secret,
    dev_issuer::keys::{DevAlg, SigningKey},
};

const NOW: i64 = 1_800_000_000;

fn settings(secret: &str, previous: &[&str]) -> SessionSettings {
    SessionSettings {
        previous_secrets: previous.iter().map(|s| Secret::new(*s)).collect(),
        ..SessionSettings::with_secret(Secret::new(secret))
    }
}

const SECRET: &str = "session-secret-session-secret-0001";

fn token(extra: usize) -> (String, Claims) {
    let key = SigningKey::generate(DevAlg::ES256);
    let c = json!({"iss": "i", "aud": "a", "sub": "alice", "iat": NOW, "exp": NOW + 600, "pad": "x".repeat(extra)});
    (key.sign(&c), Claims::new(c.as_object().unwrap().clone()))
}

/// Saves a session for token `t` with no other tokens; returns the `Set-Cookie` values.
async fn save(s: &Sessions, t: &str, c: &Claims) -> Vec<HeaderValue> {
    let new = NewSession {
        id_token: t,
        claims: c,
        refresh_token: None,
        access_token: None,
        nonce: None,
        userinfo: None,
        provider: None,
    };
    s.save(&HeaderMap::new(), &new, NOW).await.unwrap()
}

fn request_with(set_cookies: &[HeaderValue]) -> HeaderMap {
    let pairs: Vec<String> = set_cookies
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .filter(|p| !p.ends_with('='))
        .collect();
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
    h
}

#[tokio::test]
async fn seal_then_open_until_exp() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, c) = token(0);
    let set = s
        .save(
            &HeaderMap::new(),
            &NewSession {
                id_token: &t,
                claims: &c,
                refresh_token: Some("rt"),
                access_token: None,
                nonce: Some("n"),
                userinfo: None,
                provider: None,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(set.len(), 1);
    let v = set[0].to_str().unwrap();
    assert!(
        v.contains("Max-Age=600")
            && v.contains("HttpOnly")
            && v.contains("Secure")
            && v.contains("SameSite=Lax")
            && v.contains("Path=/")
    );
    assert!(!v.contains(&t), "the token is never visible in the cookie");
    let req = request_with(&set);
    let session = s.open(&req, NOW + 599).await.unwrap();
    assert_eq!(session.claims().sub(), "alice");
    assert_eq!(session.refresh_token(), Some("rt"));
    assert_eq!(session.id_token_hint(), t);
    assert!(matches!(s.open(&req, NOW + 600).await.unwrap_err(), SessionError::Expired), "ends at exp, never later");
}

#[tokio::test]
async fn large_sessions_are_chunked_and_reassembled() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, c) = token(9000);
    let set = save(&s, &t, &c).await;
    assert!(set.len() >= 3, "{} cookies", set.len());
    assert!(set.iter().all(|v| v.len() < 4096));
    let req = request_with(&set);
    assert_eq!(s.open(&req, NOW).await.unwrap().claims().sub(), "alice");
    // Drop one chunk: the rest does not open.
    let truncated = request_with(&set[..set.len() - 1]);
    assert!(matches!(s.open(&truncated, NOW).await.unwrap_err(), SessionError::Tampered));
}

#[tokio::test]
async fn tampered_foreign_and_garbage_cookies_are_no_session() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, c) = token(0);
    let set = save(&s, &t, &c).await;
    let value = set[0].to_str().unwrap().split(';').next().unwrap().strip_prefix("idgate=").unwrap().to_owned();
    let mut flipped = value.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    for bad in
        [String::from_utf8(flipped).unwrap(), "garbage".into(), String::new(), value[..value.len() - 4].to_owned()]
    {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("idgate={bad}")).unwrap());
        assert!(matches!(s.open(&h, NOW).await, Err(SessionError::Tampered | SessionError::Missing)), "{bad}");
    }
    let other = Sessions::new(&settings("another-secret-another-secret-0002", &[])).unwrap();
    assert!(
        matches!(other.open(&request_with(&set), NOW).await.unwrap_err(), SessionError::Tampered),
        "sealed with another secret"
    );
    assert!(matches!(s.open(&HeaderMap::new(), NOW).await.unwrap_err(), SessionError::Missing));
}

#[tokio::test]
async fn rotation_keeps_old_sessions_open() {
    let old = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, c) = token(0);
    let set = save(&old, &t, &c).await;
    let rotated = Sessions::new(&settings("brand-new-secret-brand-new-secret-03", &[SECRET])).unwrap();
    assert!(rotated.open(&request_with(&set), NOW).await.is_ok());
}

#[tokio::test]
async fn thousands_of_chunk_cookies_cost_nothing_and_open_nothing() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let many: Vec<String> = (0..2000).map(|i| format!("idgate_{i}=AAAA")).collect();
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&many.join("; ")).unwrap());
    assert!(matches!(s.open(&h, NOW).await.unwrap_err(), SessionError::Tampered));
}

#[tokio::test]
async fn opened_sessions_are_reused_only_for_the_exact_bytes_and_never_past_exp() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, c) = token(0);
    let set = save(&s, &t, &c).await;
    let req = request_with(&set);
    let value = set[0].to_str().unwrap().split(';').next().unwrap().strip_prefix("idgate=").unwrap().to_owned();
    assert!(s.opened.get(value.as_bytes()).is_none());
    assert_eq!(s.open(&req, NOW).await.unwrap().claims().sub(), "alice");
    assert!(s.opened.get(value.as_bytes()).is_some(), "the opened session is kept");
    assert_eq!(s.open(&req, NOW + 1).await.unwrap().id_token_hint(), t, "and served again");
    // Same length and the same tail (the hashed part), one byte changed before it: not the kept session.
    let mut flipped = value.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&format!("idgate={}", String::from_utf8(flipped).unwrap())).unwrap());
    assert!(matches!(s.open(&h, NOW).await.unwrap_err(), SessionError::Tampered));
    assert!(matches!(s.open(&req, NOW + 600).await.unwrap_err(), SessionError::Expired), "a kept session still ends");
}

#[tokio::test]
async fn stored_bytes_moved_under_another_key_do_not_open_even_when_kept() {
    let s = Sessions::new(&SessionSettings { store: StoreKind::Memory, ..settings(SECRET, &[]) }).unwrap();
    let (t, c) = token(0);
    let (a, b) = (request_with(&save(&s, &t, &c).await), request_with(&save(&s, &t, &c).await));
    assert!(s.open(&a, NOW).await.is_ok(), "a's session opened and kept");
    let store = s.store().unwrap();
    let (key_a, key_b) = (s.key_of(&a).unwrap(), s.key_of(&b).unwrap());
    let sealed_a = store.get(&key_a).await.unwrap().unwrap();
    let owner = Owner { sid: None, sub: "alice".into(), created: NOW };
    store.put(&key_b, sealed_a.to_vec(), &owner, NOW + 600, NOW).await.unwrap();
    assert!(matches!(s.open(&b, NOW).await.unwrap_err(), SessionError::Tampered));
}

#[tokio::test]
async fn a_signed_out_cookie_session_and_its_renewals_are_refused_and_debug_shows_no_token() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, c) = token(0);
    let new = NewSession {
        id_token: &t,
        claims: &c,
        refresh_token: Some("rt-secret"),
        access_token: Some("at-secret"),
        nonce: None,
        userinfo: None,
        provider: None,
    };
    let req = request_with(&s.save(&HeaderMap::new(), &new, NOW).await.unwrap());
    let session = s.open(&req, NOW).await.unwrap();
    assert_eq!(session.login().at(), NOW, "the login is the ID token's iat");
    for shown in [format!("{session:?}"), format!("{new:?}")] {
        assert!(!shown.contains("rt-secret") && !shown.contains("at-secret") && !shown.contains(&t), "{shown}");
    }
    // A renewal (another ID token, another cookie) keeps the login.
    let (t2, c2) = token(1);
    let renewed = NewSession { id_token: &t2, claims: &c2, ..new };
    let (r, cookies) = s.renew(&req, &session, &renewed, NOW + 1).await.unwrap();
    assert_eq!(r.login(), session.login());
    let renewed_req = request_with(&cookies);
    assert_eq!(s.open(&renewed_req, NOW + 1).await.unwrap().login(), session.login());
    // Signing out the renewed session refuses the old cookie too: same login.
    s.sign_out(&r, NOW + 1);
    assert!(matches!(s.open(&renewed_req, NOW + 1).await.unwrap_err(), SessionError::SignedOut));
    assert!(matches!(s.open(&req, NOW + 1).await.unwrap_err(), SessionError::SignedOut));
    // Other logins are untouched, and a reload keeps the sign-outs.
    let other = request_with(&save(&s, &t, &c).await);
    assert!(s.open(&other, NOW + 1).await.is_ok());
    let reloaded = Sessions::with_store(&settings(SECRET, &[]), s.shared_store());
    assert!(matches!(reloaded.open(&req, NOW + 1).await.unwrap_err(), SessionError::SignedOut));
}

#[tokio::test]
async fn sessions_sealed_before_logins_were_recorded_still_open() {
    let s = Sessions::new(&settings(SECRET, &[])).unwrap();
    let (t, _) = token(0);
    let plain = serde_json::to_vec(&json!({"t": t, "r": "rt"})).unwrap();
    let value = s.ring.seal("idgate", &plain);
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&format!("idgate={value}")).unwrap());
    let session = s.open(&h, NOW).await.unwrap();
    assert_eq!(session.login().at(), NOW, "from the ID token's iat");
    assert_eq!(session.login().id().len(), 22, "named by a hash of the ID token");
    assert_eq!(s.open(&h, NOW).await.unwrap().login(), session.login(), "stable");
}

#[tokio::test]
async fn back_channel_deletion_spares_logins_newer_than_the_logout_token() {
    let store = Store::Memory(store::memory::MemoryStore::new(100));
    for (i, created) in [NOW - 10, NOW, NOW + 10].into_iter().enumerate() {
        let owner = Owner { sid: Some("S".into()), sub: "alice".into(), created };
        store.put(&[i as u8; 32], vec![1], &owner, NOW + 600, NOW).await.unwrap();
    }
    let done = store.delete_owned(Some("S"), None, NOW).await.unwrap();
    assert_eq!(done, store::Ended { ended: 2, kept_newer: 1 }, "issued at NOW: logins at or before it end");
    assert!(store.get(&[2u8; 32]).await.unwrap().is_some(), "the newer login stays");
}
