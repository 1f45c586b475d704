use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::*;

fn settings(method: TokenAuthMethod) -> OidcSettings {
    let key = ClientKey(Arc::new(SigningKey::generate_p256().unwrap()));
    OidcSettings {
        issuer: "https://issuer.example".into(),
        client_id: "client a&b".into(),
        client_secret: (method != TokenAuthMethod::PrivateKeyJwt).then(|| Secret::new("s3cr:t")),
        redirect_url: "https://app.example/oauth2/callback".parse().unwrap(),
        scopes: vec!["openid".into()],
        allowed_algs: vec![],
        extra_audiences: vec![],
        leeway: std::time::Duration::from_secs(60),
        token_auth_method: method,
        http_timeout: std::time::Duration::from_secs(5),
        jwks_refetch_interval: std::time::Duration::from_secs(10),
        post_logout_redirect_url: None,
        forward_access_token: false,
        userinfo_claims: false,
        id_token_decryption: Default::default(),
        client_key: (method == TokenAuthMethod::PrivateKeyJwt).then_some(key),
        client_assertion_audience: AssertionAudience::Issuer,
        par: false,
        dpop: Default::default(),
        bearer: Default::default(),
    }
}

fn part(jwt: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

fn field<'a>(c: &'a Credentials, name: &str) -> Option<&'a str> {
    c.form.iter().find(|(k, _)| *k == name).map(|(_, v)| v.expose())
}

#[test]
fn the_assertion_names_the_client_the_issuer_and_lives_sixty_seconds() {
    let s = settings(TokenAuthMethod::PrivateKeyJwt);
    let c = credentials(&s, "https://issuer.example", "https://issuer.example/token", 1_000, false).unwrap();
    assert!(c.authorization.is_none());
    assert_eq!(field(&c, "client_assertion_type"), Some(ASSERTION_TYPE));
    assert_eq!(field(&c, "client_id"), Some("client a&b"));
    let jwt = field(&c, "client_assertion").unwrap();
    let (header, claims) = (part(jwt, 0), part(jwt, 1));
    let key = &s.client_key.as_ref().unwrap().0;
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], key.kid());
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], "client a&b");
    assert_eq!(claims["sub"], "client a&b");
    assert_eq!(claims["aud"], "https://issuer.example");
    assert_eq!(claims["iat"], 1_000);
    assert_eq!(claims["exp"], 1_060);
    assert!(claims["jti"].as_str().unwrap().len() >= 32, "a jti of 24 random bytes");
    // The signature verifies with the published public key.
    let jwks = crate::signing::jwks_document([key.public_jwk()]);
    let keys = crate::id_token::KeySet::from_jwks(&jwks).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    let dk = keys.find(Some(key.kid()), jsonwebtoken::Algorithm::ES256).unwrap();
    assert!(jsonwebtoken::decode::<Value>(jwt, dk, &v).is_ok());
}

