//! DPoP (RFC 9449): idgate proves possession of a key it holds with every token request, so the tokens the issuer
//! binds to that key (`token_type: DPoP`) are worthless to whoever copies them. This module builds the proofs and
//! owns the retry policy; the token and userinfo requests call [`Dpop::exchange`].
//!
//! - **When.** `oidc.dpop = true`: every token request (code, refresh) carries a proof. `false`: never. Unset
//!   (auto): none, until the issuer says it requires DPoP for this client. Discovery cannot say so
//!   (`dpop_signing_alg_values_supported` means the issuer *can* bind tokens), so the refusal of a proofless token
//!   request is read: `invalid_dpop_proof` or `use_dpop_nonce` (RFC 9449 §7.1, §8), or an error whose description
//!   names DPoP. That request is then sent once more with a proof, and DPoP stays on for the process when it
//!   succeeds. A bare `invalid_grant` is not read as a demand (oidc-provider refuses a proofless request of a
//!   `dpop_bound_access_tokens` client with only "grant request is invalid"): retrying every refused code or
//!   refresh token with a proof would double every failure at every issuer that merely supports DPoP, so such an
//!   issuer needs `oidc.dpop = true`. With `false`, or with `oidc.forward_access_token`, a demand is a readable
//!   error instead.
//! - **Key.** `oidc.dpop_key_file` (RSA ≥ 2048 or EC P-256 PEM), else a P-256 key generated at start and kept for
//!   the process only: a refresh token the issuer bound to it (public clients, RFC 9449 §5; some issuers for every
//!   client) is refused after a restart or on another replica, and that session ends (the user logs in again).
//!   Replicas that must refresh each other's sessions share one key file.
//! - **Algorithm.** The first the key signs that the issuer lists in `dpop_signing_alg_values_supported` (an RSA key
//!   signs `RS256` or `PS256`; a P-256 key `ES256`); when discovery lists none, the key's default.
//! - **Nonces** (RFC 9449 §8, §9). The latest `DPoP-Nonce` an endpoint's origin sent is put in the next proof to it.
//!   A refusal `use_dpop_nonce` with a `DPoP-Nonce` header is retried once with that nonce; a second demand is an
//!   error (a server that wants a new nonce every time cannot loop us).
//! - **Token type.** A request with a proof must be answered `token_type: DPoP`, one without must not: an unbound
//!   token where binding was asked for, or a bound one idgate did not ask for, is an error page, not a session.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use aws_lc_rs::digest::{SHA256, digest};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, Method, StatusCode, header};
use serde_json::{Map, json};

use crate::{
    random,
    signing::{SigningAlg, SigningKey, SigningKeyError},
};

/// The request header carrying a proof.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The response header carrying a server-provided nonce.
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// The `typ` of a proof (RFC 9449 §4.2).
pub const PROOF_TYP: &str = "dpop+jwt";

/// `oidc.dpop`: whether token requests carry DPoP proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpopMode {
    /// Unset: only once the issuer demands it for this client.
    #[default]
    Auto,
    /// `true`: always.
    On,
    /// `false`: never; a demand is an error.
    Off,
}

/// `oidc.dpop` and `oidc.dpop_key_file`, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DpopSettings {
    pub mode: DpopMode,
    /// The configured key; `None`: one is generated at start.
    pub key: Option<DpopKey>,
}

/// One DPoP key pair as every algorithm it can sign with: an RSA key as `RS256` and `PS256`, a P-256 key as
/// `ES256`. Compared by thumbprint.
#[derive(Debug, Clone)]
pub struct DpopKey(Arc<Vec<SigningKey>>);

