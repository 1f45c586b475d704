//! Sessions: a validated ID token (and, where configured, the refresh and access tokens) sealed into the session
//! cookie, living exactly until the ID token's `exp`. Opening re-checks expiry on every request; a cookie that does
//! not open is no session.

pub mod cookie;
pub mod seal;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::{config::settings::SessionSettings, id_token::Claims};
use cookie::Attributes;
use seal::{KeyRing, Purpose};

/// An open, unexpired session. Only [`Sessions::open`] makes one.
#[derive(Debug, Clone)]
pub struct Session {
    claims: Claims,
    id_token: String,
    refresh_token: Option<String>,
    access_token: Option<String>,
}

impl Session {
    /// The ID token's claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
    /// When the session ends: the ID token's `exp`.
    pub fn expires_at(&self) -> i64 {
        self.claims.exp()
    }
    /// The ID token, for RP-initiated logout's `id_token_hint` only. Never forwarded.
    pub fn id_token_hint(&self) -> &str {
        &self.id_token
    }
    /// The access token, forwarded only when `oidc.forward_access_token` is on.
    pub fn access_token(&self) -> Option<&str> {
        self.access_token.as_deref()
    }
    /// The refresh token, for renewal only.
    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref()
    }
}

/// Tokens to keep after a login or refresh. The ID token must already be validated.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id_token: &'a str,
    pub claims: &'a Claims,
    pub refresh_token: Option<&'a str>,
    pub access_token: Option<&'a str>,
    /// Claims from the userinfo endpoint (same `sub`, checked by the caller) that the ID token lacks.
    pub userinfo: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// Why there is no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no session cookie")]
    Missing,
    #[error("session cookie does not open")]
    Tampered,
    #[error("session expired")]
    Expired,
    #[error("session too large for the cookie store")]
    TooLarge,
}

/// The sealed form, field names kept short: it travels in every request.
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    #[serde(borrow, rename = "t")]
    id_token: &'a str,
    #[serde(borrow, rename = "r", default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(borrow, rename = "a", default, skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    userinfo: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Seals and opens session cookies; built once at start.
#[derive(Debug)]
pub struct Sessions {
    ring: KeyRing,
    name: String,
    attrs: Attributes,
}

impl Sessions {
    /// Derives the session keys from the settings.
    pub fn new(s: &SessionSettings) -> Self {
        Self {
            ring: KeyRing::new(&s.secret, &s.previous_secrets, Purpose::Session),
            name: s.cookie_name.clone(),
            attrs: Attributes { secure: s.cookie_secure, domain: s.cookie_domain.clone() },
        }
    }

    /// The session cookie's name (chunks are `NAME_0`, `NAME_1`, …).
    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// Opens the request's session, checking expiry against `now`.
    pub fn open(&self, headers: &HeaderMap, now: i64) -> Result<Session, SessionError> {
        let value = cookie::get_chunked(headers, &self.name).ok_or(SessionError::Missing)?;
        let plain = self.ring.open(&self.name, &value).map_err(|_| SessionError::Tampered)?;
        let sealed: Sealed = serde_json::from_slice(&plain).map_err(|_| SessionError::Tampered)?;
        let mut claims = claims_of(sealed.id_token).ok_or(SessionError::Tampered)?;
        if let Some(extra) = sealed.userinfo {
            claims.add_missing(extra);
        }
        if claims.exp() <= now {
            return Err(SessionError::Expired);
        }
        Ok(Session {
            claims,
            id_token: sealed.id_token.to_owned(),
            refresh_token: sealed.refresh_token.map(str::to_owned),
            access_token: sealed.access_token.map(str::to_owned),
        })
    }

    /// `Set-Cookie` values for a new session, replacing whatever session cookies the request carried.
    pub fn seal(&self, req: &HeaderMap, new: &NewSession<'_>, now: i64) -> Result<Vec<HeaderValue>, SessionError> {
        let sealed = Sealed {
            id_token: new.id_token,
            refresh_token: new.refresh_token,
            access_token: new.access_token,
            userinfo: new.userinfo.cloned(),
        };
        let plain = serde_json::to_vec(&sealed).map_err(|_| SessionError::TooLarge)?;
        let value = self.ring.seal(&self.name, &plain);
        let max_age = new.claims.exp() - now;
        self.attrs.set_chunked(req, &self.name, &value, "/", max_age).ok_or(SessionError::TooLarge)
    }

    /// `Set-Cookie` values ending the session (every chunk the request carried).
    pub fn clear(&self, req: &HeaderMap) -> Vec<HeaderValue> {
        self.attrs.clear_chunked(req, &self.name, "/")
    }
}

/// The claims of a token this process validated and sealed: the payload segment, decoded.
fn claims_of(id_token: &str) -> Option<Claims> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    Some(Claims::new(serde_json::from_slice(&bytes).ok()?))
}

#[cfg(test)]
mod tests;
