//! Signing keys of the development issuer, generated at start with aws-lc-rs, and the JWS compact serialisation
//! around them. Also used by tests to make tokens, good and deliberately bad.

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::KeySize,
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// Algorithms the development issuer can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevAlg {
    RS256,
    PS256,
    ES256,
    ES384,
}

impl DevAlg {
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            DevAlg::RS256 => "RS256",
            DevAlg::PS256 => "PS256",
            DevAlg::ES256 => "ES256",
            DevAlg::ES384 => "ES384",
        }
    }
}

enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
}

/// One signing key with its id.
pub struct SigningKey {
    pub kid: String,
    pub alg: DevAlg,
    material: Material,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.kid, self.alg.name())
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg` (RSA 2048 or the matching curve).
    #[allow(clippy::expect_used, reason = "development issuer: key generation fails only without a working RNG")]
    pub fn generate(alg: DevAlg) -> Self {
        let material = match alg {
            DevAlg::RS256 | DevAlg::PS256 => {
                Material::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation"))
            }
            DevAlg::ES256 => Material::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key generation"),
                "P-256",
            ),
            DevAlg::ES384 => Material::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 key generation"),
                "P-384",
            ),
        };
        Self { kid: crate::random::token(9), alg, material }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(k) => {
                let pk = k.public_key();
                json!({
                    "kty": "RSA", "use": "sig", "alg": self.alg.name(), "kid": self.kid,
                    "n": URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            Material::Ec(k, crv) => {
                let point = k.public_key().as_ref();
                let n = (point.len() - 1) / 2;
                json!({
                    "kty": "EC", "use": "sig", "alg": self.alg.name(), "kid": self.kid, "crv": crv,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..1 + n]),
                    "y": URL_SAFE_NO_PAD.encode(&point[1 + n..]),
                })
            }
        }
    }

    /// The RSA modulus as used for an HMAC secret in algorithm-confusion attacks (tests only make use of it).
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.material {
            Material::Rsa(k) => k.public_key().as_ref().to_vec(),
            Material::Ec(k, _) => k.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `claims` as a compact JWS with this key's algorithm and kid.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// Signs with an arbitrary header (tests: wrong kid, `crit`, …).
    #[allow(clippy::expect_used, reason = "development issuer: signing with a generated key fails only without an RNG")]
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let rng = SystemRandom::new();
        let sig = match &self.material {
            Material::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding =
                    if self.alg == DevAlg::PS256 { &signature::RSA_PSS_SHA256 } else { &signature::RSA_PKCS1_SHA256 };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, input.as_bytes(), &mut sig).expect("RSA signing");
                sig
            }
            Material::Ec(k, _) => k.sign(&rng, input.as_bytes()).expect("ECDSA signing").as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// `base64url(header).base64url(claims)`.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// An HS256 token keyed with `secret` (for algorithm-confusion tests).
pub fn sign_hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes())))
}
