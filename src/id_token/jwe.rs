//! Encrypted ID tokens (R8): compact JWE (RFC 7516) decryption, pure — bytes and keys in, the nested JWS out.
//!
//! Key management `RSA-OAEP`, `RSA-OAEP-256`, `ECDH-ES`, `ECDH-ES+A128KW`, `ECDH-ES+A256KW` (P-256); content
//! `A128CBC-HS256`, `A256CBC-HS512`, `A128GCM`, `A256GCM` (RFC 7518 §4–5). `RSA1_5` (padding oracle) and `dir` are
//! refused by name, `zip` and `crit` are refused, and the plaintext must be a signed JWT — never another JWE, never
//! an unsigned token — which then goes through [`super::validate`] like any other ID token.
//!
//! Every primitive is aws-lc-rs's: RSA-OAEP, ECDH, AES key wrap (RFC 3394), AES-GCM, AES-CBC + HMAC, and the
//! single-step KDF (NIST SP 800-56C, which is RFC 7518's Concat KDF). Nothing cryptographic is written here; this
//! module only parses, checks and composes. Failures of the key or of the content decryption are one error
//! ([`JweError::DecryptionFailed`]) whatever the cause, and an RSA failure continues with a random key so that an
//! attacker cannot tell a bad key from a bad tag (RFC 7516 §11.5).

use aws_lc_rs::{
    aead, agreement,
    cipher::{self, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey},
    constant_time,
    encoding::{AsBigEndian, AsDer, EcPrivateKeyBin},
    hmac,
    iv::FixedLength,
    kdf, key_wrap,
    key_wrap::KeyWrap,
    rand::{self, SecureRandom},
    rsa,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

/// Largest compact JWE accepted (the nested JWS is capped at 64 KiB; encryption adds a third, plus the header).
pub const MAX_JWE_BYTES: usize = 96 * 1024;
/// Largest encoded protected header: real ones are a few hundred bytes, an `epk` included.
const MAX_HEADER_B64: usize = 4096;
/// Largest `apu` / `apv` (decoded).
const MAX_PARTY_INFO: usize = 512;

/// Key management algorithms supported (RFC 7518 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    RsaOaep,
    RsaOaep256,
    EcdhEs,
    EcdhEsA128Kw,
    EcdhEsA256Kw,
}

impl KeyAlg {
    pub const ALL: [KeyAlg; 5] =
        [KeyAlg::RsaOaep, KeyAlg::RsaOaep256, KeyAlg::EcdhEs, KeyAlg::EcdhEsA128Kw, KeyAlg::EcdhEsA256Kw];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::RsaOaep => "RSA-OAEP",
            KeyAlg::RsaOaep256 => "RSA-OAEP-256",
            KeyAlg::EcdhEs => "ECDH-ES",
            KeyAlg::EcdhEsA128Kw => "ECDH-ES+A128KW",
            KeyAlg::EcdhEsA256Kw => "ECDH-ES+A256KW",
        }
    }

    /// The algorithm a JOSE name denotes, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    fn is_rsa(self) -> bool {
        matches!(self, KeyAlg::RsaOaep | KeyAlg::RsaOaep256)
    }
}

/// Content encryption algorithms supported (RFC 7518 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEnc {
    A128CbcHs256,
    A256CbcHs512,
    A128Gcm,
    A256Gcm,
}

impl ContentEnc {
    pub const ALL: [ContentEnc; 4] =
        [ContentEnc::A128CbcHs256, ContentEnc::A256CbcHs512, ContentEnc::A128Gcm, ContentEnc::A256Gcm];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            ContentEnc::A128CbcHs256 => "A128CBC-HS256",
            ContentEnc::A256CbcHs512 => "A256CBC-HS512",
            ContentEnc::A128Gcm => "A128GCM",
            ContentEnc::A256Gcm => "A256GCM",
        }
    }

    /// The algorithm a JOSE name denotes, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Length of the content encryption key, bytes (for CBC-HS: MAC key and encryption key together).
    pub fn key_len(self) -> usize {
        match self {
            ContentEnc::A128CbcHs256 => 32,
            ContentEnc::A256CbcHs512 => 64,
            ContentEnc::A128Gcm => 16,
            ContentEnc::A256Gcm => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            ContentEnc::A128Gcm | ContentEnc::A256Gcm => 12,
            _ => 16,
        }
    }

    fn tag_len(self) -> usize {
        match self {
            ContentEnc::A256CbcHs512 => 32,
            _ => 16,
        }
    }
}

/// The algorithms a token may use: by default every supported one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub algs: Vec<KeyAlg>,
    pub encs: Vec<ContentEnc>,
}

impl Default for Allowed {
    fn default() -> Self {
        Self { algs: KeyAlg::ALL.to_vec(), encs: ContentEnc::ALL.to_vec() }
    }
}

