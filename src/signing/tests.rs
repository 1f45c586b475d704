use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

use super::{SigningAlg, SigningKey, SigningKeyError, jwk_thumbprint as thumbprint, jwks_document};

const RSA_PKCS1: &str = include_str!("testdata/rsa-pkcs1.pem");
const RSA_1024: &str = include_str!("testdata/rsa-1024-pkcs1.pem");
const EC_SEC1: &str = include_str!("testdata/ec-sec1.pem");

/// Verifies `jws` with jsonwebtoken (an independent JWS implementation) from the published JWK alone.
fn verify(jws: &str, jwk: &Value) -> Value {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let alg = jsonwebtoken::decode_header(jws).unwrap().alg;
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(jws, &key, &v).unwrap().claims
}

fn header_of(jws: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jws.split('.').next().unwrap()).unwrap()).unwrap()
}

#[test]
fn each_algorithm_signs_what_an_independent_verifier_accepts() {
    let claims = json!({"iss": "idgate", "n": 1});
    let keys = [
        SigningKey::generate_p256().unwrap(),
        SigningKey::generate_rsa(None).unwrap(),
        SigningKey::generate_rsa(Some(SigningAlg::Ps256)).unwrap(),
        SigningKey::from_pem(RSA_PKCS1.as_bytes(), None).unwrap(),
        SigningKey::from_pem(EC_SEC1.as_bytes(), None).unwrap(),
    ];
    let want = [Algorithm::ES256, Algorithm::RS256, Algorithm::PS256, Algorithm::RS256, Algorithm::ES256];
    for (key, alg) in keys.iter().zip(want) {
        let jws = key.sign_jwt(Some("JWT"), &claims).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&jws).unwrap().alg, alg);
        assert_eq!(verify(&jws, &key.public_jwk()), claims);
        let header = header_of(&jws);
        assert_eq!(header["kid"], key.kid());
        assert_eq!(header["typ"], "JWT");
    }
}

#[test]
fn a_signature_does_not_verify_under_another_key() {
    let a = SigningKey::generate_p256().unwrap();
    let b = SigningKey::generate_p256().unwrap();
    let jws = a.sign_jwt(None, &json!({"x": 1})).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(b.public_jwk()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_aud = false;
    let err = jsonwebtoken::decode::<Value>(&jws, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap_err();
    assert_eq!(err.kind(), &jsonwebtoken::errors::ErrorKind::InvalidSignature);
    assert_ne!(a.kid(), b.kid(), "two keys, two kids");
}

#[test]
fn pkcs8_keys_read_back_with_the_same_kid() {
    let rsa = crate::id_token::jwe::GeneratedKey::rsa();
    let ec = crate::id_token::jwe::GeneratedKey::p256();
    let r1 = SigningKey::from_pem(rsa.private_pem.as_bytes(), None).unwrap();
    let r2 = SigningKey::from_pem(rsa.private_pem.as_bytes(), Some(SigningAlg::Ps256)).unwrap();
    assert_eq!(r1.alg(), SigningAlg::Rs256);
    assert_eq!(r2.alg(), SigningAlg::Ps256);
    assert_eq!(r1.kid(), r2.kid(), "the kid names the key, not the algorithm");
    let e = SigningKey::from_pem(ec.private_pem.as_bytes(), None).unwrap();
    assert_eq!(e.alg(), SigningAlg::Es256);
    // The thumbprint is of the public key the JWE side computed independently.
    let mut public: Map<String, Value> = ec.public_jwk.as_object().unwrap().clone();
    public.remove("use");
    assert_eq!(e.kid(), thumbprint(&public));
}

#[test]
fn bad_keys_are_refused_with_their_reason() {
    assert_eq!(SigningKey::from_pem(b"not a pem", None).unwrap_err(), SigningKeyError::NoKey);
    let small = SigningKey::from_pem(RSA_1024.as_bytes(), None).unwrap_err();
    assert_eq!(small, SigningKeyError::Unusable, "aws-lc-rs itself refuses keys below 2048 bits");
    assert_eq!(
        SigningKey::from_pem(EC_SEC1.as_bytes(), Some(SigningAlg::Rs256)).unwrap_err(),
        SigningKeyError::AlgMismatch { alg: "RS256", kind: "n EC P-256" }
    );
    assert_eq!(
        SigningKey::from_pem(RSA_PKCS1.as_bytes(), Some(SigningAlg::Es256)).unwrap_err(),
        SigningKeyError::AlgMismatch { alg: "ES256", kind: "n RSA" }
    );
    let cert_only = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert_eq!(SigningKey::from_pem(cert_only.as_bytes(), None).unwrap_err(), SigningKeyError::NoKey);
}

#[test]
fn thumbprint_matches_rfc_7638_example() {
    // RFC 7638 §3.1.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let members: Map<String, Value> = json!({"e": "AQAB", "kty": "RSA", "n": n}).as_object().unwrap().clone();
    assert_eq!(thumbprint(&members), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

#[test]
fn published_jwks_carry_no_private_member() {
    let keys = [SigningKey::generate_p256().unwrap(), SigningKey::from_pem(RSA_PKCS1.as_bytes(), None).unwrap()];
    let doc: Value = serde_json::from_slice(&jwks_document(keys.iter().map(SigningKey::public_jwk))).unwrap();
    let list = doc["keys"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (jwk, key) in list.iter().zip(&keys) {
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], key.alg().name());
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{private} published");
        }
    }
    let bare = keys[0].public_jwk_bare();
    assert_eq!(bare.as_object().unwrap().keys().collect::<Vec<_>>(), ["crv", "kty", "x", "y"]);
    assert!(!format!("{:?}", keys[1]).contains("BEGIN"), "Debug shows no key");
}

#[test]
fn the_header_alg_is_always_the_keys_own() {
    let key = SigningKey::generate_p256().unwrap();
    let mut header = Map::new();
    header.insert("alg".into(), json!("none"));
    header.insert("typ".into(), json!("dpop+jwt"));
    let jws = key.sign(header, &json!({})).unwrap();
    assert_eq!(header_of(&jws)["alg"], "ES256");
    assert_eq!(header_of(&jws)["typ"], "dpop+jwt");
}

#[test]
fn algorithm_names_round_trip_and_others_are_unknown() {
    for alg in [SigningAlg::Rs256, SigningAlg::Ps256, SigningAlg::Es256] {
        assert_eq!(SigningAlg::from_name(alg.name()), Some(alg));
    }
    for other in ["HS256", "none", "es256", "RS384", "EdDSA", ""] {
        assert_eq!(SigningAlg::from_name(other), None, "{other}");
    }
}

#[test]
fn larger_rsa_keys_are_accepted() {
    let pair = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
    let key = SigningKey::with_alg(super::Private::Rsa(pair), None).unwrap();
    assert_eq!(key.alg(), SigningAlg::Rs256);
    let jws = key.sign_jwt(None, &json!({"a": 1})).unwrap();
    assert_eq!(verify(&jws, &key.public_jwk()), json!({"a": 1}));
}

#[test]
fn debug_names_the_key_and_nothing_secret() {
    let key = SigningKey::generate_p256().unwrap();
    assert_eq!(format!("{key:?}"), format!("SigningKey {{ alg: \"ES256\", kid: \"{}\" }}", key.kid()));
}
