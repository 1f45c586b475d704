//! idgate's own signing keys and the JWS it signs with them: client assertions (`private_key_jwt`), DPoP proofs and
//! the identity assertion for the upstream. Pure — a key and claims in, a compact JWS out.
//!
//! Keys are RSA (≥ 2048 bits; `RS256` by default, `PS256` on request) or EC P-256 (`ES256`), read from PEM (PKCS#8,
//! PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`) or generated. A key's `kid` is its RFC 7638 thumbprint, so
//! every replica given the same key file names it the same way and a rotated key gets a new name by itself. Every
//! primitive is aws-lc-rs's; this module only encodes.

use aws_lc_rs::{
    digest, rand,
    rsa::KeySize,
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The JWS algorithms idgate signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Rs256,
    Ps256,
    Es256,
}

impl SigningAlg {
    /// The JWA name (`RS256`, `PS256`, `ES256`).
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Ps256 => "PS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    /// The algorithm a JWA name stands for, among those idgate signs with.
    pub fn from_name(name: &str) -> Option<Self> {
        [SigningAlg::Rs256, SigningAlg::Ps256, SigningAlg::Es256].into_iter().find(|a| a.name() == name)
    }

    fn is_rsa(self) -> bool {
        self != SigningAlg::Es256
    }
}

/// A signing key that cannot be used. The text names the problem, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("no private key found in the PEM text")]
    NoKey,
    #[error("PEM: {0}")]
    Pem(String),
    #[error("not a usable RSA or EC P-256 private key")]
    Unusable,
    #[error("RSA key of {0} bits: at least 2048 are required")]
    RsaTooSmall(usize),
    #[error("{alg} does not fit a{kind} key")]
    AlgMismatch { alg: &'static str, kind: &'static str },
    #[error("key generation failed")]
    Generation,
}

enum Private {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
}

/// One private signing key with its algorithm and `kid`. `Debug` shows the `kid` and algorithm only.
pub struct SigningKey {
    alg: SigningAlg,
    kid: String,
    /// The public members RFC 7638 hashes (`e kty n`, or `crv kty x y`).
    public: Map<String, Value>,
    key: Private,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("alg", &self.alg.name()).field("kid", &self.kid).finish()
    }
}