impl DpopKey {
    /// The first private key of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SigningKeyError> {
        let first = SigningKey::from_pem(pem, None)?;
        let keys = match first.alg() {
            SigningAlg::Es256 => vec![first],
            _ => vec![first, SigningKey::from_pem(pem, Some(SigningAlg::Ps256))?],
        };
        Ok(Self(Arc::new(keys)))
    }

    /// A fresh P-256 key.
    pub fn generate() -> Result<Self, SigningKeyError> {
        Ok(Self(Arc::new(vec![SigningKey::generate_p256()?])))
    }

    /// The RFC 7638 thumbprint of the public key: the `jkt` tokens are bound to, and `dpop_jkt`.
    pub fn jkt(&self) -> &str {
        self.0.first().map(SigningKey::kid).unwrap_or("")
    }

    /// The algorithms this key signs with, in order of preference.
    pub fn algs(&self) -> Vec<&'static str> {
        self.0.iter().map(|k| k.alg().name()).collect()
    }

    /// The key signing an algorithm the issuer accepts (`None`: the issuer lists none, any).
    fn for_issuer(&self, supported: Option<&[String]>) -> Option<&SigningKey> {
        self.0.iter().find(|k| supported.is_none_or(|s| s.iter().any(|a| a == k.alg().name())))
    }
}

impl PartialEq for DpopKey {
    fn eq(&self, other: &Self) -> bool {
        self.jkt() == other.jkt()
    }
}

/// DPoP could not be used with this issuer. The text names the problem and the fix, never a token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("{endpoint} asked for a new DPoP nonce again after one retry with the nonce it had sent; giving up")]
    NonceLoop { endpoint: &'static str },
    #[error("the issuer requires DPoP for this client, but oidc.dpop = false")]
    RequiredButOff,
    #[error(
        "the issuer requires DPoP for this client, but oidc.forward_access_token = true: a DPoP-bound access token \
         is useless to the upstream"
    )]
    RequiredButForwarding,
    #[error("the token endpoint answered token_type {got:?} to a request {sent} a DPoP proof")]
    TokenType { got: String, sent: &'static str },
    #[error("no DPoP algorithm in common: the key signs {ours}, the issuer accepts {theirs}")]
    NoCommonAlg { ours: String, theirs: String },
    #[error("DPoP key unavailable: {0}")]
    Key(SigningKeyError),
    #[error("DPoP proof could not be signed")]
    Sign,
}

/// A refusal as the DPoP policy reads it: the OAuth error code and description, from a JSON body (token
/// endpoint) or a `WWW-Authenticate` challenge (userinfo, RFC 9449 §7.1).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    pub error: String,
    pub description: String,
}

impl Challenge {
    /// The challenge of a refused answer, if it says anything.
    pub fn of(headers: &HeaderMap, body: &[u8]) -> Option<Challenge> {
        #[derive(serde::Deserialize)]
        struct OAuthError {
            error: String,
            #[serde(default)]
            error_description: Option<String>,
        }
        if let Ok(e) = serde_json::from_slice::<OAuthError>(body) {
            return Some(Challenge { error: e.error, description: e.error_description.unwrap_or_default() });
        }
        let www = headers.get_all(header::WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok());
        www.filter_map(|v| auth_param(v, "error").map(|e| (e, auth_param(v, "error_description"))))
            .map(|(error, d)| Challenge { error, description: d.unwrap_or_default() })
            .next()
    }

    /// The issuer says in so many words that this client must use DPoP.
    fn demands_dpop(&self) -> bool {
        matches!(self.error.as_str(), "invalid_dpop_proof" | "use_dpop_nonce")
            || (matches!(self.error.as_str(), "invalid_grant" | "invalid_request")
                && self.description.to_ascii_lowercase().contains("dpop"))
    }
}

/// The value of `name="..."` (or `name=token`) in a `WWW-Authenticate` challenge.
fn auth_param(challenge: &str, name: &str) -> Option<String> {
    let lower = challenge.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let boundary = at == 0 || matches!(lower.as_bytes()[at - 1], b' ' | b',');
        let rest = challenge[from..].trim_start();
        if !boundary || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        return Some(match rest.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or("").to_owned(),
            None => rest.split([',', ' ']).next().unwrap_or("").to_owned(),
        });
    }
    None
}

/// One answer to a request sent through [`Dpop::exchange`]: what the policy needs to read.
pub trait Answered {
    fn status(&self) -> StatusCode;
    fn headers(&self) -> &HeaderMap;
    fn body(&self) -> &[u8];
}

