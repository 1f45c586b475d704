//! ID-token validation, pure: `validate(raw, keys, expectations, nonce, now)` → [`Claims`] or a typed
//! [`Rejection`]. No I/O and no clock: the caller passes the keys it has and the time.
//!
//! Order of checks: compact-JWS format → `alg` on the allow-list (never `none`, never HMAC) → key by `kid` with a
//! consistent key type → signature → `iss`, `aud`, `azp`, `exp`, `iat`, `nbf`, `nonce`, `sub`. jsonwebtoken is used
//! for the signature only; every claim is checked here against the injected `now` (its own checks read the system
//! clock, skip `aud` when absent and leave `azp`/`nonce` out).

pub mod claims;
pub mod jwe;
pub mod keys;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

pub use claims::Claims;
pub use keys::{KeySet, KeySetError};

/// Tokens claiming to expire further ahead than this are refused as absurd (a peer accepted `exp: 1e300`).
const MAX_LIFETIME_SECS: i64 = 366 * 24 * 3600;
/// Why an `aud` of the wrong shape is refused.
const AUD_SHAPE: &str = "aud is not a string or an array of strings";
/// Largest token accepted at all; real ID tokens are a few KB.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why a token was refused. `Display` is safe to log: it never includes the token or claim values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    #[error("no key for the token's kid")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("issuer mismatch")]
    WrongIssuer,
    #[error("audience does not include this client")]
    WrongAudience,
    #[error("authorized party (azp) is not this client")]
    WrongAzp,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("unreasonable time claim: {0}")]
    AbsurdTime(&'static str),
    #[error("missing claim: {0}")]
    MissingClaim(&'static str),
    #[error("nonce mismatch")]
    NonceMismatch,
    #[error("not a logout token: {0}")]
    NotALogoutToken(&'static str),
    #[error("{0}")]
    Encryption(jwe::JweError),
    #[error("ID token is not encrypted, and oidc.require_encrypted_id_token is set")]
    NotEncrypted,
}

impl Rejection {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::AlgNotAllowed => "alg_not_allowed",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::WrongAzp => "wrong_azp",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::AbsurdTime(_) => "absurd_time",
            Rejection::MissingClaim(_) => "missing_claim",
            Rejection::NonceMismatch => "nonce_mismatch",
            Rejection::NotALogoutToken(_) => "not_a_logout_token",
            Rejection::Encryption(e) => e.reason(),
            Rejection::NotEncrypted => "not_encrypted",
        }
    }
}

/// What a valid token must say, built once from the settings.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// The discovery document's issuer, compared exactly.
    pub issuer: String,
    /// Our client id, first, then any extra accepted audiences.
    pub audiences: Vec<String>,
    pub allowed_algs: Vec<Algorithm>,
    /// Clock-skew allowance, seconds.
    pub leeway: i64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
    #[serde(default)]
    typ: Option<Value>,
}

/// The parts of a compact JWS after the format and `alg` checks.
struct Parsed<'a> {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    signing_input: &'a str,
    signature: &'a str,
    payload: Map<String, Value>,
}

fn parse<'a>(raw: &'a str, allowed: &[Algorithm]) -> Result<Parsed<'a>, Rejection> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Malformed("too large"));
    }
    let mut parts = raw.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(match raw.split('.').count() {
            5 => Rejection::Malformed("encrypted (JWE) ID tokens are not supported"),
            _ => Rejection::Malformed("not three dot-separated parts"),
        });
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Rejection::Malformed("empty part"));
    }
    let header_bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| Rejection::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| Rejection::Malformed("header is not a JSON object with alg"))?;
    if header.crit.is_some() {
        return Err(Rejection::Malformed("critical header extensions are not understood"));
    }
    // `none` and HMAC algorithms are not in any allow-list the configuration accepts; checking membership is the
    // whole rule, whatever the spelling.
    let alg = allowed.iter().copied().find(|a| alg_name(*a) == header.alg).ok_or(Rejection::AlgNotAllowed)?;
    let payload_bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| Rejection::Malformed("payload is not base64url"))?;
    let payload: Map<String, Value> =
        serde_json::from_slice(&payload_bytes).map_err(|_| Rejection::Malformed("payload is not a JSON object"))?;
    let typ = header.typ.and_then(|t| t.as_str().map(str::to_owned));
    Ok(Parsed { alg, kid: header.kid, typ, signing_input: &raw[..h.len() + 1 + p.len()], signature: s, payload })
}

