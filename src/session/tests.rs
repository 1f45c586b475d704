use http::{HeaderMap, HeaderValue, header::COOKIE};
use serde_json::json;

use super::*;
use crate::{
    config::{Secret, StoreKind},
    dev_issuer::keys::{DevAlg, SigningKey},
};

const NOW: i64 = 1_800_000_000;

fn settings(secret: &str, previous: &[&str]) -> SessionSettings {
    SessionSettings {
        secret: Secret::new(secret),
        previous_secrets: previous.iter().map(|s| Secret::new(*s)).collect(),
        cookie_name: "idgate".into(),
        cookie_secure: true,
        cookie_domain: None,
        store: StoreKind::Cookie,
        max_flows: 3,
    }
}

const SECRET: &str = "session-secret-session-secret-0001";

fn token(extra: usize) -> (String, Claims) {
    let key = SigningKey::generate(DevAlg::ES256);
    let c = json!({"iss": "i", "aud": "a", "sub": "alice", "iat": NOW, "exp": NOW + 600, "pad": "x".repeat(extra)});
    (key.sign(&c), Claims::new(c.as_object().unwrap().clone()))
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

#[test]
fn seal_then_open_until_exp() {
    let s = Sessions::new(&settings(SECRET, &[]));
    let (t, c) = token(0);
    let set = s
        .seal(
            &HeaderMap::new(),
            &NewSession { id_token: &t, claims: &c, refresh_token: Some("rt"), access_token: None, userinfo: None },
            NOW,
        )
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
    let session = s.open(&req, NOW + 599).unwrap();
    assert_eq!(session.claims().sub(), "alice");
    assert_eq!(session.refresh_token(), Some("rt"));
    assert_eq!(session.id_token_hint(), t);
    assert_eq!(s.open(&req, NOW + 600).unwrap_err(), SessionError::Expired, "ends at exp, never later");
}

#[test]
fn large_sessions_are_chunked_and_reassembled() {
    let s = Sessions::new(&settings(SECRET, &[]));
    let (t, c) = token(9000);
    let set = s
        .seal(
            &HeaderMap::new(),
            &NewSession { id_token: &t, claims: &c, refresh_token: None, access_token: None, userinfo: None },
            NOW,
        )
        .unwrap();
    assert!(set.len() >= 3, "{} cookies", set.len());
    assert!(set.iter().all(|v| v.len() < 4096));
    let req = request_with(&set);
    assert_eq!(s.open(&req, NOW).unwrap().claims().sub(), "alice");
    // Drop one chunk: the rest does not open.
    let truncated = request_with(&set[..set.len() - 1]);
    assert_eq!(s.open(&truncated, NOW).unwrap_err(), SessionError::Tampered);
}

#[test]
fn tampered_foreign_and_garbage_cookies_are_no_session() {
    let s = Sessions::new(&settings(SECRET, &[]));
    let (t, c) = token(0);
    let set = s
        .seal(
            &HeaderMap::new(),
            &NewSession { id_token: &t, claims: &c, refresh_token: None, access_token: None, userinfo: None },
            NOW,
        )
        .unwrap();
    let value = set[0].to_str().unwrap().split(';').next().unwrap().strip_prefix("idgate=").unwrap().to_owned();
    let mut flipped = value.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    for bad in
        [String::from_utf8(flipped).unwrap(), "garbage".into(), String::new(), value[..value.len() - 4].to_owned()]
    {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("idgate={bad}")).unwrap());
        assert!(matches!(s.open(&h, NOW), Err(SessionError::Tampered | SessionError::Missing)), "{bad}");
    }
    let other = Sessions::new(&settings("another-secret-another-secret-0002", &[]));
    assert_eq!(other.open(&request_with(&set), NOW).unwrap_err(), SessionError::Tampered, "sealed with another secret");
    assert_eq!(s.open(&HeaderMap::new(), NOW).unwrap_err(), SessionError::Missing);
}

#[test]
fn rotation_keeps_old_sessions_open() {
    let old = Sessions::new(&settings(SECRET, &[]));
    let (t, c) = token(0);
    let set = old
        .seal(
            &HeaderMap::new(),
            &NewSession { id_token: &t, claims: &c, refresh_token: None, access_token: None, userinfo: None },
            NOW,
        )
        .unwrap();
    let rotated = Sessions::new(&settings("brand-new-secret-brand-new-secret-03", &[SECRET]));
    assert!(rotated.open(&request_with(&set), NOW).is_ok());
}

#[test]
fn thousands_of_chunk_cookies_cost_nothing_and_open_nothing() {
    let s = Sessions::new(&settings(SECRET, &[]));
    let many: Vec<String> = (0..2000).map(|i| format!("idgate_{i}=AAAA")).collect();
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&many.join("; ")).unwrap());
    assert_eq!(s.open(&h, NOW).unwrap_err(), SessionError::Tampered);
}