/// idgate's DPoP state for one issuer: the key, whether the issuer demanded DPoP, the latest nonces.
pub struct Dpop {
    mode: DpopMode,
    key: Result<DpopKey, SigningKeyError>,
    configured_key: bool,
    forward_access_token: bool,
    /// Auto mode: a request the issuer refused for want of a proof succeeded with one (sticky for the process).
    demanded: AtomicBool,
    /// Endpoint origin → the latest `DPoP-Nonce` it sent.
    nonces: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop").field("mode", &self.mode).field("active", &self.active()).finish_non_exhaustive()
    }
}

impl Dpop {
    /// The state for these settings; generates the key when none is configured (and DPoP may be used).
    pub fn new(settings: &DpopSettings, forward_access_token: bool) -> Self {
        let key = match (&settings.key, settings.mode) {
            (Some(k), _) => Ok(k.clone()),
            (None, DpopMode::Off) => Err(SigningKeyError::NoKey),
            (None, _) => DpopKey::generate(),
        };
        Self {
            mode: settings.mode,
            key,
            configured_key: settings.key.is_some(),
            forward_access_token,
            demanded: AtomicBool::new(false),
            nonces: Mutex::default(),
        }
    }

    /// The thumbprint of the key proofs are signed with.
    pub fn jkt(&self) -> Option<&str> {
        self.key.as_ref().ok().map(DpopKey::jkt)
    }

