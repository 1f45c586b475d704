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

// === Issue 19: the boundaries and choices each rule makes, one assertion per mutant cargo-mutants found alive ===

fn at(c: Value, now: i64) -> Result<Claims, Rejection> {
    validate(&fx().rsa.sign(&c), &fx().keys, &want(), Some("n-1"), now)
}

fn set(name: &str, v: Value) -> Value {
    with(|c| {
        c.insert(name.into(), v);
    })
}

#[test]
fn exp_iat_and_nbf_boundaries_sit_on_the_second() {
    // Leeway 60: `exp` is still good 59 s after it, refused from the 60th second on.
    assert!(at(set("exp", json!(NOW - 59)), NOW).is_ok());
    assert_eq!(at(set("exp", json!(NOW - 60)), NOW).unwrap_err(), Rejection::Expired);
    // `iat` and `nbf` may be up to the leeway ahead, not a second more.
    assert!(at(set("iat", json!(NOW + 60)), NOW).is_ok());
    assert_eq!(at(set("iat", json!(NOW + 61)), NOW).unwrap_err(), Rejection::IssuedInFuture);
    assert!(at(set("nbf", json!(NOW + 60)), NOW).is_ok());
    assert_eq!(at(set("nbf", json!(NOW + 61)), NOW).unwrap_err(), Rejection::NotYetValid);
    // The lifetime cap: `exp` exactly 366 days ahead is accepted, one second more is absurd.
    assert!(at(set("exp", json!(NOW + 31_622_400)), NOW).is_ok());
    assert_eq!(at(set("exp", json!(NOW + 31_622_401)), NOW).unwrap_err(), Rejection::AbsurdTime("exp"));
    // Time zero is a date, not an absurdity; a negative one is.
    assert!(at(set("nbf", json!(0)), NOW).is_ok());
    assert_eq!(at(set("nbf", json!(-1)), NOW).unwrap_err(), Rejection::AbsurdTime("nbf"));
}

#[test]
fn fractional_numeric_dates_are_truncated_to_the_second() {
    // RFC 7519 allows fractions; they count as the whole second before them.
    let c = at(set("exp", json!(NOW as f64 + 3600.75)), NOW).unwrap();
    assert_eq!(c.exp(), NOW + 3600);
    assert!(at(set("exp", json!(NOW as f64 - 58.5)), NOW).is_ok(), "second NOW-59: inside the leeway");
    assert_eq!(at(set("exp", json!(NOW as f64 - 59.5)), NOW).unwrap_err(), Rejection::Expired, "second NOW-60");
    assert!(at(set("iat", json!(NOW as f64 + 60.999)), NOW).is_ok(), "iat NOW+60.999 is second NOW+60");
    assert_eq!(at(set("iat", json!(NOW as f64 + 61.001)), NOW).unwrap_err(), Rejection::IssuedInFuture);
    assert!(at(set("nbf", json!(0.5)), NOW).is_ok());
    // Negative, huge or integer-overflowing fractions are absurd, named after their claim.
    assert_eq!(at(set("nbf", json!(-0.5)), NOW).unwrap_err(), Rejection::AbsurdTime("nbf"));
    assert_eq!(at(set("iat", json!(1e300)), NOW).unwrap_err(), Rejection::AbsurdTime("iat"));
    assert_eq!(at(set("iat", json!(9.0e15)), NOW).unwrap_err(), Rejection::AbsurdTime("iat"));
    assert_eq!(at(set("iat", json!(u64::MAX)), NOW).unwrap_err(), Rejection::AbsurdTime("iat"));
}

#[test]
fn format_rejections_name_their_reason() {
    let good = fx().rsa.sign(&claims());
    let p: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, &str)> = vec![
        (format!("{}.{}.{}.a.b", p[0], p[1], p[2]), "encrypted (JWE) ID tokens are not supported"),
        (format!("{}.{}.{}.a", p[0], p[1], p[2]), "not three dot-separated parts"),
        (format!(".{}.{}", p[1], p[2]), "empty part"),
        (format!("{}..{}", p[0], p[2]), "empty part"),
        (format!("{}.{}.", p[0], p[1]), "empty part"),
        (format!("!!!.{}.{}", p[1], p[2]), "header is not base64url"),
        (format!("{}.%%%.{}", p[0], p[2]), "payload is not base64url"),
        (format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{}"), p[1], p[2]), "header is not a JSON object with alg"),
        (format!("{}.{}.{}", p[0], URL_SAFE_NO_PAD.encode("\"x\""), p[2]), "payload is not a JSON object"),
    ];
    for (token, reason) in cases {
        assert_eq!(check(&token).unwrap_err(), Rejection::Malformed(reason), "{reason}");
    }
    let crit = fx().rsa.sign_with_header(&json!({"alg": "RS256", "kid": fx().rsa.kid, "crit": ["x"]}), &claims());
    assert_eq!(check(&crit).unwrap_err(), Rejection::Malformed("critical header extensions are not understood"));
}

