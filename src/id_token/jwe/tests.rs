//! RFC vectors (RFC 7516 Appendix A.1, RFC 7520 §5.2 and §5.5, RFC 7518 Appendix C), round trips of every
//! supported alg × enc, and one negative test per refusal.

use super::*;
use serde_json::json;

/// RFC 7516 Appendix A.1's RSA key. The RFC prints n, e, d, p, q, dp, dq, qi; these are those values (n, d and the
/// CRT parameters recomputed from p, q, e and checked against the RFC's n).
const RFC7516_A1_KEY: &str = r#"{"kty":"RSA","n":"oahUIoWw0K0usKNuOR6H4wkf4oBUXHTxRvgb48E-BVvxkeDNjbC4he8rUWcJoZmds2h7M70imEVhRU5djINXtqllXI4DFqcI1DgjT9LewND8MW2Krf3Spsk_ZkoFnilakGygTwpZ3uesH-PFABNIUYpOiN15dsQRkgr0vEhxN92i2asbOenSZeyaxziK72UwxrrKoExv6kc5twXTq4h-QChLOln0_mtUZwfsRaMStPs6mS6XrgxnxbWhojf663tuEQueGC-FCMfra36C9knDFGzKsNa7LZK2djYgyD3JR_MB_4NUJW_TqOQtwHYbxevoJArm-L5StowjzGy-_bq6Gw","e":"AQAB","d":"kLdtIj6GbDks_ApCSTYQtelcNttlKiOyPzMrXHeI-yk1F7-kpDxY4-WY5NWV5KntaEeXS1j82E375xxhWMHXyvjYecPT9fpwR_M9gV8n9Hrh2anTpTD93Dt62ypW3yDsJzBnTnrYu1iwWRgBKrEYY46qAZIrA2xAwnm2X7uGR1hghkqDp0Vqj3kbSCz1XyfCs6_LehBwtxHIyh8Ripy40p24moOAbgxVw3rxT_vlt3UVe4WO3JkJOzlpUf-KTVI2Ptgm-dARxTEtE-id-4OJr0h-K-VFs3VSndVTIznSxfyrj8ILL6MG_Uv8YAu7VILSB3lOW085-4qE3DzgrTjgyQ","p":"1r52Xk46c-LsfB5P442p7atdPUrxQSy4mti_tZI3Mgf2EuFVbUoDBvaRQ-SWxkbkmoEzL7JXroSBjSrK3YIQgYdMgyAEPTPjXv_hI2_1eTSPVZfzL0lffNn03IXqWF5MDFuoUYE0hzb2vhrlN_rKrbfDIwUbTrjjgieRbwC6Cl0","q":"wLb35x7hmQWZsWJmB_vle87ihgZ19S8lBEROLIsZG4ayZVe9Hi9gDVCOBmUDdaDYVTSNx_8Fyw1YYa9XGrGnDew00J28cRUoeBB_jKI1oma0Orv1T9aXIWxKwd4gvxFImOWr3QRL9KEBRzk2RatUBnmDZJTIAfwTs0g68UZHvtc","dp":"ZK-YwE7diUh0qR1tR7w8WHtolDx3MZ_OTowiFvgfeQ3SiresXjm9gZ5KLhMXvo-uz-KUJWDxS5pFQ_M0evdo1dKiRTjVw_x4NyqyXPM5nULPkcpU827rnpZzAJKpdhWAgqrXGKAECQH0Xt4taznjnd_zVpAmZZq60WPMBMfKcuE","dq":"Dq0gfgJ1DdFGXiLvQEZnuKEN0UUmsJBxkjydc3j4ZYdBiMRAy86x0vHCjywcMlYYg4yoC4YZa9hNVcsjqA3FeiL19rk8g6Qn29Tt0cj8qqyFpz9vNDBUfCAiJVeESOjJDZPYHdHY8v1b-o-Z2X5tvLx-TCekf7oxyeKDUqKWjis","qi":"VIMpMYbPf47dT1w_zDUXfPimsSegnMOA1zTaX7aGk_8urY6R8-ZW1FxU7AlWAyLWybqq6t16VFd7hQd0y6flUK4SlOydB61gwanOsXGOAOv82cHq0E3eL4HrtZkUuKvnPrMnsUUFlfUdybVzxyjz9JF_XyaY14ardLSjf4L_FNY"}"#;

/// RFC 7516 Appendix A.1.7, the complete compact JWE.
const RFC7516_A1_JWE: &str = concat!(
    "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.",
    "OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe",
    "ipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDb",
    "Sv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaV",
    "mqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je8",
    "1860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi",
    "6UklfCpIMfIjf7iGdXKHzg.",
    "48V1_ALb6US04U3b.",
    "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji",
    "SdiwkIr3ajwQzaBtQD_A.",
    "XFBoMYUZodetZdvTiFvSkQ",
);