/// Why a JWE was refused. `Display` never includes the token, a key or any decrypted byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    #[error("malformed JWE: {0}")]
    Malformed(&'static str),
    #[error("JWE key management {0} is refused")]
    Refused(&'static str),
    #[error("JWE key management algorithm not allowed")]
    AlgNotAllowed,
    #[error("JWE content encryption algorithm not allowed")]
    EncNotAllowed,
    #[error("compressed JWE (zip) is refused")]
    Compressed,
    #[error("JWE critical header extensions are not understood")]
    Critical,
    #[error("no decryption key for the JWE's kid")]
    UnknownKey,
    #[error("no decryption key of the type the JWE's alg needs")]
    NoKeyForAlg,
    #[error("encrypted ID token, but no oidc.id_token_decryption_key_file is configured")]
    NoKeys,
    #[error("JWE ephemeral public key (epk) unusable: {0}")]
    BadEpk(&'static str),
    #[error("JWE decryption failed (wrong key, or the token was altered)")]
    DecryptionFailed,
    #[error("a JWE nested inside a JWE is refused")]
    Nested,
    #[error("the decrypted payload is not a signed JWT: {0}")]
    NotSigned(&'static str),
}

impl JweError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JweError::Malformed(_) => "jwe_malformed",
            JweError::Refused(_) => "jwe_alg_refused",
            JweError::AlgNotAllowed => "jwe_alg_not_allowed",
            JweError::EncNotAllowed => "jwe_enc_not_allowed",
            JweError::Compressed => "jwe_zip_refused",
            JweError::Critical => "jwe_crit_refused",
            JweError::UnknownKey => "jwe_unknown_key",
            JweError::NoKeyForAlg => "jwe_no_key_for_alg",
            JweError::NoKeys => "jwe_no_keys",
            JweError::BadEpk(_) => "jwe_bad_epk",
            JweError::DecryptionFailed => "jwe_decryption_failed",
            JweError::Nested => "jwe_nested",
            JweError::NotSigned(_) => "jwe_not_signed",
        }
    }
}

/// True when `raw` has the shape of a compact JWE (five dot-separated parts).
pub fn is_jwe(raw: &str) -> bool {
    raw.bytes().filter(|b| *b == b'.').count() == 4
}

// ---------------------------------------------------------------------------------------------------------------
// Keys

enum Private {
    Rsa(rsa::OaepPrivateDecryptingKey),
    P256(agreement::PrivateKey),
}

struct DecryptionKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: the token's must then be it.
    alg: Option<String>,
    key: Private,
    /// The public members RFC 7638 hashes (`e kty n`, or `crv kty x y`), for publishing.
    public: Map<String, Value>,
}

impl DecryptionKey {
    fn fits(&self, alg: KeyAlg) -> bool {
        let type_fits = match self.key {
            Private::Rsa(_) => alg.is_rsa(),
            Private::P256(_) => !alg.is_rsa(),
        };
        type_fits && self.alg.as_deref().is_none_or(|a| a == alg.name())
    }
}

/// idgate's own private keys for ID-token decryption: PEM (PKCS#8, PKCS#1, SEC1) or a JWK set. Several keys allow
/// rotation: a token's `kid` picks its key, a token without one (or PEM keys, which have no `kid`) tries them in
/// order. `Debug` shows the key ids only.
#[derive(Default)]
pub struct DecryptionKeys {
    keys: Vec<DecryptionKey>,
    /// SHA-256 of the key file's text: two sets are equal when they were read from the same text (a reload
    /// compares them; key material itself is never compared or exposed).
    digest: [u8; 32],
}

impl PartialEq for DecryptionKeys {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.keys.len() == other.keys.len()
    }
}

impl Eq for DecryptionKeys {}

fn digest_of(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
    out
}

impl std::fmt::Debug for DecryptionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-"))).finish()
    }
}

/// A key file that cannot be used. The text names the entry, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(pub String);

impl DecryptionKeys {
    /// Parses a key file: a JWK set or a single JWK when it starts with `{`, PEM otherwise.
    pub fn from_file_contents(bytes: &[u8]) -> Result<Self, KeyFileError> {
        let keys =
            if bytes.trim_ascii_start().starts_with(b"{") { Self::from_jwks(bytes)? } else { Self::from_pem(bytes)? };
        if keys.keys.is_empty() {
            return Err(KeyFileError("no private key found".into()));
        }
        Ok(keys)
    }