#[test]
fn the_size_limit_is_64_kib_exactly() {
    let at_limit = "a".repeat(65_536);
    assert_eq!(check(&at_limit).unwrap_err(), Rejection::Malformed("not three dot-separated parts"));
    let over = "a".repeat(65_537);
    assert_eq!(check(&over).unwrap_err(), Rejection::Malformed("too large"));
    assert_eq!(kid_of(&over, &want().allowed_algs), Err(Rejection::Malformed("too large")));
}

#[test]
fn sub_length_and_nonce_type() {
    assert_eq!(at(set("sub", json!("s".repeat(255))), NOW).unwrap().sub(), "s".repeat(255));
    assert_eq!(
        at(set("sub", json!("s".repeat(256))), NOW).unwrap_err(),
        Rejection::Malformed("sub is not a string of 1-255 characters")
    );
    assert_eq!(
        at(set("sub", json!(7)), NOW).unwrap_err(),
        Rejection::Malformed("sub is not a string of 1-255 characters")
    );
    assert_eq!(at(set("nonce", json!(1)), NOW).unwrap_err(), Rejection::NonceMismatch);
    assert_eq!(at(set("nonce", json!("n-1 ")), NOW).unwrap_err(), Rejection::NonceMismatch, "a longer nonce");
}

#[test]
fn audience_and_azp_choices() {
    // One audience that is ours, no azp: fine. Our azp among several: fine. The extra audience as azp: fine.
    assert!(at(set("aud", json!(["client"])), NOW).is_ok(), "a one-member list needs no azp");
    assert!(
        at(
            with(|c| {
                c.insert("aud".into(), json!(["api", "sibling"]));
                c.insert("azp".into(), json!("sibling"));
            }),
            NOW
        )
        .is_ok()
    );
    assert_eq!(at(set("aud", json!([])), NOW).unwrap_err(), Rejection::WrongAudience);
    assert_eq!(
        at(set("aud", json!(["client", 5])), NOW).unwrap_err(),
        Rejection::Malformed("aud is not a string or an array of strings")
    );
    assert_eq!(at(set("azp", json!(5)), NOW).unwrap_err(), Rejection::WrongAzp);
    assert_eq!(at(set("iss", json!(5)), NOW).unwrap_err(), Rejection::WrongIssuer);
}

#[test]
fn the_kid_picks_the_key_among_two_of_the_same_family() {
    let f = fx();
    // Two RSA keys, neither pinned to an algorithm: only the kid tells them apart, and the wrong one must fail.
    let mut a = f.rsa.jwk();
    let mut b = f.other.jwk();
    a.as_object_mut().unwrap().remove("alg");
    b.as_object_mut().unwrap().remove("alg");
    for order in [[&a, &b], [&b, &a]] {
        let two = KeySet::from_jwks(json!({ "keys": order }).to_string().as_bytes()).unwrap();
        for key in [&f.rsa, &f.other] {
            let c = validate(&key.sign(&claims()), &two, &want(), Some("n-1"), NOW).unwrap();
            assert_eq!(c.sub(), "alice");
        }
        // A's signature under B's kid: B is chosen and refuses it.
        let swapped = f.rsa.sign_with_header(&json!({"alg": "RS256", "kid": f.other.kid}), &claims());
        assert_eq!(validate(&swapped, &two, &want(), Some("n-1"), NOW).unwrap_err(), Rejection::BadSignature);
    }
}

