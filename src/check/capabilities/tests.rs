use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::{
    id_token::jwe::{DecryptionKeys, GeneratedKey},
    oidc::client_auth::ClientKey,
    signing::SigningKey,
};

const JWKS: &str = "https://app.example/oauth2/jwks";

fn metadata(extra: serde_json::Value) -> Metadata {
    let mut doc = json!({
        "issuer": "https://issuer.example",
        "authorization_endpoint": "https://issuer.example/auth",
        "token_endpoint": "https://issuer.example/token",
        "jwks_uri": "https://issuer.example/jwks",
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    serde_json::from_value(doc).unwrap()
}

fn settings() -> OidcSettings {
    OidcSettings {
        issuer: "https://issuer.example".into(),
        client_id: "c".into(),
        client_secret: Some(crate::config::Secret::new("s")),
        redirect_url: "https://app.example/oauth2/callback".parse().unwrap(),
        scopes: vec!["openid".into()],
        allowed_algs: vec![],
        extra_audiences: vec![],
        leeway: std::time::Duration::from_secs(60),
        token_auth_method: TokenAuthMethod::ClientSecretBasic,
        http_timeout: std::time::Duration::from_secs(5),
        jwks_refetch_interval: std::time::Duration::from_secs(10),
        post_logout_redirect_url: None,
        forward_access_token: false,
        userinfo_claims: false,
        id_token_decryption: Default::default(),
        client_key: None,
        client_assertion_audience: Default::default(),
        par: false,
        dpop: Default::default(),
        bearer: Default::default(),
    }
}

fn keyed() -> OidcSettings {
    OidcSettings {
        token_auth_method: TokenAuthMethod::PrivateKeyJwt,
        client_secret: None,
        client_key: Some(ClientKey(Arc::new(SigningKey::generate_p256().unwrap()))),
        ..settings()
    }
}

fn with_key(pem: &str, required: bool) -> OidcSettings {
    let mut s = settings();
    s.id_token_decryption.keys = Some(Arc::new(DecryptionKeys::from_file_contents(pem.as_bytes()).unwrap()));
    s.id_token_decryption.required = required;
    s
}

fn one(s: &OidcSettings, m: &Metadata, i: usize) -> Finding {
    findings(s, m, JWKS).remove(i)
}

#[test]
fn client_auth_methods_supported_vs_configured() {
    let none = metadata(json!({}));
    let f = one(&settings(), &none, 0);
    assert_eq!(f.level, Level::Ok, "client_secret_basic is the default when the list is absent: {f:?}");
    let f = one(&keyed(), &none, 0);
    assert_eq!(f.level, Level::Error);
    assert!(f.text.contains("does not list private_key_jwt") && f.text.contains("set oidc.token_auth_method"), "{f:?}");
    let m = metadata(json!({"token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256"]}));
    let f = one(&keyed(), &m, 0);
    assert_eq!(f.level, Level::Ok);
    assert!(f.text.contains("ES256") && f.text.contains(JWKS), "{f:?}");
    assert!(one(&settings(), &m, 0).text.contains("also accepts private_key_jwt"));
    let rs = metadata(json!({"token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"]}));
    let f = one(&keyed(), &rs, 0);
    assert_eq!(f.level, Level::Error);
    assert!(f.text.contains("oidc.client_key_alg"), "{f:?}");
}

#[test]
fn encryption_advertised_vs_key_given() {
    let ec = GeneratedKey::p256().private_pem;
    let ecdh = metadata(json!({"id_token_encryption_alg_values_supported": ["ECDH-ES"],
        "id_token_encryption_enc_values_supported": ["A128CBC-HS256"]}));
    let f = one(&with_key(&ec, true), &ecdh, 1);
    assert_eq!(f.level, Level::Ok, "{f:?}");
    assert!(f.text.contains("ECDH-ES + A128CBC-HS256, required"), "{f:?}");
    let rsa_only = metadata(json!({"id_token_encryption_alg_values_supported": ["RSA-OAEP-256"]}));
    let f = one(&with_key(&ec, true), &rsa_only, 1);
    assert_eq!(f.level, Level::Error, "{f:?}");
    assert!(f.text.contains("none of which fits the key(s) given (EC)"), "{f:?}");
    assert_eq!(one(&with_key(&ec, false), &rsa_only, 1).level, Level::Warn, "not required: a warning");
    let nothing = metadata(json!({}));
    let f = one(&with_key(&ec, true), &nothing, 1);
    assert_eq!(f.level, Level::Error);
    assert!(f.text.contains("remove oidc.id_token_decryption_key_file"), "{f:?}");
    let f = one(&settings(), &ecdh, 1);
    assert_eq!(f.level, Level::Note);
    assert!(f.text.contains("set oidc.id_token_decryption_key_file"), "{f:?}");
    let mut narrow = with_key(&ec, true);
    narrow.id_token_decryption.allowed.encs = vec![crate::id_token::jwe::ContentEnc::A256Gcm];
    let f = one(&narrow, &ecdh, 1);
    assert_eq!(f.level, Level::Error);
    assert!(f.text.contains("oidc.id_token_encryption_encs"), "{f:?}");
}

