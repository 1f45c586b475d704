//! Any string as an ID token: validation never panics, and nothing validates without the issuer's key.
#![no_main]

use std::sync::OnceLock;

use idgate::{
    dev_issuer::{DevAlg, SigningKey},
    id_token::{self, Expectations, KeySet},
};
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (KeySet, Expectations) {
    static F: OnceLock<(KeySet, Expectations)> = OnceLock::new();
    F.get_or_init(|| {
        let rsa = SigningKey::generate(DevAlg::RS256);
        let ec = SigningKey::generate(DevAlg::ES256);
        let jwks = serde_json::json!({"keys": [rsa.jwk(), ec.jwk()]});
        let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).expect("jwks");
        let want = Expectations {
            issuer: "https://issuer.example.com".into(),
            audiences: vec!["client".into()],
            allowed_algs: vec![jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256],
            leeway: 60,
        };
        (keys, want)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let (keys, want) = fixture();
    assert!(id_token::validate(raw, keys, want, None, 1_800_000_000).is_err());
    assert!(id_token::validate_logout(raw, keys, want, 1_800_000_000).is_err());
    let _ = id_token::kid_of(raw, &want.allowed_algs);
    let _ = KeySet::from_jwks(data);
});