#[test]
fn a_key_is_used_only_for_its_family_and_its_pinned_alg() {
    let f = fx();
    // An EC key published without `alg`, named by an RS256 token: wrong family, so no key at all.
    let mut ec = f.ec.jwk();
    ec.as_object_mut().unwrap().remove("alg");
    let set = KeySet::from_jwks(json!({ "keys": [ec] }).to_string().as_bytes()).unwrap();
    let token = f.rsa.sign_with_header(&json!({"alg": "RS256", "kid": f.ec.kid}), &claims());
    assert_eq!(validate(&token, &set, &want(), Some("n-1"), NOW).unwrap_err(), Rejection::UnknownKey);
    // An RSA key pinned to PS256 by its JWK does not verify an RS256 token, even one it signed.
    let mut pinned = f.rsa.jwk();
    pinned["alg"] = json!("PS256");
    let set = KeySet::from_jwks(json!({ "keys": [pinned] }).to_string().as_bytes()).unwrap();
    assert_eq!(validate(&f.rsa.sign(&claims()), &set, &want(), Some("n-1"), NOW).unwrap_err(), Rejection::UnknownKey);
    // The same key unpinned verifies it.
    let mut free = f.rsa.jwk();
    free.as_object_mut().unwrap().remove("alg");
    let set = KeySet::from_jwks(json!({ "keys": [free] }).to_string().as_bytes()).unwrap();
    assert!(validate(&f.rsa.sign(&claims()), &set, &want(), Some("n-1"), NOW).is_ok());
}

#[test]
fn unusable_jwks_entries_are_skipped() {
    let f = fx();
    let mut enc = f.other.jwk();
    enc["use"] = json!("enc");
    let mut mismatched = f.other.jwk();
    mismatched["alg"] = json!("ES256");
    mismatched["kid"] = json!("mismatched");
    // An octet key pair on a curve other than Ed25519 (jsonwebtoken knows no X25519; any other curve stands in).
    let okp = json!({"kty": "OKP", "crv": "P-384", "kid": "okp", "x": URL_SAFE_NO_PAD.encode([9u8; 32])});
    let p521 = json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"});
    let hs = json!({"kty": "RSA", "kid": "hs-alg", "alg": "HS256", "n": f.other.jwk()["n"], "e": "AQAB"});
    let jwks = json!({"keys": [enc, mismatched, okp, p521, hs, {"kty": "oct", "k": "c2VjcmV0"}, f.rsa.jwk()]});
    let set = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(!set.is_empty());
    assert!(set.has_kid(&f.rsa.kid));
    for gone in [f.other.kid.as_str(), "mismatched", "okp", "p521", "hs-alg"] {
        assert!(!set.has_kid(gone), "{gone} must be skipped");
    }
    assert_eq!(format!("{set:?}"), format!("[{:?}]", f.rsa.kid));
    let no_kid = KeySet::from_jwks(
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": f.ec.jwk()["x"], "y": f.ec.jwk()["y"]}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(format!("{no_kid:?}"), "[\"-\"]");
    assert!(KeySet::default().is_empty());
    assert_eq!(
        KeySet::from_jwks(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}").unwrap_err(),
        KeySetError::NoUsableKey
    );
    assert_eq!(KeySet::from_jwks(b"[]").unwrap_err(), KeySetError::NotJwks);
    assert_eq!(fx().keys.len(), 3, "RSA, EC and PS keys; the oct key is not loaded");
}

#[test]
fn kid_of_reads_the_header() {
    let algs = want().allowed_algs;
    assert_eq!(kid_of(&fx().rsa.sign(&claims()), &algs).unwrap().as_deref(), Some(fx().rsa.kid.as_str()));
    let none = fx().rsa.sign_with_header(&json!({"alg": "RS256"}), &claims());
    assert_eq!(kid_of(&none, &algs), Ok(None));
    assert_eq!(kid_of(&fx().ps.sign(&claims()), &algs), Err(Rejection::AlgNotAllowed));
}

/// A signer for each algorithm the configuration accepts; the development issuer signs only RS256/PS256/ES256/ES384.
mod signers {
    use aws_lc_rs::{
        rand::SystemRandom,
        rsa::KeySize,
        signature::{self, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair},
    };
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use serde_json::{Value, json};

    use crate::dev_issuer::keys::signing_input;

    pub struct Rsa(RsaKeyPair);

    impl Rsa {
        pub fn generate() -> Self {
            Self(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
        }
        pub fn jwk(&self, kid: &str, alg: &str) -> Value {
            let pk = self.0.public_key();
            json!({
                "kty": "RSA", "kid": kid, "alg": alg,
                "n": URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero()),
                "e": URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero()),
            })
        }
        pub fn sign(&self, kid: &str, alg: &str, claims: &Value) -> String {
            let padding: &'static dyn RsaEncoding = match alg {
                "RS256" => &signature::RSA_PKCS1_SHA256,
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                "PS256" => &signature::RSA_PSS_SHA256,
                "PS384" => &signature::RSA_PSS_SHA384,
                "PS512" => &signature::RSA_PSS_SHA512,
                other => panic!("{other} is not an RSA algorithm"),
            };
            let input = signing_input(&json!({"alg": alg, "kid": kid}), claims);
            let mut sig = vec![0; self.0.public_modulus_len()];
            self.0.sign(padding, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }

    pub struct Ed(Ed25519KeyPair);

    impl Ed {
        pub fn generate() -> Self {
            Self(Ed25519KeyPair::generate().unwrap())
        }
        pub fn jwk(&self, kid: &str) -> Value {
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": URL_SAFE_NO_PAD.encode(self.0.public_key().as_ref())})
        }
        pub fn sign(&self, kid: &str, claims: &Value) -> String {
            let input = signing_input(&json!({"alg": "EdDSA", "kid": kid}), claims);
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(self.0.sign(input.as_bytes()).as_ref()))
        }
    }
}