    /// Every private key in a PEM file, in order.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyFileError> {
        use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
        let mut keys = Vec::new();
        for (i, item) in PrivateKeyDer::pem_slice_iter(pem).enumerate() {
            let der = item.map_err(|e| KeyFileError(format!("PEM section {i}: {e}")))?;
            let unusable = || KeyFileError(format!("PEM section {i}: not a usable RSA key"));
            let (key, public) = match &der {
                PrivateKeyDer::Pkcs8(d) => match rsa::PrivateDecryptingKey::from_pkcs8(d.secret_pkcs8_der()) {
                    Ok(k) => {
                        let key = rsa_key(k, i)?;
                        let pair = rsa::KeyPair::from_pkcs8(d.secret_pkcs8_der()).map_err(|_| unusable())?;
                        (key, rsa_public(&pair))
                    }
                    Err(_) => p256_key(d.secret_pkcs8_der(), i)?,
                },
                PrivateKeyDer::Pkcs1(d) => {
                    let pair = rsa::KeyPair::from_der(d.secret_pkcs1_der()).map_err(|_| unusable())?;
                    (rsa_from_pair(&pair, i)?, rsa_public(&pair))
                }
                PrivateKeyDer::Sec1(d) => p256_key(d.secret_sec1_der(), i)?,
                _ => return Err(KeyFileError(format!("PEM section {i}: unsupported key format"))),
            };
            keys.push(DecryptionKey { kid: None, alg: None, key, public });
        }
        Ok(Self { keys, digest: digest_of(pem) })
    }

    /// The private keys of a JWK set (`{"keys": [...]}`) or of one JWK. RSA keys need every component (`n e d p q
    /// dp dq qi`), EC keys `crv` P-256 with `x y d`. A key whose `use` is not `enc` is an error, not skipped: the
    /// file is idgate's own and a mistake in it should be loud.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyFileError> {
        let doc: Value = serde_json::from_slice(json).map_err(|_| KeyFileError("not JSON".into()))?;
        let list = match doc.get("keys") {
            Some(Value::Array(list)) => list.clone(),
            Some(_) => return Err(KeyFileError("keys is not an array".into())),
            None => vec![doc],
        };
        let keys = list.iter().enumerate().map(|(i, jwk)| key_from_jwk(jwk, i)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys, digest: digest_of(json) })
    }

    /// The public halves as JWKs for idgate's published key set (`use: enc`; the key's `kid` and `alg` when the
    /// file names them, else the RFC 7638 thumbprint as `kid`, which a token without a known `kid` still falls back
    /// from to trying every key without one).
    pub fn public_jwks(&self) -> Vec<Value> {
        self.keys
            .iter()
            .map(|k| {
                let mut jwk = k.public.clone();
                let kid = k.kid.clone().unwrap_or_else(|| crate::signing::jwk_thumbprint(&k.public));
                jwk.insert("use".into(), json!("enc"));
                jwk.insert("kid".into(), json!(kid));
                if let Some(alg) = &k.alg {
                    jwk.insert("alg".into(), json!(alg));
                }
                Value::Object(jwk)
            })
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The candidates for a token: the key with its `kid` if there is one; otherwise (no `kid`, or a `kid` none of
    /// our keys has while some keys have no `kid`) every key without a different `kid`, in order.
    fn candidates(&self, kid: Option<&str>, alg: KeyAlg) -> Result<Vec<&DecryptionKey>, JweError> {
        let fitting: Vec<&DecryptionKey> = self.keys.iter().filter(|k| k.fits(alg)).collect();
        if let Some(kid) = kid {
            if let Some(k) = fitting.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                return Ok(vec![k]);
            }
            let anonymous: Vec<&DecryptionKey> = fitting.into_iter().filter(|k| k.kid.is_none()).collect();
            if anonymous.is_empty() {
                return Err(JweError::UnknownKey);
            }
            return Ok(anonymous);
        }
        if fitting.is_empty() {
            return Err(JweError::NoKeyForAlg);
        }
        Ok(fitting)
    }
}

fn rsa_key(k: rsa::PrivateDecryptingKey, i: usize) -> Result<Private, KeyFileError> {
    if k.key_size_bits() < 2048 {
        return Err(KeyFileError(format!("key {i}: RSA keys must have at least 2048 bits")));
    }
    rsa::OaepPrivateDecryptingKey::new(k)
        .map(Private::Rsa)
        .map_err(|_| KeyFileError(format!("key {i}: not a usable RSA key")))
}

fn rsa_from_pair(pair: &rsa::KeyPair, i: usize) -> Result<Private, KeyFileError> {
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(pair)
        .map_err(|_| KeyFileError(format!("key {i}: not a usable RSA key")))?;
    let k = rsa::PrivateDecryptingKey::from_pkcs8(der.as_ref())
        .map_err(|_| KeyFileError(format!("key {i}: not a usable RSA key")))?;
    rsa_key(k, i)
}

fn p256_key(der: &[u8], i: usize) -> Result<(Private, Map<String, Value>), KeyFileError> {
    let unusable =
        || KeyFileError(format!("key {i}: neither a usable RSA key (at least 2048 bits) nor an EC P-256 key"));
    let key = agreement::PrivateKey::from_private_key_der(&agreement::ECDH_P256, der).map_err(|_| unusable())?;
    let point = key.compute_public_key().map_err(|_| unusable())?;
    let public = p256_public(point.as_ref());
    Ok((Private::P256(key), public))
}

