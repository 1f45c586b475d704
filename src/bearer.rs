//! Bearer access tokens on API routes (R14's other half: the access token, never the ID token, is the API
//! credential). `Authorization: Bearer <token>` is accepted when it is
//!
//! - an RFC 9068 JWT access token: signed by the issuer's JWKS with an algorithm of `oidc.allowed_algs` (the ID
//!   token's own checks: [`crate::id_token::verified_jwt`]), `typ: at+jwt` (unless
//!   `oidc.access_token_typ_required = false`), `iss` exactly the issuer's, `aud` holding one of
//!   `oidc.api_audiences`, `exp`/`iat`/`nbf` sane; or
//! - an opaque token the issuer's RFC 7662 introspection endpoint calls `active` (with `oidc.introspect_opaque_tokens`),
//!   for one of the API audiences. Answers are cached until the token's `exp`, at most `oidc.introspection_cache_secs`.
//!
//! The route's rules then apply to its claims (and `[[routes]] scopes_all` to its `scope`). Every refusal has a
//! [`Refusal`] reason, counted in `idgate_bearer_total{result}`.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use http::{HeaderMap, header};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::{
    config::settings::{BearerSettings, OidcSettings},
    id_token::{self, Claims, KeySet, Rejection},
    oidc::{Provider, ProviderError},
};

/// Why a bearer token was refused. `Display` is safe to log: never the token or claim values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("more than one Authorization header, or a Bearer value that is not one token")]
    Malformed,
    #[error("access token refused: {0}")]
    Token(Rejection),
    #[error("not an access token (typ is not at+jwt)")]
    WrongTyp,
    #[error("issuer mismatch")]
    WrongIssuer,
    #[error("audience is none of oidc.api_audiences")]
    WrongAudience,
    #[error("opaque token, and oidc.introspect_opaque_tokens is off or the issuer has no introspection endpoint")]
    Opaque,
    #[error("the issuer says the token is not active")]
    Inactive,
    #[error("token introspection failed: {0}")]
    Unavailable(ProviderError),
}

impl Refusal {
    /// A short label for metrics, logs and the answer.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Token(r) => r.reason(),
            Refusal::WrongTyp => "wrong_typ",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Opaque => "opaque_not_introspected",
            Refusal::Inactive => "inactive",
            Refusal::Unavailable(_) => "introspection_unavailable",
        }
    }
}

/// What an access token must say, besides its signature.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub typ_required: bool,
    pub leeway: i64,
}

/// An introspection answer believed until `until`.
#[derive(Clone)]
struct Introspected {
    claims: Claims,
    until: i64,
}

/// The bearer-token checker, built once at start (with its introspection cache).
pub struct Bearer {
    settings: BearerSettings,
    allowed_algs: Vec<Algorithm>,
    leeway: i64,
    /// SHA-256 of a token → its introspection answer.
    introspected: moka::sync::Cache<[u8; 32], Introspected>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer").field("audiences", &self.settings.api_audiences).finish_non_exhaustive()
    }
}

/// The most introspection answers kept.
const MAX_INTROSPECTED: u64 = 100_000;

impl Bearer {
    /// The checker, or `None` when bearer access is off (no `oidc.api_audiences`).
    pub fn new(oidc: &OidcSettings) -> Option<Self> {
        let settings = oidc.bearer.clone();
        if !settings.enabled() {
            return None;
        }
        let introspected = moka::sync::Cache::builder()
            .max_capacity(MAX_INTROSPECTED)
            .time_to_live(settings.introspection_cache)
            .build();
        Some(Self {
            settings,
            allowed_algs: oidc.allowed_algs.clone(),
            leeway: oidc.leeway.as_secs() as i64,
            introspected,
        })
    }

    /// Checks `raw` against the issuer at `now`: its claims, or why not.
    pub async fn authenticate(&self, provider: &Provider, raw: &str, now: i64) -> Result<Claims, Refusal> {
        let metadata = provider.metadata().map_err(Refusal::Unavailable)?;
        let want = Want {
            issuer: &metadata.issuer,
            audiences: &self.settings.api_audiences,
            typ_required: self.settings.typ_required,
            leeway: self.leeway,
        };
        if raw.split('.').count() != 3 {
            return self.introspect(provider, raw, &want, now).await;
        }
        match validate_jwt(raw, &provider.keys(), &self.allowed_algs, &want, now) {
            Err(Refusal::Token(Rejection::UnknownKey)) => {
                let kid = id_token::kid_of(raw, &self.allowed_algs).ok().flatten();
                let keys = provider.keys_for_unknown_kid(kid.as_deref()).await.map_err(Refusal::Unavailable)?;
                validate_jwt(raw, &keys, &self.allowed_algs, &want, now)
            }
            other => other,
        }
    }