/// RFC 7519 Appendix A.1: an encrypted JWT with `RSA1_5` + `A128CBC-HS256` (the keys of RFC 7516 A.2).
const RFC7519_A1_RSA1_5: &str = concat!(
    "eyJhbGciOiJSU0ExXzUiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0.",
    "QR1Owv2ug2WyPBnbQrRARTeEk9kDO2w8qDcjiHnSJflSdv1iNqhWXaKH4MqAkQtM",
    "oNfABIPJaZm0HaA415sv3aeuBWnD8J-Ui7Ah6cWafs3ZwwFKDFUUsWHSK-IPKxLG",
    "TkND09XyjORj_CHAgOPJ-Sd8ONQRnJvWn_hXV1BNMHzUjPyYwEsRhDhzjAD26ima",
    "sOTsgruobpYGoQcXUwFDn7moXPRfDE8-NoQX7N7ZYMmpUDkR-Cx9obNGwJQ3nM52",
    "YCitxoQVPzjbl7WBuB7AohdBoZOdZ24WlN1lVIeh8v1K4krB8xgKvRU8kgFrEn_a",
    "1rZgN5TiysnmzTROF869lQ.",
    "AxY8DCtDaGlsbGljb3RoZQ.",
    "MKOle7UQrG6nSxTLX6Mqwt0orbHvAKeWnDYvpIAeZ72deHxz3roJDXQyhxx0wKaM",
    "HDjUEOKIwrtkHthpqEanSBNYHZgmNOV7sln1Eu9g3J8.",
    "fiK51VwhsxJ-siBMR-YFiA",
);

/// RFC 7516 Appendix A.3.7: `A128KW` (a key shared with the issuer), not a supported key management algorithm.
const RFC7516_A3_A128KW: &str = concat!(
    "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0.",
    "6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ.",
    "AxY8DCtDaGlsbGljb3RoZQ.",
    "KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY.",
    "U0m_YmjN04DJvceFICbCVQ",
);

fn vector(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn keys_of(jwk: &Value) -> DecryptionKeys {
    DecryptionKeys::from_jwks(serde_json::to_string(&json!({"keys": [jwk]})).unwrap().as_bytes()).unwrap()
}

/// A stand-in signed JWT: the JWE layer checks the shape and `alg`, the signature is [`super::super::validate`]'s.
const JWS: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl";

fn rsa_pair() -> (DecryptionKeys, EncryptionKey) {
    let g = GeneratedKey::rsa();
    (DecryptionKeys::from_pem(g.private_pem.as_bytes()).unwrap(), g.public)
}

fn ec_pair(kid: &str) -> (DecryptionKeys, EncryptionKey) {
    let g = GeneratedKey::p256();
    let mut jwk = g.private_jwk.unwrap();
    jwk["kid"] = json!(kid);
    (keys_of(&jwk), g.public)
}

fn all() -> Allowed {
    Allowed::default()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// `token` with its protected header replaced (the rest kept: the checks under test run before any decryption).
fn with_header(token: &str, header: &Value) -> String {
    let rest = token.split_once('.').unwrap().1;
    format!("{}.{rest}", b64(header))
}

#[test]
fn rfc7516_a1_rsa_oaep_a256gcm() {
    let keys = keys_of(&vector(RFC7516_A1_KEY));
    let plain = decrypt_plaintext(RFC7516_A1_JWE, &keys, &all()).unwrap();
    assert_eq!(plain, b"The true sign of intelligence is not knowledge but imagination.");
}

#[test]
fn rfc7520_5_2_rsa_oaep_a256gcm() {
    let v = vector(include_str!("rfc7520_5_2.json"));
    let keys = keys_of(&v["key"]);
    let plain = decrypt_plaintext(v["compact"].as_str().unwrap(), &keys, &all()).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), v["plaintext"].as_str().unwrap());
}

#[test]
fn rfc7520_5_5_ecdh_es_a128cbc_hs256() {
    let v = vector(include_str!("rfc7520_5_5.json"));
    let keys = keys_of(&v["key"]);
    let plain = decrypt_plaintext(v["compact"].as_str().unwrap(), &keys, &all()).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), v["plaintext"].as_str().unwrap());
}

#[test]
fn rfc7518_appendix_c_concat_kdf() {
    // Bob's static key and Alice's ephemeral public key; derived key for A128GCM, apu "Alice", apv "Bob".
    let d = URL_SAFE_NO_PAD.decode("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw").unwrap();
    let bob = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &d).unwrap();
    let x = URL_SAFE_NO_PAD.decode("gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0").unwrap();
    let y = URL_SAFE_NO_PAD.decode("SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps").unwrap();
    let alice = ec_point(&x, &y).unwrap();
    let derived = agreement::agree(
        &bob,
        agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, alice.as_slice()),
        JweError::DecryptionFailed,
        |z| concat_kdf(z, "A128GCM", b"Alice", b"Bob", 16),
    )
    .unwrap();
    assert_eq!(URL_SAFE_NO_PAD.encode(derived), "VqqN6vgjbSBcIijNcacQGg");
}

#[test]
fn every_alg_and_enc_round_trips_to_the_nested_jws() {
    let (rsa_keys, rsa_pub) = rsa_pair();
    let (ec_keys, ec_pub) = ec_pair("ec-1");
    for alg in KeyAlg::ALL {
        for enc in ContentEnc::ALL {
            let (keys, to) = if alg.is_rsa() { (&rsa_keys, &rsa_pub) } else { (&ec_keys, &ec_pub) };
            let jwe = encrypt(JWS.as_bytes(), to, Some("ec-1"), alg, enc).unwrap();
            assert!(is_jwe(&jwe));
            assert_eq!(decrypt(&jwe, keys, &all()).unwrap(), JWS, "{} {}", alg.name(), enc.name());
        }
    }
}