fn rsa_public(pair: &rsa::KeyPair) -> Map<String, Value> {
    let p = aws_lc_rs::signature::KeyPair::public_key(pair);
    let e64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
    let members = [
        ("e", e64(p.exponent().big_endian_without_leading_zero())),
        ("kty", json!("RSA")),
        ("n", e64(p.modulus().big_endian_without_leading_zero())),
    ];
    members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The JWK members of an uncompressed P-256 point.
fn p256_public(point: &[u8]) -> Map<String, Value> {
    let e64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
    let members = [("crv", json!("P-256")), ("kty", json!("EC")), ("x", e64(&point[1..33])), ("y", e64(&point[33..]))];
    members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn key_from_jwk(jwk: &Value, i: usize) -> Result<DecryptionKey, KeyFileError> {
    let bad = |why: &str| KeyFileError(format!("keys[{i}]: {why}"));
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| -> Result<Vec<u8>, KeyFileError> {
        let s = text(name).ok_or_else(|| bad(&format!("{name} missing")))?;
        URL_SAFE_NO_PAD.decode(s).map_err(|_| bad(&format!("{name} is not base64url")))
    };
    if let Some(u) = text("use")
        && u != "enc"
    {
        return Err(bad("use is not \"enc\""));
    }
    let alg = text("alg").map(str::to_owned);
    if let Some(a) = &alg
        && KeyAlg::from_name(a).is_none()
    {
        return Err(bad("alg is not a supported key management algorithm"));
    }
    let (key, public) = match text("kty") {
        Some("RSA") => {
            let (n, e, d, p, q, dp, dq, qi) = (
                bytes("n")?,
                bytes("e")?,
                bytes("d")?,
                bytes("p")?,
                bytes("q")?,
                bytes("dp")?,
                bytes("dq")?,
                bytes("qi")?,
            );
            let components = rsa::KeyPairComponents {
                public_key: rsa::PublicKeyComponents { n: n.as_slice(), e: e.as_slice() },
                d: d.as_slice(),
                p: p.as_slice(),
                q: q.as_slice(),
                dP: dp.as_slice(),
                dQ: dq.as_slice(),
                qInv: qi.as_slice(),
            };
            let pair = rsa::KeyPair::from_components(&components).map_err(|_| bad("not a consistent RSA key"))?;
            (rsa_from_pair(&pair, i)?, rsa_public(&pair))
        }
        Some("EC") => {
            if text("crv") != Some("P-256") {
                return Err(bad("only EC keys on P-256 are supported"));
            }
            let d = bytes("d")?;
            let key = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &d)
                .map_err(|_| bad("d is not a P-256 private key"))?;
            // The public part must be the private key's: a JWK whose x/y belong elsewhere is a broken file.
            let point = ec_point(&bytes("x")?, &bytes("y")?).ok_or_else(|| bad("x/y are not 32 bytes each"))?;
            let public = key.compute_public_key().map_err(|_| bad("d is not a P-256 private key"))?;
            if public.as_ref() != point.as_slice() {
                return Err(bad("x/y do not match d"));
            }
            (Private::P256(key), p256_public(&point))
        }
        _ => return Err(bad("kty must be RSA or EC")),
    };
    Ok(DecryptionKey { kid: text("kid").map(str::to_owned), alg, key, public })
}

/// An uncompressed SEC1 point from JWK coordinates.
fn ec_point(x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut p = Vec::with_capacity(65);
    p.push(4);
    p.extend_from_slice(x);
    p.extend_from_slice(y);
    Some(p)
}

// ---------------------------------------------------------------------------------------------------------------
// Decryption

/// The protected header fields this module reads; any other member is ignored unless listed in `crit`.
struct Header {
    alg: KeyAlg,
    enc: ContentEnc,
    kid: Option<String>,
    epk: Option<Vec<u8>>,
    apu: Vec<u8>,
    apv: Vec<u8>,
}

fn parse_header(b64: &str, allowed: &Allowed) -> Result<Header, JweError> {
    if b64.len() > MAX_HEADER_B64 {
        return Err(JweError::Malformed("protected header too large"));
    }
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| JweError::Malformed("header is not base64url"))?;
    let h: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| JweError::Malformed("header is not a JSON object"))?;
    let alg = match h.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(JweError::Malformed("header has no alg")),
    };
    let alg = match alg {
        "RSA1_5" => return Err(JweError::Refused("RSA1_5 (RSAES-PKCS1-v1_5 invites padding-oracle attacks)")),
        "dir" => return Err(JweError::Refused("dir (a content key shared with the issuer)")),
        a => KeyAlg::from_name(a).filter(|a| allowed.algs.contains(a)).ok_or(JweError::AlgNotAllowed)?,
    };
    let enc = match h.get("enc") {
        Some(Value::String(e)) => {
            ContentEnc::from_name(e).filter(|e| allowed.encs.contains(e)).ok_or(JweError::EncNotAllowed)?
        }
        _ => return Err(JweError::Malformed("header has no enc")),
    };
    if h.contains_key("zip") {
        return Err(JweError::Compressed);
    }
    if h.contains_key("crit") {
        return Err(JweError::Critical);
    }
    if h.contains_key("p2c") || h.contains_key("p2s") {
        return Err(JweError::Malformed("p2c/p2s belong to PBES2, which is not supported"));
    }
    match h.get("cty") {
        None => {}
        Some(Value::String(c)) if c.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(JweError::NotSigned("cty is not JWT")),
    }
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JweError::Malformed("kid is not a string")),
    };
    let party = |name: &str| -> Result<Vec<u8>, JweError> {
        match h.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) if s.len() <= MAX_PARTY_INFO * 4 / 3 + 4 => {
                URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::Malformed("apu/apv is not base64url"))
            }
            Some(_) => Err(JweError::Malformed("apu/apv is not a short base64url string")),
        }
    };
    let (apu, apv) = (party("apu")?, party("apv")?);
    let epk = if alg.is_rsa() {
        if h.contains_key("epk") {
            return Err(JweError::Malformed("epk with an RSA key management algorithm"));
        }
        None
    } else {
        Some(parse_epk(h.get("epk").ok_or(JweError::BadEpk("missing"))?)?)
    };
    Ok(Header { alg, enc, kid, epk, apu, apv })
}

