//! The `[assertion]` section: the signed identity assertion idgate hands the upstream (see [`crate::assertion`]).
//! Key files are read and parsed here, so a bad key — or an `alg` the key cannot sign — is a configuration error
//! naming the key, not a failed request.

use std::{sync::Arc, time::Duration};

use http::HeaderName;

use super::{Problems, raw::RawAssertion};
use crate::signing::{SigningAlg, SigningKey};

/// The default header the assertion travels in.
pub const DEFAULT_HEADER: &str = "x-idgate-assertion";
/// The default assertion lifetime (seconds); it never outlives the session either.
pub const DEFAULT_LIFETIME_SECS: u64 = 300;
/// The session claims copied by default; `idp_iss` stands for the ID token's `iss`.
pub const DEFAULT_CLAIMS: [&str; 5] = ["sub", "email", "email_verified", "name", "idp_iss"];
/// Claims idgate sets itself: a `claims` entry may not name them.
pub const RESERVED_CLAIMS: [&str; 8] = ["iss", "aud", "iat", "exp", "nbf", "jti", "sid", "typ"];
/// ID-token members that are about the token, not the user: never copied.
const TOKEN_CLAIMS: [&str; 6] = ["nonce", "at_hash", "c_hash", "s_hash", "auth_time_token", "azp"];

/// A signing key read from a file at load. Compared by `kid` (its RFC 7638 thumbprint) and algorithm.
#[derive(Debug, Clone)]
pub struct LoadedKey(pub Arc<SigningKey>);

impl PartialEq for LoadedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.kid() == other.0.kid() && self.0.alg() == other.0.alg()
    }
}

/// `[assertion]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionSettings {
    pub enabled: bool,
    pub header: HeaderName,
    /// The key from `key_file`; `None`: a key is generated at start (one replica only).
    pub key: Option<LoadedKey>,
    /// Keys still published at `{prefix}/jwks`, no longer used to sign (rotation).
    pub previous_keys: Vec<LoadedKey>,
    pub lifetime: Duration,
    /// `None`: the public origin of `oidc.redirect_url`.
    pub issuer: Option<String>,
    /// `None`: the request's host as the application sees it (per route `[[routes]] audience` first).
    pub audience: Option<String>,
    /// Session claims copied into the assertion (`idp_iss`: the ID token's `iss`).
    pub claims: Vec<String>,
}

impl Default for AssertionSettings {
    /// Off, with every default.
    fn default() -> Self {
        Self {
            enabled: false,
            header: HeaderName::from_static(DEFAULT_HEADER),
            key: None,
            previous_keys: Vec::new(),
            lifetime: Duration::from_secs(DEFAULT_LIFETIME_SECS),
            issuer: None,
            audience: None,
            claims: DEFAULT_CLAIMS.iter().map(|c| (*c).to_owned()).collect(),
        }
    }
}

/// Validates `[assertion]`, adding one problem per bad key.
pub fn settings(p: &mut Problems, raw: RawAssertion) -> AssertionSettings {
    let d = AssertionSettings::default();
    let header = match raw.header {
        None => d.header,
        Some(h) => match HeaderName::try_from(h.as_str()) {
            Ok(name) if is_managed(&name) => {
                p.add("assertion.header", "this header is managed by the proxy and cannot carry the assertion");
                d.header
            }
            Ok(name) => name,
            Err(_) => {
                p.add("assertion.header", format!("{h:?}: not a valid HTTP header name"));
                d.header
            }
        },
    };
    let alg = raw.alg.as_deref().and_then(|a| {
        SigningAlg::from_name(a).or_else(|| p.bad("assertion.alg", &format!("{a:?}: expected RS256, PS256 or ES256")))
    });
    let has_file = raw.key_file.is_some();
    let key = raw.key_file.and_then(|path| read_key(p, "assertion.key_file", &path, alg).map(LoadedKey));
    if !has_file && alg.is_some_and(|a| a != SigningAlg::Es256) {
        p.add("assertion.alg", "without assertion.key_file the generated key is EC P-256 and signs ES256");
    }
    let previous_keys = raw
        .previous_key_files
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, path)| read_key(p, &format!("assertion.previous_key_files[{i}]"), path, None).map(LoadedKey))
        .collect();
    let lifetime_secs = raw.lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS);
    if !(60..=3600).contains(&lifetime_secs) {
        p.add("assertion.lifetime_secs", format!("{lifetime_secs}: must be between 60 and 3600"));
    }
    let issuer = raw.issuer.filter(|i| {
        let ok = !i.trim().is_empty() && !i.chars().any(char::is_control);
        if !ok {
            p.add("assertion.issuer", "must be a non-empty string, such as https://app.example.com");
        }
        ok
    });
    let audience = raw.audience.filter(|a| {
        let ok = !a.trim().is_empty() && !a.chars().any(char::is_control);
        if !ok {
            p.add("assertion.audience", "must be a non-empty string");
        }
        ok
    });
    let claims = match raw.claims {
        None => d.claims,
        Some(list) => list
            .into_iter()
            .filter(|c| {
                let why = if c.is_empty() {
                    Some("a claim name is empty")
                } else if RESERVED_CLAIMS.contains(&c.as_str()) {
                    Some("idgate sets iss, aud, iat, exp, nbf, jti, sid and typ itself")
                } else if TOKEN_CLAIMS.contains(&c.as_str()) || c.ends_with("_token") || c == "id_token" {
                    Some("token members (nonce, hashes, tokens) are never copied")
                } else {
                    None
                };
                if let Some(why) = why {
                    p.add("assertion.claims", format!("{c:?}: {why}"));
                }
                why.is_none()
            })
            .collect(),
    };
    AssertionSettings {
        enabled: raw.enabled.unwrap_or(false),
        header,
        key,
        previous_keys,
        lifetime: Duration::from_secs(lifetime_secs.clamp(60, 3600)),
        issuer,
        audience,
        claims,
    }
}

/// Reads and parses one PEM key file; `alg` must fit the key (`RS256`/`PS256` RSA, `ES256` P-256).
fn read_key(p: &mut Problems, key: &str, path: &str, alg: Option<SigningAlg>) -> Option<Arc<SigningKey>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return p.bad(key, &format!("cannot read {path:?}: {e}")),
    };
    match SigningKey::from_pem(&bytes, alg) {
        Ok(k) => Some(Arc::new(k)),
        Err(e @ crate::signing::SigningKeyError::AlgMismatch { .. }) => {
            p.bad("assertion.alg", &format!("{e} (the key in {path:?})"))
        }
        Err(e) => p.bad(key, &format!("{path:?}: {e}")),
    }
}

/// Headers the proxy manages itself (framing, our cookie, credentials, forwarding).
fn is_managed(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(n, "host" | "cookie" | "authorization" | "content-length" | "transfer-encoding" | "connection" | "upgrade")
        || n.starts_with("x-forwarded-")
        || n == "forwarded"
}