#[test]
fn rotation_picks_by_kid_else_tries_in_order() {
    let (old, old_pub) = ec_pair("old");
    let (new, new_pub) = ec_pair("new");
    let mut set = DecryptionKeys::default();
    set.keys.extend(old.keys);
    set.keys.extend(new.keys);
    for (kid, to) in [("old", &old_pub), ("new", &new_pub)] {
        let jwe = encrypt(JWS.as_bytes(), to, Some(kid), KeyAlg::EcdhEs, ContentEnc::A128Gcm).unwrap();
        assert_eq!(decrypt(&jwe, &set, &all()).unwrap(), JWS);
        let anonymous = encrypt(JWS.as_bytes(), to, None, KeyAlg::EcdhEs, ContentEnc::A128Gcm).unwrap();
        assert_eq!(decrypt(&anonymous, &set, &all()).unwrap(), JWS, "no kid: every key is tried");
    }
    // PEM keys have no kid: a token naming one is tried against them.
    let (pem_keys, pem_pub) = rsa_pair();
    let jwe = encrypt(JWS.as_bytes(), &pem_pub, Some("whatever"), KeyAlg::RsaOaep256, ContentEnc::A256Gcm).unwrap();
    assert_eq!(decrypt(&jwe, &pem_keys, &all()).unwrap(), JWS);
}

#[test]
fn wrong_key_fails_as_decryption_failed() {
    let (_, to) = rsa_pair();
    let (other, _) = rsa_pair();
    let jwe = encrypt(JWS.as_bytes(), &to, None, KeyAlg::RsaOaep256, ContentEnc::A256Gcm).unwrap();
    assert_eq!(decrypt(&jwe, &other, &all()), Err(JweError::DecryptionFailed));
    let (_, ec_to) = ec_pair("k");
    let (ec_other, _) = ec_pair("k");
    for alg in [KeyAlg::EcdhEs, KeyAlg::EcdhEsA128Kw, KeyAlg::EcdhEsA256Kw] {
        let jwe = encrypt(JWS.as_bytes(), &ec_to, Some("k"), alg, ContentEnc::A128CbcHs256).unwrap();
        assert_eq!(decrypt(&jwe, &ec_other, &all()), Err(JweError::DecryptionFailed), "{}", alg.name());
    }
}

#[test]
fn unknown_kid_is_refused() {
    let (keys, to) = ec_pair("ours");
    let jwe = encrypt(JWS.as_bytes(), &to, Some("theirs"), KeyAlg::EcdhEs, ContentEnc::A128Gcm).unwrap();
    assert_eq!(decrypt(&jwe, &keys, &all()), Err(JweError::UnknownKey));
    // An RSA token for a set holding only EC keys: no key can open it.
    let (_, rsa_to) = rsa_pair();
    let jwe = encrypt(JWS.as_bytes(), &rsa_to, None, KeyAlg::RsaOaep, ContentEnc::A128Gcm).unwrap();
    assert_eq!(decrypt(&jwe, &keys, &all()), Err(JweError::NoKeyForAlg));
}

#[test]
fn rsa1_5_and_dir_are_refused_by_name() {
    let keys = keys_of(&vector(RFC7516_A1_KEY));
    assert!(matches!(decrypt(RFC7519_A1_RSA1_5, &keys, &all()), Err(JweError::Refused(r)) if r.starts_with("RSA1_5")));
    let dir = with_header(RFC7516_A1_JWE, &json!({"alg": "dir", "enc": "A256GCM"}));
    assert!(matches!(decrypt(&dir, &keys, &all()), Err(JweError::Refused(r)) if r.starts_with("dir")));
    assert_eq!(JweError::Refused("RSA1_5 (x)").reason(), "jwe_alg_refused");
}

#[test]
fn algorithms_outside_the_allow_list_are_refused() {
    let keys = keys_of(&vector(RFC7516_A1_KEY));
    assert_eq!(decrypt(RFC7516_A3_A128KW, &keys, &all()), Err(JweError::AlgNotAllowed), "A128KW: not supported");
    for alg in ["PBES2-HS256+A128KW", "RSA-OAEP-384", "ECDH-ES+A192KW", "none", ""] {
        let t = with_header(RFC7516_A1_JWE, &json!({"alg": alg, "enc": "A256GCM"}));
        assert_eq!(decrypt(&t, &keys, &all()), Err(JweError::AlgNotAllowed), "{alg}");
    }
    for enc in ["A192GCM", "A192CBC-HS384", "a256gcm", "none"] {
        let t = with_header(RFC7516_A1_JWE, &json!({"alg": "RSA-OAEP", "enc": enc}));
        assert_eq!(decrypt(&t, &keys, &all()), Err(JweError::EncNotAllowed), "{enc}");
    }
    // A narrowed allow-list refuses the RFC's own token, which is otherwise fine.
    let narrow = Allowed { algs: vec![KeyAlg::RsaOaep256], encs: ContentEnc::ALL.to_vec() };
    assert_eq!(decrypt_plaintext(RFC7516_A1_JWE, &keys, &narrow), Err(JweError::AlgNotAllowed));
    let narrow = Allowed { algs: KeyAlg::ALL.to_vec(), encs: vec![ContentEnc::A128Gcm] };
    assert_eq!(decrypt_plaintext(RFC7516_A1_JWE, &keys, &narrow), Err(JweError::EncNotAllowed));
    assert!(decrypt_plaintext(RFC7516_A1_JWE, &keys, &all()).is_ok(), "the defence, not the token, refused it");
}

