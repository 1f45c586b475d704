//! Any input as an encrypted ID token (R8): decryption never panics, yields nothing but a signed JWT, and no
//! altered token decrypts.
//!
//! The first byte picks the shape: 0 — the rest is the compact JWE; 1 — the rest is a protected header (JSON) on a
//! real token's other parts (header parsing, `epk`, `apu`/`apv`, the AAD); 2 — the rest is the plaintext of a real
//! JWE to our key (the nested-token checks); 3 — the rest replaces one part of a real token.
#![no_main]

use std::sync::OnceLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use idgate::id_token::jwe::{self, Allowed, ContentEnc, DecryptionKeys, EncryptionKey, GeneratedKey, KeyAlg};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    keys: DecryptionKeys,
    ec: EncryptionKey,
    /// Real tokens to our keys, one per key management algorithm.
    tokens: Vec<String>,
}

const JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (rsa, ec) = (GeneratedKey::rsa(), GeneratedKey::p256());
        let pem = format!("{}{}", rsa.private_pem, ec.private_pem);
        let keys = DecryptionKeys::from_file_contents(pem.as_bytes()).expect("keys");
        let modes = [
            (&rsa.public, KeyAlg::RsaOaep, ContentEnc::A128Gcm),
            (&rsa.public, KeyAlg::RsaOaep256, ContentEnc::A256CbcHs512),
            (&ec.public, KeyAlg::EcdhEs, ContentEnc::A128CbcHs256),
            (&ec.public, KeyAlg::EcdhEsA128Kw, ContentEnc::A256Gcm),
            (&ec.public, KeyAlg::EcdhEsA256Kw, ContentEnc::A128CbcHs256),
        ];
        let tokens =
            modes.iter().map(|(k, a, e)| jwe::encrypt(JWS.as_bytes(), k, None, *a, *e).expect("encrypt")).collect();
        Fixture { keys, ec: ec.public, tokens }
    })
}

fn check(raw: &str, f: &Fixture) -> Option<String> {
    let out = jwe::decrypt(raw, &f.keys, &Allowed::default());
    if let Ok(inner) = &out {
        assert_eq!(inner.split('.').count(), 3, "only a signed JWT comes out");
        assert!(!jwe::is_jwe(inner));
    }
    out.ok()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else { return };
    let pick = rest.first().copied().unwrap_or(0) as usize % f.tokens.len();
    let token = &f.tokens[pick];
    let parts: Vec<&str> = token.split('.').collect();
    match mode % 4 {
        0 => {
            if let Ok(raw) = std::str::from_utf8(rest) {
                check(raw, f);
            }
        }
        1 => {
            let header = URL_SAFE_NO_PAD.encode(rest);
            let raw = format!("{header}.{}.{}.{}.{}", parts[1], parts[2], parts[3], parts[4]);
            // A header that differs from the real one changes the AAD: the tag can never verify.
            let out = check(&raw, f);
            assert!(out.is_none() || header == parts[0], "a forged header decrypted");
        }
        2 => {
            if let Some(t) = jwe::encrypt(rest, &f.ec, None, KeyAlg::EcdhEs, ContentEnc::A128Gcm)
                && let Some(inner) = check(&t, f)
            {
                assert_eq!(inner.as_bytes(), rest, "decryption returns what was encrypted");
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest.get(1..).unwrap_or_default()) else { return };
            let which = (rest.first().copied().unwrap_or(0) as usize / f.tokens.len()) % 5;
            let mut p: Vec<&str> = parts.clone();
            p[which] = text;
            let raw = p.join(".");
            if check(&raw, f).is_some() {
                assert_eq!(raw, *token, "only the untouched token decrypts");
            }
        }
    }
});