/// The JOSE name of an algorithm.
pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// Validates `raw` and returns its claims. `nonce` is the value sent with the authorization request (`None` where
/// none is expected, as on refresh when the first token had none).
pub fn validate(
    raw: &str,
    keys: &KeySet,
    want: &Expectations,
    nonce: Option<&str>,
    now: i64,
) -> Result<Claims, Rejection> {
    let payload = verified_payload(raw, keys, want)?;
    check_common(&payload, want, now)?;
    if let Some(expected) = nonce {
        match payload.get("nonce") {
            Some(Value::String(n)) if constant_time_eq(n.as_bytes(), expected.as_bytes()) => {}
            Some(_) => return Err(Rejection::NonceMismatch),
            None => return Err(Rejection::MissingClaim("nonce")),
        }
    }
    match payload.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Claims::new(payload)),
        Some(_) => Err(Rejection::Malformed("sub is not a string of 1-255 characters")),
        None => Err(Rejection::MissingClaim("sub")),
    }
}

/// How encrypted tokens are opened: idgate's decryption keys (none configured → a JWE is refused), the algorithms
/// allowed, and whether a plain JWS is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decryption {
    pub keys: Option<std::sync::Arc<jwe::DecryptionKeys>>,
    pub allowed: jwe::Allowed,
    pub required: bool,
}

/// The signed token to validate (R8): `raw` itself when it is a JWS, the JWS inside when it is a JWE. A JWS is
/// refused when encryption is required; a JWE is refused when no key is configured or it does not decrypt to a
/// signed JWT. What comes out still has to pass [`validate`] — decryption proves nothing about the issuer.
pub fn signed_token<'a>(raw: &'a str, d: &Decryption) -> Result<std::borrow::Cow<'a, str>, Rejection> {
    if !jwe::is_jwe(raw) {
        return if d.required { Err(Rejection::NotEncrypted) } else { Ok(std::borrow::Cow::Borrowed(raw)) };
    }
    let keys = d.keys.as_deref().ok_or(Rejection::Encryption(jwe::JweError::NoKeys))?;
    jwe::decrypt(raw, keys, &d.allowed).map(std::borrow::Cow::Owned).map_err(Rejection::Encryption)
}

/// The back-channel logout event (OpenID Connect Back-Channel Logout 1.0 §2.4).
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token without `exp` must be this fresh.
const LOGOUT_MAX_AGE_SECS: i64 = 300;

/// Validates a back-channel `logout_token`: signed like an ID token, same `iss`/`aud`, plus its own rules — an
/// `events` member for back-channel logout, `iat` and `jti` required, no `nonce`, and a `sid` or `sub`.
/// Replay of `jti` is the caller's to check (it needs a cache).
pub fn validate_logout(raw: &str, keys: &KeySet, want: &Expectations, now: i64) -> Result<Claims, Rejection> {
    let payload = verified_payload(raw, keys, want)?;
    let mut want = want.clone();
    // `exp` is optional in Back-Channel Logout 1.0 final; without it the token must be fresh: it is read as expiring
    // LOGOUT_MAX_AGE_SECS after `iat`, with the leeway capped at as much, so it is refused from
    // `iat + 300 + min(leeway, 300)` on, by the same rule as any `exp`.
    if !payload.contains_key("exp") {
        let iat = time_claim(&payload, "iat")?.ok_or(Rejection::MissingClaim("iat"))?;
        want.leeway = want.leeway.min(LOGOUT_MAX_AGE_SECS);
        let mut with_exp = payload.clone();
        with_exp.insert("exp".into(), Value::from(iat.saturating_add(LOGOUT_MAX_AGE_SECS)));
        check_common(&with_exp, &want, now)?;
    } else {
        check_common(&payload, &want, now)?;
    }
    if payload.contains_key("nonce") {
        return Err(Rejection::NotALogoutToken("a logout token must not carry a nonce"));
    }
    match payload.get("events") {
        Some(Value::Object(events)) if events.get(LOGOUT_EVENT).is_some_and(Value::is_object) => {}
        _ => return Err(Rejection::NotALogoutToken("events lacks the back-channel logout event")),
    }
    if payload.get("jti").is_none_or(|j| j.as_str().is_none_or(|s| s.is_empty())) {
        return Err(Rejection::MissingClaim("jti"));
    }
    let has = |k: &str| payload.get(k).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    if !has("sid") && !has("sub") {
        return Err(Rejection::NotALogoutToken("neither sid nor sub"));
    }
    Ok(Claims::new(payload))
}

