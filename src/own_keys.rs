//! idgate's own keys and the JWK set it publishes at `{prefix}/jwks` (public listener) and `/jwks` (admin): the
//! public halves of the keys idgate signs with (client assertions for `private_key_jwt`, the identity assertion
//! for the upstream) and of the keys an issuer encrypts ID tokens to. An issuer can then be pointed at that
//! `jwks_uri` instead of a pasted key, and an application can verify the assertion.
//!
//! Rotation: add the new key (idgate publishes both), wait longer than the document's `max-age` plus the issuer's
//! own cache, then remove the old one. Built once at start and kept across reloads (key files need a restart).

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde_json::Value;

use crate::{
    body::{self, Body},
    config::Settings,
    signing::{self, SigningKey},
};

/// How long a fetched key set may be cached (seconds): short, so a rotation only waits minutes.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

/// The keys idgate holds, and the key set document built from their public halves.
pub struct OwnKeys {
    /// Keys whose public halves are published with `use: sig`, in order (current first).
    signing: Vec<Arc<SigningKey>>,
    /// The document served at `{prefix}/jwks`.
    document: Bytes,
    /// The key the identity assertion is signed with (`[assertion]`), when it is on.
    assertion: Option<Arc<SigningKey>>,
}

impl std::fmt::Debug for OwnKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnKeys").field("signing", &self.signing).finish_non_exhaustive()
    }
}

impl OwnKeys {
    /// Collects the keys the settings name (already read and checked at config load).
    pub fn new(settings: &Settings) -> Self {
        // `[oidc]`, or every `[[providers]]` entry (`settings.oidc` is then the first's; duplicates are dropped): the
        // client keys of `private_key_jwt` (an issuer registered with this `jwks_uri` verifies assertions here) and
        // the ID-token decryption keys.
        let issuers = || std::iter::once(&settings.oidc).chain(settings.providers.iter().map(|p| &p.oidc));
        let mut signing: Vec<Arc<SigningKey>> =
            issuers().flat_map(|o| o.client_key.iter().map(|k| Arc::clone(&k.0))).collect();
        // The identity assertion's key, and its previous keys (still published for verification).
        let assertion = assertion_key(settings);
        signing
            .extend(assertion.iter().cloned().chain(settings.assertion.previous_keys.iter().map(|k| Arc::clone(&k.0))));
        let encryption = issuers()
            .flat_map(|o| o.id_token_decryption.keys.as_ref().map(|k| k.public_jwks()).unwrap_or_default())
            .collect();
        Self { assertion, ..Self::from_parts(signing, encryption) }
    }

    /// The identity assertion's signing key, when `[assertion]` is on.
    pub fn assertion_key(&self) -> Option<Arc<SigningKey>> {
        self.assertion.clone()
    }

    fn from_parts(signing: Vec<Arc<SigningKey>>, encryption: Vec<Value>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let jwks = signing.iter().map(|k| k.public_jwk()).chain(encryption);
        // A key named twice (the same file under two settings) is published once.
        let unique = jwks.filter(|jwk| seen.insert((jwk["kid"].clone(), jwk["use"].clone())));
        let document = Bytes::from(signing::jwks_document(unique));
        Self { signing, document, assertion: None }
    }

    /// The key set document.
    pub fn document(&self) -> &Bytes {
        &self.document
    }

    /// The `{prefix}/jwks` answer: the document, cacheable for [`JWKS_MAX_AGE_SECS`].
    pub fn response(&self) -> Response<Body> {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/jwk-set+json")
            .header(header::CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECS}"))
            .body(body::full(self.document.clone()))
            .unwrap_or_else(body::internal_error)
    }
}

