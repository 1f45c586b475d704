use serde_json::json;

use super::*;
use crate::dev_issuer::{DevAlg, SigningKey, keys::sign_hs256};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.example.com";

fn want(typ_required: bool) -> (Vec<String>, bool) {
    (vec!["https://api.example.com".into()], typ_required)
}

fn check(key: &SigningKey, token: &str, typ_required: bool) -> Result<Claims, Refusal> {
    let keys = KeySet::from_jwks(json!({"keys": [key.jwk()]}).to_string().as_bytes()).unwrap();
    let (audiences, typ_required) = want(typ_required);
    let w = Want { issuer: ISS, audiences: &audiences, typ_required, leeway: 60 };
    validate_jwt(token, &keys, &[Algorithm::RS256, Algorithm::ES256], &w, NOW)
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "u1", "aud": ["https://api.example.com", "other"], "iat": NOW, "exp": NOW + 600,
           "scope": "read write", "client_id": "cli", "jti": "j1"})
}

fn at(key: &SigningKey, c: &Value) -> String {
    key.sign_with_header(&json!({"alg": key.alg.name(), "kid": key.kid, "typ": "at+jwt"}), c)
}

#[test]
fn a_jwt_access_token_is_accepted_and_each_bad_one_refused_with_its_reason() {
    let key = SigningKey::generate(DevAlg::RS256);
    assert_eq!(check(&key, &at(&key, &claims()), true).unwrap().sub(), "u1");
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let other = SigningKey::generate(DevAlg::RS256);
    let none =
        format!("{}.", crate::dev_issuer::keys::signing_input(&json!({"alg": "none", "typ": "at+jwt"}), &claims()));
    let hs = sign_hs256(&json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}), &claims(), &key.public_key_bytes());
    let cases: Vec<(&str, String)> = vec![
        // `none` has no signature: refused as malformed (an empty part) before its alg is read; with one, by alg.
        ("malformed", none.clone()),
        ("alg_not_allowed", format!("{none}c2ln")),
        ("alg_not_allowed", hs),
        ("wrong_typ", key.sign(&claims())),
        ("wrong_typ", key.sign_with_header(&json!({"alg": "RS256", "kid": key.kid}), &claims())),
        ("wrong_audience", at(&key, &with("aud", json!("https://elsewhere.example.com")))),
        ("wrong_audience", at(&key, &with("aud", json!("cli")))),
        ("wrong_issuer", at(&key, &with("iss", json!("https://evil.example.com")))),
        ("expired", at(&key, &with("exp", json!(NOW - 61)))),
        ("not_yet_valid", at(&key, &with("nbf", json!(NOW + 120)))),
        ("issued_in_future", at(&key, &with("iat", json!(NOW + 120)))),
        ("unknown_key", at(&other, &claims())),
        ("missing_claim", at(&key, &with("sub", json!("")))),
        ("malformed", at(&key, &with("aud", json!(["https://api.example.com", 1])))),
    ];
    for (reason, token) in cases {
        let got = check(&key, &token, true).unwrap_err();
        assert_eq!(got.reason(), reason, "{got}");
    }
    // An issuer that omits typ: accepted once typ is not required, still refused for everything else.
    assert!(check(&key, &key.sign(&claims()), false).is_ok());
    assert_eq!(check(&key, &key.sign(&with("aud", json!("cli"))), false).unwrap_err().reason(), "wrong_audience");
}

#[test]
fn introspection_answers_are_checked() {
    let (audiences, _) = want(true);
    let w = Want { issuer: ISS, audiences: &audiences, typ_required: true, leeway: 0 };
    let ok = json!({"active": true, "sub": "u1", "aud": "https://api.example.com", "exp": NOW + 100, "scope": "read"});
    let m = |v: Value| v.as_object().unwrap().clone();
    let (c, exp) = check_introspection(m(ok.clone()), &w, NOW).unwrap();
    assert_eq!((c.sub(), exp, c.get("iss")), ("u1", Some(NOW + 100), Some(&json!(ISS))));
    let with = |k: &str, v: Value| {
        let mut c = ok.clone();
        c[k] = v;
        m(c)
    };
    for (reason, answer) in [
        ("inactive", with("active", json!(false))),
        ("inactive", with("active", json!("true"))),
        ("wrong_typ", with("token_type", json!("refresh_token"))),
        ("wrong_audience", with("aud", json!("other"))),
        ("wrong_issuer", with("iss", json!("https://evil.example.com"))),
        ("expired", with("exp", json!(NOW))),
    ] {
        assert_eq!(check_introspection(answer, &w, NOW).unwrap_err().reason(), reason);
    }
}

#[test]
fn only_one_bearer_credential_is_read() {
    let h = |values: &[&str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    };
    assert_eq!(presented(&h(&["Bearer abc"])).unwrap(), Some("abc"));
    assert_eq!(presented(&h(&["bearer  abc "])).unwrap(), Some("abc"));
    assert_eq!(presented(&h(&["Basic dXNlcjpwdw=="])).unwrap(), None);
    assert_eq!(presented(&h(&[])).unwrap(), None);
    for bad in [&["Bearer a", "Bearer b"][..], &["Bearer a b"]] {
        assert_eq!(presented(&h(bad)).map_err(|e| e.reason()), Err("malformed"), "{bad:?}");
    }
}