#[test]
fn every_configurable_algorithm_is_named_parsed_and_verified() {
    use Algorithm::*;
    let rsa = signers::Rsa::generate();
    let ed = signers::Ed::generate();
    let es384 = SigningKey::generate(DevAlg::ES384);
    let all = [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA];
    for alg in all {
        let name = alg_name(alg);
        assert_eq!(name, format!("{alg:?}"), "JOSE name of {alg:?}");
        // A JWKS with this algorithm's key pinned to it by its JWK `alg`, and a token signed with it.
        let (jwk, token) = match alg {
            ES256 => (fx().ec.jwk(), fx().ec.sign(&claims())),
            ES384 => (es384.jwk(), es384.sign(&claims())),
            EdDSA => (ed.jwk("ed"), ed.sign("ed", &claims())),
            _ => (rsa.jwk("rsa", name), rsa.sign("rsa", name, &claims())),
        };
        let keys = KeySet::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1, "{name} key loaded");
        let mut w = want();
        w.allowed_algs = vec![alg];
        let c = validate(&token, &keys, &w, Some("n-1"), NOW).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.sub(), "alice", "{name}");
        // The same token with every other algorithm allowed but this one: refused by name.
        w.allowed_algs = all.into_iter().filter(|a| *a != alg).collect();
        assert_eq!(validate(&token, &keys, &w, Some("n-1"), NOW).unwrap_err(), Rejection::AlgNotAllowed, "{name}");
    }
    for (alg, name) in [(HS256, "HS256"), (HS384, "HS384"), (HS512, "HS512")] {
        assert_eq!(alg_name(alg), name);
    }
}

#[test]
fn rejection_labels_are_distinct_and_stable() {
    let all = [
        (Rejection::Malformed("x"), "malformed"),
        (Rejection::AlgNotAllowed, "alg_not_allowed"),
        (Rejection::UnknownKey, "unknown_key"),
        (Rejection::BadSignature, "bad_signature"),
        (Rejection::WrongIssuer, "wrong_issuer"),
        (Rejection::WrongAudience, "wrong_audience"),
        (Rejection::WrongAzp, "wrong_azp"),
        (Rejection::Expired, "expired"),
        (Rejection::NotYetValid, "not_yet_valid"),
        (Rejection::IssuedInFuture, "issued_in_future"),
        (Rejection::AbsurdTime("exp"), "absurd_time"),
        (Rejection::MissingClaim("sub"), "missing_claim"),
        (Rejection::NonceMismatch, "nonce_mismatch"),
        (Rejection::NotALogoutToken("x"), "not_a_logout_token"),
    ];
    for (r, label) in all {
        assert_eq!(r.reason(), label, "{r:?}");
    }
}

fn logout_claims() -> Value {
    json!({
        "iss": ISS, "aud": "client", "sub": "alice", "sid": "s-1", "jti": "j-1", "iat": NOW - 10, "exp": NOW + 120,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    })
}

fn logout(f: impl FnOnce(&mut serde_json::Map<String, Value>), now: i64, leeway: i64) -> Result<Claims, Rejection> {
    let mut c = logout_claims();
    f(c.as_object_mut().unwrap());
    let mut w = want();
    w.leeway = leeway;
    validate_logout(&fx().rsa.sign(&c), &fx().keys, &w, now)
}

