//! A row per rule: every refusal has a token that triggers it.

use std::sync::OnceLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::*;
use crate::dev_issuer::keys::{DevAlg, SigningKey, sign_hs256, signing_input};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.example.com";

struct Fixture {
    rsa: SigningKey,
    ec: SigningKey,
    ps: SigningKey,
    other: SigningKey,
    keys: KeySet,
}

fn fx() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rsa = SigningKey::generate(DevAlg::RS256);
        let ec = SigningKey::generate(DevAlg::ES256);
        let ps = SigningKey::generate(DevAlg::PS256);
        let other = SigningKey::generate(DevAlg::RS256);
        let jwks = json!({"keys": [rsa.jwk(), ec.jwk(), ps.jwk(), {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]});
        let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
        Fixture { rsa, ec, ps, other, keys }
    })
}

fn want() -> Expectations {
    Expectations {
        issuer: ISS.into(),
        audiences: vec!["client".into(), "sibling".into()],
        allowed_algs: vec![Algorithm::RS256, Algorithm::ES256],
        leeway: 60,
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "client", "sub": "alice", "iat": NOW - 10, "exp": NOW + 3600, "nonce": "n-1", "name": "Alice"})
}

fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    f(c.as_object_mut().unwrap());
    c
}

fn check(token: &str) -> Result<Claims, Rejection> {
    validate(token, &fx().keys, &want(), Some("n-1"), NOW)
}

#[test]
fn valid_rs256_and_es256_tokens_pass() {
    let c = check(&fx().rsa.sign(&claims())).unwrap();
    assert_eq!(c.sub(), "alice");
    assert_eq!(c.exp(), NOW + 3600);
    assert!(check(&fx().ec.sign(&claims())).is_ok());
}

#[test]
fn format_rejections() {
    let good = fx().rsa.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, &str)> = vec![
        ("onlyone".into(), "one part"),
        (format!("{}.{}", parts[0], parts[1]), "two parts"),
        (format!("{good}.x"), "four parts"),
        (format!("{}.{}.{}.{}.{}", parts[0], parts[1], parts[2], "a", "b"), "JWE"),
        (format!("!!!.{}.{}", parts[1], parts[2]), "bad base64 header"),
        (format!("{}.%%%.{}", parts[0], parts[2]), "bad base64 payload"),
        (format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("not json"), parts[1], parts[2]), "header not JSON"),
        (format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode("[1,2]"), parts[2]), "payload not an object"),
        (format!("{}..{}", parts[0], parts[2]), "empty payload"),
    ];
    for (token, what) in cases {
        assert!(matches!(check(&token), Err(Rejection::Malformed(_))), "{what}: {:?}", check(&token));
    }
}

#[test]
fn alg_none_is_refused() {
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.", signing_input(&json!({"alg": alg, "typ": "JWT"}), &claims()));
        assert!(check(&token).is_err(), "{alg} with empty signature");
        let token = format!("{}.c2ln", signing_input(&json!({"alg": alg}), &claims()));
        assert_eq!(check(&token).unwrap_err(), Rejection::AlgNotAllowed, "{alg}");
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let f = fx();
    let header = json!({"alg": "HS256", "kid": f.rsa.kid, "typ": "JWT"});
    let token = sign_hs256(&header, &claims(), &f.rsa.public_key_bytes());
    assert_eq!(check(&token).unwrap_err(), Rejection::AlgNotAllowed);
    // Even when HS256 is somehow on the list, no key in the set verifies it (oct keys are never loaded).
    let mut w = want();
    w.allowed_algs.push(Algorithm::HS256);
    let hmac = sign_hs256(&json!({"alg": "HS256", "kid": "hmac"}), &claims(), b"secret");
    assert_eq!(validate(&hmac, &f.keys, &w, Some("n-1"), NOW).unwrap_err(), Rejection::UnknownKey);
}

#[test]
fn alg_not_on_the_list_is_refused() {
    assert_eq!(check(&fx().ps.sign(&claims())).unwrap_err(), Rejection::AlgNotAllowed);
    let mut w = want();
    w.allowed_algs.push(Algorithm::PS256);
    assert!(validate(&fx().ps.sign(&claims()), &fx().keys, &w, Some("n-1"), NOW).is_ok());
}