/// Format, `alg`, key and signature: the payload of a token whose signature checks out.
fn verified_payload(raw: &str, keys: &KeySet, want: &Expectations) -> Result<Map<String, Value>, Rejection> {
    let parsed = parse(raw, &want.allowed_algs)?;
    let key = keys.find(parsed.kid.as_deref(), parsed.alg).ok_or(Rejection::UnknownKey)?;
    let ok = jsonwebtoken::crypto::verify(parsed.signature, parsed.signing_input.as_bytes(), key, parsed.alg)
        .map_err(|_| Rejection::BadSignature)?;
    if !ok {
        return Err(Rejection::BadSignature);
    }
    Ok(parsed.payload)
}

/// A signed JWT that is not an ID token (an RFC 9068 access token): format, `alg` on `allowed`, key and signature
/// checked exactly as for ID tokens. Returns the header's `typ` (when a string) and the payload; every claim is
/// still the caller's to check ([`check_times`] for the time claims).
pub fn verified_jwt(
    raw: &str,
    keys: &KeySet,
    allowed: &[Algorithm],
) -> Result<(Option<String>, Map<String, Value>), Rejection> {
    let parsed = parse(raw, allowed)?;
    let key = keys.find(parsed.kid.as_deref(), parsed.alg).ok_or(Rejection::UnknownKey)?;
    let ok = jsonwebtoken::crypto::verify(parsed.signature, parsed.signing_input.as_bytes(), key, parsed.alg)
        .map_err(|_| Rejection::BadSignature)?;
    if !ok {
        return Err(Rejection::BadSignature);
    }
    Ok((parsed.typ, parsed.payload))
}

/// `exp` (required, not absurd), `iat` (required, not in the future) and `nbf`, against `now` with `leeway`.
pub fn check_times(c: &Map<String, Value>, leeway: i64, now: i64) -> Result<(), Rejection> {
    let exp = time_claim(c, "exp")?.ok_or(Rejection::MissingClaim("exp"))?;
    if exp > now.saturating_add(MAX_LIFETIME_SECS) {
        return Err(Rejection::AbsurdTime("exp"));
    }
    if exp.saturating_add(leeway) <= now {
        return Err(Rejection::Expired);
    }
    let iat = time_claim(c, "iat")?.ok_or(Rejection::MissingClaim("iat"))?;
    if iat > now.saturating_add(leeway) {
        return Err(Rejection::IssuedInFuture);
    }
    if let Some(nbf) = time_claim(c, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

/// The key id named in a token's header, if the token parses that far (used to decide on a JWKS re-fetch).
pub fn kid_of(raw: &str, allowed: &[Algorithm]) -> Result<Option<String>, Rejection> {
    parse(raw, allowed).map(|p| p.kid)
}

/// The claim rules ID tokens and logout tokens share: `iss`, `aud`, `azp`, `exp`, `iat`, `nbf`.
fn check_common(c: &Map<String, Value>, want: &Expectations, now: i64) -> Result<(), Rejection> {
    match c.get("iss") {
        Some(Value::String(iss)) if *iss == want.issuer => {}
        Some(_) => return Err(Rejection::WrongIssuer),
        None => return Err(Rejection::MissingClaim("iss")),
    }
    let accepted = |a: &str| want.audiences.iter().any(|w| w == a);
    let audiences: Vec<&str> = match c.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        // RFC 7519 §4.1.3: an array of StringOrURI. A member of another type makes the whole claim malformed; it is
        // not skipped, so `["other", 1]` can never count as one audience (and dodge the `azp` rule).
        Some(Value::Array(list)) => {
            list.iter().map(Value::as_str).collect::<Option<Vec<&str>>>().ok_or(Rejection::Malformed(AUD_SHAPE))?
        }
        Some(_) => return Err(Rejection::Malformed(AUD_SHAPE)),
        None => return Err(Rejection::MissingClaim("aud")),
    };
    if !audiences.iter().any(|a| accepted(a)) {
        return Err(Rejection::WrongAudience);
    }
    match c.get("azp") {
        Some(Value::String(azp)) if accepted(azp) => {}
        Some(_) => return Err(Rejection::WrongAzp),
        None if audiences.len() > 1 => return Err(Rejection::WrongAzp),
        None => {}
    }
    check_times(c, want.leeway, now)
}

/// A NumericDate claim as whole seconds. Absent → `None`; not a number, negative, fractional beyond i64 or
/// non-finite → refused.
fn time_claim(c: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, Rejection> {
    match c.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return if i >= 0 { Ok(Some(i)) } else { Err(Rejection::AbsurdTime(name)) };
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && (0.0..9.0e15).contains(&f) => Ok(Some(f as i64)),
                _ => Err(Rejection::AbsurdTime(name)),
            }
        }
        Some(_) => Err(Rejection::Malformed("time claim is not a number")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests;
