//! The signed identity assertion: a short-lived JWT idgate hands the upstream (`X-Idgate-Assertion` by default) so
//! the application can verify who the user is itself, with the keys published at `{prefix}/jwks`, instead of
//! trusting that nothing but idgate can reach it (Google IAP's `x-goog-iap-jwt-assertion`, Pomerium's
//! `X-Pomerium-Jwt-Assertion`).
//!
//! It always carries `iss`, `aud`, `sub`, `iat`, `exp`, `jti` and `sid` (a hash of the login id, never the id), plus
//! the configured session claims. It is built from [`Claims`], which hold no token: the ID token, its signature and
//! the refresh and access tokens cannot reach it. `exp` is never past the session's own.
//!
//! Signing costs tens of microseconds, so one assertion is signed per session × audience and reused until
//! [`REUSE_MARGIN_SECS`] before its `exp`; the cache is bounded ([`MAX_CACHED`]).

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Map, Value, json};

use crate::{
    config::{Settings, assertion::AssertionSettings},
    id_token::Claims,
    signing::SigningKey,
    telemetry::metrics::Metrics,
};

/// A cached assertion is handed out only while it has at least this long to live.
pub const REUSE_MARGIN_SECS: i64 = 30;
/// At most this many assertions are kept (least recently used go first).
pub const MAX_CACHED: u64 = 100_000;

/// What an assertion is about: an open session's claims, its login and its end.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub claims: &'a Claims,
    /// The login's random id (kept through refreshes); only its hash is written.
    pub login_id: &'a str,
    /// The session's end (seconds since the epoch): the assertion never outlives it.
    pub expires_at: i64,
}

/// One signed assertion, ready to be written.
#[derive(Clone)]
struct Signed {
    value: HeaderValue,
    exp: i64,
}

/// The assertion signer and its cache, built once at start.
pub struct Assertions {
    header: HeaderName,
    key: Arc<SigningKey>,
    issuer: String,
    audience: Option<String>,
    lifetime: i64,
    claims: Vec<String>,
    /// (login id, audience, session end) → the assertion.
    cache: moka::sync::Cache<(String, String, i64), Signed>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions").field("header", &self.header).field("key", &self.key).finish_non_exhaustive()
    }
}

impl Assertions {
    /// The signer for `settings.assertion` with `key`, or `None` when the assertion is off.
    pub fn new(settings: &Settings, key: Option<Arc<SigningKey>>, metrics: Arc<Metrics>) -> Option<Self> {
        let a: &AssertionSettings = &settings.assertion;
        if !a.enabled {
            return None;
        }
        let Some(key) = key else {
            tracing::error!("assertion.enabled is set but no assertion key is loaded; no assertion is sent");
            return None;
        };
        let issuer = a.issuer.clone().unwrap_or_else(|| settings.oidc.redirect_url.origin().ascii_serialization());
        Some(Self::build(a, key, issuer, metrics))
    }

    /// The signer for `a` (enabled or not) with `key` and `issuer` (benchmarks and tests build one directly).
    pub fn build(a: &AssertionSettings, key: Arc<SigningKey>, issuer: String, metrics: Arc<Metrics>) -> Self {
        Self {
            header: a.header.clone(),
            key,
            issuer,
            audience: a.audience.clone(),
            lifetime: a.lifetime.as_secs() as i64,
            claims: a.claims.clone(),
            cache: moka::sync::Cache::builder().max_capacity(MAX_CACHED).time_to_live(a.lifetime).build(),
            metrics,
        }
    }

    /// The header the assertion travels in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The `iss` every assertion carries.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience of an assertion: the route's, else `assertion.audience`, else the application's host.
    pub fn audience<'a>(&'a self, route: Option<&'a str>, host: Option<&'a str>) -> Option<&'a str> {
        route.or(self.audience.as_deref()).or(host)
    }

    /// The assertion for `who` and `audience` at `now`: the cached one while it has more than
    /// [`REUSE_MARGIN_SECS`] left, else a new one. `None` when the session has ended or signing failed.
    pub fn value(&self, who: Subject<'_>, audience: &str, now: i64) -> Option<HeaderValue> {
        let key = (who.login_id.to_owned(), audience.to_owned(), who.expires_at);
        if let Some(hit) = self.cache.get(&key)
            && hit.exp - REUSE_MARGIN_SECS > now
        {
            self.metrics.assertion(true);
            return Some(hit.value);
        }
        let signed = self.sign(who, audience, now)?;
        self.metrics.assertion(false);
        self.cache.insert(key, signed.clone());
        Some(signed.value)
    }

    /// Signs a new assertion, expiring after the lifetime or with the session, whichever is first.
    fn sign(&self, who: Subject<'_>, audience: &str, now: i64) -> Option<Signed> {
        let exp = now.saturating_add(self.lifetime).min(who.expires_at);
        if exp <= now {
            return None;
        }
        let claims = self.claims_for(who, audience, now, exp);
        let jwt = match self.key.sign_jwt(Some("JWT"), &claims) {
            Ok(jwt) => jwt,
            Err(e) => {
                tracing::error!(error = %e, "identity assertion not signed");
                return None;
            }
        };
        HeaderValue::from_str(&jwt).ok().map(|value| Signed { value, exp })
    }

    /// The assertion's claims: the configured session claims, then what idgate sets itself (which always wins).
    fn claims_for(&self, who: Subject<'_>, audience: &str, now: i64, exp: i64) -> Map<String, Value> {
        let mut out = Map::new();
        for name in &self.claims {
            let value = if name == "idp_iss" { who.claims.get("iss") } else { who.claims.get(name) };
            if let Some(v) = value {
                out.insert(name.clone(), v.clone());
            }
        }
        let set = [
            ("iss", json!(self.issuer)),
            ("aud", json!(audience)),
            ("sub", json!(who.claims.sub())),
            ("iat", json!(now)),
            ("exp", json!(exp)),
            ("jti", json!(crate::random::token(16))),
            ("sid", json!(session_hash(who.login_id))),
        ];
        for (k, v) in set {
            out.insert(k.to_owned(), v);
        }
        out
    }
}

/// `sid`: the SHA-256 of the login id, base64url — stable for the session, useless for presenting it.
pub fn session_hash(login_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, format!("idgate-assertion-sid:{login_id}").as_bytes()))
}

/// The host the application sees the request under: `X-Forwarded-Host` when a trusted proxy sent it (its first
/// value), else `Host`, else the request target's authority (HTTP/2). Lowercased.
pub fn app_host(headers: &HeaderMap, authority: Option<&str>, trusted: bool) -> Option<String> {
    let forwarded = trusted
        .then(|| headers.get("x-forwarded-host").and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let host = forwarded.or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok())).or(authority)?.trim();
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