    /// Whether the key can sign an algorithm the issuer lists (`None`: it lists none); the algorithm it would use.
    pub fn usable_with(&self, supported: Option<&[String]>) -> Result<&'static str, DpopError> {
        let key = self.key.as_ref().map_err(|e| DpopError::Key(e.clone()))?;
        let signer = key.for_issuer(supported).ok_or_else(|| DpopError::NoCommonAlg {
            ours: key.algs().join(", "),
            // The issuer's words reach an error page: names only, a few of them.
            theirs: supported
                .unwrap_or_default()
                .iter()
                .take(12)
                .map(|a| a.chars().filter(char::is_ascii_graphic).take(16).collect::<String>())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        Ok(signer.alg().name())
    }

    /// Whether token requests carry proofs now.
    pub fn active(&self) -> bool {
        match self.mode {
            DpopMode::On => true,
            DpopMode::Auto => self.demanded.load(Ordering::Relaxed),
            DpopMode::Off => false,
        }
    }

    /// The `dpop_jkt` authorization request parameter (RFC 9449 §10), binding the code to the key: only while DPoP
    /// is active and the key comes from `oidc.dpop_key_file`. A generated key differs per replica and per start, and
    /// a callback that reached another replica (or a restarted one) could not redeem its code.
    pub fn authorization_jkt(&self) -> Option<&str> {
        (self.active() && self.configured_key).then(|| self.key.as_ref().ok().map(DpopKey::jkt)).flatten()
    }

    /// A proof for `htm` `htu` at time `now`, with the latest nonce of that origin and, for a resource request,
    /// `ath` (the access token's hash).
    pub fn proof(
        &self,
        supported: Option<&[String]>,
        htm: &Method,
        htu: &str,
        access_token: Option<&str>,
        now: i64,
    ) -> Result<String, DpopError> {
        let key = self.key.as_ref().map_err(|e| DpopError::Key(e.clone()))?;
        let alg = self.usable_with(supported)?;
        let signer = key.0.iter().find(|k| k.alg().name() == alg).ok_or(DpopError::Sign)?;
        let (target, origin) = target_and_origin(htu);
        let mut claims = json!({ "jti": random::token(16), "htm": htm.as_str(), "htu": target, "iat": now });
        if let Some(nonce) = self.nonces.lock().ok().and_then(|n| n.get(&origin).cloned()) {
            claims["nonce"] = json!(nonce);
        }
        if let Some(at) = access_token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(digest(&SHA256, at.as_bytes())));
        }
        let mut header = Map::new();
        header.insert("typ".into(), json!(PROOF_TYP));
        header.insert("jwk".into(), signer.public_jwk_bare());
        signer.sign(header, &claims).map_err(|_| DpopError::Sign)
    }

    /// Keeps the nonce an answer from `url` carries for the next proof to its origin.
    fn remember_nonce(&self, url: &str, headers: &HeaderMap) {
        let Some(nonce) = headers.get(DPOP_NONCE).and_then(|v| v.to_str().ok()) else { return };
        // A nonce is an opaque token (RFC 9449 §8.1: NQCHAR); anything else is not kept.
        if nonce.is_empty() || nonce.len() > 512 || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"') {
            return;
        }
        if let Ok(mut n) = self.nonces.lock() {
            n.insert(target_and_origin(url).1, nonce.to_owned());
        }
    }

    /// Sends a request through `send` (given the proof to attach, if any) under the DPoP policy: at most one retry
    /// with the nonce a `use_dpop_nonce` refusal sent, and in auto mode at most one retry with a proof when the
    /// issuer's refusal demands DPoP. Returns the final answer (success or the issuer's refusal, for
    /// the caller to read) and whether it answered a request with a proof. At most three requests in all.
    pub async fn exchange<A, F, Fut, E>(
        &self,
        endpoint: &'static str,
        request: Target<'_>,
        mut send: F,
    ) -> Result<(A, bool), E>
    where
        A: Answered,
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<A, E>>,
        E: From<DpopError>,
    {
        let (mut nonce_retried, mut trial) = (false, false);
        loop {
            let with_proof = self.active() || trial || request.access_token.is_some();
            let proof = match with_proof {
                true => {
                    Some(self.proof(request.supported, request.htm, request.htu, request.access_token, request.now)?)
                }
                false => None,
            };
            let answer = send(proof).await?;
            self.remember_nonce(request.htu, answer.headers());
            if answer.status().is_success() {
                if trial && !self.demanded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint,
                        "the issuer requires DPoP for this client: proofs are sent from now on (set oidc.dpop = true)"
                    );
                }
                return Ok((answer, with_proof));
            }
            let Some(challenge) = Challenge::of(answer.headers(), answer.body()) else {
                return Ok((answer, with_proof));
            };
            if with_proof && challenge.error == "use_dpop_nonce" && answer.headers().contains_key(DPOP_NONCE) {
                if nonce_retried {
                    return Err(DpopError::NonceLoop { endpoint }.into());
                }
                nonce_retried = true;
                continue;
            }
            if !with_proof && challenge.demands_dpop() {
                match self.mode {
                    DpopMode::Off => return Err(DpopError::RequiredButOff.into()),
                    _ if self.forward_access_token => return Err(DpopError::RequiredButForwarding.into()),
                    _ => {
                        trial = true;
                        continue;
                    }
                }
            }
            return Ok((answer, with_proof));
        }
    }
}

/// What a proof is made for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The issuer's `dpop_signing_alg_values_supported`.
    pub supported: Option<&'a [String]>,
    pub htm: &'a Method,
    pub htu: &'a str,
    /// A resource request with a DPoP-bound access token: the proof carries its hash, and is always sent.
    pub access_token: Option<&'a str>,
    pub now: i64,
}

/// RFC 9449 §4.2: `htu` is the target URI without query and fragment; nonces are kept per origin.
fn target_and_origin(url: &str) -> (String, String) {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let origin = u.origin().ascii_serialization();
            (u.to_string(), origin)
        }
        Err(_) => (url.to_owned(), url.to_owned()),
    }
}

/// RFC 9449 §5: a token answered to a request with a proof must be `DPoP`, one without must not be.
pub fn check_token_type(with_proof: bool, token_type: Option<&str>) -> Result<(), DpopError> {
    let got = token_type.unwrap_or("");
    let is_dpop = got.eq_ignore_ascii_case("DPoP");
    if with_proof == is_dpop {
        return Ok(());
    }
    let got = got.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    Err(DpopError::TokenType { got, sent: if with_proof { "with" } else { "without" } })
}

#[cfg(test)]
mod tests;