/// The header's `epk` as an uncompressed P-256 point. Whether it lies on the curve is checked by aws-lc-rs when it
/// is used.
fn parse_epk(epk: &Value) -> Result<Vec<u8>, JweError> {
    let Value::Object(epk) = epk else { return Err(JweError::BadEpk("not a JSON object")) };
    if epk.get("kty").and_then(Value::as_str) != Some("EC") || epk.get("crv").and_then(Value::as_str) != Some("P-256") {
        return Err(JweError::BadEpk("not an EC P-256 key"));
    }
    if epk.contains_key("d") {
        return Err(JweError::BadEpk("carries a private key"));
    }
    let coord = |name: &str| -> Result<Vec<u8>, JweError> {
        match epk.get(name) {
            // 32 bytes are 43 base64url characters; anything longer is refused before decoding.
            Some(Value::String(s)) if s.len() == 43 => {
                URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::BadEpk("coordinate is not base64url"))
            }
            _ => Err(JweError::BadEpk("coordinate is not 32 bytes")),
        }
    };
    ec_point(&coord("x")?, &coord("y")?).ok_or(JweError::BadEpk("coordinate is not 32 bytes"))
}

/// Decrypts a compact JWE and returns its plaintext, which is checked to be a compact signed JWT (not `alg:
/// none`, not another JWE). The caller validates that JWT as it would a plain one.
pub fn decrypt(compact: &str, keys: &DecryptionKeys, allowed: &Allowed) -> Result<String, JweError> {
    inner_jws(decrypt_plaintext(compact, keys, allowed)?)
}