#[test]
fn zip_crit_and_foreign_parameters_are_refused() {
    let keys = keys_of(&vector(RFC7516_A1_KEY));
    let cases = [
        (json!({"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF"}), JweError::Compressed),
        (json!({"alg": "RSA-OAEP", "enc": "A256GCM", "crit": ["exp"], "exp": 1}), JweError::Critical),
        (json!({"alg": "RSA-OAEP", "enc": "A256GCM", "cty": "JWE"}), JweError::NotSigned("cty is not JWT")),
        (
            json!({"alg": "RSA-OAEP", "enc": "A256GCM", "p2c": 4_000_000_000u64, "p2s": "c2FsdA"}),
            JweError::Malformed("p2c/p2s belong to PBES2, which is not supported"),
        ),
        (
            json!({"alg": "PBES2-HS512+A256KW", "enc": "A256GCM", "p2c": u64::MAX, "p2s": "c2FsdA"}),
            JweError::AlgNotAllowed,
        ),
        (json!({"enc": "A256GCM"}), JweError::Malformed("header has no alg")),
        (json!({"alg": "RSA-OAEP"}), JweError::Malformed("header has no enc")),
        (json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": 7}), JweError::Malformed("kid is not a string")),
    ];
    for (header, want) in cases {
        assert_eq!(decrypt(&with_header(RFC7516_A1_JWE, &header), &keys, &all()), Err(want), "{header}");
    }
    // cty JWT (any case) is what an issuer should send and is accepted up to the key.
    let ok = with_header(RFC7516_A1_JWE, &json!({"alg": "RSA-OAEP", "enc": "A256GCM", "cty": "jwt"}));
    assert_eq!(
        decrypt(&ok, &keys, &all()),
        Err(JweError::DecryptionFailed),
        "the header is the AAD: changed, it fails"
    );
}

#[test]
fn truncated_or_forged_tags_and_swapped_ciphertexts_fail() {
    let (keys, to) = ec_pair("k");
    for enc in ContentEnc::ALL {
        let jwe = encrypt(JWS.as_bytes(), &to, Some("k"), KeyAlg::EcdhEsA128Kw, enc).unwrap();
        let p: Vec<&str> = jwe.split('.').collect();
        let tag = URL_SAFE_NO_PAD.decode(p[4]).unwrap();
        let truncated =
            format!("{}.{}.{}.{}.{}", p[0], p[1], p[2], p[3], URL_SAFE_NO_PAD.encode(&tag[..tag.len() - 1]));
        assert_eq!(decrypt(&truncated, &keys, &all()), Err(JweError::Malformed("tag has the wrong length for enc")));
        let mut forged = tag.clone();
        forged[0] ^= 1;
        let forged = format!("{}.{}.{}.{}.{}", p[0], p[1], p[2], p[3], URL_SAFE_NO_PAD.encode(&forged));
        assert_eq!(decrypt(&forged, &keys, &all()), Err(JweError::DecryptionFailed), "{}", enc.name());
        let mut ct = URL_SAFE_NO_PAD.decode(p[3]).unwrap();
        ct[0] ^= 0x80;
        let flipped = format!("{}.{}.{}.{}.{}", p[0], p[1], p[2], URL_SAFE_NO_PAD.encode(&ct), p[4]);
        assert_eq!(decrypt(&flipped, &keys, &all()), Err(JweError::DecryptionFailed));
        // Ciphertext and tag of another token to the same key: its content key differs, the tag fails.
        let other = encrypt(JWS.as_bytes(), &to, Some("k"), KeyAlg::EcdhEsA128Kw, enc).unwrap();
        let q: Vec<&str> = other.split('.').collect();
        let swapped = format!("{}.{}.{}.{}.{}", p[0], p[1], q[2], q[3], q[4]);
        assert_eq!(decrypt(&swapped, &keys, &all()), Err(JweError::DecryptionFailed));
        // A wrapped key of the wrong length never reaches the unwrap.
        let short = format!("{}.{}.{}.{}.{}", p[0], &p[1][..p[1].len() - 11], p[2], p[3], p[4]);
        assert!(decrypt(&short, &keys, &all()).is_err());
    }
    // RSA-OAEP: a bad encrypted key behaves like a bad tag (no oracle on the key).
    let (rsa_keys, rsa_to) = rsa_pair();
    let jwe = encrypt(JWS.as_bytes(), &rsa_to, None, KeyAlg::RsaOaep, ContentEnc::A128CbcHs256).unwrap();
    let p: Vec<&str> = jwe.split('.').collect();
    let mut ek = URL_SAFE_NO_PAD.decode(p[1]).unwrap();
    ek[10] ^= 1;
    let bad = format!("{}.{}.{}.{}.{}", p[0], URL_SAFE_NO_PAD.encode(&ek), p[2], p[3], p[4]);
    assert_eq!(decrypt(&bad, &rsa_keys, &all()), Err(JweError::DecryptionFailed));
}

#[test]
fn the_payload_must_be_a_signed_jwt() {
    let (keys, to) = rsa_pair();
    let seal = |payload: &[u8]| encrypt(payload, &to, None, KeyAlg::RsaOaep256, ContentEnc::A256Gcm).unwrap();
    let inner = seal(JWS.as_bytes());
    assert_eq!(decrypt(&seal(inner.as_bytes()), &keys, &all()), Err(JweError::Nested), "a JWE inside a JWE");
    assert_eq!(decrypt(&seal(b"hello"), &keys, &all()), Err(JweError::NotSigned("not three dot-separated parts")));
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&json!({"sub": "u"})));
    assert_eq!(decrypt(&seal(unsigned.as_bytes()), &keys, &all()), Err(JweError::NotSigned("unsigned (alg none)")));
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "RS256"})), b64(&json!({"sub": "u"})));
    assert_eq!(decrypt(&seal(unsigned.as_bytes()), &keys, &all()), Err(JweError::NotSigned("empty signature")));
    assert_eq!(decrypt(&seal(&[0xff, 0xfe]), &keys, &all()), Err(JweError::NotSigned("not UTF-8")));
    assert_eq!(
        decrypt(&seal(b"a.b.c"), &keys, &all()),
        Err(JweError::NotSigned("header is not a base64url JSON object"))
    );
}