#[test]
fn par_support_vs_setting() {
    let offered = metadata(json!({"pushed_authorization_request_endpoint": "https://issuer.example/par"}));
    let required = metadata(json!({"pushed_authorization_request_endpoint": "https://issuer.example/par",
        "require_pushed_authorization_requests": true}));
    let absent = metadata(json!({}));
    let on = OidcSettings { par: true, ..settings() };
    assert_eq!(one(&on, &offered, 2).level, Level::Ok);
    assert!(one(&settings(), &offered, 2).text.contains("oidc.par = true"));
    assert!(one(&settings(), &required, 2).text.contains("required by the issuer"));
    let f = one(&on, &absent, 2);
    assert_eq!(f.level, Level::Error);
    assert!(f.text.contains("set oidc.par = false"), "{f:?}");
    assert_eq!(one(&settings(), &absent, 2).level, Level::Note);
}

#[test]
fn dpop_support_is_reported() {
    let f = one(&settings(), &metadata(json!({"dpop_signing_alg_values_supported": ["ES256"]})), 3);
    assert!(f.text.contains("ES256") && f.text.contains("oidc.dpop = true"), "{f:?}");
    assert!(one(&settings(), &metadata(json!({})), 3).text.contains("not offered"));
}

#[test]
fn dpop_on_is_checked_against_the_issuers_algorithms() {
    use crate::oidc::dpop::{DpopKey, DpopMode, DpopSettings};
    let es = metadata(json!({"dpop_signing_alg_values_supported": ["ES256"]}));
    let on = |key: Option<DpopKey>| OidcSettings { dpop: DpopSettings { mode: DpopMode::On, key }, ..settings() };
    let f = one(&on(None), &es, 3);
    assert_eq!(f.level, Level::Ok, "{f:?}");
    assert!(f.text.contains("ES256") && f.text.contains("generated"), "{f:?}");
    let rsa = DpopKey::from_pem(crate::id_token::jwe::GeneratedKey::rsa().private_pem.as_bytes()).unwrap();
    let f = one(&on(Some(rsa.clone())), &es, 3);
    assert_eq!(f.level, Level::Error, "{f:?}");
    assert!(f.text.contains("RS256, PS256") && f.text.contains("oidc.dpop_key_file"), "{f:?}");
    let ps = metadata(json!({"dpop_signing_alg_values_supported": ["ES256", "PS256"]}));
    assert!(one(&on(Some(rsa)), &ps, 3).text.contains("signed PS256"));
    let f = one(&on(None), &metadata(json!({})), 3);
    assert_eq!(f.level, Level::Warn, "{f:?}");
    assert!(f.text.contains("set oidc.dpop = false"), "{f:?}");
    let off = OidcSettings { dpop: DpopSettings { mode: DpopMode::Off, key: None }, ..settings() };
    assert!(one(&off, &es, 3).text.contains("off (oidc.dpop = false)"));
}

#[test]
fn a_client_key_is_checked_only_when_private_key_jwt_is_the_method() {
    // A key is configured (for JWE or DPoP, say) but the method is client_secret_basic: the key's algorithm is not
    // held against the issuer's signing list.
    let basic_with_key = OidcSettings { token_auth_method: TokenAuthMethod::ClientSecretBasic, ..keyed() };
    let rs = metadata(json!({"token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"]}));
    let f = one(&basic_with_key, &rs, 0);
    assert_eq!((f.level, f.text.as_str()), (Level::Ok, "client auth: client_secret_basic, supported by the issuer"));
}

#[test]
fn findings_quote_the_issuer_with_control_and_bidi_characters_escaped() {
    assert_eq!(shown("plain: ünïcode ✓"), "plain: ünïcode ✓");
    assert_eq!(shown("a\u{1b}[31mb\rc\u{7f}d\u{9b}"), "a\\u{1b}[31mb\\rc\\u{7f}d\\u{9b}");
    assert_eq!(shown("x\u{202e}y\u{2066}z"), "x\\u{202e}y\\u{2066}z", "bidi overrides and isolates alone");
    let m = metadata(json!({"token_endpoint_auth_methods_supported": ["client_secret_post\u{1b}]0;pwned\u{7}"]}));
    let f = one(&settings(), &m, 0);
    assert!(f.text.contains("client_secret_post\\u{1b}]0;pwned\\u{7}") && !f.text.contains('\u{1b}'), "{f:?}");
}