impl SigningKey {
    /// The first private key of a PEM text. `alg` picks `RS256` or `PS256` for an RSA key (default `RS256`); an EC
    /// key signs `ES256` and refuses any other choice.
    pub fn from_pem(pem: &[u8], alg: Option<SigningAlg>) -> Result<Self, SigningKeyError> {
        use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => SigningKeyError::NoKey,
            other => SigningKeyError::Pem(other.to_string()),
        })?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(d) => {
                let d = d.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(d) {
                    Ok(k) => Private::Rsa(k),
                    Err(_) => Private::P256(
                        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, d)
                            .map_err(|_| SigningKeyError::Unusable)?,
                    ),
                }
            }
            PrivateKeyDer::Pkcs1(d) => {
                Private::Rsa(RsaKeyPair::from_der(d.secret_pkcs1_der()).map_err(|_| SigningKeyError::Unusable)?)
            }
            PrivateKeyDer::Sec1(d) => Private::P256(
                EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, d.secret_sec1_der())
                    .map_err(|_| SigningKeyError::Unusable)?,
            ),
            _ => return Err(SigningKeyError::Unusable),
        };
        Self::with_alg(key, alg)
    }

    /// A fresh EC P-256 key (`ES256`).
    pub fn generate_p256() -> Result<Self, SigningKeyError> {
        let k = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| SigningKeyError::Generation)?;
        Self::with_alg(Private::P256(k), None)
    }

    /// A fresh RSA-2048 key (`RS256` unless `alg` says `PS256`).
    pub fn generate_rsa(alg: Option<SigningAlg>) -> Result<Self, SigningKeyError> {
        let k = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SigningKeyError::Generation)?;
        Self::with_alg(Private::Rsa(k), alg)
    }

    fn with_alg(key: Private, alg: Option<SigningAlg>) -> Result<Self, SigningKeyError> {
        let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
        let (alg, public) = match &key {
            Private::Rsa(k) => {
                let bits = k.public_modulus_len() * 8;
                if bits < 2048 {
                    return Err(SigningKeyError::RsaTooSmall(bits));
                }
                let alg = alg.unwrap_or(SigningAlg::Rs256);
                if !alg.is_rsa() {
                    return Err(SigningKeyError::AlgMismatch { alg: alg.name(), kind: "n RSA" });
                }
                let p = k.public_key();
                let members = [
                    ("e", b64(p.exponent().big_endian_without_leading_zero())),
                    ("kty", json!("RSA")),
                    ("n", b64(p.modulus().big_endian_without_leading_zero())),
                ];
                (alg, members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }
            Private::P256(k) => {
                let alg = alg.unwrap_or(SigningAlg::Es256);
                if alg != SigningAlg::Es256 {
                    return Err(SigningKeyError::AlgMismatch { alg: alg.name(), kind: "n EC P-256" });
                }
                let point = k.public_key().as_ref();
                let members = [
                    ("crv", json!("P-256")),
                    ("kty", json!("EC")),
                    ("x", b64(&point[1..33])),
                    ("y", b64(&point[33..65])),
                ];
                (alg, members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }
        };
        let kid = jwk_thumbprint(&public);
        Ok(Self { alg, kid, public, key })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint of the public key, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a bare JWK: only the members its thumbprint covers (what a DPoP proof's `jwk` carries).
    pub fn public_jwk_bare(&self) -> Value {
        Value::Object(self.public.clone())
    }

    /// The public key as published in a JWK set: `use: sig`, `alg` and `kid` added.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        jwk.insert("use".into(), json!("sig"));
        jwk.insert("alg".into(), json!(self.alg.name()));
        jwk.insert("kid".into(), json!(self.kid));
        Value::Object(jwk)
    }

    /// Signs `claims` as a compact JWS. `header` holds the members the caller wants (`typ`, `kid`, `jwk`, …);
    /// `alg` is always this key's own and overrides any given.
    pub fn sign(&self, mut header: Map<String, Value>, claims: &impl Serialize) -> Result<String, SignError> {
        header.insert("alg".into(), json!(self.alg.name()));
        let header = serde_json::to_vec(&header).map_err(|_| SignError)?;
        let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let rng = rand::SystemRandom::new();
        let sig = match &self.key {
            Private::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    SigningAlg::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rng, out.as_bytes(), &mut sig).map_err(|_| SignError)?;
                sig
            }
            Private::P256(k) => k.sign(&rng, out.as_bytes()).map_err(|_| SignError)?.as_ref().to_vec(),
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut out);
        Ok(out)
    }

    /// Signs `claims` as a JWT with this key's `kid` in the header, and `typ` when given.
    pub fn sign_jwt(&self, typ: Option<&str>, claims: &impl Serialize) -> Result<String, SignError> {
        let mut header = Map::new();
        if let Some(typ) = typ {
            header.insert("typ".into(), json!(typ));
        }
        header.insert("kid".into(), json!(self.kid));
        self.sign(header, claims)
    }
}

/// Signing failed (a claims value that is not serialisable, or the primitive refused). Carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

/// RFC 7638 §3: the SHA-256 thumbprint (base64url) of a public JWK's required members, given as a map holding
/// exactly those. The canonical form is the members sorted by name, without whitespace.
pub fn jwk_thumbprint(members: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> = members.iter().collect();
    let canonical = serde_json::to_vec(&sorted).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &canonical))
}

/// A JWK set document (`{"keys": [...]}`) of the given public JWKs, as served at `{prefix}/jwks`.
pub fn jwks_document(keys: impl IntoIterator<Item = Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys.into_iter().collect::<Vec<_>>() })).unwrap_or_default()
}

#[cfg(test)]
mod tests;