#[test]
fn epk_is_bounded_and_must_be_on_the_curve() {
    let (keys, to) = ec_pair("k");
    let jwe = encrypt(JWS.as_bytes(), &to, Some("k"), KeyAlg::EcdhEs, ContentEnc::A128CbcHs256).unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwe.split('.').next().unwrap()).unwrap()).unwrap();
    let with_epk = |epk: Value| {
        let mut h = header.clone();
        h["epk"] = epk;
        with_header(&jwe, &h)
    };
    let x = header["epk"]["x"].as_str().unwrap().to_owned();
    let y = header["epk"]["y"].as_str().unwrap().to_owned();
    // Off the curve: y + 1.
    let mut y_bytes = URL_SAFE_NO_PAD.decode(&y).unwrap();
    y_bytes[31] = y_bytes[31].wrapping_add(1);
    let off = json!({"kty": "EC", "crv": "P-256", "x": x, "y": URL_SAFE_NO_PAD.encode(&y_bytes)});
    assert_eq!(decrypt(&with_epk(off), &keys, &all()), Err(JweError::BadEpk("not a point on P-256")));
    let zero = json!({"kty": "EC", "crv": "P-256", "x": "A".repeat(43), "y": "A".repeat(43)});
    assert_eq!(decrypt(&with_epk(zero), &keys, &all()), Err(JweError::BadEpk("not a point on P-256")));
    let huge = json!({"kty": "EC", "crv": "P-256", "x": "A".repeat(2000), "y": y});
    assert_eq!(decrypt(&with_epk(huge), &keys, &all()), Err(JweError::BadEpk("coordinate is not 32 bytes")));
    let p384 = json!({"kty": "EC", "crv": "P-384", "x": x, "y": y});
    assert_eq!(decrypt(&with_epk(p384), &keys, &all()), Err(JweError::BadEpk("not an EC P-256 key")));
    let private = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "d": x});
    assert_eq!(decrypt(&with_epk(private), &keys, &all()), Err(JweError::BadEpk("carries a private key")));
    let mut h = header.clone();
    h.as_object_mut().unwrap().remove("epk");
    assert_eq!(decrypt(&with_header(&jwe, &h), &keys, &all()), Err(JweError::BadEpk("missing")));
    let mut h = header.clone();
    h["pad"] = json!("x".repeat(MAX_HEADER_B64));
    assert_eq!(decrypt(&with_header(&jwe, &h), &keys, &all()), Err(JweError::Malformed("protected header too large")));
    let mut h = header.clone();
    h["apu"] = json!("A".repeat(800));
    assert_eq!(
        decrypt(&with_header(&jwe, &h), &keys, &all()),
        Err(JweError::Malformed("apu/apv is not a short base64url string"))
    );
    // The untouched token still opens: the refusals above are the checks', not the token's.
    assert_eq!(decrypt(&jwe, &keys, &all()).unwrap(), JWS);
}

#[test]
fn malformed_compact_forms_are_refused() {
    let keys = keys_of(&vector(RFC7516_A1_KEY));
    assert_eq!(decrypt("a.b.c", &keys, &all()), Err(JweError::Malformed("not five dot-separated parts")));
    assert_eq!(decrypt("a.b.c.d.e.f", &keys, &all()), Err(JweError::Malformed("not five dot-separated parts")));
    let big = format!("{}{}", RFC7516_A1_JWE, "A".repeat(MAX_JWE_BYTES));
    assert_eq!(decrypt(&big, &keys, &all()), Err(JweError::Malformed("too large")));
    let p: Vec<&str> = RFC7516_A1_JWE.split('.').collect();
    let padded = format!("{}.{}=.{}.{}.{}", p[0], p[1], p[2], p[3], p[4]);
    assert_eq!(decrypt(&padded, &keys, &all()), Err(JweError::Malformed("encrypted key is not base64url")));
    let no_iv = format!("{}.{}..{}.{}", p[0], p[1], p[3], p[4]);
    assert_eq!(decrypt(&no_iv, &keys, &all()), Err(JweError::Malformed("iv has the wrong length for enc")));
    let no_ct = format!("{}.{}.{}..{}", p[0], p[1], p[2], p[4]);
    assert_eq!(decrypt(&no_ct, &keys, &all()), Err(JweError::Malformed("empty ciphertext")));
    let no_ek = format!("{}..{}.{}.{}", p[0], p[2], p[3], p[4]);
    assert_eq!(decrypt(&no_ek, &keys, &all()), Err(JweError::Malformed("empty encrypted key")));
    assert!(is_jwe(RFC7516_A1_JWE) && !is_jwe(JWS));
}

