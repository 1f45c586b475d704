//! The development issuer's DPoP side (RFC 9449), checking proofs as a real issuer does: the signature with the
//! embedded `jwk` (public members only), `typ`, `htm`, `htu` (query and fragment ignored), `iat` within a minute of
//! the issuer's clock, `jti` never seen before, the nonce when one is demanded, and for a resource request `ath`. It
//! binds access and refresh tokens to the proof key's thumbprint (`jkt`) and refuses them with another key, so the
//! fast tests run idgate's DPoP client against a peer that checks every rule.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use aws_lc_rs::digest::{SHA256, digest};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::{body::Body, random};

/// How the issuer asks for DPoP nonces (RFC 9449 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonceMode {
    /// Proofs need no nonce.
    #[default]
    Off,
    /// Every proof must carry the issuer's current nonce; a proof without it is refused with `use_dpop_nonce`.
    Required,
    /// Every proof is refused with `use_dpop_nonce` and a new nonce (a broken server: clients must not loop).
    EveryRequest,
}

/// The issuer's DPoP behaviour.
#[derive(Debug, Clone, Default)]
pub struct DpopKnobs {
    /// The client is registered for DPoP-bound tokens: a token request without a proof is refused
    /// (`invalid_dpop_proof`).
    pub required: bool,
    pub nonce: NonceMode,
    /// Answer this `token_type` instead of the right one (`DPoP` to a proof, `Bearer` otherwise).
    pub token_type: Option<&'static str>,
}