#[test]
fn key_selection() {
    let f = fx();
    assert_eq!(check(&f.other.sign(&claims())).unwrap_err(), Rejection::UnknownKey, "unknown kid");
    // A kid naming an EC key on an RS256 token: the key type must fit the algorithm.
    let header = json!({"alg": "RS256", "kid": f.ec.kid});
    let token = f.rsa.sign_with_header(&header, &claims());
    assert_eq!(check(&token).unwrap_err(), Rejection::UnknownKey);
    // A known kid with another key's signature.
    let forged = f.other.sign_with_header(&json!({"alg": "RS256", "kid": f.rsa.kid}), &claims());
    assert_eq!(check(&forged).unwrap_err(), Rejection::BadSignature);
    // Without a kid, the one key usable for RS256 is chosen (the PS256 key is pinned to PS256 by its JWK alg)…
    let no_kid = f.rsa.sign_with_header(&json!({"alg": "RS256"}), &claims());
    assert!(check(&no_kid).is_ok());
    // …but with two candidate keys the choice is ambiguous: refused.
    let two = KeySet::from_jwks(json!({"keys": [f.rsa.jwk(), f.other.jwk()]}).to_string().as_bytes()).unwrap();
    assert_eq!(validate(&no_kid, &two, &want(), Some("n-1"), NOW).unwrap_err(), Rejection::UnknownKey);
    // Without a kid, the single EC key is used.
    assert!(check(&f.ec.sign_with_header(&json!({"alg": "ES256"}), &claims())).is_ok());
}

#[test]
fn tampered_payload_fails_the_signature() {
    let good = fx().rsa.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let evil = URL_SAFE_NO_PAD.encode(
        with(|c| {
            c.insert("sub".into(), json!("admin"));
        })
        .to_string(),
    );
    assert_eq!(check(&format!("{}.{evil}.{}", parts[0], parts[2])).unwrap_err(), Rejection::BadSignature);
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    assert_eq!(
        check(&format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig))).unwrap_err(),
        Rejection::BadSignature
    );
}

#[test]
fn crit_header_is_refused() {
    let token = fx().rsa.sign_with_header(&json!({"alg": "RS256", "kid": fx().rsa.kid, "crit": ["exp"]}), &claims());
    assert!(matches!(check(&token), Err(Rejection::Malformed(_))));
}