/// The plaintext of a compact JWE, whatever it is (the RFC examples encrypt prose).
fn decrypt_plaintext(compact: &str, keys: &DecryptionKeys, allowed: &Allowed) -> Result<Vec<u8>, JweError> {
    if compact.len() > MAX_JWE_BYTES {
        return Err(JweError::Malformed("too large"));
    }
    let parts: Vec<&str> = compact.split('.').collect();
    let [header_b64, ek, iv, ciphertext, tag] = parts.as_slice() else {
        return Err(JweError::Malformed("not five dot-separated parts"));
    };
    let header = parse_header(header_b64, allowed)?;
    let decode = |s: &str, what: &'static str| URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::Malformed(what));
    let encrypted_key = decode(ek, "encrypted key is not base64url")?;
    let iv = decode(iv, "iv is not base64url")?;
    let ciphertext = decode(ciphertext, "ciphertext is not base64url")?;
    let tag = decode(tag, "tag is not base64url")?;
    if iv.len() != header.enc.iv_len() {
        return Err(JweError::Malformed("iv has the wrong length for enc"));
    }
    if tag.len() != header.enc.tag_len() {
        return Err(JweError::Malformed("tag has the wrong length for enc"));
    }
    if ciphertext.is_empty() {
        return Err(JweError::Malformed("empty ciphertext"));
    }
    match header.alg {
        KeyAlg::EcdhEs if !encrypted_key.is_empty() => {
            return Err(JweError::Malformed("ECDH-ES direct agreement has an encrypted key"));
        }
        KeyAlg::EcdhEs => {}
        _ if encrypted_key.is_empty() => return Err(JweError::Malformed("empty encrypted key")),
        _ => {}
    }
    let aad = header_b64.as_bytes();
    let candidates = keys.candidates(header.kid.as_deref(), header.alg)?;
    let mut last = JweError::DecryptionFailed;
    for key in candidates {
        let cek = match content_key(&key.key, &header, &encrypted_key) {
            Ok(cek) => cek,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match decrypt_content(header.enc, &cek, &iv, aad, &ciphertext, &tag) {
            Ok(plain) => return Ok(plain),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The content encryption key, by the header's key management algorithm. An RSA-OAEP failure yields a random key
/// of the right length (RFC 7516 §11.5), so it fails later, at the tag, like any other wrong key.
fn content_key(key: &Private, h: &Header, encrypted_key: &[u8]) -> Result<Vec<u8>, JweError> {
    let len = h.enc.key_len();
    match (key, h.alg) {
        (Private::Rsa(k), KeyAlg::RsaOaep | KeyAlg::RsaOaep256) => {
            let oaep = if h.alg == KeyAlg::RsaOaep { &rsa::OAEP_SHA1_MGF1SHA1 } else { &rsa::OAEP_SHA256_MGF1SHA256 };
            let mut out = vec![0u8; k.min_output_size()];
            match k.decrypt(oaep, encrypted_key, &mut out, None) {
                Ok(cek) if cek.len() == len => Ok(cek.to_vec()),
                _ => random_key(len),
            }
        }
        (Private::P256(k), alg) => {
            let epk = h.epk.as_deref().ok_or(JweError::BadEpk("missing"))?;
            let (kdf_alg, kdf_len): (&str, usize) = match alg {
                KeyAlg::EcdhEs => (h.enc.name(), len),
                KeyAlg::EcdhEsA128Kw => (alg.name(), 16),
                _ => (alg.name(), 32),
            };
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, epk);
            let derived = agreement::agree(k, peer, JweError::BadEpk("not a point on P-256"), |z| {
                concat_kdf(z, kdf_alg, &h.apu, &h.apv, kdf_len)
            })?;
            if alg == KeyAlg::EcdhEs {
                return Ok(derived);
            }
            let cipher = if kdf_len == 16 { &key_wrap::AES_128 } else { &key_wrap::AES_256 };
            let kek = key_wrap::KeyEncryptionKey::new(cipher, &derived).map_err(|_| JweError::DecryptionFailed)?;
            if encrypted_key.len() != len + 8 {
                return Err(JweError::DecryptionFailed);
            }
            let mut out = vec![0u8; encrypted_key.len()];
            let cek = kek.unwrap(encrypted_key, &mut out).map_err(|_| JweError::DecryptionFailed)?;
            Ok(cek.to_vec())
        }
        _ => Err(JweError::NoKeyForAlg),
    }
}

/// RFC 7518 §4.6.2: the Concat KDF with SHA-256, which is NIST SP 800-56C's single-step KDF (aws-lc-rs's
/// `sskdf_digest`) with OtherInfo = AlgorithmID ‖ PartyUInfo ‖ PartyVInfo ‖ SuppPubInfo.
fn concat_kdf(z: &[u8], alg_id: &str, apu: &[u8], apv: &[u8], len: usize) -> Result<Vec<u8>, JweError> {
    let mut info = Vec::with_capacity(16 + alg_id.len() + apu.len() + apv.len());
    for field in [alg_id.as_bytes(), apu, apv] {
        info.extend_from_slice(&(field.len() as u32).to_be_bytes());
        info.extend_from_slice(field);
    }
    info.extend_from_slice(&((len * 8) as u32).to_be_bytes());
    let mut out = vec![0u8; len];
    let alg = kdf::get_sskdf_digest_algorithm(kdf::SskdfDigestAlgorithmId::Sha256).ok_or(JweError::DecryptionFailed)?;
    kdf::sskdf_digest(alg, z, &info, &mut out).map_err(|_| JweError::DecryptionFailed)?;
    Ok(out)
}

fn random_key(len: usize) -> Result<Vec<u8>, JweError> {
    let mut k = vec![0u8; len];
    rand::SystemRandom::new().fill(&mut k).map_err(|_| JweError::DecryptionFailed)?;
    Ok(k)
}

fn decrypt_content(
    enc: ContentEnc,
    cek: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, JweError> {
    let fail = |_| JweError::DecryptionFailed;
    match enc {
        ContentEnc::A128Gcm | ContentEnc::A256Gcm => {
            let alg = if enc == ContentEnc::A128Gcm { &aead::AES_128_GCM } else { &aead::AES_256_GCM };
            let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, cek).map_err(fail)?);
            let nonce = aead::Nonce::try_assume_unique_for_key(iv).map_err(fail)?;
            let mut buf = ciphertext.to_vec();
            let plain = key.open_in_place_separate_tag(nonce, aead::Aad::from(aad), tag, &mut buf).map_err(fail)?;
            Ok(plain.to_vec())
        }
        ContentEnc::A128CbcHs256 | ContentEnc::A256CbcHs512 => {
            let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
            let expected = cbc_hs_tag(enc, mac_key, aad, iv, ciphertext);
            constant_time::verify_slices_are_equal(&expected, tag).map_err(fail)?;
            let cipher_alg = if enc == ContentEnc::A128CbcHs256 { &cipher::AES_128 } else { &cipher::AES_256 };
            let key = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(cipher_alg, enc_key).map_err(fail)?)
                .map_err(fail)?;
            let iv: [u8; 16] = iv.try_into().map_err(|_| JweError::DecryptionFailed)?;
            let mut buf = ciphertext.to_vec();
            let plain = key.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv))).map_err(fail)?;
            Ok(plain.to_vec())
        }
    }
}