#[test]
fn key_files_are_checked() {
    let err = |text: &str| DecryptionKeys::from_file_contents(text.as_bytes()).unwrap_err().0;
    assert!(err("").contains("no private key"));
    assert!(err("{\"keys\": []}").contains("no private key"));
    let mut sig = vector(RFC7516_A1_KEY);
    sig["use"] = json!("sig");
    assert!(err(&json!({"keys": [sig]}).to_string()).contains("use is not \"enc\""));
    let mut bad_alg = vector(RFC7516_A1_KEY);
    bad_alg["alg"] = json!("RSA1_5");
    assert!(err(&bad_alg.to_string()).contains("alg is not a supported"));
    let mut broken = vector(RFC7516_A1_KEY);
    broken["qi"] = broken["dp"].clone();
    assert!(err(&broken.to_string()).contains("not a consistent RSA key"));
    let g = GeneratedKey::p256();
    let mut mismatched = g.private_jwk.unwrap();
    mismatched["x"] = GeneratedKey::p256().private_jwk.unwrap()["x"].clone();
    assert!(err(&mismatched.to_string()).contains("x/y do not match d"));
    assert!(err(r#"{"kty":"oct","k":"AAAA"}"#).contains("kty must be RSA or EC"));
    assert!(err(r#"{"kty":"EC","crv":"P-384","x":"","y":"","d":""}"#).contains("P-256"));
    // A JWK's alg binds the key to it.
    let v = vector(include_str!("rfc7520_5_2.json"));
    let keys = keys_of(&v["key"]);
    let (_, other_pub) = rsa_pair();
    let t = encrypt(JWS.as_bytes(), &other_pub, None, KeyAlg::RsaOaep256, ContentEnc::A128Gcm).unwrap();
    assert_eq!(decrypt(&t, &keys, &all()), Err(JweError::NoKeyForAlg), "the key says RSA-OAEP only");
    // PEM: PKCS#8 RSA and EC, several in one file, in order; debug output names no key material.
    let (r, e) = (GeneratedKey::rsa(), GeneratedKey::p256());
    let both = DecryptionKeys::from_file_contents(format!("{}{}", r.private_pem, e.private_pem).as_bytes()).unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(format!("{both:?}"), "[\"-\", \"-\"]");
    assert!(err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").contains("neither a usable RSA key"));
}

#[test]
fn signed_token_unwraps_passes_or_refuses() {
    use crate::id_token::{Decryption, Rejection, signed_token};
    let (keys, to) = rsa_pair();
    let jwe = encrypt(JWS.as_bytes(), &to, None, KeyAlg::RsaOaep256, ContentEnc::A256Gcm).unwrap();
    let mut d = Decryption { keys: Some(std::sync::Arc::new(keys)), allowed: all(), required: false };
    assert_eq!(signed_token(&jwe, &d).unwrap(), JWS, "a JWE yields its JWS");
    assert_eq!(signed_token(JWS, &d).unwrap(), JWS, "a JWS passes while encryption is optional");
    d.required = true;
    assert_eq!(signed_token(JWS, &d), Err(Rejection::NotEncrypted));
    assert_eq!(Rejection::NotEncrypted.reason(), "not_encrypted");
    assert_eq!(signed_token(&jwe, &d).unwrap(), JWS);
    let none = Decryption::default();
    assert_eq!(signed_token(&jwe, &none), Err(Rejection::Encryption(JweError::NoKeys)));
    let r = signed_token(&format!("{jwe}x"), &d).unwrap_err();
    assert_eq!(r.reason(), "jwe_malformed");
    assert!(!r.to_string().contains(&jwe[..20]), "the reason never echoes the token");
}

/// Tokens another implementation produced: panva/jose (what node oidc-provider encrypts ID tokens with) to keys
/// OpenSSL generated, loaded the way an operator would give them — PKCS#1 RSA and SEC1 EC PEM in one key file.
#[test]
fn tokens_from_jose_to_openssl_keys_decrypt() {
    let v = vector(include_str!("jose_openssl.json"));
    let pem = format!("{}{}", v["rsa_pkcs1_pem"].as_str().unwrap(), v["ec_sec1_pem"].as_str().unwrap());
    let keys = DecryptionKeys::from_file_contents(pem.as_bytes()).unwrap();
    assert_eq!(keys.len(), 2, "the EC PARAMETERS block is skipped, both keys load");
    let tokens = v["tokens"].as_array().unwrap();
    let mut algs = std::collections::HashSet::new();
    let mut encs = std::collections::HashSet::new();
    for t in tokens {
        let (alg, enc) = (t["alg"].as_str().unwrap(), t["enc"].as_str().unwrap());
        let jwe = t["jwe"].as_str().unwrap();
        assert_eq!(decrypt(jwe, &keys, &all()).unwrap(), v["jws"].as_str().unwrap(), "{alg} {enc}");
        algs.insert(alg);
        encs.insert(enc);
    }
    assert_eq!((algs.len(), encs.len()), (5, 4), "every supported alg and enc is covered");
}

/// An RSA-1024 key (OpenSSL, PKCS#8): too small, refused at load.
const RSA_1024_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAMdjZei0DRjCflZH\nWYfV1pK+P+Oy6SmWP1ckRM+Z9woJtY9a3rLI4l+vXLwabfiZQ9viaZfe4G0glXeI\nfqA8805RMugZyPw2bqx27Wlq5lZ4ludOu2NYbGmzpJLcDqceG5v4X5WzgSAQz58S\nRwDdx+ptafyXma/dUWpR4po4wlF3AgMBAAECgYBQYGZth1+cMpNhToPt+Sr1ntH8\nhVvu0s2X4FwI4EUw+7cAIh6SLd7rubKFdZYNWCN92Wi9uy/3beIy/IgnKkrd+jZo\nbiBT5VIi3kpCSQX9S9JFrHVqYjK9yULtImhTaccfpo6P3O5pBCqtUpnatfNOTq2L\nJbEkYcKsK3jJsc1SoQJBAOau2ueu8Ef5amsf5GJa2ra9XkG/PNQKHGEV6ksuyzhV\nCJ+Nf3Iqh0unOsHBvfm3UHE3hbSVATUh7iNgWO5bsscCQQDdRU122sfI/wdNHLXe\nQ8Y8goild0NtFok+0k9nsAB3cytswrbrlr663rbNgpV2EtPkiR0xo95pBBCck/AL\nQrvRAkEAt/eQeh4IX83n8YCgmVONgxioV9SURSG/GinpDIZH6SffVab5kWmbNlkq\nQaUpxUFNNM0royUFroLdsHbA1W5ptwJATwx0KTLtztO1UwofuwDxcCqeEKbz0qQL\ncgMGVR+eew4NBHTnjnCzQOVR30d4h88gHfQSFurZCSFnodiEGDHGEQJBALnyyxkt\nVcWKeKKvpNdHaniXZxEHC5Ra6R84S5q5dy9kHO08VKR88yJnulIrhvARYT+SzZny\nxU0YTCpuGucfltU=\n-----END PRIVATE KEY-----\n";

#[test]
fn small_rsa_keys_are_refused() {
    let e = DecryptionKeys::from_file_contents(RSA_1024_PEM.as_bytes()).unwrap_err();
    assert!(e.0.contains("at least 2048 bits"), "{e}");
}

#[test]
fn generated_public_jwks_encrypt_to_the_private_half() {
    for g in [GeneratedKey::rsa(), GeneratedKey::p256()] {
        let keys = DecryptionKeys::from_pem(g.private_pem.as_bytes()).unwrap();
        let to = EncryptionKey::from_jwk(&g.public_jwk).unwrap();
        let alg = if matches!(to, EncryptionKey::Rsa(_)) { KeyAlg::RsaOaep256 } else { KeyAlg::EcdhEsA256Kw };
        let jwe = encrypt(JWS.as_bytes(), &to, None, alg, ContentEnc::A256Gcm).unwrap();
        assert_eq!(decrypt(&jwe, &keys, &all()).unwrap(), JWS);
        assert!(g.public_jwk.get("d").is_none());
    }
}

/// A reload compares key sets by the text they were read from: the same text is the same set, another is not.
#[test]
fn key_sets_are_equal_exactly_when_read_from_the_same_text() {
    let a = GeneratedKey::p256().private_pem;
    let b = GeneratedKey::p256().private_pem;
    let read = |t: &str| DecryptionKeys::from_file_contents(t.as_bytes()).unwrap();
    assert!(read(&a) == read(&a), "the same file, read twice");
    assert!(read(&a) != read(&b), "two different one-key files");
    assert!(read(&a) != read(&format!("{a}{b}")), "a key added");
    assert!(read(&a) != DecryptionKeys::default());
    assert!(DecryptionKeys::default().is_empty() && !read(&a).is_empty());
    assert_eq!(read(&format!("{a}{b}")).len(), 2);
}

/// The limits at their boundaries (mutants): a header of exactly `MAX_HEADER_B64` characters, `apu` of exactly the
/// longest allowed length and one more, a token of exactly `MAX_JWE_BYTES`, and a 44-character coordinate.
#[test]
fn limits_hold_exactly_at_their_boundaries() {
    let (keys, to) = ec_pair("k");
    let jwe = encrypt(JWS.as_bytes(), &to, Some("k"), KeyAlg::EcdhEs, ContentEnc::A128CbcHs256).unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwe.split('.').next().unwrap()).unwrap()).unwrap();
    // Pad the header so its base64url is exactly MAX_HEADER_B64 long: accepted as a header (fails later: AAD).
    let padded = |n: usize| {
        let mut h = header.clone();
        h["pad"] = json!("x".repeat(n));
        b64(&h)
    };
    let n = (0..MAX_HEADER_B64).find(|&n| padded(n).len() >= MAX_HEADER_B64).unwrap();
    let mut h = header.clone();
    h["pad"] = json!("x".repeat(n));
    let token = with_header(&jwe, &h);
    if padded(n).len() == MAX_HEADER_B64 {
        assert_eq!(decrypt(&token, &keys, &all()), Err(JweError::DecryptionFailed), "a header at the limit is read");
    }
    // apu: 686 characters (512 bytes' worth plus slack) pass the length check, 687 do not.
    let limit = MAX_PARTY_INFO * 4 / 3 + 4;
    assert_eq!(limit, 686);
    for (len, refused) in [(limit - 2, false), (limit, false), (limit + 1, true)] {
        let mut h = header.clone();
        h["apu"] = json!("A".repeat(len));
        let got = decrypt(&with_header(&jwe, &h), &keys, &all());
        assert_eq!(
            got == Err(JweError::Malformed("apu/apv is not a short base64url string")),
            refused,
            "apu of {len}: {got:?}"
        );
    }
    // A 44-character coordinate (33 bytes) is refused by its length, before decoding.
    let mut h = header.clone();
    h["epk"]["x"] = json!(format!("{}A", header["epk"]["x"].as_str().unwrap()));
    assert_eq!(decrypt(&with_header(&jwe, &h), &keys, &all()), Err(JweError::BadEpk("coordinate is not 32 bytes")));
    // Even when it is not base64url at all: the length is judged first.
    h["epk"]["x"] = json!("!".repeat(44));
    assert_eq!(decrypt(&with_header(&jwe, &h), &keys, &all()), Err(JweError::BadEpk("coordinate is not 32 bytes")));
    // Only p2s, only p2c: each is PBES2's and refused alone.
    for extra in [json!({"p2s": "c2FsdA"}), json!({"p2c": 1000})] {
        let mut h = header.clone();
        h.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert_eq!(
            decrypt(&with_header(&jwe, &h), &keys, &all()),
            Err(JweError::Malformed("p2c/p2s belong to PBES2, which is not supported")),
            "{extra}"
        );
    }
    // ECDH-ES (direct) with an encrypted key part is malformed.
    let parts: Vec<&str> = jwe.split('.').collect();
    let with_ek = format!("{}.AAAA.{}.{}.{}", parts[0], parts[2], parts[3], parts[4]);
    assert_eq!(
        decrypt(&with_ek, &keys, &all()),
        Err(JweError::Malformed("ECDH-ES direct agreement has an encrypted key"))
    );
    // A token of exactly MAX_JWE_BYTES is read (then fails on its content), one byte more is not.
    let grow = |extra: usize| {
        let ct = format!("{}{}", parts[3], "A".repeat(extra));
        format!("{}.{}.{}.{}.{}", parts[0], parts[1], parts[2], ct, parts[4])
    };
    let base = grow(0).len();
    let at = grow(MAX_JWE_BYTES - base);
    assert_eq!(at.len(), MAX_JWE_BYTES);
    assert_ne!(decrypt(&at, &keys, &all()), Err(JweError::Malformed("too large")));
    assert_eq!(decrypt(&grow(MAX_JWE_BYTES - base + 1), &keys, &all()), Err(JweError::Malformed("too large")));
}

/// The published public halves are the keys' own (RSA from PEM, EC from PEM and from a JWK), and a JWK whose
/// coordinates are not 32 bytes each is refused.
#[test]
fn public_jwks_are_the_keys_own_and_coordinates_are_checked() {
    let rsa = GeneratedKey::rsa();
    let ec = GeneratedKey::p256();
    let from_pem = |pem: &str| DecryptionKeys::from_pem(pem.as_bytes()).unwrap().public_jwks();
    let [r] = from_pem(&rsa.private_pem).try_into().unwrap();
    assert_eq!((&r["n"], &r["e"], &r["kty"]), (&rsa.public_jwk["n"], &rsa.public_jwk["e"], &json!("RSA")));
    let [e] = from_pem(&ec.private_pem).try_into().unwrap();
    assert_eq!((&e["x"], &e["y"], &e["crv"]), (&ec.public_jwk["x"], &ec.public_jwk["y"], &json!("P-256")));
    let jwk = ec.private_jwk.clone().unwrap();
    let [j] = keys_of(&jwk).public_jwks().try_into().unwrap();
    assert_eq!(j["x"], ec.public_jwk["x"]);
    let mut short = jwk.clone();
    let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
    short["y"] = json!(URL_SAFE_NO_PAD.encode(&y[1..]));
    let err = DecryptionKeys::from_jwks(serde_json::to_string(&short).unwrap().as_bytes()).unwrap_err();
    assert!(err.0.contains("x/y are not 32 bytes each"), "{err}");
}

#[test]
fn recipient_keys_show_only_their_type_and_an_ec_key_must_be_p256() {
    let rsa = EncryptionKey::from_jwk(&GeneratedKey::rsa().public_jwk).unwrap();
    let ec_jwk = GeneratedKey::p256().public_jwk;
    let ec = EncryptionKey::from_jwk(&ec_jwk).unwrap();
    assert_eq!((format!("{rsa:?}"), format!("{ec:?}")), ("EncryptionKey::Rsa".into(), "EncryptionKey::P256".into()));
    // The same 32-byte coordinates under another curve's name are not a P-256 key.
    for crv in [json!("P-384"), json!("secp256k1"), Value::Null] {
        let mut other = ec_jwk.clone();
        other["crv"] = crv.clone();
        assert!(EncryptionKey::from_jwk(&other).is_none(), "crv {crv}");
    }
}

/// RSA-OAEP-256 with A128CBC-HS256 around `JWS`, with a CEK of `cek_len` bytes split as the CBC-HS rule splits it.
fn rsa_cbc_with_cek_of(to: &EncryptionKey, cek_len: usize) -> String {
    let EncryptionKey::Rsa(public) = to else { panic!("an RSA key") };
    let cek: Vec<u8> = (0..cek_len as u8).collect();
    let key = rsa::OaepPublicEncryptingKey::new(public.clone()).unwrap();
    let mut out = vec![0u8; key.ciphertext_size()];
    let encrypted_key = key.encrypt(&rsa::OAEP_SHA256_MGF1SHA256, &cek, &mut out, None).unwrap().to_vec();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RSA-OAEP-256","enc":"A128CBC-HS256"}"#);
    let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
    let cbc = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&cipher::AES_128, enc_key).unwrap()).unwrap();
    let mut buf = JWS.as_bytes().to_vec();
    let ctx = cbc.encrypt(&mut buf).unwrap();
    let iv: &[u8] = (&ctx).try_into().unwrap();
    let tag = cbc_hs_tag(ContentEnc::A128CbcHs256, mac_key, header.as_bytes(), iv, &buf);
    let e = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    format!("{header}.{}.{}.{}.{}", e(&encrypted_key), e(iv), e(&buf), e(&tag))
}

#[test]
fn an_rsa_wrapped_key_of_the_wrong_length_is_never_used() {
    let (keys, to) = rsa_pair();
    assert_eq!(decrypt(&rsa_cbc_with_cek_of(&to, 32), &keys, &all()).unwrap(), JWS, "the builder is right");
    // 31 bytes split 15 + 16: an AES-128 key and a MAC key, so it would decrypt if used. It is replaced by a random
    // key of the right length (RFC 7516 §11.5), and fails like any wrong key.
    assert_eq!(decrypt(&rsa_cbc_with_cek_of(&to, 31), &keys, &all()), Err(JweError::DecryptionFailed));
}