#[test]
fn claim_rules() {
    let sign = |c: Value| fx().rsa.sign(&c);
    let cases: Vec<(&str, Value, Rejection)> = vec![
        (
            "wrong iss",
            with(|c| {
                c.insert("iss".into(), json!("https://evil.example.com"));
            }),
            Rejection::WrongIssuer,
        ),
        (
            "iss with trailing slash",
            with(|c| {
                c.insert("iss".into(), json!(format!("{ISS}/")));
            }),
            Rejection::WrongIssuer,
        ),
        (
            "missing iss",
            with(|c| {
                c.remove("iss");
            }),
            Rejection::MissingClaim("iss"),
        ),
        (
            "wrong aud",
            with(|c| {
                c.insert("aud".into(), json!("other"));
            }),
            Rejection::WrongAudience,
        ),
        (
            "aud list without us",
            with(|c| {
                c.insert("aud".into(), json!(["a", "b"]));
            }),
            Rejection::WrongAudience,
        ),
        (
            "aud not a string",
            with(|c| {
                c.insert("aud".into(), json!(5));
            }),
            Rejection::Malformed(AUD_SHAPE),
        ),
        (
            // Issue 12: non-string members were skipped, so this counted as the single audience "client".
            "aud array with a number beside us",
            with(|c| {
                c.insert("aud".into(), json!(["client", 1]));
            }),
            Rejection::Malformed(AUD_SHAPE),
        ),
        (
            "aud array with null and an object beside us",
            with(|c| {
                c.insert("aud".into(), json!(["client", null, {"aud": "client"}]));
            }),
            Rejection::Malformed(AUD_SHAPE),
        ),
        (
            "aud array nested",
            with(|c| {
                c.insert("aud".into(), json!([["client"]]));
            }),
            Rejection::Malformed(AUD_SHAPE),
        ),
        (
            "missing aud",
            with(|c| {
                c.remove("aud");
            }),
            Rejection::MissingClaim("aud"),
        ),
        (
            "several aud, no azp",
            with(|c| {
                c.insert("aud".into(), json!(["client", "api"]));
            }),
            Rejection::WrongAzp,
        ),
        (
            "several aud, other azp",
            with(|c| {
                c.insert("aud".into(), json!(["client", "api"]));
                c.insert("azp".into(), json!("api"));
            }),
            Rejection::WrongAzp,
        ),
        (
            "azp not us",
            with(|c| {
                c.insert("azp".into(), json!("other"));
            }),
            Rejection::WrongAzp,
        ),
        (
            "expired",
            with(|c| {
                c.insert("exp".into(), json!(NOW - 61));
            }),
            Rejection::Expired,
        ),
        (
            "missing exp",
            with(|c| {
                c.remove("exp");
            }),
            Rejection::MissingClaim("exp"),
        ),
        (
            "absurd exp",
            with(|c| {
                c.insert("exp".into(), json!(1e300));
            }),
            Rejection::AbsurdTime("exp"),
        ),
        (
            "far exp",
            with(|c| {
                c.insert("exp".into(), json!(NOW + 400 * 86400));
            }),
            Rejection::AbsurdTime("exp"),
        ),
        (
            "negative exp",
            with(|c| {
                c.insert("exp".into(), json!(-5));
            }),
            Rejection::AbsurdTime("exp"),
        ),
        (
            "exp as text",
            with(|c| {
                c.insert("exp".into(), json!("tomorrow"));
            }),
            Rejection::Malformed("time claim is not a number"),
        ),
        (
            "iat ahead",
            with(|c| {
                c.insert("iat".into(), json!(NOW + 120));
            }),
            Rejection::IssuedInFuture,
        ),
        (
            "missing iat",
            with(|c| {
                c.remove("iat");
            }),
            Rejection::MissingClaim("iat"),
        ),
        (
            "nbf ahead",
            with(|c| {
                c.insert("nbf".into(), json!(NOW + 120));
            }),
            Rejection::NotYetValid,
        ),
        (
            "nonce differs",
            with(|c| {
                c.insert("nonce".into(), json!("n-2"));
            }),
            Rejection::NonceMismatch,
        ),
        (
            "nonce missing",
            with(|c| {
                c.remove("nonce");
            }),
            Rejection::MissingClaim("nonce"),
        ),
        (
            "sub missing",
            with(|c| {
                c.remove("sub");
            }),
            Rejection::MissingClaim("sub"),
        ),
        (
            "sub empty",
            with(|c| {
                c.insert("sub".into(), json!(""));
            }),
            Rejection::Malformed("sub is not a string of 1-255 characters"),
        ),
    ];
    for (what, c, want) in cases {
        assert_eq!(check(&sign(c)).unwrap_err(), want, "{what}");
    }
}

#[test]
fn leeway_and_extra_audiences_are_honoured() {
    let sign = |c: Value| fx().rsa.sign(&c);
    assert!(
        check(&sign(with(|c| {
            c.insert("exp".into(), json!(NOW - 30));
        })))
        .is_ok(),
        "inside leeway"
    );
    assert!(
        check(&sign(with(|c| {
            c.insert("iat".into(), json!(NOW + 30));
        })))
        .is_ok(),
        "iat skew inside leeway"
    );
    assert!(
        check(&sign(with(|c| {
            c.insert("nbf".into(), json!(NOW + 30));
        })))
        .is_ok(),
        "nbf skew inside leeway"
    );
    assert!(
        check(&sign(with(|c| {
            c.insert("aud".into(), json!("sibling"));
        })))
        .is_ok(),
        "R7 extra audience"
    );
    let multi = with(|c| {
        c.insert("aud".into(), json!(["client", "api"]));
        c.insert("azp".into(), json!("client"));
    });
    assert!(check(&sign(multi)).is_ok(), "several audiences with our azp");
    assert!(
        validate(
            &sign(with(|c| {
                c.remove("nonce");
            })),
            &fx().keys,
            &want(),
            None,
            NOW
        )
        .is_ok(),
        "no nonce expected"
    );
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let huge = "a".repeat(70_000);
    assert_eq!(check(&huge).unwrap_err(), Rejection::Malformed("too large"));
}