/// The assertion key: `assertion.key_file`'s, or — when the assertion is on without one — a P-256 key generated
/// now. A generated key lives as long as the process, so only one replica can serve: every replica must sign with
/// keys every upstream trusts, and a restart invalidates the assertions already handed out.
fn assertion_key(settings: &Settings) -> Option<Arc<SigningKey>> {
    let a = &settings.assertion;
    if let Some(k) = &a.key {
        return Some(Arc::clone(&k.0));
    }
    if !a.enabled {
        return None;
    }
    match SigningKey::generate_p256() {
        Ok(k) => {
            tracing::warn!(
                kid = k.kid(),
                "assertion.key_file is not set: the identity assertion is signed with a key generated at start, \
                 which suits one replica only (replicas and restarts publish different keys); set assertion.key_file"
            );
            Some(Arc::new(k))
        }
        Err(e) => {
            tracing::error!(error = %e, "no identity assertion key could be generated");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_and_encryption_keys_are_published_once_each_without_private_parts() {
        let a = Arc::new(SigningKey::generate_p256().unwrap());
        let b = Arc::new(SigningKey::generate_rsa(None).unwrap());
        let dec = crate::id_token::jwe::DecryptionKeys::from_pem(
            crate::id_token::jwe::GeneratedKey::p256().private_pem.as_bytes(),
        )
        .unwrap();
        let keys = OwnKeys::from_parts(vec![Arc::clone(&a), b, Arc::clone(&a)], dec.public_jwks());
        let doc: Value = serde_json::from_slice(keys.document()).unwrap();
        let list = doc["keys"].as_array().unwrap();
        let uses: Vec<&str> = list.iter().map(|k| k["use"].as_str().unwrap()).collect();
        assert_eq!(uses, ["sig", "sig", "enc"], "the repeated key is published once");
        assert!(list.iter().all(|k| k.get("d").is_none() && k["kid"].is_string()));
        let resp = keys.response();
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "public, max-age=300");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/jwk-set+json");
        let debug = format!("{keys:?}");
        assert!(debug.starts_with("OwnKeys { signing: [SigningKey") && debug.contains(a.kid()), "{debug}");
    }

    fn settings(assertion: &str) -> Settings {
        use std::io::Write;
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:4180\"\n[admin]\nlisten = \"127.0.0.1:9180\"\n\
             [upstream]\nurl = \"http://127.0.0.1:8080\"\n\
             [oidc]\nissuer = \"https://issuer.example.com\"\nclient_id = \"app\"\nclient_secret = \"s\"\n\
             redirect_url = \"https://app.example.com/oauth2/callback\"\n\
             [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n[assertion]\n{assertion}"
        );
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        crate::config::load(f.path(), &Default::default()).unwrap()
    }

    fn published_kids(keys: &OwnKeys) -> Vec<String> {
        let doc: Value = serde_json::from_slice(keys.document()).unwrap();
        doc["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn the_assertion_key_is_the_files_a_generated_one_or_none_and_is_published() {
        // Off: no key, nothing published.
        let off = OwnKeys::new(&settings("enabled = false\n"));
        assert!(off.assertion_key().is_none());
        assert!(published_kids(&off).is_empty());
        // On without a key file: a P-256 key generated at start, published.
        let generated = OwnKeys::new(&settings("enabled = true\n"));
        let key = generated.assertion_key().expect("a generated assertion key");
        assert_eq!(key.alg(), signing::SigningAlg::Es256);
        assert_eq!(published_kids(&generated), [key.kid()]);
        // With a key file: that key (its kid is its thumbprint), on or off.
        let pem = crate::id_token::jwe::GeneratedKey::p256().private_pem;
        let mut file = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
        std::io::Write::write_all(&mut file, pem.as_bytes()).unwrap();
        let kid = SigningKey::from_pem(pem.as_bytes(), None).unwrap().kid().to_owned();
        let path = file.path().display();
        for enabled in [true, false] {
            let keys = OwnKeys::new(&settings(&format!("enabled = {enabled}\nkey_file = \"{path}\"\n")));
            assert_eq!(keys.assertion_key().map(|k| k.kid().to_owned()), Some(kid.clone()), "enabled = {enabled}");
            assert_eq!(published_kids(&keys), std::slice::from_ref(&kid));
        }
    }
}