/// RFC 7518 §5.2.2.1: the first half of HMAC(MAC_KEY, AAD ‖ IV ‖ ciphertext ‖ AL), AL = AAD length in bits.
fn cbc_hs_tag(enc: ContentEnc, mac_key: &[u8], aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let alg = if enc == ContentEnc::A128CbcHs256 { hmac::HMAC_SHA256 } else { hmac::HMAC_SHA512 };
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(alg, mac_key));
    ctx.update(aad);
    ctx.update(iv);
    ctx.update(ciphertext);
    ctx.update(&((aad.len() as u64) * 8).to_be_bytes());
    let full = ctx.sign();
    full.as_ref()[..enc.tag_len()].to_vec()
}

/// The plaintext must be a compact JWS with a real signature algorithm.
fn inner_jws(plain: Vec<u8>) -> Result<String, JweError> {
    let text = String::from_utf8(plain).map_err(|_| JweError::NotSigned("not UTF-8"))?;
    if is_jwe(&text) {
        return Err(JweError::Nested);
    }
    let mut parts = text.split('.');
    let (Some(h), Some(_), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JweError::NotSigned("not three dot-separated parts"));
    };
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JweError::NotSigned("header is not a base64url JSON object"))?;
    match header.get("alg").and_then(Value::as_str) {
        None => return Err(JweError::NotSigned("no alg")),
        Some(a) if a.eq_ignore_ascii_case("none") => return Err(JweError::NotSigned("unsigned (alg none)")),
        Some(_) => {}
    }
    if sig.is_empty() {
        return Err(JweError::NotSigned("empty signature"));
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------------------------------
// Encryption: the development issuer's side, and the tests'.

/// A recipient's public key, for encrypting to it.
#[derive(Clone)]
pub enum EncryptionKey {
    Rsa(rsa::PublicEncryptingKey),
    /// An uncompressed P-256 point.
    P256(Vec<u8>),
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncryptionKey::Rsa(_) => "EncryptionKey::Rsa",
            EncryptionKey::P256(_) => "EncryptionKey::P256",
        })
    }
}

impl EncryptionKey {
    /// A recipient key from a public JWK (RSA `n e`, or EC P-256 `x y`).
    pub fn from_jwk(jwk: &Value) -> Option<Self> {
        let b = |name: &str| jwk.get(name).and_then(Value::as_str).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
        match jwk.get("kty").and_then(Value::as_str)? {
            "RSA" => {
                let (n, e) = (b("n")?, b("e")?);
                let c = rsa::PublicKeyComponents { n: n.as_slice(), e: e.as_slice() };
                Some(EncryptionKey::Rsa(c.try_into().ok()?))
            }
            "EC" if jwk.get("crv").and_then(Value::as_str) == Some("P-256") => {
                Some(EncryptionKey::P256(ec_point(&b("x")?, &b("y")?)?))
            }
            _ => None,
        }
    }
}

/// A freshly generated key pair for tests and the development issuer: the private half as a PEM file's text
/// (PKCS#8) and as a private JWK, the public half for encrypting.
pub struct GeneratedKey {
    pub private_pem: String,
    pub private_jwk: Option<Value>,
    /// The public half as a JWK (`use: enc`), for registering the client at an issuer.
    pub public_jwk: Value,
    pub public: EncryptionKey,
}