/// A proof that was not accepted.
#[derive(Debug)]
pub(super) enum Refusal {
    /// `invalid_dpop_proof`, with why.
    Invalid(&'static str),
    /// `use_dpop_nonce`, with why and the nonce to use.
    Nonce(&'static str, String),
    /// A resource request's access token does not fit its binding (`invalid_token`).
    Token(&'static str),
}

impl Refusal {
    /// Why, for the issuer's refusal log.
    pub(super) fn why(&self) -> &'static str {
        match self {
            Refusal::Invalid(w) | Refusal::Nonce(w, _) | Refusal::Token(w) => w,
        }
    }

    /// The token endpoint's answer (RFC 9449 §5.0, §8): 400 with the error in JSON.
    pub(super) fn token_response(&self) -> Response<Body> {
        let (error, nonce) = match self {
            Refusal::Invalid(_) => ("invalid_dpop_proof", None),
            Refusal::Nonce(_, n) => ("use_dpop_nonce", Some(n)),
            Refusal::Token(_) => ("invalid_grant", None),
        };
        let mut resp =
            super::json_response(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": self.why()}));
        if let Some(n) = nonce.and_then(|n| http::HeaderValue::from_str(n).ok()) {
            resp.headers_mut().insert("dpop-nonce", n);
        }
        resp
    }

    /// A resource server's answer (RFC 9449 §7.1, §9): 401 with a `WWW-Authenticate: DPoP` challenge.
    pub(super) fn resource_response(&self) -> Response<Body> {
        let (error, nonce) = match self {
            Refusal::Invalid(_) => ("invalid_dpop_proof", None),
            Refusal::Nonce(_, n) => ("use_dpop_nonce", Some(n)),
            Refusal::Token(_) => ("invalid_token", None),
        };
        resource_refusal(error, self.why(), nonce.map(String::as_str))
    }
}

/// 401 with `WWW-Authenticate: DPoP error=...` (and a `DPoP-Nonce`).
fn resource_refusal(error: &str, why: &str, nonce: Option<&str>) -> Response<Body> {
    let mut resp = super::json_response(StatusCode::UNAUTHORIZED, &json!({"error": error}));
    let challenge = format!("DPoP algs=\"{}\", error=\"{error}\", error_description=\"{why}\"", ALGS.join(" "));
    if let Ok(v) = http::HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if let Some(n) = nonce.and_then(|n| http::HeaderValue::from_str(n).ok()) {
        resp.headers_mut().insert("dpop-nonce", n);
    }
    resp
}

/// The algorithms the issuer verifies proofs with (`dpop_signing_alg_values_supported`).
pub const ALGS: [&str; 3] = ["ES256", "RS256", "PS256"];

/// How far a proof's `iat` may be from the issuer's clock.
const IAT_WINDOW_SECS: i64 = 60;

/// Nonces, seen `jti`s, and what is bound to which key.
pub(super) struct DpopState {
    nonce: Mutex<String>,
    jtis: Mutex<HashSet<String>>,
    /// Access token → `jkt`.
    bound_access: Mutex<HashMap<String, String>>,
    /// Refresh token → `jkt`.
    bound_refresh: Mutex<HashMap<String, String>>,
}

impl Default for DpopState {
    fn default() -> Self {
        Self {
            nonce: Mutex::new(random::token(16)),
            jtis: Mutex::default(),
            bound_access: Mutex::default(),
            bound_refresh: Mutex::default(),
        }
    }
}

impl DpopState {
    /// Checks the request's proof, if any: `Ok(None)` when there is none, `Ok(Some(jkt))` when it is good.
    pub(super) fn verify(
        &self,
        knobs: &DpopKnobs,
        headers: &HeaderMap,
        htm: &Method,
        htu: &str,
        now: i64,
        access_token: Option<&str>,
    ) -> Result<Option<String>, Refusal> {
        let mut proofs = headers.get_all("dpop").iter();
        let Some(proof) = proofs.next() else { return Ok(None) };
        if proofs.next().is_some() {
            return Err(Refusal::Invalid("more than one DPoP header"));
        }
        let proof = proof.to_str().map_err(|_| Refusal::Invalid("the DPoP header is not text"))?;
        let (jkt, claims) = verify_signature(proof)?;
        let claim = |k: &str| claims.get(k);
        if claim("htm").and_then(Value::as_str) != Some(htm.as_str()) {
            return Err(Refusal::Invalid("DPoP proof htm differs from the request method"));
        }
        if claim("htu").and_then(Value::as_str).map(without_query) != Some(without_query(htu)) {
            return Err(Refusal::Invalid("DPoP proof htu differs from the request URL"));
        }
        let iat = claim("iat").and_then(Value::as_i64).ok_or(Refusal::Invalid("DPoP proof without a numeric iat"))?;
        if (now - iat).abs() > IAT_WINDOW_SECS {
            return Err(Refusal::Invalid("DPoP proof iat is not within a minute of the issuer's clock"));
        }
        let jti = claim("jti").and_then(Value::as_str).filter(|j| !j.is_empty());
        let jti = jti.ok_or(Refusal::Invalid("DPoP proof without a jti"))?;
        if self.jtis.lock().map(|j| j.contains(jti)).unwrap_or(true) {
            return Err(Refusal::Invalid("DPoP proof replayed: its jti was seen before"));
        }
        if let Some(at) = access_token {
            let ath = URL_SAFE_NO_PAD.encode(digest(&SHA256, at.as_bytes()));
            if claim("ath").and_then(Value::as_str) != Some(ath.as_str()) {
                return Err(Refusal::Invalid("DPoP proof ath is not the access token's hash"));
            }
        }
        let mut current = self.nonce.lock().map_err(|_| Refusal::Invalid("nonce lock"))?;
        match knobs.nonce {
            NonceMode::Off => {}
            NonceMode::Required if claim("nonce").and_then(Value::as_str) == Some(current.as_str()) => {}
            NonceMode::Required => {
                let why = match claim("nonce") {
                    None => "DPoP proof without the nonce the issuer requires",
                    Some(_) => "DPoP proof with a nonce the issuer did not give",
                };
                return Err(Refusal::Nonce(why, current.clone()));
            }
            NonceMode::EveryRequest => {
                *current = random::token(16);
                return Err(Refusal::Nonce("the issuer wants a new DPoP nonce for every request", current.clone()));
            }
        }
        if let Ok(mut j) = self.jtis.lock() {
            j.insert(jti.to_owned());
        }
        Ok(Some(jkt))
    }

    /// Binds issued tokens to `jkt`.
    pub(super) fn bind(&self, access_token: &str, refresh_token: Option<&str>, jkt: &str) {
        if let Ok(mut a) = self.bound_access.lock() {
            a.insert(access_token.to_owned(), jkt.to_owned());
        }
        if let (Some(rt), Ok(mut r)) = (refresh_token, self.bound_refresh.lock()) {
            r.insert(rt.to_owned(), jkt.to_owned());
        }
    }

    /// The key a refresh token is bound to.
    pub(super) fn refresh_binding(&self, refresh_token: &str) -> Option<String> {
        self.bound_refresh.lock().ok().and_then(|r| r.get(refresh_token).cloned())
    }

    /// The key an access token is bound to.
    pub(super) fn access_binding(&self, access_token: &str) -> Option<String> {
        self.bound_access.lock().ok().and_then(|a| a.get(access_token).cloned())
    }

    /// A userinfo request's access token, checked against its binding: a bound token must come as `DPoP` with a
    /// proof of its key (and `ath`), an unbound one as `Bearer`.
    pub(super) fn resource_token(
        &self,
        knobs: &DpopKnobs,
        headers: &HeaderMap,
        htu: &str,
        now: i64,
    ) -> Result<String, Refusal> {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (scheme, token) = auth.split_once(' ').unwrap_or(("", ""));
        let invalid = Refusal::Token;
        match (scheme.to_ascii_lowercase().as_str(), self.access_binding(token)) {
            ("bearer", None) => Ok(token.to_owned()),
            ("bearer", Some(_)) => Err(invalid("a DPoP-bound access token presented as Bearer")),
            ("dpop", None) => Err(invalid("DPoP scheme with an access token not bound to a key")),
            ("dpop", Some(bound)) => match self.verify(knobs, headers, &Method::GET, htu, now, Some(token)) {
                Ok(Some(jkt)) if jkt == bound => Ok(token.to_owned()),
                Ok(Some(_)) => Err(invalid("the DPoP proof's key is not the access token's")),
                Ok(None) => Err(invalid("a DPoP-bound access token without a DPoP proof")),
                Err(r) => Err(r),
            },
            _ => Err(invalid("no access token")),
        }
    }
}

/// Verifies a proof's JOSE header and signature with its embedded key; returns the key's thumbprint and the claims.
fn verify_signature(proof: &str) -> Result<(String, Map<String, Value>), Refusal> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
    let head = proof.split('.').next().unwrap_or("");
    let head: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(Refusal::Invalid("DPoP proof header is not base64url JSON"))?;
    if head.get("typ").and_then(Value::as_str) != Some(crate::oidc::dpop::PROOF_TYP) {
        return Err(Refusal::Invalid("DPoP proof typ is not dpop+jwt"));
    }
    let alg = match head.get("alg").and_then(Value::as_str) {
        Some("ES256") => Algorithm::ES256,
        Some("RS256") => Algorithm::RS256,
        Some("PS256") => Algorithm::PS256,
        _ => return Err(Refusal::Invalid("DPoP proof alg is not one the issuer supports")),
    };
    let jwk = head.get("jwk").and_then(Value::as_object).ok_or(Refusal::Invalid("DPoP proof without a jwk"))?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|m| jwk.contains_key(*m)) {
        return Err(Refusal::Invalid("DPoP proof jwk holds private key material"));
    }
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("RSA") => &["e", "kty", "n"],
        _ => return Err(Refusal::Invalid("DPoP proof jwk is not an EC or RSA public key")),
    };
    let required: Map<String, Value> =
        members.iter().filter_map(|m| jwk.get(*m).map(|v| ((*m).to_owned(), v.clone()))).collect();
    if required.len() != members.len() {
        return Err(Refusal::Invalid("DPoP proof jwk lacks a required member"));
    }
    let parsed: Jwk = serde_json::from_value(Value::Object(jwk.clone()))
        .map_err(|_| Refusal::Invalid("DPoP proof jwk is not a usable key"))?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|_| Refusal::Invalid("DPoP proof jwk is not a usable key"))?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation)
        .map_err(|_| Refusal::Invalid("DPoP proof signature does not verify with its jwk"))?;
    Ok((crate::signing::jwk_thumbprint(&required), data.claims))
}

/// A URL without query and fragment, normalised.
fn without_query(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => u.to_owned(),
    }
}