    async fn introspect(&self, provider: &Provider, raw: &str, want: &Want<'_>, now: i64) -> Result<Claims, Refusal> {
        if !self.settings.introspect {
            return Err(Refusal::Opaque);
        }
        let key: [u8; 32] = digest(&SHA256, raw.as_bytes()).as_ref().try_into().map_err(|_| Refusal::Malformed)?;
        if let Some(hit) = self.introspected.get(&key)
            && hit.until > now
        {
            return Ok(hit.claims);
        }
        let answer = provider.introspect(raw).await.map_err(Refusal::Unavailable)?.ok_or(Refusal::Opaque)?;
        let (claims, exp) = check_introspection(answer, want, now)?;
        let cap = now.saturating_add(self.settings.introspection_cache.as_secs() as i64);
        let until = exp.map_or(cap, |e| e.min(cap));
        self.introspected.insert(key, Introspected { claims: claims.clone(), until });
        Ok(claims)
    }
}

/// The one `Authorization: Bearer` credential of a request, if it presents one. More than one `Authorization`
/// header, or a Bearer value with spaces in it, is refused rather than guessed at.
pub fn presented(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let Ok(text) = value.to_str() else { return Ok(None) };
    let Some((scheme, token)) = text.trim().split_once(' ') else { return Ok(None) };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if values.next().is_some() || token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Refusal::Malformed);
    }
    Ok(Some(token))
}

/// Validates a JWT access token, pure: signature and `alg` as for ID tokens, then `typ`, `iss`, `aud` and the
/// time claims. An ID token fails here too (no `at+jwt`, our client id as `aud`), besides the pipeline's R14 check.
pub fn validate_jwt(
    raw: &str,
    keys: &KeySet,
    allowed: &[Algorithm],
    want: &Want<'_>,
    now: i64,
) -> Result<Claims, Refusal> {
    let (typ, payload) = id_token::verified_jwt(raw, keys, allowed).map_err(Refusal::Token)?;
    let typ = typ.unwrap_or_default().to_ascii_lowercase();
    if want.typ_required && typ != "at+jwt" && typ != "application/at+jwt" {
        return Err(Refusal::WrongTyp);
    }
    check_claims(&payload, want)?;
    id_token::check_times(&payload, want.leeway, now).map_err(Refusal::Token)?;
    match payload.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(Claims::new(payload)),
        _ => Err(Refusal::Token(Rejection::MissingClaim("sub"))),
    }
}

/// `iss` exactly the issuer's; `aud` (a string or an array of strings) holding one of the API audiences.
fn check_claims(c: &Map<String, Value>, want: &Want<'_>) -> Result<(), Refusal> {
    match c.get("iss") {
        Some(Value::String(iss)) if iss == want.issuer => {}
        Some(_) => return Err(Refusal::WrongIssuer),
        None => return Err(Refusal::Token(Rejection::MissingClaim("iss"))),
    }
    let audiences: Vec<&str> = match c.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .ok_or(Refusal::Token(Rejection::Malformed("aud is not a string or an array of strings")))?,
        Some(_) => return Err(Refusal::Token(Rejection::Malformed("aud is not a string or an array of strings"))),
        None => return Err(Refusal::Token(Rejection::MissingClaim("aud"))),
    };
    if !audiences.iter().any(|a| want.audiences.iter().any(|w| w == a)) {
        return Err(Refusal::WrongAudience);
    }
    Ok(())
}

/// An RFC 7662 answer: `active: true` (exactly), not a refresh token, `iss` (when given) the issuer's, `aud` one of
/// the API audiences, `exp` (when given) in the future. Returns its members as claims, and its `exp`.
fn check_introspection(
    answer: Map<String, Value>,
    want: &Want<'_>,
    now: i64,
) -> Result<(Claims, Option<i64>), Refusal> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(Refusal::Inactive);
    }
    if answer.get("token_type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("refresh_token")) {
        return Err(Refusal::WrongTyp);
    }
    let mut c = answer;
    c.remove("active");
    if !c.contains_key("iss") {
        c.insert("iss".into(), Value::String(want.issuer.to_owned()));
    }
    check_claims(&c, want)?;
    let exp = c.get("exp").and_then(Value::as_i64);
    if exp.is_some_and(|e| e.saturating_add(want.leeway) <= now) {
        return Err(Refusal::Token(Rejection::Expired));
    }
    Ok((Claims::new(c), exp))
}

/// Shared handle, as the state keeps it.
pub type Shared = Option<Arc<Bearer>>;

#[cfg(test)]
mod tests;