impl GeneratedKey {
    /// An RSA-2048 key (no private JWK: aws-lc-rs does not export RSA private components; use the PEM).
    #[allow(
        clippy::expect_used,
        reason = "tests and the development issuer: key generation fails only without a working RNG"
    )]
    pub fn rsa() -> Self {
        let pair = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).expect("RSA key generation");
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8 export");
        let k = rsa::PrivateDecryptingKey::from_pkcs8(der.as_ref()).expect("PKCS#8 import");
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
        let e64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        GeneratedKey {
            private_pem: pem("PRIVATE KEY", der.as_ref()),
            private_jwk: None,
            public_jwk: json!({
                "kty": "RSA", "use": "enc", "n": e64(public.modulus().big_endian_without_leading_zero()),
                "e": e64(public.exponent().big_endian_without_leading_zero()),
            }),
            public: EncryptionKey::Rsa(k.public_key()),
        }
    }

    /// An EC P-256 key.
    #[allow(
        clippy::expect_used,
        reason = "tests and the development issuer: key generation fails only without a working RNG"
    )]
    pub fn p256() -> Self {
        let k = agreement::PrivateKey::generate(&agreement::ECDH_P256).expect("P-256 key generation");
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k).expect("PKCS#8 export");
        let d = AsBigEndian::<EcPrivateKeyBin>::as_be_bytes(&k).expect("scalar export");
        let point = k.compute_public_key().expect("public key").as_ref().to_vec();
        let e64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        GeneratedKey {
            private_pem: pem("PRIVATE KEY", der.as_ref()),
            private_jwk: Some(json!({
                "kty": "EC", "crv": "P-256", "x": e64(&point[1..33]), "y": e64(&point[33..]), "d": e64(d.as_ref()),
            })),
            public_jwk: json!({"kty": "EC", "use": "enc", "crv": "P-256", "x": e64(&point[1..33]), "y": e64(&point[33..])}),
            public: EncryptionKey::P256(point),
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Encrypts `payload` (a signed JWT) to `to` as a compact JWE with `cty: JWT`. Returns `None` when the key does not
/// suit the algorithm.
pub fn encrypt(payload: &[u8], to: &EncryptionKey, kid: Option<&str>, alg: KeyAlg, enc: ContentEnc) -> Option<String> {
    let rng = rand::SystemRandom::new();
    let mut header = json!({"alg": alg.name(), "enc": enc.name(), "cty": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let (cek, encrypted_key) = match (to, alg) {
        (EncryptionKey::Rsa(public), KeyAlg::RsaOaep | KeyAlg::RsaOaep256) => {
            let cek = random_key(enc.key_len()).ok()?;
            let oaep = if alg == KeyAlg::RsaOaep { &rsa::OAEP_SHA1_MGF1SHA1 } else { &rsa::OAEP_SHA256_MGF1SHA256 };
            let key = rsa::OaepPublicEncryptingKey::new(public.clone()).ok()?;
            let mut out = vec![0u8; key.ciphertext_size()];
            let ek = key.encrypt(oaep, &cek, &mut out, None).ok()?.to_vec();
            (cek, ek)
        }
        (EncryptionKey::P256(point), KeyAlg::EcdhEs | KeyAlg::EcdhEsA128Kw | KeyAlg::EcdhEsA256Kw) => {
            let eph = agreement::PrivateKey::generate(&agreement::ECDH_P256).ok()?;
            let eph_pub = eph.compute_public_key().ok()?.as_ref().to_vec();
            let e64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            header["epk"] = json!({"kty": "EC", "crv": "P-256", "x": e64(&eph_pub[1..33]), "y": e64(&eph_pub[33..])});
            let (kdf_alg, kdf_len) = match alg {
                KeyAlg::EcdhEs => (enc.name(), enc.key_len()),
                KeyAlg::EcdhEsA128Kw => (alg.name(), 16),
                _ => (alg.name(), 32),
            };
            let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point.as_slice());
            let derived =
                agreement::agree(&eph, peer, JweError::DecryptionFailed, |z| concat_kdf(z, kdf_alg, &[], &[], kdf_len))
                    .ok()?;
            if alg == KeyAlg::EcdhEs {
                (derived, Vec::new())
            } else {
                let cek = random_key(enc.key_len()).ok()?;
                let cipher = if kdf_len == 16 { &key_wrap::AES_128 } else { &key_wrap::AES_256 };
                let kek = key_wrap::KeyEncryptionKey::new(cipher, &derived).ok()?;
                let mut out = vec![0u8; cek.len() + 8];
                let ek = kek.wrap(&cek, &mut out).ok()?.to_vec();
                (cek, ek)
            }
        }
        _ => return None,
    };
    let header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?);
    let aad = header_b64.as_bytes();
    let (iv, ciphertext, tag) = match enc {
        ContentEnc::A128Gcm | ContentEnc::A256Gcm => {
            let alg = if enc == ContentEnc::A128Gcm { &aead::AES_128_GCM } else { &aead::AES_256_GCM };
            let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &cek).ok()?);
            let mut iv = [0u8; 12];
            rng.fill(&mut iv).ok()?;
            let mut buf = payload.to_vec();
            let tag = key
                .seal_in_place_separate_tag(aead::Nonce::assume_unique_for_key(iv), aead::Aad::from(aad), &mut buf)
                .ok()?;
            (iv.to_vec(), buf, tag.as_ref().to_vec())
        }
        ContentEnc::A128CbcHs256 | ContentEnc::A256CbcHs512 => {
            let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
            let cipher_alg = if enc == ContentEnc::A128CbcHs256 { &cipher::AES_128 } else { &cipher::AES_256 };
            let key = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(cipher_alg, enc_key).ok()?).ok()?;
            let mut buf = payload.to_vec();
            let ctx = key.encrypt(&mut buf).ok()?;
            let iv: &[u8] = (&ctx).try_into().ok()?;
            let iv = iv.to_vec();
            let tag = cbc_hs_tag(enc, mac_key, aad, &iv, &buf);
            (iv, buf, tag)
        }
    };
    let e64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    Some(format!("{header_b64}.{}.{}.{}.{}", e64(&encrypted_key), e64(&iv), e64(&ciphertext), e64(&tag)))
}

#[cfg(test)]
mod tests;