#[test]
fn logout_token_rules() {
    assert_eq!(logout(|_| {}, NOW, 60).unwrap().sub(), "alice");
    type Edit = Box<dyn FnOnce(&mut serde_json::Map<String, Value>)>;
    let cases: Vec<(&str, Edit, Rejection)> = vec![
        (
            "nonce",
            Box::new(|c| {
                c.insert("nonce".into(), json!("n"));
            }),
            Rejection::NotALogoutToken("a logout token must not carry a nonce"),
        ),
        (
            "no events",
            Box::new(|c| {
                c.remove("events");
            }),
            Rejection::NotALogoutToken("events lacks the back-channel logout event"),
        ),
        (
            "other event",
            Box::new(|c| {
                c.insert("events".into(), json!({"http://example.com/other": {}}));
            }),
            Rejection::NotALogoutToken("events lacks the back-channel logout event"),
        ),
        (
            "event not an object",
            Box::new(|c| {
                c.insert("events".into(), json!({"http://schemas.openid.net/event/backchannel-logout": "yes"}));
            }),
            Rejection::NotALogoutToken("events lacks the back-channel logout event"),
        ),
        (
            "events a list",
            Box::new(|c| {
                c.insert("events".into(), json!(["http://schemas.openid.net/event/backchannel-logout"]));
            }),
            Rejection::NotALogoutToken("events lacks the back-channel logout event"),
        ),
        (
            "no jti",
            Box::new(|c| {
                c.remove("jti");
            }),
            Rejection::MissingClaim("jti"),
        ),
        (
            "empty jti",
            Box::new(|c| {
                c.insert("jti".into(), json!(""));
            }),
            Rejection::MissingClaim("jti"),
        ),
        (
            "jti a number",
            Box::new(|c| {
                c.insert("jti".into(), json!(5));
            }),
            Rejection::MissingClaim("jti"),
        ),
        (
            "neither sid nor sub",
            Box::new(|c| {
                c.remove("sid");
                c.remove("sub");
            }),
            Rejection::NotALogoutToken("neither sid nor sub"),
        ),
        (
            "empty sid and sub",
            Box::new(|c| {
                c.insert("sid".into(), json!(""));
                c.insert("sub".into(), json!(""));
            }),
            Rejection::NotALogoutToken("neither sid nor sub"),
        ),
        (
            "wrong issuer",
            Box::new(|c| {
                c.insert("iss".into(), json!("https://evil.example.com"));
            }),
            Rejection::WrongIssuer,
        ),
        (
            "no exp, no iat",
            Box::new(|c| {
                c.remove("exp");
                c.remove("iat");
            }),
            Rejection::MissingClaim("iat"),
        ),
    ];
    for (what, f, want) in cases {
        assert_eq!(logout(f, NOW, 60).unwrap_err(), want, "{what}");
    }
    // A sid alone or a sub alone is enough.
    assert!(logout(|c| drop(c.remove("sub")), NOW, 60).is_ok());
    assert!(logout(|c| drop(c.remove("sid")), NOW, 60).is_ok());
    // With `exp`, the ID-token rules apply as they are: the leeway is not capped.
    assert!(logout(|_| {}, NOW + 120 + 599, 600).is_ok());
    assert_eq!(logout(|_| {}, NOW + 120 + 600, 600).unwrap_err(), Rejection::Expired);
}

#[test]
fn a_logout_token_without_exp_is_fresh_for_300_seconds_plus_leeway_capped_at_300() {
    let no_exp = |iat: i64, now: i64, leeway: i64| {
        logout(
            |c| {
                c.remove("exp");
                c.insert("iat".into(), json!(iat));
            },
            now,
            leeway,
        )
    };
    const IAT: i64 = NOW - 1000;
    for leeway in [0, 60, 300] {
        assert!(no_exp(IAT, IAT, leeway).is_ok(), "fresh, leeway {leeway}");
        assert!(no_exp(IAT, IAT + 300 + leeway - 1, leeway).is_ok(), "last good second, leeway {leeway}");
        assert_eq!(no_exp(IAT, IAT + 300 + leeway, leeway).unwrap_err(), Rejection::Expired, "leeway {leeway}");
    }
    // A larger leeway counts as 300 here: a token without exp is never good for more than 10 minutes.
    assert!(no_exp(IAT, IAT + 599, 3600).is_ok());
    assert_eq!(no_exp(IAT, IAT + 600, 3600).unwrap_err(), Rejection::Expired);
    // `iat` ahead of the clock still counts against the leeway, and an absurd `iat` does not overflow.
    assert!(no_exp(NOW + 60, NOW, 60).is_ok());
    assert_eq!(no_exp(NOW + 61, NOW, 60).unwrap_err(), Rejection::IssuedInFuture);
    assert_eq!(no_exp(i64::MAX, NOW, 60).unwrap_err(), Rejection::AbsurdTime("exp"));
    // The synthetic `exp` is the validator's: the claims handed back carry none.
    let c = no_exp(NOW - 10, NOW, 60).unwrap();
    assert!(c.get("exp").is_none());
}