#[test]
fn every_assertion_has_its_own_jti() {
    let s = settings(TokenAuthMethod::PrivateKeyJwt);
    let jtis: std::collections::HashSet<String> = (0..50)
        .map(|_| {
            let c = credentials(&s, "i", "t", 1, false).unwrap();
            part(field(&c, "client_assertion").unwrap(), 1)["jti"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 50);
}

#[test]
fn the_token_endpoint_audience_is_used_when_configured() {
    let mut s = settings(TokenAuthMethod::PrivateKeyJwt);
    s.client_assertion_audience = AssertionAudience::TokenEndpoint;
    let c = credentials(&s, "https://issuer.example", "https://issuer.example/token", 1, false).unwrap();
    assert_eq!(part(field(&c, "client_assertion").unwrap(), 1)["aud"], "https://issuer.example/token");
}

#[test]
fn client_id_is_not_sent_twice_and_no_secret_goes_with_an_assertion() {
    let s = settings(TokenAuthMethod::PrivateKeyJwt);
    let c = credentials(&s, "i", "t", 1, true).unwrap();
    assert_eq!(field(&c, "client_id"), None, "the PAR form already carries it");
    assert_eq!(field(&c, "client_secret"), None);
    let post = credentials(&settings(TokenAuthMethod::ClientSecretPost), "i", "t", 1, true).unwrap();
    assert_eq!(post.form.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["client_secret"]);
    let basic = credentials(&settings(TokenAuthMethod::ClientSecretBasic), "i", "t", 1, false).unwrap();
    assert!(basic.form.is_empty());
    let expected = format!("Basic {}", STANDARD.encode("client+a%26b:s3cr%3At"));
    assert_eq!(basic.authorization.as_ref().map(Secret::expose), Some(expected.as_str()));
}

#[test]
fn without_a_key_private_key_jwt_fails_and_debug_shows_no_credential() {
    let mut s = settings(TokenAuthMethod::PrivateKeyJwt);
    s.client_key = None;
    assert_eq!(credentials(&s, "i", "t", 1, false).unwrap_err(), ClientAuthError::NoKey);
    let c = credentials(&settings(TokenAuthMethod::PrivateKeyJwt), "i", "t", 1, false).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("eyJ"), "{debug}");
    // What Debug does show: whether there is an Authorization value, and the form's field names.
    assert_eq!(
        debug,
        r#"Credentials { authorization: false, form: ["client_id", "client_assertion_type", "client_assertion"] }"#
    );
    let basic = credentials(&settings(TokenAuthMethod::ClientSecretBasic), "i", "t", 1, false).unwrap();
    assert_eq!(format!("{basic:?}"), "Credentials { authorization: true, form: [] }");
}

#[test]
fn client_keys_are_equal_when_their_public_key_and_algorithm_are() {
    let pem = crate::id_token::jwe::GeneratedKey::rsa().private_pem;
    let a = ClientKey(Arc::new(SigningKey::from_pem(pem.as_bytes(), None).unwrap()));
    let same = ClientKey(Arc::new(SigningKey::from_pem(pem.as_bytes(), None).unwrap()));
    let pss = ClientKey(Arc::new(SigningKey::from_pem(pem.as_bytes(), Some(SigningAlg::Ps256)).unwrap()));
    let other = ClientKey(Arc::new(SigningKey::generate_rsa(None).unwrap()));
    assert_eq!(a, same, "the same file read twice (a reload) is no change");
    assert_ne!(a, pss, "another algorithm is a change");
    assert_ne!(a, other, "another key is a change");
    assert!(format!("{a:?}").contains(a.0.kid()) && !format!("{a:?}").contains("PRIVATE"));
}

#[test]
fn a_key_file_is_read_and_its_problems_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, crate::id_token::jwe::GeneratedKey::p256().private_pem).unwrap();
    let key = ClientKey::from_file(path.to_str().unwrap(), None).unwrap();
    assert_eq!(key.0.alg(), SigningAlg::Es256);
    let e = ClientKey::from_file("/nonexistent/k.pem", None).unwrap_err();
    assert!(e.contains("/nonexistent/k.pem") && e.contains("cannot read"), "{e}");
    std::fs::write(&path, "not a key").unwrap();
    let e = ClientKey::from_file(path.to_str().unwrap(), None).unwrap_err();
    assert!(e.contains("no private key"), "{e}");
}

#[test]
fn a_client_without_a_secret_names_itself_in_the_form() {
    let mut s = settings(TokenAuthMethod::ClientSecretBasic);
    s.client_secret = None;
    let c = credentials(&s, "i", "t", 1, false).unwrap();
    assert!(c.authorization.is_none(), "no Basic header without a secret");
    assert_eq!(field(&c, "client_id"), Some("client a&b"));
    assert!(credentials(&s, "i", "t", 1, true).unwrap().form.is_empty(), "not twice");
    let post = credentials(&settings(TokenAuthMethod::ClientSecretPost), "i", "t", 1, false).unwrap();
    assert_eq!(field(&post, "client_id"), Some("client a&b"));
    assert_eq!(field(&post, "client_secret"), Some("s3cr:t"));
}
